"""Websocket fan-out: MQTT publish → ingest → hub → 100 map clients, end to end.

    .venv/bin/python bench/ws.py --quick               # 10 s, to check it works
    .venv/bin/python bench/ws.py                       # 60 s, 5,000 updates/s, 100 clients
    .venv/bin/python bench/ws.py --no-coalesce         # one message per frame (the default protocol)

The whole stack runs on this machine (``bench/common.py``): PostgreSQL with fsync on, a
private mosquitto, the seeded city and ``ioc serve`` as its own process, so its CPU and
memory are its own.

What is measured:

1. ``--clients`` websocket clients, spread over ``--client-procs`` processes (aiohttp,
   orjson), each subscribed to a viewport over the city: a rectangle ``--viewport`` of the
   city's width and height (default a quarter of each, 1/16 of its area, about what an
   operator's screen shows at zoom 14-15), placed at random (seeded) over the
   streetlights, layer ``streetlight``. Subscribing measures the snapshot: time from
   ``subscribe`` to the snapshot and its size.
2. ``--publishers`` paho-mqtt processes (``bench/ingest.py``'s, QoS 1) publish ``--rate``
   state updates/s (one message of 5 readings per device update, round-robin over the
   streetlights) for ``--duration`` seconds. Each message's ``ts`` is its publish time in
   ms, and the hub's state message carries that ``ts``, so a client's receive time minus
   ``ts`` is the **delivery latency publish → MQTT → ingest commit → hub → client**
   (same clock: one machine). p50/p90/p99/max are over the steady part (after the first
   20 % or 5 s of publishing), from exact 1 ms histograms merged across client processes.
3. Deliveries: state messages received against the updates that fell in each client's
   viewport (fewer means conflation for a client that was behind, or a disconnect); the
   server's ``ioc_ws_*`` counters (messages sent, conflated, slow clients disconnected).
4. The server's RSS before the clients connect, with them subscribed, and the most
   during the run; CPU % of one core for the server, mosquitto, PostgreSQL, the
   publishers, the client processes and the whole machine.

By default clients ask for ``"coalesce": true`` (several messages per frame as a JSON
array, what the IOC map does); ``--no-coalesce`` measures one frame per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import numpy as np

BENCH = Path(__file__).resolve().parent
# The repository before bench/ (the script's own directory, sys.path[0]): bench/tiles.py must
# not shadow the tiles package; bench/'s common and ingest are still found after it.
sys.path[:0] = [str(BENCH.parent)]
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

from common import (  # noqa: E402
    Stack,
    console,
    cpu_percent,
    cpu_snapshot,
    log,
    machine_line,
    percentile,
    run_on_stack,
    table,
)
from ingest import (  # noqa: E402
    READINGS_PER_MSG,
    Probe,
    Publishers,
    _stored,
    latency_sampler,
    probe_ids,
)
from report import context as record_context  # noqa: E402
from report import record  # noqa: E402

GOAL_P99_MS = 250.0
HIST_MS = 60_000  # latency histogram bins: 1 ms each up to a minute (more goes in the last)


# ================================================================ client processes
def _ts_ms(ts: str, cache: dict[str, int]) -> int:
    """RFC 3339 with ms and Z (the hub's form) → epoch ms, with the seconds part cached."""
    head = ts[:19]
    base = cache.get(head)
    if base is None:
        base = cache[head] = int(datetime.fromisoformat(head + "+00:00").timestamp()) * 1000
        if len(cache) > 10_000:
            cache.clear()
    return base + int(ts[20:23])


def clients_main(idx: int, base_url: str, token: str, jobs: list[tuple[int, list[float]]],
                 coalesce: bool, ctl: mp.Queue, results: mp.Queue, received) -> None:
    try:
        out = asyncio.run(_clients(base_url, token, jobs, coalesce, ctl, results, received))
        results.put(("done", idx, out))
    except Exception as err:  # report, do not hang the parent
        results.put(("error", idx, f"{type(err).__name__}: {err}"))


async def _clients(base_url: str, token: str, jobs, coalesce: bool, ctl: mp.Queue,
                   results: mp.Queue, received) -> dict:
    import orjson
    import psutil

    hist = np.zeros(HIST_MS + 1, np.int64)
    per_client = {}
    closes: list[tuple[int, int | None, str]] = []
    window = {"lo": float("inf"), "hi": float("inf")}  # steady window, publish ms
    stop = asyncio.Event()
    snapshots: list[tuple[float, int]] = []
    cache: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(cid: int, bbox: list[float], ready: asyncio.Event) -> None:
            n = frames = 0
            lat = []
            async with session.ws_connect(f"{base_url}/api/v1/ws",
                                          headers={"Authorization": f"Bearer {token}"},
                                          max_msg_size=0) as ws:
                t0 = time.perf_counter()
                await ws.send_str(orjson.dumps({"op": "subscribe", "bbox": bbox,
                                                "layers": ["streetlight"],
                                                "coalesce": coalesce}).decode())
                while True:
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise RuntimeError(f"client {cid}: {msg.type.name} before the snapshot")
                    doc = orjson.loads(msg.data)
                    docs = doc if isinstance(doc, list) else [doc]
                    snap = next((d for d in docs if d["type"] == "snapshot"), None)
                    if snap is not None:
                        snapshots.append((time.perf_counter() - t0, len(snap["devices"])))
                        break
                ready.set()
                while not stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        closes.append((cid, ws.close_code, str(msg.extra or msg.data)))
                        break
                    now = time.time_ns() // 1_000_000
                    frames += 1
                    doc = orjson.loads(msg.data)
                    before = n
                    for d in doc if isinstance(doc, list) else (doc,):
                        if d["type"] != "state":
                            continue
                        n += 1
                        ts = _ts_ms(d["ts"], cache)
                        if window["lo"] <= ts <= window["hi"]:
                            lat.append(now - ts)
                    received.value += n - before  # the parent watches deliveries settle
            if lat:
                a = np.minimum(np.maximum(np.asarray(lat, np.int64), 0), HIST_MS)
                np.add.at(hist, a, 1)
            per_client[cid] = {"states": n, "frames": frames}

        readies = [asyncio.Event() for _ in jobs]
        tasks = [asyncio.create_task(one(cid, bbox, r)) for (cid, bbox), r in zip(jobs, readies,
                                                                                   strict=True)]
        # Connect in small waves: 100 snapshots at once are a burst no map sees.
        for i in range(0, len(tasks), 10):
            await asyncio.wait([asyncio.create_task(r.wait()) for r in readies[i:i + 10]],
                               timeout=60)
            for t in tasks[i:i + 10]:
                if t.done() and t.exception():
                    raise t.exception()
        results.put(("ready", None, None))
        loop = asyncio.get_running_loop()
        lo, hi = await loop.run_in_executor(None, ctl.get)  # the steady window, epoch ms
        window["lo"], window["hi"] = lo, hi
        proc = psutil.Process()
        c0 = proc.cpu_times()
        await loop.run_in_executor(None, ctl.get)  # stop
        c1 = proc.cpu_times()
        stop.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [repr(e) for e in done if isinstance(e, BaseException)]
    return {"hist": hist, "clients": per_client, "closes": closes, "snapshots": snapshots,
            "errors": errors, "cpu_s": (c1.user + c1.system) - (c0.user + c0.system)}


class ClientProcs:
    def __init__(self, n: int, base_url: str, token: str, viewports: list[list[float]],
                 coalesce: bool) -> None:
        self.ctx = mp.get_context("spawn")
        self.results = self.ctx.Queue()
        self.ctls = [self.ctx.Queue() for _ in range(n)]
        self.counters = [self.ctx.Value("q", 0, lock=False) for _ in range(n)]
        jobs = list(enumerate(viewports))
        self.procs = [
            self.ctx.Process(target=clients_main, daemon=True, name=f"bench-ws-{i}",
                             args=(i, base_url, token, jobs[i::n], coalesce, self.ctls[i],
                                   self.results, self.counters[i]))
            for i in range(n)
        ]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid]

    def received(self) -> int:
        return sum(c.value for c in self.counters)

    async def start(self) -> None:
        for p in self.procs:
            p.start()
        for _ in self.procs:
            kind, idx, info = await asyncio.to_thread(self.results.get, True, 300)
            if kind == "error":
                raise RuntimeError(f"client process {idx}: {info}")

    def window(self, lo_ms: int, hi_ms: int) -> None:
        for q in self.ctls:
            q.put((lo_ms, hi_ms))

    async def stop(self) -> list[dict]:
        for q in self.ctls:
            q.put("stop")
        out = []
        for _ in self.procs:
            kind, idx, info = await asyncio.to_thread(self.results.get, True, 120)
            if kind == "error":
                raise RuntimeError(f"client process {idx}: {info}")
            out.append(info)
        for p in self.procs:
            p.join(5)
        return out

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(2)


