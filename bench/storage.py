"""Telemetry storage: a city day in the row store, compressed, and as Parquet.

    .venv/bin/python bench/storage.py              # 2,000 lamps: the issue's 7.2 M lamp points
    .venv/bin/python bench/storage.py --quick      # 200 lamps, fewer query rounds

Seeds the synthetic city, writes one UTC day of one-minute readings from the simulator's
patterns (server/simulate/patterns.py: lamps on and dimmed at night, cabinets' meters, water
meters and pressure, traffic, air; values rounded as the devices send them; lamps with 5
metrics: lamp_on, dim_level_pct, power_w, energy_kwh, burning_hours) into the row store with
COPY, then measures:

* bytes per point of everything the day occupies (heap, TOAST, indexes) in the row store,
  after compression (``telemetry_segments`` plus the emptied partition), and of the same
  points in a Parquet file with zstd (pyarrow, sorted by device, metric, time: its best case);
* compression speed: points per second of the encoding (one core: the job is one Python
  thread) and of the whole job (read, encode, write, truncate), per second of wall time and
  per CPU-second of this process and PostgreSQL together;
* latency of three reads, each through the server's own functions (server/store/history.py),
  before and after compression: a device-day of raw points (the history API's raw answer), a
  ward's week of power in hourly buckets computed from the points, and the latest value of
  every device x metric at noon, both through ``latest_at`` and through what
  ``GET /api/v1/state?at=`` runs (``server/live/past.state_at``, the whole city: at noon,
  inside every segment, and an hour after the day, when every segment has ended and
  answers from its tail columns). The
  ward-week answer from the hourly rollups is shown too. Answers are compared raw vs
  compressed.

Goals (issue 17): ≤ 3 bytes per point, ≥ 1,000,000 points/s per core, compressed reads no
slower than raw ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
from common import Stack, console, log, own_cpu_seconds, run_on_stack, table, tree_cpu_seconds
from report import context, record

from server.live import past
from server.simulate.fleet import load_fleet
from server.simulate.patterns import BOOL_METRICS, DECIMALS, Patterns
from server.store import compress, history
from server.store.compress import ROW, to_us

NAME = "storage"
DAY = datetime(2026, 11, 20, tzinfo=UTC)
LAMP_METRICS = ("lamp_on", "dim_level_pct", "power_w", "energy_kwh", "burning_hours")


# ---------------------------------------------------------------- the day
async def city_day(url: str, minutes: int) -> dict[str, np.ndarray]:
    """Every device's readings each minute of DAY, as columns sorted by time."""
    fleet = await load_fleet(url)
    patterns = Patterns(fleet)
    conn = await asyncpg.connect(url)
    try:
        keys = {r["id"]: r["key"] for r in await conn.fetch("select id, key from devices")}
        metric_ids = {r["name"]: r["id"] for r in await conn.fetch("select name, id from metrics")}
    finally:
        await conn.close()
    t0 = DAY.timestamp()
    base = to_us(DAY)
    cols: dict[str, list] = {"device": [], "metric": [], "ts": [], "value": []}
    for kind, group in fleet.groups.items():
        dev = np.array([keys[i] for i in group.ids], np.int32)
        # each device reports at its own second of the minute, every minute
        phase = (dev.astype(np.int64) * 7919) % 60 * 1_000_000
        series: dict[str, list[np.ndarray]] = {}
        for m in range(minutes):
            t = t0 + 60 * m
            for name, v in patterns.values(kind, t).items():
                if name not in metric_ids or (kind == "streetlight" and name not in LAMP_METRICS):
                    continue
                v = np.asarray(v).astype(np.float64)  # booleans as 0/1
                if name in BOOL_METRICS:
                    v = np.round(v)
                series.setdefault(name, []).append(np.round(v, DECIMALS.get(name, 3)))
        for name, rows in series.items():
            vals = np.stack(rows)  # (minute, device)
            n_min, n_dev = vals.shape
            cols["device"].append(np.tile(dev, n_min))
            cols["metric"].append(np.full(n_min * n_dev, metric_ids[name], np.int16))
            ts = base + np.arange(n_min, dtype=np.int64)[:, None] * 60_000_000 + phase[None, :]
            cols["ts"].append(ts.ravel())
            cols["value"].append(vals.ravel())
    out = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.argsort(out["ts"], kind="stable")  # as ingest writes them: in time order
    return {k: v[order] for k, v in out.items()}


