"""MQTT → committed readings: throughput, loss and publish-to-commit latency.

    .venv/bin/python bench/ingest.py --quick            # 10 s per rate
    .venv/bin/python bench/ingest.py                    # 60 s at 5,000 and 10,000 msg/s
    .venv/bin/python bench/ingest.py --rate 8000 --duration 30 --profile --clients

Everything runs on this machine, on loopback: a private PostgreSQL cluster with fsync ON
(production durability, every counted commit waited for its WAL flush), a private
mosquitto, and ``ioc serve`` as its own process (``bench/common.py``). Publishing costs
CPU on the same cores, and is measured too.

What is measured, in order:

1. **Baseline: raw COPY rate of this machine.** In a fresh database on the same cluster
   (a copy of the seeded one), asyncpg ``copy_records_to_table`` of telemetry rows
   (device_key, metric_id, ts, value, quality, received_at) into the real partitioned
   ``telemetry`` table, 20,000 rows per transaction, one connection: rows/s. For context
   also: COPY into a temp staging table + ``INSERT … ON CONFLICT DO NOTHING`` (the
   server's path when a batch holds a duplicate), and the server's whole writer
   transaction (``Ingest._write``: COPY + the ``device_state`` upsert) without MQTT.
2. **Throughput**, for each ``--rate``: ``--publishers`` processes (paho-mqtt, QoS 1,
   paced in 10 ms ticks) publish ``ioc/v1/SL-xxxxxx/telemetry`` round-robin over the
   seeded streetlights for ``--duration`` seconds, 5 values per message, ``ts`` = the
   publish wall-clock time in ms (made unique per device, so nothing is a duplicate).
   Then we wait until the server's ``ioc_readings_stored`` counter reaches sent × 5 or
   stops moving for 30 s, and count ``telemetry`` exactly (it is truncated before each
   rate). Loss = sent × 5 − stored rows. The commit rate is stored readings over the
   window from the first publish to the last commit (the first /metrics poll, every
   0.1 s, that shows the final count). "Sustained" means the publishers kept their rate
   and the backlog (readings published but not yet committed) stayed under one second's
   worth; the server's ``ioc_ingest_queue_depth`` is sampled every second beside it.
3. **Latency publish → commit.** The single writer commits in FIFO order and every
   committed batch moves ``device_state.last_seen`` to its newest reading's ``ts``, which
   is that reading's publish time. Every ~20 ms we run ``select max(last_seen) from
   device_state`` and record ``now − max(last_seen)``: the age of the newest committed
   message. By default (``--latency-query probe``) the max is taken over every 20th
   device of each publisher's round-robin through the primary key, because the full
   table scan every 20 ms cost PostgreSQL ~11 % of a core on a saturated 2-core machine
   (``--latency-query full`` runs it anyway; the sampler's backend CPU is printed).
   Bias: for the newest committed message the age is an upper bound of its latency, too
   high by the time since its commit (at most the sampling interval plus the gap between
   commits); the probe subset adds up to 20 messages of one publisher (≤ 20 × publishers
   / rate: 8 ms at 5,000 msg/s with 2), and ts is truncated to the ms (< 1 ms). Sampled at
   uniform times under a steady rate and FIFO commits, the age exceeds x exactly when
   the message published x ago is not yet committed, so the samples are distributed like
   the per-message latency (plus the biases above); with several publishers FIFO holds
   only approximately. p50/p99/max are over the steady part of each run (publishing,
   after the first 20 % or 5 s). When the server falls behind, the age grows all run long
   and the figures describe the backlog, not a steady latency.
4. **CPU split** over the publish window, from psutil: the server process, mosquitto,
   PostgreSQL (postmaster, backends and the children it reaped), the publishers, this
   script, and the whole machine (100 % = one core).
5. Optional ``--profile``: py-spy (``pip install py-spy``, not a project dependency)
   samples the server during the last rate and prints where its CPU goes.
   Optional ``--clients``: the MQTT client's own per-message cost, without the database:
   how fast the server's own session (``server.mqtt.link``), aiomqtt with manual PUBACKs (the
   server's client before it), paho-mqtt, gmqtt and a minimal asyncio MQTT 3.1.1 reader
   drain the same QoS 1 messages queued at the broker, and the cost of the server's
   decode + validation per message.
6. ``--pipeline N`` (default 50,000): before the server starts, the server's CPU per
   message after the socket (route, decode, validate, queue, COPY, device_state upsert),
   in this process against the same database: hardly affected by other load on the
   machine, unlike the rates above.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Stack,
    console,
    cpu_percent,
    cpu_snapshot,
    log,
    machine_line,
    parse_metrics,
    percentile,
    run_on_stack,
    table,
)
from report import record

METRICS = ("power_w", "dim_level_pct", "lamp_on", "energy_kwh", "burning_hours")
READINGS_PER_MSG = len(METRICS)
COPY_BATCH = 20_000
TICK_S = 0.010
STALL_S = 30.0
GOAL_RATE = 10_000  # messages/s sustained, zero loss
GOAL_P99_MS = 500.0  # at 5,000 messages/s
GOAL_P99_RATE = 5_000
PROBE_EVERY = 20  # latency probes: every 20th device of each publisher's round-robin


# ================================================================ publishers (subprocesses)
def _ts_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def publisher_main(idx: int, host: str, port: int, device_ids: list[str], rate: float,
                   duration: float, topic_prefix: str, ctl: mp.Queue, results: mp.Queue,
                   sent_counter) -> None:
    """One publishing process: paho-mqtt, QoS 1, no network thread (publish writes straight
    to the socket; PUBACKs are read between ticks by ``loop()``)."""
    import paho.mqtt.client as mqtt
    import psutil

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"bench-pub-{idx}-{os.getpid()}", clean_session=True,
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(0)  # unlimited: the broker PUBACKs on receipt
    client.max_queued_messages_set(0)
    state = {"acked": 0, "connected": False}

    def on_connect(c, userdata, flags, rc, props):
        state["connected"] = not rc.is_failure

    def on_publish(c, userdata, mid, rc, props):
        state["acked"] += 1

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(host, port, keepalive=60)
    deadline = time.monotonic() + 10
    while not state["connected"] and time.monotonic() < deadline:
        client.loop(0.05)
    if not state["connected"]:
        results.put(("error", idx, "publisher could not connect"))
        return
    topics = [f"{topic_prefix}/{d}/telemetry" for d in device_ids]
    last_ms = [0] * len(device_ids)
    results.put(("ready", idx, None))
    start_at = ctl.get()
    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    while time.time() < start_at:
        client.loop(min(0.01, max(0.0, start_at - time.time())))
    total = int(rate * duration)
    n = 0
    i = 0
    ndev = len(device_ids)
    cache_ms, cache_txt = -1, ""
    t_first = t_last = 0.0
    behind_max = 0.0
    publish = client.publish
    while n < total:
        now = time.time()
        el = now - start_at
        target = min(total, int(rate * el) + 1)
        behind_max = max(behind_max, (target - n) / rate)
        if n == 0:
            t_first = now
        while n < target:
            ms = int(time.time() * 1000)
            if ms <= last_ms[i]:
                ms = last_ms[i] + 1  # unique (device, ts): never a duplicate
            last_ms[i] = ms
            if ms != cache_ms:
                cache_ms, cache_txt = ms, _ts_text(ms)
            k = n // ndev
            payload = (
                b'{"ts":"%s","values":{"power_w":%.1f,"dim_level_pct":%d,"lamp_on":%s,'
                b'"energy_kwh":%.3f,"burning_hours":%.2f}}'
                % (cache_txt.encode(), 40.0 + (n % 97) / 10, (n % 11) * 10,
                   b"true" if n % 5 else b"false", 100.0 + k * 0.001, 1000.0 + k / 3600)
            )
            publish(topics[i], payload, qos=1)
            n += 1
            i += 1
            if i == ndev:
                i = 0
        t_last = time.time()
        sent_counter.value = n
        next_tick = start_at + (int(el / TICK_S) + 1) * TICK_S
        while True:
            left = next_tick - time.time()
            if left <= 0:
                break
            client.loop(left)
    deadline = time.monotonic() + 30
    while state["acked"] < n and time.monotonic() < deadline:
        client.loop(0.05)
    cpu1 = proc.cpu_times()
    client.disconnect()
    results.put(("done", idx, {
        "sent": n, "acked": state["acked"], "t_first": t_first, "t_last": t_last,
        "behind_max": behind_max,
        "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
    }))


class Publishers:
    """Start N publisher processes, release them together, collect their results."""

    def __init__(self, n: int, host: str, port: int, device_ids: list[str], rate: float,
                 duration: float, topic_prefix: str = "ioc/v1") -> None:
        self.ctx = mp.get_context("spawn")
        self.results = self.ctx.Queue()
        self.ctls = [self.ctx.Queue() for _ in range(n)]
        self.counters = [self.ctx.Value("q", 0, lock=False) for _ in range(n)]
        self.procs = [
            self.ctx.Process(
                target=publisher_main, daemon=True, name=f"bench-pub-{i}",
                args=(i, host, port, device_ids[i::n], rate / n, duration, topic_prefix,
                      self.ctls[i], self.results, self.counters[i]),
            )
            for i in range(n)
        ]
        self.out: dict[int, dict] = {}

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid]

    def sent(self) -> int:
        return sum(c.value for c in self.counters)

    async def start(self, lead_s: float = 0.3) -> float:
        for p in self.procs:
            p.start()
        ready = 0
        while ready < len(self.procs):
            kind, idx, info = await asyncio.to_thread(self.results.get, True, 60)
            if kind == "error":
                raise RuntimeError(f"publisher {idx}: {info}")
            ready += 1
        start_at = time.time() + lead_s
        for q in self.ctls:
            q.put(start_at)
        return start_at

    async def wait(self, limit_s: float) -> dict:
        while len(self.out) < len(self.procs):
            kind, idx, info = await asyncio.to_thread(self.results.get, True, limit_s)
            if kind == "error":
                raise RuntimeError(f"publisher {idx}: {info}")
            self.out[idx] = info
        for p in self.procs:
            p.join(5)
        r = list(self.out.values())
        return {
            "sent": sum(x["sent"] for x in r), "acked": sum(x["acked"] for x in r),
            "t_first": min(x["t_first"] for x in r), "t_last": max(x["t_last"] for x in r),
            "behind_max": max(x["behind_max"] for x in r), "cpu_s": sum(x["cpu_s"] for x in r),
        }

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(2)


# ================================================================ baseline: raw COPY
def _copy_rows(n_rows: int, device_keys: list[int], metric_ids: list[int], base: datetime,
               msgs_per_ms: int = 10) -> list[tuple]:
    """Rows as the server makes them: 5 metrics per message, messages round-robin over
    devices, ``msgs_per_ms`` messages per millisecond (10,000 msg/s)."""
    now = datetime.now(UTC)
    rows = []
    ndev = len(device_keys)
    ms = timedelta(milliseconds=1)
    for m in range(n_rows // len(metric_ids)):
        key = device_keys[m % ndev]
        ts = base + (m // msgs_per_ms) * ms
        for j, mid in enumerate(metric_ids):
            rows.append((key, mid, ts, 40.0 + (m % 97) / 10 + j, 0, now))
    return rows


async def _ensure_partitions(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    lo = min(r[2] for r in rows).date()
    hi = max(r[2] for r in rows).date()
    day = lo
    while day <= hi:
        await conn.execute("select ioc_ensure_telemetry_partition($1)", day)
        day += timedelta(days=1)


_ORIG: dict[str, object] = {}


def _time_writer_parts(ingest) -> dict[str, float]:
    """Wrap the functions ``Ingest._write`` calls (in this process only) to time them."""
    import server.ingest.writer as si

    parts = {"latest_by_device (Python)": 0.0, "COPY telemetry": 0.0,
             "device_state upsert": 0.0}

    def sync_timed(fn, key):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[key] += time.perf_counter() - t
        return wrapper

    def async_timed(fn, key):
        async def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                parts[key] += time.perf_counter() - t
        return wrapper

    _ORIG["latest_by_device"] = si.latest_by_device
    _ORIG["upsert_state"] = si.upsert_state
    si.latest_by_device = sync_timed(si.latest_by_device, "latest_by_device (Python)")
    si.upsert_state = async_timed(si.upsert_state, "device_state upsert")
    ingest._copy_telemetry = async_timed(ingest._copy_telemetry, "COPY telemetry")
    return parts


def _untime_writer_parts() -> None:
    import server.ingest.writer as si

    for name, fn in _ORIG.items():
        setattr(si, name, fn)


async def copy_baselines(url: str, n_rows: int) -> dict[str, float]:
    """rows/s of: plain COPY, staged COPY + INSERT ON CONFLICT, the server's writer txn."""
    from server.ingest.directory import Directory
    from server.ingest.writer import TELEMETRY_COLS, Envelope, Ingest
    from server.runtime.metrics import Registry
    from server.settings import IngestSettings
    from server.store.db import create_pool

    out: dict[str, float] = {}
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            keys = [r["key"] for r in await conn.fetch(
                "select key from devices where kind = 'streetlight' order by key")]
            mids = [r["id"] for r in await conn.fetch(
                "select id from metrics where name = any($1::text[]) order by id", list(METRICS))]
            directory = Directory()
            await directory.load(conn)
        # Three disjoint time ranges (an hour apart), so no case meets another's rows.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
        cases = ["copy", "staged", "writer"]
        for ci, case in enumerate(cases):
            rows = _copy_rows(n_rows, keys, mids, start + timedelta(hours=ci))
            batches = [rows[i:i + COPY_BATCH] for i in range(0, len(rows), COPY_BATCH)]
            async with pool.acquire() as conn:
                await _ensure_partitions(conn, rows)
                await conn.execute("checkpoint")
            ingest = Ingest(pool, directory, IngestSettings(), Registry())
            t0 = time.perf_counter()
            async with pool.acquire() as conn:
                for b in batches if case != "writer" else []:
                    if case == "copy":
                        async with conn.transaction():
                            await conn.copy_records_to_table("telemetry", records=b,
                                                             columns=TELEMETRY_COLS)
                    elif case == "staged":
                        async with conn.transaction():
                            await conn.execute(
                                "create temp table if not exists ioc_stage "
                                "(like telemetry including defaults) on commit delete rows")
                            await conn.copy_records_to_table("ioc_stage", records=b,
                                                             columns=TELEMETRY_COLS)
                            await conn.execute(
                                f"insert into telemetry ({', '.join(TELEMETRY_COLS)}) "
                                f"select {', '.join(TELEMETRY_COLS)} from ioc_stage "
                                "on conflict do nothing")
            if case == "writer":
                # The server's own transaction (COPY + device_state upsert) per batch; one
                # envelope per message, as MQTT makes them.
                envs = [[Envelope(rows=b[i:i + READINGS_PER_MSG])
                         for i in range(0, len(b), READINGS_PER_MSG)] for b in batches]
                parts = _time_writer_parts(ingest)
                t0 = time.perf_counter()
                for batch in envs:
                    await ingest._write(batch)
                _untime_writer_parts()
            elapsed = time.perf_counter() - t0
            if case == "writer":
                for k, v in parts.items():
                    out[f"writer.{k}"] = v / elapsed  # share of the writer's time
            out[case] = len(rows) / elapsed
            log(f"baseline {case}: {len(rows):,} rows in {elapsed:.1f} s = "
                f"{out[case]:,.0f} rows/s")
            del rows, batches
    finally:
        await pool.close()
    return out


