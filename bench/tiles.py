"""Vector tiles: our server (uncached, cached) beside TiPg and the raw ST_AsMVT floor.

Everything in one run, on one database, on one tile list (concurrency 8):

1. the stack of ``bench/common.py`` (private PostgreSQL+PostGIS, mosquitto) and a synthetic
   city of ``--lamps`` streetlights (50,000 by default: the size ``research/tiles.md``
   measured TiPg and the floor on, so its figures compare; ``--lamps 100000`` for a bigger
   city, where dense z14-15 tiles of ~4,000 lamps make ST_AsMVT's encoding, which every
   server pays, the larger share), with a ``device_state`` row per device as in a running
   city (statuses spread deterministically);
2. the tile list: every tile of zooms 12-17 over the city's lamps, at most ``--per-zoom``
   of each zoom (a seeded sample), shuffled; the same list for every configuration;
3. the **floor**: the exact statements our server sends (``tiles.sql``), through an asyncpg
   pool of 8 in this process, no HTTP; and the plain-points statement at every zoom (what
   TiPg serves: no aggregates at z12-13), for the TiPg comparison;
4. **our server** (``python -m server serve``) with the tile cache off (``IOC_TILES__CACHE_MB=0``,
   every request is a query) and with it on (after one warm-up pass, every request a hit);
5. **TiPg** from PyPI, installed into ``bench/.venv-tipg`` by this script, served by uvicorn
   (1 worker: a second one was slower on 2 cores, see the research note) on the same
   database, over a view of the same columns (``bench_streetlight``).

The HTTP load comes from **wrk** (a C client, ``bench/tiles_wrk.lua`` cycles the tile list),
installed with apt-get when missing and running as root; a Python client cannot offer
5,000 requests/s on 2 cores. Without wrk the script falls back to an aiohttp client and says
so beside every figure. Nothing here asserts: it prints tiles/s, p50/p99 and the ratios to
the goals (uncached ≥ 4 × TiPg and ≥ 60 % of the floor; cached ≥ 5,000 tiles/s).

    .venv/bin/python bench/tiles.py --quick          # about 3 minutes (+ TiPg install once)
    .venv/bin/python bench/tiles.py                  # 20 s per configuration
    .venv/bin/python bench/tiles.py --layer water_pipe --no-tipg
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import morecantile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    REPO,
    Stack,
    console,
    log,
    machine_line,
    percentile,
    run_on_stack,
    system_busy_seconds,
    table,
)
from report import context as record_context
from report import record

from server.cli.embedded import free_port
from tiles import catalogue, sql
from tiles.config import TilesSettings

TIPG_VENV = REPO / "bench" / ".venv-tipg"
WRK_LUA = REPO / "bench" / "tiles_wrk.lua"
CONCURRENCY = 8
ZOOMS = range(12, 18)
GOAL_VS_TIPG, GOAL_VS_FLOOR, GOAL_CACHED = 4.0, 0.60, 5000.0


@dataclass
class Result:
    name: str
    client: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_bytes: float
    errors: int = 0
    machine_pct: float = 0.0  # CPU of the whole machine, % of one core
    rss_mb: float | None = None  # the server's resident memory after the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# ---------------------------------------------------------------- data and tile list
def prepare_city(stack: Stack, lamps: int) -> str:
    url = stack.create_database("tiles")
    log(f"seeding a city of {lamps:,} streetlights")
    counts = stack.seed(url, lamps)
    log("devices: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        # A running city: every device has a state row (the tiles join it for the status).
        conn.execute(
            "insert into device_state (device_key, status, last_seen) select key,"
            " (array['online','online','online','online','online','online','stale','offline',"
            "'unknown'])[1 + key % 9], now() from devices on conflict do nothing")
        # What TiPg serves: the same columns as our detail tiles (no status: it comes over the
        # websocket), as a view over the registry.
        conn.execute(
            "create or replace view bench_streetlight as"
            " select d.key, d.id, d.kind, d.name, d.ward, d.parent, d.geom from devices d"
            " where d.kind = 'streetlight'")
        conn.execute("vacuum analyze")
    return url


async def layer_of(url: str, name: str) -> catalogue.Layer:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "select k.kind, k.label_en, k.label_vi, bool_and(GeometryType(d.geom) in"
            " ('POINT', 'MULTIPOINT')) as points from kinds k left join devices d on d.kind = k.kind"
            " group by 1, 2, 3")
    finally:
        await conn.close()
    layers = catalogue.build((r[0], r[1], r[2], r[3]) for r in rows)
    if name not in layers:
        raise SystemExit(f"no layer {name!r}; layers: {', '.join(sorted(layers))}")
    return layers[name]


async def tile_list(url: str, layer: catalogue.Layer, per_zoom: int, seed: int = 1) -> list[tuple]:
    conn = await asyncpg.connect(url)
    try:
        where = "where kind = $1" if layer.kind else ""
        args = (layer.kind,) if layer.kind else ()
        box = await conn.fetchrow(
            f"select ST_XMin(e) w, ST_YMin(e) s, ST_XMax(e) e, ST_YMax(e) n from"
            f" (select ST_Extent(geom) e from devices {where}) x", *args)
    finally:
        await conn.close()
    tms = morecantile.tms.get("WebMercatorQuad")
    rng = random.Random(seed)
    out = []
    for z in ZOOMS:
        tiles = [(t.z, t.x, t.y) for t in tms.tiles(box["w"], box["s"], box["e"], box["n"], [z])]
        if len(tiles) > per_zoom:
            tiles = rng.sample(tiles, per_zoom)
        out += tiles
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------- the floor (no HTTP)
async def floor(url: str, layer: catalogue.Layer, tiles: list[tuple], seconds: float,
                warmup: float, statement: str | None = None) -> Result:
    """The layer's statements straight through asyncpg; ``statement`` forces one variant."""
    pool = await asyncpg.create_pool(url, min_size=CONCURRENCY, max_size=CONCURRENCY,
                                     server_settings={"jit": "off"})
    queries = []
    plain = dataclasses.replace(layer, detail_minzoom=0)  # the arguments of the detail statements
    bound = TilesSettings().max_point_features
    for z, x, y in tiles:
        if statement is None:  # the very statement the server runs (a detail tile: count + tile)
            q, args, bounded = sql.tile_statement(layer, sql.bounds(z, x, y), None, bound)
            queries.append((q, args, 1 if bounded else 0))
        else:
            queries.append((statement, sql.query(plain, sql.bounds(z, x, y))[1], 0))
    try:
        await _closed_loop(pool, queries, warmup, record=False)
        busy0 = system_busy_seconds()
        lat, sizes, wall = await _closed_loop(pool, queries, seconds, record=True)
        busy = system_busy_seconds() - busy0
    finally:
        await pool.close()
    return Result("", "asyncpg", len(lat), wall, percentile(lat, 50), percentile(lat, 99),
                  sum(sizes) / max(len(sizes), 1), machine_pct=100 * busy / wall)