def copy_buffer(day: dict[str, np.ndarray], sl: slice) -> bytes:
    n = len(day["ts"][sl])
    rows = np.zeros(n, ROW)
    rows["nf"], rows["l1"], rows["l2"], rows["l3"], rows["l4"], rows["l5"] = 5, 4, 2, 8, 8, 2
    rows["device"], rows["metric"] = day["device"][sl], day["metric"][sl]
    rows["ts"], rows["value"] = day["ts"][sl], day["value"][sl]
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + rows.tobytes() + b"\xff\xff"


async def load(conn: asyncpg.Connection, day: dict[str, np.ndarray]) -> float:
    import io

    await conn.execute("select ioc_ensure_telemetry_partition($1)", DAY.date())
    t = time.perf_counter()
    step = 1_000_000
    for i in range(0, len(day["ts"]), step):
        await conn.copy_to_table("telemetry", source=io.BytesIO(copy_buffer(day, slice(i, i + step))),
                                 columns=["device_key", "metric_id", "ts", "value", "quality"],
                                 format="binary")
    return time.perf_counter() - t


def parquet_bytes(day: dict[str, np.ndarray]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = np.lexsort((day["ts"], day["metric"], day["device"]))
    tbl = pa.table({
        "device_key": pa.array(day["device"][order]),
        "metric_id": pa.array(day["metric"][order]),
        "ts": pa.array((day["ts"][order] + compress.UNIX_OFFSET_US).astype("datetime64[us]")),
        "value": pa.array(day["value"][order]),
        "quality": pa.array(np.zeros(len(order), np.int16)),
    })
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "day.parquet"
        pq.write_table(tbl, path, compression="zstd")
        return path.stat().st_size


# ---------------------------------------------------------------- the reads
async def timed(fn, rounds: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = await fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def points_key(p) -> tuple:
    return (p.device.tobytes(), p.metric.tobytes(), p.ts.tobytes(), p.value.tobytes(), p.quality.tobytes())


async def reads(conn: asyncpg.Connection, lamps: list[tuple[int, str]], ward_keys: list[int],
                power: int, rounds: int) -> dict[str, tuple[float, object]]:
    async def device_day():
        out = []
        for key, dev in lamps:
            body = await history.history_query(conn, key, dev, {
                "metric": "power_w", "from": DAY.isoformat(), "to": (DAY + timedelta(days=1)).isoformat()})
            out.append(body["points"])
        return out

    async def ward_week():
        p = await history.read_points(conn, DAY - timedelta(days=3), DAY + timedelta(days=4),
                                      ward_keys, [power])
        part = history.Partials.of_points(p, history.HOUR)
        hours, inv = np.unique(part.b, return_inverse=True)
        return hours.tolist(), np.bincount(inv, weights=part.s).tolist()

    async def latest():
        return points_key(await history.latest_at(conn, DAY + timedelta(hours=12)))

    async def state(at=DAY + timedelta(hours=12)):  # GET /api/v1/state?at= over the city
        devices, _ = await past.state_at(conn, at, past.Scope())
        return [(d.key, d.status, sorted(d.values.items()), sorted(d.times.items())) for d in devices]

    async def state_after():  # an hour after the day: every segment has ended
        return await state(DAY + timedelta(days=1, hours=1))

    n = len(lamps)
    dd_ms, dd = await timed(device_day, rounds)
    ww_ms, ww = await timed(ward_week, rounds)
    la_ms, la = await timed(latest, max(3, rounds // 3))
    st_ms, st = await timed(state, rounds)
    sa_ms, sa = await timed(state_after, rounds)
    return {"device_day": (dd_ms / n, dd), "ward_week": (ww_ms, ww), "latest_at": (la_ms, la),
            "state_at": (st_ms, st), "state_after": (sa_ms, sa)}


async def ward_week_hourly(conn: asyncpg.Connection, ward_keys: list[int], power: int) -> float:
    async def q():
        return await conn.fetch(
            "select hour, sum(sum) from telemetry_hourly where device_key = any($1::int[]) "
            "and metric_id = $2 and hour >= $3 and hour < $4 group by 1 order by 1",
            ward_keys, power, DAY - timedelta(days=3), DAY + timedelta(days=4))
    ms, _ = await timed(q, 5)
    return ms


async def sizes(conn: asyncpg.Connection) -> tuple[int, int]:
    part = f"telemetry_p{DAY:%Y%m%d}"
    return (await conn.fetchval("select pg_total_relation_size($1::regclass)", part),
            await conn.fetchval("select pg_total_relation_size('telemetry_segments')"))


# ---------------------------------------------------------------- the run
async def bench(args: argparse.Namespace, stack: Stack) -> int:
    url = stack.create_database("storage")
    log(f"seeding a city of {args.lamps:,} streetlights")
    stack.seed(url, args.lamps)
    log(f"the simulator's day: {args.minutes} minutes of every device")
    t = time.perf_counter()
    day = await city_day(url, args.minutes)
    points = len(day["ts"])
    conn = await asyncpg.connect(url)
    try:
        power = await conn.fetchval("select id from metrics where name = 'power_w'")
        lamp_points = int(np.isin(day["device"], np.array(
            [r["key"] for r in await conn.fetch("select key from devices where kind = 'streetlight'")]
        )).sum())
        log(f"{points:,} points ({lamp_points:,} of lamps) generated in {time.perf_counter() - t:.1f} s")
        load_s = await load(conn, day)
        log(f"row store: COPY in {load_s:.1f} s ({points / load_s:,.0f} points/s)")
        await conn.execute("vacuum analyze telemetry")
        stack.checkpoint()
        pq_bytes = parquet_bytes(day)
        rng = np.random.default_rng(1)
        lamp_rows = await conn.fetch("select key, id from devices where kind = 'streetlight' order by key")
        lamps = [(lamp_rows[i]["key"], lamp_rows[i]["id"])
                 for i in rng.choice(len(lamp_rows), min(args.sample, len(lamp_rows)), replace=False)]
        ward = await conn.fetchval("select ward from devices where ward is not null "
                                   "group by ward order by count(*) desc limit 1")
        ward_keys = [r["key"] for r in await conn.fetch("select key from devices where ward = $1", ward)]

        raw_bytes, _ = await sizes(conn)
        log("reads from the row store")
        raw = await reads(conn, lamps, ward_keys, power, args.rounds)

        log("compressing")
        cpu0 = own_cpu_seconds() + tree_cpu_seconds(stack.postgres_pid)
        report = await compress.compress_due(conn, DAY + timedelta(days=2, hours=1))
        job_cpu = own_cpu_seconds() + tree_cpu_seconds(stack.postgres_pid) - cpu0
        await conn.execute("vacuum analyze telemetry_segments")
        stack.checkpoint()
        part_bytes, seg_bytes = await sizes(conn)
        packed_bytes = part_bytes + seg_bytes
        log(f"{report.points:,} points into {report.segments:,} segments in {report.seconds:.1f} s "
            f"(encoding {report.encode_seconds:.1f} s)")
        log("reads from the compressed segments")
        packed = await reads(conn, lamps, ward_keys, power, args.rounds)
        same = {k: raw[k][1] == packed[k][1] for k in raw}
        while await history.rollup(conn, DAY + timedelta(days=2)):
            pass
        hourly_ms = await ward_week_hourly(conn, ward_keys, power)
    finally:
        await conn.close()

    bpp_raw, bpp_packed, bpp_pq = raw_bytes / points, packed_bytes / points, pq_bytes / points
    enc_rate = report.points / report.encode_seconds
    job_rate = report.points / report.seconds
    job_cpu_rate = report.points / job_cpu
    rows = [
        ["bytes per point: row store (heap+TOAST+indexes)", f"{bpp_raw:.1f}", "", "baseline"],
        ["bytes per point: Parquet + zstd (pyarrow)", f"{bpp_pq:.2f}", "", "baseline"],
        ["bytes per point: compressed segments", f"{bpp_packed:.2f}", "≤ 3",
         f"{bpp_raw / bpp_packed:.0f}× smaller than the row store"],
        ["compression: encoding, points/s (one core)", f"{enc_rate:,.0f}", "≥ 1,000,000", ""],
        ["compression: whole job, points/s (wall)", f"{job_rate:,.0f}", "", ""],
        ["compression: whole job, points per CPU-second (this process + PostgreSQL)",
         f"{job_cpu_rate:,.0f}", "", "read, encode, COPY of segments, truncate"],
    ]
    for key, label in (("device_day", "device-day raw points (history API), per device, ms"),
                       ("ward_week", f"ward-week hourly aggregate from points ({len(ward_keys)} "
                                     "devices), ms"),
                       ("latest_at", "city-wide latest value at noon (latest_at), ms"),
                       ("state_at", "city-wide state?at= noon (server/live/past.state_at), ms"),
                       ("state_after", "city-wide state?at= 01:00 the day after (segments ended: "
                                       "their tail columns), ms")):
        r, p = raw[key][0], packed[key][0]
        rows.append([label, f"{r:.1f} → {p:.1f}", "compressed ≤ raw",
                     f"{'same answer' if same[key] else 'ANSWERS DIFFER'}; ×{p / r:.2f}"])
    rows.append(["ward-week from the hourly rollups, ms", f"{hourly_ms:.1f}", "", ""])
    console.print(table(f"telemetry storage: {points:,} points of one city day "
                        f"({args.lamps:,} lamps, {lamp_points:,} lamp points)",
                        ["figure", "value", "goal", "note"], rows))

    context(NAME, lamps=args.lamps, points=points, lamp_points=lamp_points, minutes=args.minutes,
            ward_devices=len(ward_keys), sampled_lamps=len(lamps))
    record(NAME, "bytes per point, row store", bpp_raw, "B", baseline="")
    record(NAME, "bytes per point, Parquet + zstd", bpp_pq, "B")
    record(NAME, "bytes per point, compressed", bpp_packed, "B", goal="≤ 3", met=bpp_packed <= 3,
           baseline="row store", ratio=bpp_packed / bpp_raw)
    record(NAME, "compression (encoding), points/s per core", enc_rate, "points/s",
           goal="≥ 1,000,000", met=enc_rate >= 1e6)
    record(NAME, "compression (whole job), points/s", job_rate, "points/s")
    record(NAME, "compression (whole job), points per CPU-second", job_cpu_rate, "points/s")
    for key in raw:
        r, p = raw[key][0], packed[key][0]
        record(NAME, f"{key} latency, compressed", p, "ms", goal="≤ raw", met=p <= r * 1.05,
               baseline="raw", ratio=p / r, note="" if same[key] else "answers differ")
    record(NAME, "ward_week latency, hourly rollups", hourly_ms, "ms")
    return 0 if all(same.values()) else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lamps", type=int, default=2_000, help="streetlights (default 2,000)")
    p.add_argument("--minutes", type=int, default=1440, help="minutes of the day written")
    p.add_argument("--rounds", type=int, default=10, help="rounds of each read (median)")
    p.add_argument("--sample", type=int, default=20, help="lamps read in the device-day round")
    p.add_argument("--quick", action="store_true", help="200 lamps, 3 rounds")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args(argv)
    if args.quick:
        args.lamps, args.rounds, args.sample = 200, 3, 10
    return args


def main(argv: list[str] | None = None) -> int:
    return run_on_stack(bench, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