# ================================================================ one throughput run
@dataclass
class RunResult:
    rate: int
    duration: float
    sent: int = 0
    acked: int = 0
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    publish_rate: float = 0.0
    commit_rate: float = 0.0
    steady_rate: float = 0.0  # readings/s committed during the steady part of publishing
    drain_rate: float = 0.0  # readings/s committed after the publishers stopped
    t_first: float = 0.0
    t_last_pub: float = 0.0
    t_last_commit: float = 0.0
    drain_s: float = 0.0
    backlog_max: float = 0.0  # readings published but not committed (1 s samples)
    backlog_end: float = 0.0
    queue_max: float = 0.0
    queue_samples: list[float] = field(default_factory=list)
    behind_max: float = 0.0
    lat: list[float] = field(default_factory=list)
    lat_query_ms: float = 0.0
    busy_before: float = 0.0  # machine CPU % in the idle second before the run
    commits: float = 0.0  # batches committed in the publish window
    commit_ms: float = 0.0  # their mean commit time
    batch_readings: float = 0.0  # their mean size
    cpu: dict[str, float] = field(default_factory=dict)
    window_s: float = 0.0
    window_msgs: float = 0.0  # messages committed during the publish window
    publisher_cpu_s: float = 0.0
    rss_mb_max: float = 0.0
    rss_mb_start: float = 0.0
    stalled: bool = False
    profile: list[tuple[str, float]] | None = None
    profile_groups: list[tuple[str, float]] | None = None

    @property
    def loss(self) -> int:
        return self.sent * READINGS_PER_MSG - self.stored

    @property
    def sustained(self) -> bool:
        return (self.publish_rate >= 0.98 * self.rate and self.loss == 0
                and self.backlog_end <= self.rate * READINGS_PER_MSG)

    def lat_ms(self, q: float) -> float:
        return percentile(self.lat, q) * 1000