# ================================================================ the run
@dataclass
class Result:
    rate: int
    clients: int
    coalesce: bool
    sent: int = 0
    publish_rate: float = 0.0
    expected: float = 0.0  # state updates that fell in some client's viewport
    received: int = 0
    frames: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_MS + 1, np.int64))
    snapshots: list[tuple[float, int]] = field(default_factory=list)
    closes: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    rss_idle: float = 0.0
    rss_subscribed: float = 0.0
    rss_max: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    server_metrics: dict[str, float] = field(default_factory=dict)
    queued_max: float = 0.0
    window_s: float = 0.0
    commit_lat: list[float] = field(default_factory=list)  # ms, sampled
    drain_s: float = 0.0  # last publish → deliveries settled (includes the 2 s of quiet)

    def pct(self, q: float) -> float:
        total = self.hist.sum()
        if not total:
            return float("nan")
        return float(np.searchsorted(np.cumsum(self.hist), q / 100 * total))


def viewports(positions: np.ndarray, n: int, frac: float, seed: int) -> list[list[float]]:
    """``n`` rectangles ``frac`` of the streetlights' extent on each side, centred on
    random streetlights (so none is empty), seeded."""
    rng = random.Random(seed)
    x0, y0 = positions.min(axis=0)
    x1, y1 = positions.max(axis=0)
    w, h = (x1 - x0) * frac, (y1 - y0) * frac
    out = []
    for _ in range(n):
        cx, cy = positions[rng.randrange(len(positions))]
        out.append([float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2)])
    return out


