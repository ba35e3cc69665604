"""Citizens' reports with photos beside ingest: intake latency and what a photo costs.

    .venv/bin/python bench/reports.py             # 60 s per phase
    .venv/bin/python bench/reports.py --quick     # 15 s per phase

On this machine, PostgreSQL with fsync on, mosquitto and ``ioc serve`` as its own process
(``bench/common.py``), a seeded city:

1. **A photo's CPU cost**, in this process: ``server.reports.clean_photo`` (check by content,
   decode, resize to 1,600 px, re-encode without metadata) on what ``/report`` uploads (a
   1,600 × 1,200 JPEG the phone already shrank) and on a camera's original (4,000 × 3,000,
   what an API client might send): CPU ms per photo.
2. **Reports alone** (the baseline): ``--rate`` reports a minute (default 1,000), each a
   multipart POST /api/v1/public/reports with one photo, at random points of the city in
   random categories, sent on a fixed schedule (open loop: a slow answer does not slow the
   sender). Latency = answer time - scheduled time: p50, p99, max; errors; the server's CPU
   per report.
3. **The same beside ingest** at ``--ingest-rate`` MQTT messages/s (default 5,000; the
   publishers of bench/ingest.py): the reports' p99 again, and whether ingest kept up
   (readings stored / sent after the drain).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))

import report
from common import (
    Stack,
    console,
    install_signal_handlers,
    log,
    parse_metrics,
    percentile,
    system_busy_seconds,
    table,
)
from ingest import READINGS_PER_MSG, Publishers
from PIL import Image, ImageDraw

from server.reports import CATEGORIES, clean_photo

NAME = "reports"
GOAL_P99_MS = 1000.0


def photo(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG: gradients, shapes and sensor noise (compresses like a street scene)."""
    rnd = random.Random(seed)
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x, y = rnd.randrange(width), rnd.randrange(height)
        draw.rectangle((x, y, x + rnd.randrange(20, width // 4), y + rnd.randrange(20, height // 4)),
                       fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    noise = Image.effect_noise((width, height), 18).convert("RGB")
    img = Image.blend(img, noise, 0.25)
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (21.0, 35.0, 40.0), 3: "E", 4: (105.0, 50.0, 10.0)}
    img.save(out, "JPEG", quality=82, exif=exif)
    return out.getvalue()


def photo_cpu_ms(data: bytes, n: int) -> float:
    clean_photo(data)  # warm
    t0 = time.process_time()
    for _ in range(n):
        clean_photo(data)
    return (time.process_time() - t0) / n * 1000


async def send_reports(base: str, rate_per_min: float, duration: float, photos: list[bytes],
                       bounds: tuple[float, float, float, float], seed: int) -> dict:
    rnd = random.Random(seed)
    w, s, e, n = bounds
    interval = 60.0 / rate_per_min
    total = int(duration / interval)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    cats = list(CATEGORIES)

    async def one(session: aiohttp.ClientSession, i: int, at: float) -> None:
        form = aiohttp.FormData()
        form.add_field("category", rnd.choice(cats))
        form.add_field("lat", f"{rnd.uniform(s, n):.6f}")
        form.add_field("lon", f"{rnd.uniform(w, e):.6f}")
        form.add_field("description", f"bench report {i}: something is wrong here")
        if photos:
            form.add_field("photo", photos[i % len(photos)], filename="p.jpg", content_type="image/jpeg")
        try:
            async with session.post(f"{base}/api/v1/public/reports", data=form) as resp:
                await resp.read()
                if resp.status != 201:
                    errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                    return
        except aiohttp.ClientError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        latencies.append((time.perf_counter() - at) * 1000)

    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:
        start = time.perf_counter() + 0.2
        tasks = []
        for i in range(total):
            at = start + i * interval
            await asyncio.sleep(max(0.0, at - time.perf_counter()))  # the schedule, not a wait
            tasks.append(asyncio.create_task(one(session, i, at)))
        await asyncio.gather(*tasks)
    return {"sent": total, "ok": len(latencies), "errors": errors,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "max": max(latencies, default=float("nan"))}


async def stored_readings(base: str, token: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics",
                                                   headers={"Authorization": f"Bearer {token}"}) as resp:
        resp.raise_for_status()
        m = parse_metrics(await resp.text())
    return m.get("ioc_readings_stored_total", m.get("ioc_readings_stored", 0.0))


async def bench(args: argparse.Namespace, stack: Stack) -> int:
    duration = 15.0 if args.quick else args.duration
    url = stack.create_database("reports")
    stack.seed(url, args.devices)
    with psycopg.connect(url) as conn:
        w, s, e, n = conn.execute("select ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) from "
                                  "(select ST_Extent(geom) b from wards) x").fetchone()
        lamps = [r[0] for r in conn.execute("select id from devices where kind = 'streetlight' order by id")]
    report.context(NAME, rate_per_min=args.rate, ingest_rate=args.ingest_rate, duration_s=duration,
                   devices=len(lamps), fsync="on")

    log("a photo's CPU cost (clean_photo, in this process)")
    phone = [photo(1600, 1200, seed) for seed in range(4)]
    camera = photo(4000, 3000, 99)
    n_cpu = 10 if args.quick else 30
    phone_ms = photo_cpu_ms(phone[0], n_cpu)
    camera_ms = photo_cpu_ms(camera, max(3, n_cpu // 3))

    photo_dir = Path(tempfile.mkdtemp(prefix="ioc-bench-photos-", dir=stack.dir))
    srv = stack.start_server(url, {"IOC_REPORTS__RATE_PER_MIN": "100000000",
                                   "IOC_REPORTS__PHOTO_DIR": str(photo_dir)})
    bounds = (w, s, e, n)
    sent_photos = [] if args.no_photos else phone

    log(f"reports alone: {args.rate:g}/min for {duration:g} s, one {len(phone[0]) // 1024} kB photo each")
    cpu0 = srv.ps.cpu_times()
    alone = await send_reports(srv.base_url, args.rate, duration, sent_photos, bounds, 1)
    cpu1 = srv.ps.cpu_times()
    server_cpu_ms = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / max(1, alone["ok"]) * 1000

    log(f"reports beside ingest at {args.ingest_rate:g} msg/s")
    token = stack.token(url)
    stored0 = await stored_readings(srv.base_url, token)
    pubs = Publishers(2, stack.mqtt.host, stack.mqtt.port, lamps, args.ingest_rate, duration + 2)
    try:
        await pubs.start()
        await asyncio.sleep(1.0)  # ingest running before the first report
        busy0, wall0, srv0 = system_busy_seconds(), time.monotonic(), srv.ps.cpu_times()
        beside = await send_reports(srv.base_url, args.rate, duration, sent_photos, bounds, 2)
        busy1, wall1, srv1 = system_busy_seconds(), time.monotonic(), srv.ps.cpu_times()
        machine_pct = 100 * (busy1 - busy0) / (wall1 - wall0)  # 200 % = both cores of a 2-core machine
        server_pct = 100 * ((srv1.user + srv1.system) - (srv0.user + srv0.system)) / (wall1 - wall0)
        sent = await pubs.wait(duration + 60)
    finally:
        pubs.kill()
    want = sent["sent"] * READINGS_PER_MSG
    deadline, last, stored = time.monotonic() + 60, -1.0, 0.0
    while time.monotonic() < deadline:  # the drain: until everything is stored or it stalls
        stored = await stored_readings(srv.base_url, token) - stored0
        if stored >= want or stored == last:
            break
        last = stored
        await asyncio.sleep(2.0)
    kept = stored / want if want else float("nan")

    rows = []
    for label, r in (("reports alone", alone), (f"beside ingest {args.ingest_rate:g} msg/s", beside)):
        rows.append([label, f"{r['ok']}/{r['sent']}", f"{r['p50']:.0f}", f"{r['p99']:.0f}", f"{r['max']:.0f}",
                     ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"])
    what = "without photos" if args.no_photos else "with a photo each"
    console.print(table(f"{args.rate:g} reports/min {what}, {duration:g} s",
                        ["run", "stored", "p50 ms", "p99 ms", "max ms", "errors"], rows))
    console.print(f"photo CPU: {phone_ms:.1f} ms (1600 px from the page), {camera_ms:.1f} ms "
                  f"(4000 × 3000 camera original); server CPU per report {server_cpu_ms:.1f} ms; "
                  f"ingest kept {100 * kept:.2f} % of {want:,} readings; beside ingest the server used "
                  f"{server_pct:.0f} % and the machine {machine_pct:.0f} % of one core "
                  f"({psutil.cpu_count()} cores, the load of other work included)")

    report.record(NAME, "photo CPU, 1600 px upload (what /report sends)", phone_ms, "ms")
    report.record(NAME, "photo CPU, 4000×3000 camera original", camera_ms, "ms")
    report.record(NAME, "server CPU per report with a photo", server_cpu_ms, "ms")
    report.record(NAME, "intake p99, reports alone", alone["p99"], "ms", goal=f"≤ {GOAL_P99_MS:g} ms",
                  met=alone["p99"] <= GOAL_P99_MS)
    report.record(NAME, f"intake p99 beside ingest at {args.ingest_rate:g} msg/s", beside["p99"], "ms",
                  goal=f"≤ {GOAL_P99_MS:g} ms", met=beside["p99"] <= GOAL_P99_MS,
                  baseline="reports alone", ratio=beside["p99"] / alone["p99"] if alone["p99"] else None)
    report.record(NAME, "machine CPU beside ingest (100 % = one core)", machine_pct, "%",
                  note=f"{psutil.cpu_count()} cores; the server alone {server_pct:.0f} %")
    report.record(NAME, "reports stored beside ingest", 100 * beside["ok"] / max(1, beside["sent"]), "%",
                  goal="100 %", met=beside["ok"] == beside["sent"])
    report.record(NAME, "ingest readings stored while reports arrive", 100 * kept, "%", goal="100 %",
                  met=stored >= want)
    return 0 if alone["ok"] == alone["sent"] and beside["ok"] == beside["sent"] else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="15 s per phase")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase (default 60)")
    ap.add_argument("--rate", type=float, default=1000.0, help="reports a minute (default 1,000)")
    ap.add_argument("--ingest-rate", type=float, default=5000.0, help="MQTT messages/s beside (5,000)")
    ap.add_argument("--no-photos", action="store_true", help="reports without photos (what the DB costs)")
    ap.add_argument("--devices", type=int, default=5000, help="streetlights in the city (default 5,000)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = ap.parse_args()
    install_signal_handlers()
    try:
        with Stack(keep=args.keep) as stack:
            return asyncio.run(bench(args, stack))
    except KeyboardInterrupt:
        console.print("[red]interrupted; everything stopped[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