class Probe:
    """/metrics of the server, with its bearer token."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session = session
        self.url = base_url + "/metrics"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self) -> dict[str, float]:
        async with self.session.get(self.url, headers=self.headers) as resp:
            resp.raise_for_status()
            return parse_metrics(await resp.text())


def _stored(m: dict[str, float]) -> float:
    return m.get("ioc_readings_stored_total", m.get("ioc_readings_stored", 0.0))


def _dups(m: dict[str, float]) -> float:
    return m.get("ioc_readings_duplicate_total", m.get("ioc_readings_duplicate", 0.0))


def _dead(m: dict[str, float]) -> float:
    return m.get("ioc_dead_letters_total", 0.0)


def probe_ids(device_ids: list[str], npub: int, every: int = PROBE_EVERY) -> list[str]:
    """Every ``every``-th device of each publisher's round-robin (publisher i has ids[i::n])."""
    return [d for i in range(npub) for d in device_ids[i::npub][::every]]


async def latency_sampler(url: str, stop: asyncio.Event, out: list[tuple[float, float, float]],
                          backend_pid: list[int], probes: list[str] | None,
                          every: float = 0.020) -> None:
    """(wall time, age of the newest committed reading in s, query ms) every ``every`` s.

    ``probes`` None: ``max(last_seen)`` over all of device_state (a sequential scan);
    otherwise over those devices only, through the primary key.
    """
    conn = await asyncpg.connect(url, server_settings={"application_name": "bench-latency"})
    backend_pid.append(await conn.fetchval("select pg_backend_pid()"))
    if probes is None:
        query, qargs = "select max(last_seen) from device_state", ()
    else:
        keys = [r["key"] for r in await conn.fetch(
            "select key from devices where id = any($1::text[])", probes)]
        query = "select max(last_seen) from device_state where device_key = any($1::int[])"
        qargs = (keys,)
    try:
        nxt = time.monotonic()
        while not stop.is_set():
            q0 = time.perf_counter()
            last = await conn.fetchval(query, *qargs)
            t = time.time()
            q_ms = (time.perf_counter() - q0) * 1000
            if last is not None:
                out.append((t, t - last.timestamp(), q_ms))
            nxt += every
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
    finally:
        await conn.close()