def share_in(positions: np.ndarray, boxes: list[list[float]]) -> np.ndarray:
    """Per viewport, how many of the streetlights it holds."""
    b = np.asarray(boxes)
    x, y = positions[:, 0], positions[:, 1]
    inside = ((x[None, :] >= b[:, 0:1]) & (x[None, :] <= b[:, 2:3])
              & (y[None, :] >= b[:, 1:2]) & (y[None, :] <= b[:, 3:4]))
    return inside.sum(axis=1)


async def run(args, stack: Stack, srv, url: str, token: str, ids: list[str],
              positions: np.ndarray) -> Result:
    res = Result(args.rate, args.clients, args.coalesce)
    boxes = viewports(positions, args.clients, args.viewport, args.seed)
    per_box = share_in(positions, boxes)
    log(f"viewports: {args.clients} of {args.viewport:.0%} × {args.viewport:.0%} of the city, "
        f"streetlights per viewport mean {per_box.mean():.0f}, min {per_box.min()}, "
        f"max {per_box.max()} of {len(ids):,}")
    async with contextlib.AsyncExitStack() as ex:
        session = await ex.enter_async_context(aiohttp.ClientSession())
        probe = Probe(session, srv.base_url, token)
        res.rss_idle = srv.rss_mb()
        procs = ClientProcs(args.client_procs, srv.base_url, token, boxes, args.coalesce)
        ex.callback(procs.kill)
        t = time.perf_counter()
        await procs.start()
        log(f"{args.clients} clients subscribed in {time.perf_counter() - t:.1f} s")
        await asyncio.sleep(1.0)
        res.rss_subscribed = srv.rss_mb()
        pubs = Publishers(args.publishers, stack.mqtt.host, stack.mqtt.port, ids, args.rate,
                          args.duration)
        ex.callback(pubs.kill)
        m0 = await probe.get()
        start_at = await pubs.start()
        skip = min(5.0, 0.2 * args.duration)
        procs.window(int((start_at + skip) * 1000), int((start_at + args.duration) * 1000))
        groups = {"server": [srv.pid], "mosquitto": [stack.mosquitto_pid],
                  "postgres": [stack.postgres_pid], "clients": procs.pids, "bench": [0]}
        # Publish → commit, sampled as bench/ingest.py does: the part of the latency that
        # is ingest's, so the hub's share is the difference.
        stop = asyncio.Event()
        samples: list[tuple[float, float, float]] = []
        sampler = asyncio.create_task(latency_sampler(url, stop, samples, [],
                                                      probe_ids(ids, args.publishers)))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        c0 = cpu_snapshot(groups)
        pub_task = asyncio.create_task(pubs.wait(args.duration + 90))
        while not pub_task.done():
            await asyncio.wait({pub_task}, timeout=1.0)
            m = await probe.get()
            res.queued_max = max(res.queued_max, m.get("ioc_ws_queued", 0.0))
            res.rss_max = max(res.rss_max, srv.rss_mb())
        c1 = cpu_snapshot(groups)
        pub = pub_task.result()
        # Drain: every reading committed, then the clients' counts still for 2 s.
        target = pub["sent"] * READINGS_PER_MSG
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end:
            m = await probe.get()
            res.rss_max = max(res.rss_max, srv.rss_mb())
            if _stored(m) - _stored(m0) >= target:
                break
            await asyncio.sleep(0.2)
        last, still = -1, time.monotonic()
        while time.monotonic() < t_end and time.monotonic() - still < 2.0:
            n = procs.received()
            if n != last:
                last, still = n, time.monotonic()
            await asyncio.sleep(0.2)
        res.drain_s = time.time() - pub["t_last"]
        res.rss_max = max(res.rss_max, srv.rss_mb())
        m1 = await probe.get()
        stop.set()
        await sampler
        outs = await procs.stop()
    res.commit_lat = [a * 1000 for t, a, _ in samples
                      if start_at + skip <= t <= start_at + args.duration]
    res.cpu = cpu_percent(c0, c1)
    res.window_s = c1.wall - c0.wall
    res.cpu["publishers"] = 100 * pub["cpu_s"] / max(res.window_s, 1e-9)
    res.cpu["clients"] = 100 * sum(o["cpu_s"] for o in outs) / max(res.window_s, 1e-9)
    res.cpu["other"] = res.cpu["machine"] - sum(
        res.cpu[k] for k in ("server", "mosquitto", "postgres", "publishers", "clients", "bench"))
    res.sent = pub["sent"]
    res.publish_rate = res.sent / max(pub["t_last"] - pub["t_first"], 1e-9)
    # Each device is updated sent/len(ids) times; a viewport with k lamps expects k of those.
    res.expected = res.sent / len(ids) * float(per_box.sum())
    for o in outs:
        res.hist += o["hist"]
        res.snapshots += o["snapshots"]
        res.closes += o["closes"]
        res.errors += o["errors"]
        for c in o["clients"].values():
            res.received += c["states"]
            res.frames += c["frames"]
    res.server_metrics = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in (
        "ioc_ws_messages_sent_total", "ioc_ws_conflated_total", "ioc_ws_disconnected_slow_total",
        "ioc_readings_stored_total")}
    res.server_metrics["ioc_ws_clients"] = m1.get("ioc_ws_clients", 0.0)
    return res