async def _closed_loop(pool: asyncpg.Pool, queries: list, seconds: float, record: bool):
    lat: list[float] = []
    sizes: list[int] = []
    state = {"i": random.randrange(len(queries))}
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                state["i"] = (state["i"] + 1) % len(queries)
                q, args, column = queries[state["i"]]
                t0 = time.perf_counter()
                data = await conn.fetchval(q, *args, column=column)
                if record:
                    lat.append((time.perf_counter() - t0) * 1000)
                    sizes.append(len(data or b""))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return lat, sizes, time.perf_counter() - t0


# ---------------------------------------------------------------- HTTP load
def ensure_wrk() -> str | None:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing wrk (apt-get install wrk)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True)
    path = shutil.which("wrk")
    if not path:
        log("[yellow]wrk is not available: falling back to a Python (aiohttp) client, which "
            "cannot offer more than a few thousand requests/s on this machine[/yellow]")
    return path


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNIT_MS[m.group(2)] if m else float("nan")


def _bytes(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * 1024 ** ("B", "KB", "MB", "GB", "TB").index(m.group(2))


def run_wrk(wrk: str, base: str, paths_file: Path, token: str, seconds: float) -> Result:
    env = {**os.environ, "WRK_PATHS": str(paths_file), "WRK_TOKEN": token}
    busy0 = system_busy_seconds()
    proc = subprocess.run(
        [wrk, "-t1", f"-c{CONCURRENCY}", f"-d{max(1, round(seconds))}s", "--latency",
         "--timeout", "30s", "-s", str(WRK_LUA), base],
        env=env, capture_output=True, text=True, check=True)
    out = proc.stdout
    busy = system_busy_seconds() - busy0
    got = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    reqs, wall = int(got.group(1)), _ms(got.group(2) + got.group(3)) / 1000
    # Anchored: "87.50%" closing the thread stats line must not read as the 50th percentile.
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    transfer = _bytes(re.search(r"Transfer/sec:\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    rate = reqs / wall
    return Result("", "wrk", reqs, wall, p50, p99, transfer / rate if rate else 0, errors,
                  100 * busy / wall)


async def run_aiohttp(base: str, paths: list[str], token: str, seconds: float) -> Result:
    import aiohttp

    lat: list[float] = []
    sizes: list[int] = []
    errors = 0
    state = {"i": 0}
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    busy0 = system_busy_seconds()
    async with aiohttp.ClientSession(base, headers=headers) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                state["i"] = (state["i"] + 1) % len(paths)
                t0 = time.perf_counter()
                async with session.get(paths[state["i"]]) as resp:
                    body = await resp.read()
                    if resp.status >= 400:
                        errors += 1
                lat.append((time.perf_counter() - t0) * 1000)
                sizes.append(len(body))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        wall = time.perf_counter() - t0
    busy = system_busy_seconds() - busy0
    return Result("", "aiohttp", len(lat), wall, percentile(lat, 50), percentile(lat, 99),
                  sum(sizes) / max(len(sizes), 1), errors, 100 * busy / wall)


async def one_pass(base: str, paths: list[str], token: str) -> None:
    """Request every path once, 8 at a time."""
    import aiohttp

    todo = iter(paths)
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}) as session:

        async def worker() -> None:
            for path in todo:
                async with session.get(path) as resp:
                    await resp.read()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def load(wrk: str | None, base: str, paths: list[str], paths_file: Path, token: str,
               seconds: float) -> Result:
    if wrk:
        return await asyncio.to_thread(run_wrk, wrk, base, paths_file, token, seconds)
    return await run_aiohttp(base, paths, token, seconds)


def check_paths(base: str, paths: list[str], token: str) -> None:
    """Every tile of the list answers 200 or 204 (a benchmark of 404s measures nothing)."""
    bad = []
    for p in paths[:: max(1, len(paths) // 40)]:
        req = urllib.request.Request(base + p, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                if resp.status not in (200, 204):
                    bad.append((p, resp.status))
        except OSError as err:
            bad.append((p, str(err)))
    if bad:
        raise RuntimeError(f"tile requests fail on {base}: {bad[:3]}")


# ---------------------------------------------------------------- TiPg
def ensure_tipg() -> Path:
    uvicorn = TIPG_VENV / "bin" / "uvicorn"
    if uvicorn.exists():
        return uvicorn
    log(f"installing TiPg from PyPI into {TIPG_VENV} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(TIPG_VENV)], check=True)
    subprocess.run([str(TIPG_VENV / "bin" / "pip"), "install", "-q", "tipg", "uvicorn"], check=True)
    return uvicorn


class TipgServer:
    def __init__(self, url: str, log_path: Path) -> None:
        self.url = url
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, uvicorn: Path, timeout: float = 90) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "TIPG_DB_TABLES": '["public.bench_streetlight"]',
            "TIPG_SET_MVT_LAYERNAME": "true",
        }
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(uvicorn), "tipg.main:app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1", "--no-access-log", "--log-level", "warning"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"TiPg exited while starting; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base + "/collections/public.bench_streetlight",
                                            timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"TiPg not ready within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- the run
def _paths(prefix: str, tiles: list[tuple], suffix: str) -> list[str]:
    return [f"{prefix}/{z}/{x}/{y}{suffix}" for z, x, y in tiles]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


async def bench(args: argparse.Namespace, stack: Stack) -> None:
    t0 = time.perf_counter()
    url = prepare_city(stack, args.lamps)
    log(f"city of {args.lamps:,} lamps built in {time.perf_counter() - t0:.0f} s")
    layer = await layer_of(url, args.layer)
    if layer.source == "kind" and layer.geometry == "point":
        figures = await scale(args, stack, url, layer)
        report_scale(figures, args.lamps)
        if args.scale_only:
            return
    tiles = await tile_list(url, layer, args.per_zoom)
    per_zoom = {z: sum(1 for t in tiles if t[0] == z) for z in ZOOMS}
    log(f"tile list: {len(tiles)} tiles of layer {layer.id} "
        f"({', '.join(f'z{z} {n}' for z, n in per_zoom.items())}); "
        f"aggregates below z{layer.detail_minzoom}")
    token = stack.token(url, "viewer")
    wrk = ensure_wrk()
    results: dict[str, Result] = {}
    secs, warm = args.duration, args.warmup

    log("floor: our statements through asyncpg")
    results["floor"] = await floor(url, layer, tiles, secs, warm)
    results["floor"].name = "raw ST_AsMVT, our statements (floor)"
    if layer.source == "kind" and layer.detail_minzoom:
        log("floor: plain points at every zoom (TiPg's content)")
        stmt = sql.DEVICE_POINTS if not layer.simplify() else sql.DEVICE_SIMPLIFIED
        results["floor_points"] = await floor(url, layer, tiles, secs, warm, statement=stmt)
        results["floor_points"].name = "raw ST_AsMVT, points at every zoom (no aggregates)"

    ours = _paths(f"/tiles/{layer.id}", tiles, ".mvt")
    ours_file = _write(stack.dir / "paths-ours.txt", ours)
    # The rate limiter is for runaway API clients; a benchmark is one on purpose.
    for name, cache_mb in (("uncached", "0"), ("cached", "256")):
        srv = stack.start_server(url, extra_env={"IOC_TILES__CACHE_MB": cache_mb,
                                                 "IOC_API__RATE_LIMIT": "false"})
        try:
            check_paths(srv.base_url, ours, token)
            log(f"our server, cache {'off' if cache_mb == '0' else 'on'}: warm-up")
            if name == "cached":
                await one_pass(srv.base_url, ours, token)  # every tile of the list is cached now
            else:
                await load(wrk, srv.base_url, ours, ours_file, token, warm)
            log(f"our server, {name}: measuring {secs:.0f} s")
            results[name] = await load(wrk, srv.base_url, ours, ours_file, token, secs)
            results[name].name = f"our server, {name}"
            results[name].rss_mb = srv.rss_mb()
        finally:
            srv.stop()

    if args.tipg:
        uvicorn = ensure_tipg()
        tipg = TipgServer(url, stack.dir / "tipg.log")
        try:
            tipg.start(uvicorn)
            theirs = _paths("/collections/public.bench_streetlight/tiles/WebMercatorQuad", tiles, "")
            theirs_file = _write(stack.dir / "paths-tipg.txt", theirs)
            check_paths(tipg.base, theirs, token)
            log("TiPg: warm-up")
            await load(wrk, tipg.base, theirs, theirs_file, token, warm)
            log(f"TiPg: measuring {secs:.0f} s")
            results["tipg"] = await load(wrk, tipg.base, theirs, theirs_file, token, secs)
            results["tipg"].name = "TiPg 1 worker (uvicorn), plain points"
        finally:
            tipg.stop()
    report(results, layer, tiles, wrk)
    record_figures(results, layer, tiles, wrk, args)


# ---------------------------------------------------------------- scale (issue 18 point 8)
@dataclass
class Figure:
    name: str
    ms: float  # median of the repetitions
    kib: float
    note: str = ""


async def _densest(url: str, kind: str, z: int) -> tuple[int, int, int, int]:
    """The tile of zoom ``z`` holding the most devices of ``kind`` (the grid's level-z cells are
    the tiles of zoom z) and that number."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql.FOLD_GRID)
        row = await conn.fetchrow("select cx, cy, n from tile_grid where kind = $1 and level = $2"
                                  " order by n desc limit 1", kind, z)
    finally:
        await conn.close()
    return z, row["cx"], row["cy"], row["n"]


async def _timed_statement(url: str, statement: str, args: tuple, reps: int) -> tuple[float, int]:
    conn = await asyncpg.connect(url, server_settings={"jit": "off"})
    try:
        await conn.fetchval(statement, *args)  # prepared, cached pages
        times, size = [], 0
        for _ in range(reps):
            t0 = time.perf_counter()
            size = len(await conn.fetchval(statement, *args) or b"")
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        await conn.close()
    return percentile(times, 50), size


def _timed_get(base: str, path: str, token: str, reps: int, gzip_ok: bool = False) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {token}",
               "Accept-Encoding": "gzip" if gzip_ok else "identity"}
    times, size = [], 0
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), timeout=120) as r:
            size = len(r.read())
        times.append((time.perf_counter() - t0) * 1000)
    return percentile(times[1:], 50), size


async def _ws_snapshot(base: str, token: str, bbox: list[float], zoom: int,
                       reps: int) -> tuple[float, int, dict]:
    import aiohttp
    import orjson

    times, size, head = [], 0, {}
    async with aiohttp.ClientSession() as session, session.ws_connect(
            base + "/api/v1/ws", headers={"Authorization": f"Bearer {token}"},
            max_msg_size=256 * 2**20) as ws:
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            await ws.send_str(orjson.dumps({"op": "subscribe", "bbox": bbox, "layers": ["streetlight"],
                                            "zoom": zoom}).decode())
            while True:
                msg = await ws.receive(timeout=120)
                doc = orjson.loads(msg.data)
                if isinstance(doc, dict) and doc.get("type") == "snapshot":
                    break
            times.append((time.perf_counter() - t0) * 1000)
            size = len(msg.data)
            head = {k: (len(v) if isinstance(v, list) else v) for k, v in doc.items()}
    return percentile(times[1:], 50), size, head


# The grid's triggers a mass change fires once per row (migration 0018_tile_grid); the same
# statement with them disabled is the baseline. Each runs in a transaction that is rolled back.
UPKEEP = {
    "status change (a gateway drops)": (
        "update device_state set status = case when status = 'offline' then 'online' else 'offline' end"
        " where device_key in (select key from devices where kind = $1 order by key limit $2)",
        {"device_state": ["tile_grid_state_changed"]}),
    "delete (cascading to their state)": (
        "delete from devices where key in (select key from devices where kind = $1 order by key limit $2)",
        {"devices": ["tile_grid_device_removed"], "device_state": ["tile_grid_state_removed"]}),
}


async def _grid_upkeep(url: str, kind: str, n: int, reps: int) -> list[Figure]:
    """What the grid's row triggers add to a mass status change and a mass delete of ``n``
    devices, and what folding their log then takes."""
    out: list[Figure] = []
    conn = await asyncpg.connect(url, server_settings={"jit": "off"})
    try:
        for what, (statement, triggers) in UPKEEP.items():
            times: dict[bool, list[float]] = {True: [], False: []}
            fold: list[float] = []
            for _ in range(max(1, reps // 2)):
                for on in (False, True):
                    tr = conn.transaction()
                    await tr.start()
                    try:
                        if not on:
                            for table_name, names in triggers.items():
                                for name in names:
                                    await conn.execute(f"alter table {table_name} disable trigger {name}")
                        t0 = time.perf_counter()
                        await conn.execute(statement, kind, n)
                        times[on].append((time.perf_counter() - t0) * 1000)
                        if on:
                            t0 = time.perf_counter()
                            await conn.fetchval(sql.FOLD_GRID)
                            fold.append((time.perf_counter() - t0) * 1000)
                    finally:
                        await tr.rollback()
            base, kept = percentile(times[False], 50), percentile(times[True], 50)
            out.append(Figure(f"{what} of {n:,} devices, without the grid's triggers (baseline)", base, 0))
            out.append(Figure(f"{what} of {n:,} devices, with the grid kept", kept, 0,
                              f"+{(kept - base) / n * 1000:,.1f} µs a device"))
            out.append(Figure(f"{what}: folding the grid log afterwards", percentile(fold, 50), 0))
    finally:
        await conn.close()
    return out


async def scale(args: argparse.Namespace, stack: Stack, url: str, layer: catalogue.Layer) -> list[Figure]:
    """The dense city's figures: the densest z14 (detail) and z12 (aggregate) tiles, uncached,
    through the server and as bare statements (the grid read beside counting every lamp, which
    is what the z12 tile did before the grid), what keeping the grid adds to a mass status
    change and a mass delete, and the websocket snapshot of the whole city."""
    reps = args.reps
    token = stack.token(url, "viewer")
    out: list[Figure] = []
    z14 = await _densest(url, layer.kind, 14)
    z12 = await _densest(url, layer.kind, 12)
    for z, x, y, n in (z12, z14):
        t = sql.bounds(z, x, y)
        if layer.aggregated(z):
            for grid, name in ((True, "grid counts (tile_grid)"), (False, "counting every lamp (before)")):
                stmt, a = sql.query(layer, t, grid=grid)
                ms, size = await _timed_statement(url, stmt, a, reps)
                out.append(Figure(f"z{z} tile {z}/{x}/{y} ({n:,} lamps), statement: {name}", ms, size / 1024))
        else:
            stmt, a = sql.query(layer, t)  # what the tile held before max_point_features
            ms, size = await _timed_statement(url, stmt, a, reps)
            out.append(Figure(f"z{z} tile {z}/{x}/{y} ({n:,} lamps), statement: every lamp listed (before)",
                              ms, size / 1024))
    out += await _grid_upkeep(url, layer.kind, max(1_000, args.lamps // 10), reps)
    conn = await asyncpg.connect(url)
    try:
        box = await conn.fetchrow("select ST_XMin(e) w, ST_YMin(e) s, ST_XMax(e) e, ST_YMax(e) n from"
                                  " (select ST_Extent(geom) e from devices where kind = $1) x", layer.kind)
    finally:
        await conn.close()
    bbox = [round(v, 6) for v in (box["w"], box["s"], box["e"], box["n"])]
    for label, env in (("", {}), (" (before: no cells, max_snapshot 50,000)",
                                  {"IOC_HUB__MAX_SNAPSHOT_DEVICES": "1000000000"})):
        srv = stack.start_server(url, extra_env={"IOC_TILES__CACHE_MB": "0", "IOC_API__RATE_LIMIT": "false",
                                                 **env})
        try:
            if not label:
                for z, x, y, n in (z14, z12):
                    path = f"/tiles/{layer.id}/{z}/{x}/{y}.mvt"
                    ms, size = _timed_get(srv.base_url, path, token, reps)
                    _, gz = _timed_get(srv.base_url, path, token, 1, gzip_ok=True)
                    out.append(Figure(f"z{z} tile {z}/{x}/{y} ({n:,} lamps), our server uncached", ms,
                                      size / 1024, f"gzip {gz / 1024:,.1f} KiB"))
            ms, size, head = await _ws_snapshot(srv.base_url, token, bbox, 12, reps)
            shape = ", ".join(f"{k} {v}" for k, v in head.items() if k != "type")
            out.append(Figure(f"websocket snapshot, whole city, zoom 12{label}", ms, size / 1024, shape))
        finally:
            srv.stop()
    return out


def report_scale(figures: list[Figure], lamps: int) -> None:
    console.print(table(f"Scale: {lamps:,} lamps (median of the repetitions, one client, nothing cached)",
                        ["what", "ms", "KiB", ""],
                        [[f.name, f"{f.ms:,.1f}", f"{f.kib:,.1f}", f.note] for f in figures]))
    for f in figures:
        record("tiles", f"{lamps:,} lamps: {f.name}", f.ms, "ms", note=f"{f.kib:,.1f} KiB {f.note}".strip())


def record_figures(results: dict[str, Result], layer: catalogue.Layer, tiles: list, wrk: str | None,
                   args: argparse.Namespace) -> None:
    """The figures and goals for bench/REPORT.md (``bench/report.py``; nothing when run by hand)."""
    record_context("tiles", layer=layer.id, lamps=f"{args.lamps:,}", tiles=f"{len(tiles)} at z12-17",
                   concurrency=CONCURRENCY, seconds=f"{args.duration:.0f} per configuration",
                   http=("wrk -t1 -c8" if wrk else "aiohttp fallback (wrk missing: caps the rate)"))
    fl, fp = results.get("floor"), results.get("floor_points")
    unc, cac, tipg = results.get("uncached"), results.get("cached"), results.get("tipg")
    http_note = "" if wrk else "aiohttp fallback client"

    def ratio(a: Result | None, b: Result | None) -> float | None:
        return a.rate / b.rate if a and b and b.rate else None

    def note(r: Result) -> str:
        parts = [http_note] if r.client != "asyncpg" and http_note else []
        if r.errors:
            parts.append(f"{r.errors} errors")
        return "; ".join(parts)

    def latencies(r: Result) -> None:
        record("tiles", f"{r.name}: p50", r.p50_ms, "ms", note=note(r))
        record("tiles", f"{r.name}: p99", r.p99_ms, "ms", note=note(r))

    floor_name = "raw ST_AsMVT (our statements)"
    if fl:
        record("tiles", f"{fl.name}: tiles/s", fl.rate, "tiles/s", note="the floor: no HTTP")
        latencies(fl)
    if fp:
        record("tiles", f"{fp.name}: tiles/s", fp.rate, "tiles/s", note="TiPg's content, no HTTP")
    if unc:
        r = ratio(unc, fl)
        record("tiles", f"{unc.name}: tiles/s", unc.rate, "tiles/s",
               goal=f"≥ {GOAL_VS_FLOOR:.2f} × the floor", met=None if r is None else r >= GOAL_VS_FLOOR,
               baseline=floor_name, ratio=r, note=note(unc))
        if tipg:
            r = ratio(unc, tipg)
            record("tiles", f"{unc.name}: tiles/s vs TiPg", unc.rate, "tiles/s",
                   goal=f"≥ {GOAL_VS_TIPG:.0f} × TiPg", met=r is not None and r >= GOAL_VS_TIPG,
                   baseline="TiPg", ratio=r, note=note(unc))
        latencies(unc)
    if cac:
        record("tiles", f"{cac.name}: tiles/s", cac.rate, "tiles/s", goal=f"≥ {GOAL_CACHED:,.0f} tiles/s",
               met=cac.rate >= GOAL_CACHED, baseline="TiPg" if tipg else None, ratio=ratio(cac, tipg),
               note=note(cac))
        latencies(cac)
    if tipg:
        record("tiles", f"{tipg.name}: tiles/s", tipg.rate, "tiles/s",
               baseline="raw ST_AsMVT (plain points)" if fp else None, ratio=ratio(tipg, fp),
               note=note(tipg))
        latencies(tipg)


def report(results: dict[str, Result], layer: catalogue.Layer, tiles: list, wrk: str | None) -> None:
    rows = []
    for r in results.values():
        rows.append([r.name, r.client, f"{r.requests:,}", f"{r.rate:,.0f}", f"{r.p50_ms:.1f}",
                     f"{r.p99_ms:.1f}", f"{r.mean_bytes / 1024:,.1f}", str(r.errors),
                     f"{r.machine_pct:.0f} %", f"{r.rss_mb:.0f}" if r.rss_mb else ""])
    console.print(table(
        f"Layer {layer.id}: {len(tiles)} tiles z12-z17, concurrency {CONCURRENCY}",
        ["configuration", "client", "requests", "tiles/s", "p50 ms", "p99 ms", "mean KiB", "errors",
         "machine CPU (of 200 %)", "server RSS MiB"], rows))
    ratios = []
    unc, cac = results.get("uncached"), results.get("cached")
    tipg, fl = results.get("tipg"), results.get("floor")
    if unc and tipg:
        ratios.append(["uncached ÷ TiPg", f"{unc.rate / tipg.rate:.1f} ×", f"≥ {GOAL_VS_TIPG:.0f} ×",
                       "met" if unc.rate / tipg.rate >= GOAL_VS_TIPG else "NOT met"])
    if unc and fl:
        ratios.append(["uncached ÷ floor (our statements)", f"{100 * unc.rate / fl.rate:.0f} %",
                       f"≥ {100 * GOAL_VS_FLOOR:.0f} %",
                       "met" if unc.rate / fl.rate >= GOAL_VS_FLOOR else "NOT met"])
    if tipg and results.get("floor_points"):
        fp = results["floor_points"]
        ratios.append(["TiPg ÷ floor (plain points, its content)", f"{100 * tipg.rate / fp.rate:.0f} %",
                       "", "for reference"])
    if cac:
        ratios.append(["cached tiles/s", f"{cac.rate:,.0f}", f"≥ {GOAL_CACHED:,.0f}",
                       "met" if cac.rate >= GOAL_CACHED else "NOT met"])
    if ratios:
        console.print(table("Goals", ["ratio", "measured", "goal", ""], ratios))
    if not wrk:
        console.print("[yellow]HTTP figures come from the aiohttp fallback client, which shares the "
                      "2 cores and caps the rate: install wrk for real figures[/yellow]")
    console.print(f"HTTP load: {'wrk -t1 -c8 (bench/tiles_wrk.lua)' if wrk else 'aiohttp, 8 workers'}; "
                  "the floor: asyncpg pool of 8 in this process. The figures of a busy machine "
                  "move by ±30 % between runs; compare ratios from one run.")
    console.print(machine_line())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lamps", type=int, default=50_000,
                   help="streetlights in the synthetic city (default 50,000, as research/tiles.md)")
    p.add_argument("--layer", default="streetlight", help="tile layer to measure")
    p.add_argument("--per-zoom", type=int, default=150, help="at most this many tiles per zoom")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured per configuration")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up per configuration")
    p.add_argument("--no-tipg", dest="tipg", action="store_false", help="skip TiPg")
    p.add_argument("--quick", action="store_true", help="8 s per configuration, 3 s warm-up")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server and TiPg logs)")
    p.add_argument("--scale-only", action="store_true",
                   help="only the scale figures (densest z14 and z12 tiles, websocket snapshot)")
    p.add_argument("--reps", type=int, default=7, help="repetitions of each scale figure (median)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 8.0, 3.0
    if args.tipg and args.layer != "streetlight":
        log("TiPg is measured on the streetlight view only: --no-tipg for other layers")
        args.tipg = False
    return args


def main(argv: list[str] | None = None) -> int:
    return run_on_stack(bench, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