async def run_rate(stack: Stack, srv, url: str, token: str, device_ids: list[str], rate: int,
                   duration: float, npub: int, profile: bool, full_scan: bool) -> RunResult:
    res = RunResult(rate, duration)
    # What else this machine is doing (other sessions, kernel) before we start: 1 s idle.
    i0 = cpu_snapshot({})
    await asyncio.sleep(1.0)
    res.busy_before = cpu_percent(i0, cpu_snapshot({}))["machine"]
    async with contextlib.AsyncExitStack() as ex:
        conn = await asyncpg.connect(url)
        ex.push_async_callback(conn.close)
        await conn.execute("truncate telemetry")
        await conn.execute("checkpoint")
        session = await ex.enter_async_context(aiohttp.ClientSession())
        probe = Probe(session, srv.base_url, token)
        m0 = await probe.get()
        pubs = Publishers(npub, stack.mqtt.host, stack.mqtt.port, device_ids, rate, duration)
        ex.callback(pubs.kill)
        res.rss_mb_start = srv.rss_mb()
        start_at = await pubs.start()
        groups = {"server": [srv.pid], "mosquitto": [stack.mosquitto_pid],
                  "postgres": [stack.postgres_pid], "bench": [0]}
        stop = asyncio.Event()
        samples: list[tuple[float, float, float]] = []
        sampler_pid: list[int] = []
        probes = None if full_scan else probe_ids(device_ids, npub)
        sampler = asyncio.create_task(latency_sampler(url, stop, samples, sampler_pid, probes))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        if sampler_pid:  # the sampler's own PostgreSQL backend: what measuring latency costs
            groups["latency query"] = sampler_pid
        c0 = cpu_snapshot(groups)
        m_c0 = await probe.get()
        spy = None
        if profile:
            spy = _start_py_spy(srv.pid, duration, stack.dir / f"pyspy-{rate}.txt")
        # ---- publishing: 1 s monitor
        pub_task = asyncio.create_task(pubs.wait(duration + 90))
        backlog = []
        stored_ts: list[tuple[float, float]] = []  # (wall, readings stored) every second
        while not pub_task.done():
            await asyncio.wait({pub_task}, timeout=1.0)
            if pub_task.done():
                break
            m = await probe.get()
            sent = pubs.sent()
            b = sent * READINGS_PER_MSG - (_stored(m) - _stored(m0)) - (_dups(m) - _dups(m0))
            backlog.append(b)
            stored_ts.append((time.time(), _stored(m) - _stored(m0)))
            res.queue_samples.append(m.get("ioc_ingest_queue_depth", 0.0))
            res.rss_mb_max = max(res.rss_mb_max, srv.rss_mb())
        c1 = cpu_snapshot(groups)
        m_c1 = await probe.get()
        t_c1 = time.time()
        res.window_msgs = (_stored(m_c1) - _stored(m_c0)) / READINGS_PER_MSG
        res.commits = m_c1.get("ioc_ingest_commit_seconds_count", 0) - m_c0.get(
            "ioc_ingest_commit_seconds_count", 0)
        if res.commits:
            res.commit_ms = 1000 * (m_c1.get("ioc_ingest_commit_seconds_sum", 0) - m_c0.get(
                "ioc_ingest_commit_seconds_sum", 0)) / res.commits
            res.batch_readings = (m_c1.get("ioc_ingest_batch_size_sum", 0) - m_c0.get(
                "ioc_ingest_batch_size_sum", 0)) / res.commits
        pub = pub_task.result()
        res.cpu = cpu_percent(c0, c1)
        res.window_s = c1.wall - c0.wall
        res.sent, res.acked = pub["sent"], pub["acked"]
        res.t_first, res.t_last_pub = pub["t_first"], pub["t_last"]
        res.behind_max, res.publisher_cpu_s = pub["behind_max"], pub["cpu_s"]
        # The publishers have exited by now: use their own accounting (start → last ack).
        res.cpu["publishers"] = 100 * pub["cpu_s"] / max(res.window_s, 1e-9)
        res.cpu.setdefault("latency query", 0.0)
        res.cpu["other"] = res.cpu["machine"] - sum(
            res.cpu[k] for k in ("server", "mosquitto", "postgres", "publishers", "bench"))
        res.publish_rate = res.sent / max(res.t_last_pub - res.t_first, 1e-9)
        res.backlog_max = max(backlog, default=0.0)
        res.backlog_end = backlog[-1] if backlog else 0.0
        res.queue_max = max(res.queue_samples, default=0.0)
        # ---- drain: poll every 0.1 s until everything is stored or nothing moves for 30 s
        target = res.sent * READINGS_PER_MSG
        last_val, last_change = -1.0, time.time()
        while True:
            m = await probe.get()
            done = (_stored(m) - _stored(m0)) + (_dups(m) - _dups(m0))
            now = time.time()
            if done != last_val:
                last_val, last_change = done, now
            if done >= target:
                break
            if now - last_change > STALL_S:
                res.stalled = True
                break
            await asyncio.sleep(0.1)
        res.t_last_commit = last_change
        res.rss_mb_max = max(res.rss_mb_max, srv.rss_mb())
        stop.set()
        await sampler
        if spy is not None:
            res.profile, res.profile_groups = _read_py_spy(*spy)
        res.stored = await conn.fetchval("select count(*) from telemetry")
        res.duplicates = int(_dups(m) - _dups(m0))
        res.dead = int(_dead(m) - _dead(m0))
        res.drain_s = max(0.0, res.t_last_commit - res.t_last_pub)
        if res.t_last_commit > t_c1 + 1:  # the backlog, committed with the publishers gone
            res.drain_rate = (_stored(m) - _stored(m_c1)) / (res.t_last_commit - t_c1)
        res.commit_rate = res.stored / max(res.t_last_commit - res.t_first, 1e-9)
        skip = min(5.0, 0.2 * duration)
        steady_pts = [(t, v) for t, v in stored_ts if t >= res.t_first + skip]
        if len(steady_pts) >= 2:
            (ta, va), (tb, vb) = steady_pts[0], steady_pts[-1]
            res.steady_rate = (vb - va) / max(tb - ta, 1e-9)
        steady = [(t, a, q) for t, a, q in samples if res.t_first + skip <= t <= res.t_last_pub]
        res.lat = [a for _, a, _ in steady]
        res.lat_query_ms = sum(q for *_, q in steady) / max(len(steady), 1)
    return res


# ================================================================ py-spy
def _start_py_spy(pid: int, duration: float, out: Path):
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        log("[yellow]py-spy not found (pip install py-spy); no profile[/yellow]")
        return None
    secs = max(3, int(duration * 0.6))
    proc = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "100", "--duration", str(secs),
         "--format", "raw", "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return proc, out, secs


_GROUPS = (
    ("paho-mqtt (socket reads, packet parsing, PUBACK writes)", "paho/mqtt"),
    ("aiomqtt (message wrapping, queue)", "aiomqtt/"),
    ("asyncio event loop", "asyncio/"),
    ("decode (adapters/mqtt/protocol.py)", "adapters/"),
    ("MQTT session and routing (server/mqtt*.py)", "server/mqtt"),
    ("ingest validate/queue/writer (server/ingest/writer.py)", "server/ingest/writer.py"),
    ("directory (server/ingest/directory.py)", "server/ingest/directory.py"),
    ("asyncpg (COPY encoding, protocol)", "asyncpg/"),
    ("prometheus_client", "prometheus_client/"),
    ("aiohttp", "aiohttp/"),
    ("rules engine (rules/)", "rules/"),
    ("other server code: listeners of committed batches (hub, commands), ...", "server/"),
)


def _read_py_spy(proc: subprocess.Popen, out: Path, secs: int):
    try:
        proc.wait(secs + 30)
    except subprocess.TimeoutExpired:
        proc.terminate()
    if not out.exists():
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        log(f"[yellow]py-spy wrote no profile: {err.strip()[:300]}[/yellow]")
        return None, None
    leaf: Counter[str] = Counter()
    group: Counter[str] = Counter()
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[frames[-1]] += n
        # Attribute the sample to the innermost frame of a known group.
        for fr in reversed(frames):
            hit = next((name for name, key in _GROUPS if key in fr), None)
            if hit:
                group[hit] += n
                break
        else:
            group["other"] += n
    expected = 100 * secs  # samples if the process were busy all the time (one core)
    top = [(f, 100 * n / expected) for f, n in leaf.most_common(15)]
    groups = [(g, 100 * n / expected) for g, n in group.most_common()]
    groups.append(("TOTAL (busy samples / wall samples)", 100 * total / expected))
    return top, groups


# ================================================================ client alternatives
def _mqtt_consumer_main(kind: str, host: str, port: int, client_id: str, topic: str, n: int,
                        results: mp.Queue) -> None:
    """Drain ``n`` queued QoS 1 messages of a persistent session; report CPU s and wall s."""
    import psutil

    proc = psutil.Process()
    c0 = proc.cpu_times()
    t0 = time.perf_counter()
    if kind == "aiomqtt":
        got = asyncio.run(_consume_aiomqtt(host, port, client_id, topic, n, decode=False))
    elif kind == "aiomqtt+decode":
        got = asyncio.run(_consume_aiomqtt(host, port, client_id, topic, n, decode=True))
    elif kind == "paho":
        got = _consume_paho(host, port, client_id, topic, n)
    elif kind == "gmqtt":
        got = asyncio.run(_consume_gmqtt(host, port, client_id, topic, n))
    elif kind == "server.mqtt.link":
        got = asyncio.run(_consume_link(host, port, client_id, topic, n))
    else:
        got = asyncio.run(_consume_raw(host, port, client_id, topic, n))
    t1 = time.perf_counter()
    c1 = proc.cpu_times()
    results.put((kind, got, t1 - t0, (c1.user + c1.system) - (c0.user + c0.system)))