def report(args, r: Result) -> None:
    snap_ms = sorted(s * 1000 for s, _ in r.snapshots)
    snap_n = [n for _, n in r.snapshots]
    p99 = r.pct(99)
    rows = [
        ["clients / client processes", f"{r.clients} / {args.client_procs}", ""],
        ["frames", "JSON arrays (coalesce)" if r.coalesce else "one message per frame", ""],
        ["state updates offered / published", f"{r.rate:,}/s / {r.publish_rate:,.0f}/s "
                                              f"({r.sent:,} in {args.duration:.0f} s)", ""],
        ["readings stored (server)", f"{r.server_metrics['ioc_readings_stored_total']:,.0f} of "
                                     f"{r.sent * READINGS_PER_MSG:,}", ""],
        ["state messages expected in viewports", f"{r.expected:,.0f} "
                                                 f"({r.expected / max(r.window_s, 1e-9):,.0f}/s, "
                                                 f"{r.expected / max(r.window_s, 1e-9) / r.clients:,.0f}"
                                                 "/s per client)", ""],
        ["state messages received", f"{r.received:,} ({100 * r.received / max(r.expected, 1):.1f} %), "
                                    f"{r.frames:,} frames", ""],
        ["server: messages sent / conflated / slow disconnects",
         f"{r.server_metrics['ioc_ws_messages_sent_total']:,.0f} / "
         f"{r.server_metrics['ioc_ws_conflated_total']:,.0f} / "
         f"{r.server_metrics['ioc_ws_disconnected_slow_total']:,.0f}", ""],
        ["server: most messages queued (1 s samples)", f"{r.queued_max:,.0f}", ""],
        ["drain: last publish → deliveries settled", f"{r.drain_s:.1f} s", "includes 2 s quiet"],
        ["latency publish → client p50 / p90", f"{r.pct(50):.0f} ms / {r.pct(90):.0f} ms", ""],
        ["latency publish → client p99 / max",
         f"{p99:.0f} ms / {int(np.flatnonzero(r.hist)[-1]) if r.hist.any() else float('nan')} ms",
         f"p99 < {GOAL_P99_MS:.0f} ms: {'met' if p99 < GOAL_P99_MS else 'NOT met'}"],
        ["latency samples (steady part)", f"{int(r.hist.sum()):,}", ""],
        ["of which publish → commit p50 / p99 (sampled)",
         f"{percentile(r.commit_lat, 50):.0f} ms / {percentile(r.commit_lat, 99):.0f} ms",
         "ingest's share (bench/ingest.py method)"],
        ["snapshot: subscribe → snapshot p50 / max",
         f"{snap_ms[len(snap_ms) // 2]:.0f} ms / {snap_ms[-1]:.0f} ms" if snap_ms else "-",
         f"{np.mean(snap_n):.0f} devices each" if snap_n else ""],
        [f"server RSS idle / {r.clients} subscribed / max in run",
         f"{r.rss_idle:.0f} / {r.rss_subscribed:.0f} / {r.rss_max:.0f} MiB", ""],
        ["CPU % of a core: server / mosquitto / postgres",
         f"{r.cpu['server']:.0f} / {r.cpu['mosquitto']:.0f} / {r.cpu['postgres']:.0f}", ""],
        ["CPU % of a core: publishers / clients / other / machine",
         f"{r.cpu['publishers']:.0f} / {r.cpu['clients']:.0f} / {r.cpu['other']:.0f} / "
         f"{r.cpu['machine']:.0f}", "other: the rest of the machine (other sessions)"],
    ]
    console.print(table("Websocket fan-out: MQTT → ingest → hub → clients",
                        ["figure", "value", "goal / note"], rows))
    if r.closes:
        console.print(f"[yellow]{len(r.closes)} client(s) closed by the server: "
                      f"{r.closes[:3]}[/yellow]")
    if r.errors:
        console.print(f"[red]client errors: {r.errors[:3]}[/red]")
    record_figures(args, r)