async def _consume_aiomqtt(host, port, client_id, topic, n, decode: bool) -> int:
    """As server/mqtt/link.py: aiomqtt, clean_session=False, manual PUBACK per message; with
    ``decode`` also the native adapter's decode_partial per message."""
    import aiomqtt

    from adapters.mqtt import NativeMqttAdapter

    adapter = NativeMqttAdapter({})
    got = 0
    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=False,
                              max_inflight_messages=1000) as client:
        client._client.manual_ack_set(True)
        await client.subscribe(topic, qos=1)
        async for msg in client.messages:
            if decode:
                adapter.decode_partial(msg.topic.value, msg.payload)
            client._client.ack(msg.mid, msg.qos)
            got += 1
            if got >= n:
                break
    return got


async def _consume_link(host, port, client_id, topic, n) -> int:
    """The server's own session (server/mqtt/link.py): batches of messages, PUBACKs queued and
    written once per loop iteration, acknowledged as the ingest writer does (after the
    handler returns, i.e. with no database: at once)."""
    from server.mqtt.link import MqttLink

    done = asyncio.Event()
    state = {"got": 0}
    link: MqttLink

    async def on_messages(batch) -> None:
        link.ack_all(batch)
        state["got"] += len(batch)
        if state["got"] >= n:
            done.set()

    link = MqttLink(f"mqtt://{host}:{port}", client_id, subscriptions=[topic],
                    on_messages=on_messages)
    await link.start()
    try:
        await asyncio.wait_for(done.wait(), 300)
        await asyncio.sleep(0.05)  # the last PUBACKs go out
    finally:
        await link.stop()
    return state["got"]


def _consume_paho(host, port, client_id, topic, n) -> int:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                    protocol=mqtt.MQTTv311, manual_ack=True)
    state = {"got": 0}

    def on_connect(cl, ud, flags, rc, props):
        cl.subscribe(topic, qos=1)

    def on_message(cl, ud, msg):
        cl.ack(msg.mid, msg.qos)
        state["got"] += 1
        if state["got"] >= n:
            cl.disconnect()

    c.on_connect = on_connect
    c.on_message = on_message
    c.connect(host, port, keepalive=60)
    c.loop_forever()
    return state["got"]


async def _consume_gmqtt(host, port, client_id, topic, n) -> int:
    """gmqtt (asyncio Protocol, buffered parsing), MQTT 5 so that the PUBACK waits for the
    handler (``optimistic_acknowledgement=False``; with 3.1.1 gmqtt always acks first), a
    task per message."""
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv50

    done = asyncio.Event()
    state = {"got": 0}

    async def on_message(client, topic_, payload, qos, properties):
        # A coroutine: gmqtt sends the PUBACK only when a coroutine handler finishes (for a
        # plain function with optimistic_acknowledgement=False it never sends one).
        state["got"] += 1
        if state["got"] >= n:
            done.set()
        return 0  # PUBACK reason code: success

    c = gmqtt.Client(client_id, clean_session=False, optimistic_acknowledgement=False)
    c.on_message = on_message
    await c.connect(host, port, version=MQTTv50)
    c.subscribe(topic, qos=1)
    try:
        await asyncio.wait_for(done.wait(), 300)
    finally:
        await c.disconnect()
    return state["got"]


def _varlen(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def _consume_raw(host, port, client_id, topic, n) -> int:
    """A minimal MQTT 3.1.1 reader: big reads, frames parsed from a buffer, the PUBACKs of
    one read written with one call. The floor of per-message cost in Python."""
    reader, writer = await asyncio.open_connection(host, port)
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x00\x00\x3c"  # level 4, clean_session=0, keepalive 60
    body = var + struct.pack("!H", len(cid)) + cid
    writer.write(b"\x10" + _varlen(len(body)) + body)
    tb = topic.encode()
    sub = struct.pack("!H", 1) + struct.pack("!H", len(tb)) + tb + b"\x01"
    writer.write(b"\x82" + _varlen(len(sub)) + sub)
    await writer.drain()
    buf = b""
    got = 0
    pack = struct.Struct("!BBH").pack
    while got < n:
        data = await reader.read(1 << 18)
        if not data:
            break
        buf += data
        pos, end, acks = 0, len(buf), []
        while pos + 2 <= end:
            h = buf[pos]
            mult, length, i = 1, 0, pos + 1
            while i < end:
                b = buf[i]
                length += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            else:
                break
            if i + length > end:
                break
            if h >> 4 == 3:  # PUBLISH
                tl = (buf[i] << 8) | buf[i + 1]
                if (h >> 1) & 3:
                    mid = (buf[i + 2 + tl] << 8) | buf[i + 3 + tl]
                    acks.append(pack(0x40, 2, mid))
                got += 1
            pos = i + length
        buf = buf[pos:]
        if acks:
            writer.write(b"".join(acks))
    writer.write(b"\xe0\x00")
    await writer.drain()
    writer.close()
    return got


async def measure_clients(stack: Stack, device_ids: list[str], n: int, npub: int) -> list[list]:
    """Queue ``n`` messages for a persistent session while it is away, then time a drain."""
    import aiomqtt

    rows = []
    ctx = mp.get_context("spawn")
    kinds = ["aiomqtt", "aiomqtt+decode", "paho", "raw asyncio", "server.mqtt.link"]
    try:
        import gmqtt  # noqa: F401 - optional: pip install gmqtt to measure it
        kinds.insert(3, "gmqtt")
    except ImportError:
        log("gmqtt not installed: not measured (pip install gmqtt)")
    for kind in kinds:
        client_id = f"bench-consumer-{kind.replace(' ', '-').replace('+', '-')}"
        prefix = f"benchc/{client_id}"
        topic = f"{prefix}/+/telemetry"
        # Register the persistent session and its subscription, then go away.
        async with aiomqtt.Client(stack.mqtt.host, stack.mqtt.port, identifier=client_id,
                                  clean_session=False) as c:
            await c.subscribe(topic, qos=1)
        pubs = Publishers(npub, stack.mqtt.host, stack.mqtt.port, device_ids, 40_000,
                          n / 40_000, topic_prefix=prefix)
        try:
            await pubs.start()
            sent = (await pubs.wait(120))["sent"]
        finally:
            pubs.kill()
        q = ctx.Queue()
        p = ctx.Process(target=_mqtt_consumer_main, daemon=True,
                        args=(kind, stack.mqtt.host, stack.mqtt.port, client_id, topic, sent, q))
        c0 = cpu_snapshot({"mosquitto": [stack.mosquitto_pid]})
        p.start()
        try:
            kind_, got, wall, cpu_s = await asyncio.to_thread(q.get, True, 300)
        finally:
            p.join(10)
            if p.is_alive():
                p.terminate()
        mosq = cpu_percent(c0, cpu_snapshot({"mosquitto": [stack.mosquitto_pid]}))["mosquitto"]
        # includes interpreter start and imports: a small constant, noted in the output
        rows.append([kind_, f"{got:,}", f"{got / wall:,.0f}", f"{1e6 * cpu_s / max(got, 1):.1f}",
                     f"{1e6 / (1e6 * cpu_s / max(got, 1)):,.0f}", f"{mosq:.0f} %"])
        log(f"client {kind_}: {got:,} msgs in {wall:.2f} s, {1e6 * cpu_s / max(got, 1):.1f} µs CPU/msg")
    return rows


def measure_decode_validate(device_ids: list[str], url: str, n: int = 50_000) -> dict[str, float]:
    """µs per message of the server's pure-Python steps before the queue: decode + validate."""
    from adapters.mqtt import NativeMqttAdapter
    from server.ingest.directory import Directory
    from server.ingest.writer import Envelope, Ingest
    from server.runtime.metrics import Registry
    from server.settings import IngestSettings

    async def load() -> Directory:
        d = Directory()
        conn = await asyncpg.connect(url)
        try:
            await d.load(conn)
        finally:
            await conn.close()
        return d

    directory = asyncio.run(load())
    ingest = Ingest(None, directory, IngestSettings(), Registry())  # type: ignore[arg-type]
    adapter = NativeMqttAdapter({})
    ts = _ts_text(int(time.time() * 1000))
    msgs = [(f"ioc/v1/{device_ids[i % len(device_ids)]}/telemetry",
             (b'{"ts":"%s","values":{"power_w":41.5,"dim_level_pct":80,"lamp_on":true,'
              b'"energy_kwh":123.456,"burning_hours":1000.25}}' % ts.encode()))
            for i in range(n)]
    t0 = time.perf_counter()
    decoded = [adapter.decode_partial(t, p)[0] for t, p in msgs]
    t1 = time.perf_counter()
    now = datetime.now(UTC)
    for items in decoded:
        env = Envelope()
        ingest._validate(items, now, env, lambda *a: None)
    t2 = time.perf_counter()
    return {"decode": 1e6 * (t1 - t0) / n, "validate": 1e6 * (t2 - t1) / n}


async def _committed(ingest) -> None:
    """Until everything queued is committed (the writer notifies on every commit)."""
    async with ingest._space:
        await ingest._space.wait_for(lambda: ingest.pending == 0)


async def measure_pipeline(url: str, device_ids: list[str], n: int, chunk: int = 500) -> dict:
    """Server CPU per message of everything after the socket, in this process: routing,
    decoding, validation, the queue, COPY and the device_state upsert (the database's own
    CPU is not counted). Messages are handed over ``chunk`` at a time, as the MQTT session
    does after a socket read. Insensitive to other load on the machine, unlike the
    end-to-end rates: the figure to compare changes with."""
    from adapters.mqtt import NativeMqttAdapter
    from server.ingest.directory import Directory
    from server.ingest.routing import MqttIngest
    from server.ingest.writer import Ingest
    from server.mqtt.link import Message, Topic
    from server.runtime.metrics import Registry
    from server.settings import IngestSettings
    from server.store.db import create_pool

    class Acks:
        n = 0

        def ack_all(self, messages) -> None:
            self.n += len(messages)

    pool = await create_pool(url, min_size=1, max_size=4)
    try:
        directory = Directory()
        async with pool.acquire() as conn:
            await directory.load(conn)
        ingest = Ingest(pool, directory, IngestSettings(), Registry())
        handler = MqttIngest({"mqtt": NativeMqttAdapter({})}, ingest, ingest.metrics)
        handler.link = acks = Acks()  # type: ignore[assignment]
        base = int(time.time() * 1000) - 7_200_000  # two hours ago: no clash with the runs
        msgs = [Message(Topic(f"ioc/v1/{device_ids[i % len(device_ids)]}/telemetry"),
                        b'{"ts":"%s","values":{"power_w":41.5,"dim_level_pct":80,"lamp_on":true,'
                        b'"energy_kwh":123.456,"burning_hours":1000.25}}'
                        % _ts_text(base + i).encode(), 1, False, i % 65535 + 1)
                for i in range(n + chunk)]
        await ingest.start()
        try:
            await handler.handle_batch(msgs[:chunk])  # warm-up: partitions, statements
            await _committed(ingest)
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(chunk, n + chunk, chunk):
                await handler.handle_batch(msgs[i:i + chunk])
            await _committed(ingest)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        finally:
            await ingest.stop()
        async with pool.acquire() as conn:
            stored = await conn.fetchval("select count(*) from telemetry where ts < $1",
                                         datetime.fromtimestamp((base + n + chunk) / 1000, UTC))
            await conn.execute("delete from telemetry where ts < $1",
                               datetime.fromtimestamp((base + n + chunk) / 1000, UTC))
    finally:
        await pool.close()
    return {"us_per_msg": 1e6 * cpu / n, "msgs_per_s": n / wall, "acked": acks.n,
            "stored": stored, "expected": (n + chunk) * READINGS_PER_MSG}


# The staleness scan before device_state.next_check: every online device, every round.
_FULL_STATUS_SQL = """
with expected as (
    select s.device_key, s.status, s.last_seen,
           make_interval(secs => coalesce(d.expected_interval_s, k.expected_interval_s)) as iv
    from device_state s join devices d on d.key = s.device_key join kinds k on k.kind = d.kind
    where s.status in ('online', 'stale') and s.last_seen is not null
), decided as (
    select device_key, status,
           case when last_seen < now() - $2::int * iv then 'offline'
                when last_seen < now() - $1::int * iv then 'stale' else status end as new_status
    from expected
)
update device_state s set status = d.new_status, status_changed_at = now(), updated_at = now()
from decided d where s.device_key = d.device_key and d.new_status <> d.status
returning s.device_key, s.status
"""


async def measure_status_scan(stack: Stack, n: int, rounds: int = 4) -> list[list[str]]:
    """The maintenance staleness scan at ``n`` devices in steady state (each reported
    within its interval; next checks spread over two intervals, as the scan leaves them),
    every 5 s: the server's (due rows only) beside a scan of every online device."""
    from server.ingest.maintenance import OFFLINE_INTERVALS, STALE_INTERVALS, Maintenance
    from server.settings import IngestSettings
    from server.store.db import create_pool

    url = stack.create_database("scanbench")
    pool = await create_pool(url, min_size=1, max_size=2)
    rows: list[list[str]] = []
    try:
        async with pool.acquire() as conn:
            await conn.execute("alter table devices disable trigger devices_ward")
            await conn.execute(
                "insert into devices (id, kind, geom) select 'SL-' || g, 'streetlight', "
                "ST_SetSRID(ST_MakePoint(105.8 + random() * 0.1, 21.5 + random() * 0.1), 4326) "
                "from generate_series(1, $1) g", n)
            iv = await conn.fetchval("select expected_interval_s from kinds where kind = 'streetlight'")
            await conn.execute(
                "insert into device_state (device_key, last_seen, status, next_check) "
                "select key, now() - random() * make_interval(secs => $1), 'online', "
                "now() - interval '5 s' + random() * make_interval(secs => 2 * $1) from devices", iv)
            await conn.execute("vacuum analyze device_state")
            await conn.execute("analyze devices")
            for _ in range(rounds):
                t = time.perf_counter()
                async with conn.transaction():
                    changed = await conn.fetch(_FULL_STATUS_SQL, STALE_INTERVALS, OFFLINE_INTERVALS)
                rows.append(["every online device (before)", f"{1000 * (time.perf_counter() - t):.0f}",
                             f"{len(changed):,} changed"])
        maintenance = Maintenance(pool, None, IngestSettings())  # type: ignore[arg-type]
        for i in range(rounds):
            await asyncio.sleep(5)
            async with pool.acquire() as conn:
                due = await conn.fetchval("select count(*) from device_state where next_check <= now()")
            t = time.perf_counter()
            changed = await maintenance.update_status()
            rows.append([f"due rows only (now), round {i + 1}", f"{1000 * (time.perf_counter() - t):.0f}",
                         f"{due:,} due, {len(changed):,} changed"])
        rows.insert(0, [f"{n:,} streetlights, interval {iv} s, a round every 5 s", "", ""])
    finally:
        await pool.close()
        stack.drop_database("scanbench")
    return rows


# ================================================================ printing
def _f(x: float, nd: int = 0) -> str:
    return f"{x:,.{nd}f}"


def res_commits_per_s(r: RunResult) -> float:
    return r.commits / max(r.window_s, 1e-9)


def print_run(r: RunResult) -> None:
    rows = [
        ["messages sent (PUBACKed by the broker)", f"{r.sent:,} ({r.acked:,})"],
        ["readings stored (count(*) from telemetry)", f"{r.stored:,}"],
        ["loss (sent × 5 − stored)", f"{r.loss:,}"],
        ["duplicates (server counter)", f"{r.duplicates:,}"],
        ["dead letters", f"{r.dead:,}"],
        ["publish rate achieved", f"{_f(r.publish_rate)} msg/s (max {r.behind_max * 1000:.0f} ms "
                                  "behind schedule)"],
        ["commit rate (first publish → last commit)", f"{_f(r.commit_rate)} readings/s"],
        ["commit rate, steady part of publishing", f"{_f(r.steady_rate)} readings/s"],
        ["drain after the last publish", f"{r.drain_s:.2f} s" + (" (STALLED)" if r.stalled else "")
         + (f", at {_f(r.drain_rate)} readings/s" if r.drain_rate else "")],
        ["backlog at end of publishing / max", f"{_f(r.backlog_end)} / {_f(r.backlog_max)} readings"],
        ["server queue depth max (1 s samples)", f"{_f(r.queue_max)} readings"],
        ["sustained", "yes" if r.sustained else "NO"],
        ["latency p50 / p99 / max (steady part)",
         f"{r.lat_ms(50):.0f} / {r.lat_ms(99):.0f} / {r.lat_ms(100):.0f} ms "
         f"({len(r.lat):,} samples, query {r.lat_query_ms:.1f} ms avg)"],
        ["writer: commits/s, mean batch, mean commit time",
         f"{res_commits_per_s(r):.1f}/s, {_f(r.batch_readings)} readings, {r.commit_ms:.0f} ms"],
        ["server RSS start / max", f"{r.rss_mb_start:.0f} / {r.rss_mb_max:.0f} MiB"],
    ]
    cpu = r.cpu
    rows.append(["CPU % of one core: server / mosquitto / postgres",
                 f"{cpu['server']:.0f} / {cpu['mosquitto']:.0f} / {cpu['postgres']:.0f}"])
    rows.append(["CPU %: publishers / bench / other (kernel, other processes)",
                 f"{cpu['publishers']:.0f} / {cpu['bench']:.0f} / {cpu['other']:.0f}"])
    rows.append(["CPU %: whole machine (idle second before the run)",
                 f"{cpu['machine']:.0f} of {100 * (os.cpu_count() or 1)} ({r.busy_before:.0f})"])
    rows.append(["CPU %: of postgres, the latency query's backend", f"{cpu['latency query']:.1f}"])
    per_msg = 1e6 * cpu["server"] / 100 * r.window_s / max(r.window_msgs, 1)
    rows.append(["server CPU per committed message (publish window)",
                 f"{per_msg:.0f} µs ({r.window_msgs:,.0f} msgs committed in the window)"])
    console.print(table(f"{r.rate:,} msg/s × {r.duration:.0f} s ({r.rate * 5:,} readings/s offered)",
                        ["figure", "value"], rows))


def print_summary(runs: list[RunResult], base: dict[str, float]) -> None:
    copy = base["copy"]
    rows = [
        ["raw COPY into telemetry (baseline)", f"{_f(copy)} rows/s", "", "1.00"],
        ["COPY to staging + INSERT ON CONFLICT", f"{_f(base['staged'])} rows/s", "",
         f"{base['staged'] / copy:.2f}"],
        ["server writer txn (COPY + device_state), no MQTT", f"{_f(base['writer'])} rows/s", "",
         f"{base['writer'] / copy:.2f}"],
    ]
    for k, v in base.items():
        if k.startswith("writer."):
            rows.append([f"  writer time share: {k[7:]}", f"{100 * v:.0f} %", "", ""])
    for r in runs:
        goal = f"≥ {GOAL_RATE * 5:,} sustained" if r.rate >= GOAL_RATE else ""
        rows.append([f"{r.rate:,} msg/s: committed readings/s, first publish → last commit",
                     f"{_f(r.commit_rate)}", goal, f"{r.commit_rate / copy:.2f}"])
        rows.append([f"{r.rate:,} msg/s: committed readings/s while publishing (steady)",
                     f"{_f(r.steady_rate)}", "", f"{r.steady_rate / copy:.2f}"])
        if r.drain_rate:
            rows.append([f"{r.rate:,} msg/s: committed readings/s draining (publishers done)",
                         f"{_f(r.drain_rate)}", "", f"{r.drain_rate / copy:.2f}"])
        rows.append([f"{r.rate:,} msg/s: sustained, loss", f"{'yes' if r.sustained else 'NO'}, "
                     f"{r.loss:,}", "yes, 0", ""])
        goal = f"< {GOAL_P99_MS:.0f} ms" if r.rate == GOAL_P99_RATE else ""
        note = "" if r.sustained else " (a growing backlog, not a steady latency)"
        rows.append([f"{r.rate:,} msg/s: latency p50 / p99", f"{r.lat_ms(50):.0f} / "
                     f"{r.lat_ms(99):.0f} ms{note}", goal, ""])
        rows.append([f"{r.rate:,} msg/s: CPU % server/mosquitto/postgres/publishers/other/machine",
                     f"{r.cpu['server']:.0f}/{r.cpu['mosquitto']:.0f}/{r.cpu['postgres']:.0f}/"
                     f"{r.cpu['publishers']:.0f}/{r.cpu['other']:.0f}/{r.cpu['machine']:.0f}", "", ""])
    console.print(table("Summary (ratio = readings/s ÷ raw COPY rows/s)",
                        ["figure", "value", "goal", "ratio to COPY"], rows))
    record_summary(runs, base)


def record_summary(runs: list[RunResult], base: dict[str, float]) -> None:
    """The same figures for bench/REPORT.md (``make bench``; a no-op when run by hand)."""
    copy = base["copy"]
    record("ingest", "raw COPY into telemetry", copy, "rows/s", note="the baseline")
    record("ingest", "server writer txn, no MQTT", base["writer"], "rows/s",
           baseline="raw COPY", ratio=base["writer"] / copy)
    for r in runs:
        goal = r.rate >= GOAL_RATE
        record("ingest", f"{r.rate:,} msg/s: committed readings/s", r.commit_rate, "readings/s",
               goal=f"≥ {GOAL_RATE * 5:,} sustained" if goal else None,
               met=(r.sustained and r.loss == 0 and r.commit_rate >= 0.99 * GOAL_RATE * 5)
               if goal else None, baseline="raw COPY", ratio=r.commit_rate / copy)
        record("ingest", f"{r.rate:,} msg/s: loss", r.loss, "readings", goal="0", met=r.loss == 0)
        record("ingest", f"{r.rate:,} msg/s: sustained", 1.0 if r.sustained else 0.0, "yes=1")
        p99 = r.lat_ms(99)
        record("ingest", f"{r.rate:,} msg/s: latency p99", p99, "ms",
               goal=f"< {GOAL_P99_MS:.0f} ms" if r.rate == GOAL_P99_RATE else None,
               met=p99 < GOAL_P99_MS if r.rate == GOAL_P99_RATE else None,
               note="" if r.sustained else "a growing backlog, not a steady latency")
        per_msg = 1e6 * r.cpu["server"] / 100 * r.window_s / max(r.window_msgs, 1)
        record("ingest", f"{r.rate:,} msg/s: server CPU per message", per_msg, "µs",
               note=f"machine busy: other processes {r.cpu['other']:.0f} % of one core")


# ================================================================ main
async def bench(args: argparse.Namespace, stack: Stack) -> None:
    url = stack.create_database("ioc")
    counts = stack.seed(url, args.devices)
    log(f"seeded {sum(counts.values()):,} devices ({counts.get('streetlight', 0):,} streetlights)")
    token = stack.token(url)
    device_ids = [f"SL-{i + 1:06d}" for i in range(args.devices)]

    base = {"copy": float("nan"), "staged": float("nan"), "writer": float("nan")}
    if args.copy_rows:
        stack.pg.create_database("copybench", template="ioc")
        base = await copy_baselines(stack.pg.url("copybench"), args.copy_rows)
        stack.drop_database("copybench")
        stack.checkpoint()

    pipeline = None
    if args.pipeline:
        pipeline = await measure_pipeline(url, device_ids, args.pipeline)
        log(f"pipeline in-process: {pipeline['us_per_msg']:.1f} µs CPU per message, "
            f"{pipeline['msgs_per_s']:,.0f} msg/s, {pipeline['stored']:,} of "
            f"{pipeline['expected']:,} readings stored")

    srv = stack.start_server(url)
    log(f"ioc serve pid {srv.pid} ready on {srv.base_url}, RSS {srv.rss_mb():.0f} MiB")
    # Warm-up: a second of traffic so caches, partitions and connections exist.
    warm = await run_rate(stack, srv, url, token, device_ids, 1000, 2.0, 1, False, False)
    log(f"warm-up: {warm.sent:,} msgs, {warm.stored:,} readings stored, loss {warm.loss}")

    runs = []
    for i, rate in enumerate(args.rates):
        log(f"run: {rate:,} msg/s for {args.duration:.0f} s, {args.publishers} publisher(s)")
        r = await run_rate(stack, srv, url, token, device_ids, rate, args.duration,
                           args.publishers, args.profile and i == len(args.rates) - 1,
                           args.latency_query == "full")
        print_run(r)
        if r.profile_groups:
            console.print(table(f"py-spy: server CPU by component at {rate:,} msg/s "
                                "(% of one core; innermost known frame)",
                                ["component", "% core"],
                                [[g, f"{p:.1f}"] for g, p in r.profile_groups]))
            console.print(table("py-spy: top leaf functions (% of one core)", ["function", "% core"],
                                [[f[:100], f"{p:.1f}"] for f, p in r.profile or []]))
        runs.append(r)

    if args.status_scan:
        srv.stop()
        log(f"staleness scan at {args.status_scan:,} devices")
        scan = await measure_status_scan(stack, args.status_scan)
        console.print(table("Staleness scan (server/ingest/maintenance.py), one round",
                            ["scan", "ms", "rows"], scan))

    if args.clients:
        srv.stop()  # the consumers get the cores to themselves (with mosquitto)
        n = args.client_messages
        log(f"MQTT client alternatives: draining {n:,} queued QoS 1 messages each")
        rows = await measure_clients(stack, device_ids, n, args.publishers)
        dv = await asyncio.to_thread(measure_decode_validate, device_ids, url)
        console.print(table(
            "MQTT client cost per message, no database (consumer CPU incl. importing the client)",
            ["client", "messages", "msg/s", "µs CPU/msg", "msg/s per core", "mosquitto CPU"], rows))
        console.print(f"server decode (adapters.mqtt decode_partial): {dv['decode']:.1f} µs/msg; "
                      f"validate (Ingest._validate): {dv['validate']:.1f} µs/msg")

    console.print(machine_line())
    console.print(f"PostgreSQL: fsync on, synchronous_commit on (production settings); "
                  f"{args.devices:,} streetlights; {args.publishers} publisher process(es); "
                  f"{READINGS_PER_MSG} readings per message")
    if pipeline is not None:
        console.print(f"server CPU per message after the socket (route, decode, validate, queue, "
                      f"COPY, device_state; in-process, {args.pipeline:,} messages): "
                      f"{pipeline['us_per_msg']:.1f} µs → {1e6 / pipeline['us_per_msg']:,.0f} "
                      "msg/s per core")
        record("ingest", "server CPU per message after the socket (in-process)",
               pipeline["us_per_msg"], "µs")
    print_summary(runs, base)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", default="5000,10000",
                   help="messages/s to offer, comma-separated (default 5000,10000)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per rate (default 60)")
    p.add_argument("--quick", action="store_true", help="10 s per rate, smaller COPY baseline")
    p.add_argument("--devices", type=int, default=5000, help="streetlights (default 5000)")
    p.add_argument("--publishers", type=int, default=2, help="publishing processes (default 2)")
    p.add_argument("--copy-rows", type=int, default=1_000_000,
                   help="rows per COPY baseline case (default 1,000,000; 0 = skip)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the server during the last rate (needs py-spy installed)")
    p.add_argument("--clients", action="store_true",
                   help="also measure MQTT client alternatives without the database")
    p.add_argument("--client-messages", type=int, default=100_000)
    p.add_argument("--status-scan", type=int, default=0, metavar="DEVICES",
                   help="also time the staleness scan at this many devices (e.g. 1000000), "
                        "beside the scan of every online device it replaced")
    p.add_argument("--pipeline", type=int, default=50_000, metavar="N",
                   help="messages for the in-process CPU-per-message measurement of the "
                        "server's path after the socket (default 50,000; 0 = skip)")
    p.add_argument("--latency-query", choices=("probe", "full"), default="probe",
                   help="probe: max(last_seen) over every 20th device by primary key (cheap); "
                        "full: over all of device_state (a sequential scan every 20 ms)")
    p.add_argument("--broker-inflight", type=int, default=0,
                   help="override mosquitto's max_inflight_messages (default: the shipped "
                        "10,000): unacknowledged messages in flight to the server")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, profiles)")
    args = p.parse_args(argv)
    args.rates = [int(x) for x in args.rate.split(",") if x.strip()]
    if args.quick:
        args.duration = 10.0
        args.copy_rows = min(args.copy_rows, 400_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    conf = f"max_inflight_messages {args.broker_inflight}\n" if args.broker_inflight else ""
    return run_on_stack(bench, args, mosquitto_conf=conf)


if __name__ == "__main__":
    sys.exit(main())