def record_figures(args, r: Result) -> None:
    """The figures and goals for bench/REPORT.md (``bench/report.py``; nothing when run by hand).

    The baseline of the latency is ingest's own share measured in the same run (publish →
    commit, sampled as bench/ingest.py does): the ratio shows what the hub adds on top.
    """
    record_context("ws", clients=f"{r.clients} in {args.client_procs} processes",
                   rate=f"{r.rate:,} updates/s × {READINGS_PER_MSG} readings",
                   seconds=f"{args.duration:.0f}", devices=f"{args.devices:,} streetlights",
                   viewport=f"{args.viewport:.0%} × {args.viewport:.0%} of the city",
                   frames="JSON arrays (coalesce)" if r.coalesce else "one message per frame")
    p50, p99 = r.pct(50), r.pct(99)
    c50, c99 = percentile(r.commit_lat, 50), percentile(r.commit_lat, 99)
    machine = f"machine {r.cpu.get('machine', 0):.0f} % of 200, other processes {r.cpu.get('other', 0):.0f} %"
    delivered = r.received / r.expected if r.expected else None
    record("ws", "state updates published", r.publish_rate, "updates/s")
    record("ws", "state messages delivered to clients", r.received / max(r.window_s, 1e-9), "msgs/s",
           note=f"{r.received:,} of {r.expected:,.0f} expected in the viewports")
    record("ws", "delivered / expected", delivered, "ratio", goal="1.0 (nothing lost)",
           met=None if delivered is None else delivered >= 0.999,
           note=f"conflated {r.server_metrics.get('ioc_ws_conflated_total', 0):,.0f}, slow "
                f"disconnects {r.server_metrics.get('ioc_ws_disconnected_slow_total', 0):,.0f}")
    record("ws", "latency publish → client p50", p50, "ms", baseline="publish → commit p50",
           ratio=p50 / c50 if c50 else None)
    record("ws", "latency publish → client p99", p99, "ms", goal=f"< {GOAL_P99_MS:.0f} ms",
           met=p99 < GOAL_P99_MS, baseline="publish → commit p99", ratio=p99 / c99 if c99 else None,
           note=machine)
    record("ws", "publish → commit p50 (ingest's share)", c50, "ms", note="the baseline")
    record("ws", "publish → commit p99 (ingest's share)", c99, "ms", note="the baseline")
    if r.snapshots:
        snap_ms = sorted(t * 1000 for t, _ in r.snapshots)
        record("ws", "snapshot: subscribe → snapshot p50", snap_ms[len(snap_ms) // 2], "ms",
               note=f"{np.mean([n for _, n in r.snapshots]):.0f} devices each")
    record("ws", "server RSS, idle", r.rss_idle, "MiB")
    record("ws", f"server RSS, {r.clients} clients subscribed, most during the run", r.rss_max, "MiB")
    record("ws", "server CPU", r.cpu.get("server"), "% of a core")


async def bench(args, stack: Stack) -> None:
    import asyncpg

    url = stack.create_database("ioc")
    counts = stack.seed(url, args.devices)
    log(f"seeded {sum(counts.values()):,} devices ({counts.get('streetlight', 0):,} streetlights)")
    token = stack.token(url)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("select id, ST_X(geom) as x, ST_Y(geom) as y from devices "
                                "where kind = 'streetlight' order by id")
    finally:
        await conn.close()
    ids = [r["id"] for r in rows]
    positions = np.array([(r["x"], r["y"]) for r in rows], np.float64)
    srv = stack.start_server(url)
    log(f"ioc serve pid {srv.pid} ready on {srv.base_url}, RSS {srv.rss_mb():.0f} MiB")
    log(f"run: {args.rate:,} updates/s for {args.duration:.0f} s to {args.clients} clients")
    r = await run(args, stack, srv, url, token, ids, positions)
    report(args, r)
    console.print(machine_line())
    console.print(f"PostgreSQL: fsync on; {len(ids):,} streetlights ({sum(counts.values()):,} "
                  f"devices); {args.publishers} publisher process(es); {READINGS_PER_MSG} "
                  "readings per update")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=5000, help="state updates/s (default 5000)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--quick", action="store_true", help="10 s")
    p.add_argument("--devices", type=int, default=10_000, help="streetlights (default 10,000)")
    p.add_argument("--clients", type=int, default=100, help="websocket clients (default 100)")
    p.add_argument("--client-procs", type=int, default=2,
                   help="processes the clients are spread over (default 2)")
    p.add_argument("--viewport", type=float, default=0.25,
                   help="viewport side as a fraction of the city's (default 0.25)")
    p.add_argument("--no-coalesce", dest="coalesce", action="store_false",
                   help="one message per frame instead of JSON arrays")
    p.add_argument("--publishers", type=int, default=2, help="publishing processes (default 2)")
    p.add_argument("--seed", type=int, default=1, help="viewport placement seed")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server log)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 10.0
    return args


def main(argv: list[str] | None = None) -> int:
    return run_on_stack(bench, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
