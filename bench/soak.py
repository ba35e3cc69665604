"""Soak: 30 minutes at 3,000 messages/s with the simulator's faults on. Memory, queue, latency, loss.

    .venv/bin/python bench/soak.py                  # 30 minutes (about 35 with set-up and drain)
    .venv/bin/python bench/soak.py --minutes 3      # to check it works
    .venv/bin/python bench/soak.py --rate 5000 --minutes 60 --fault-interval 30

Not part of ``make test`` nor of ``make bench`` by default (``bench/run_all.py --soak``).

The stack of ``bench/common.py`` (PostgreSQL with fsync on, mosquitto, ``ioc serve`` as
its own process) runs a whole simulated city and a steady load beside it:

- **The simulated city** (``server.simulate.Simulator`` in this process, as ``ioc demo``
  runs it): ``--city-lamps`` streetlights and the other kinds report at their own
  intervals over MQTT, cabinets and water instruments are Modbus TCP gateways the server
  polls, and the seeded fault schedule starts a fault every ``--fault-interval`` seconds on
  average (lamp faults, cabinet trips, bursts, NaN channels, silent devices going offline,
  …). The server runs the demo's alarm rules (``server/cli/demo_rules.yaml``), so the faults
  raise and clear alarms all along.
- **The load**: ``--devices`` extra streetlights (``SOAK-000001`` …, ward ``soak-load``,
  added after the simulator read the registry, so only the load reports for them) get
  ``--rate`` messages/s of 5 readings from ``bench/ingest.py``'s paho publishers (QoS 1,
  ``ts`` = publish time, unique per device). Their synthetic values follow no lighting
  schedule, so the demo rules about lamps are scoped to the city's own wards; every load
  reading still goes through the rule engine.

Every ``--sample`` seconds (10) it records the server's RSS (and mosquitto's), the ingest
queue depth (``ioc_ingest_queue_depth``, polled every second: mean and max per window),
publish → commit latency p50/p99 in the window (``bench/ingest.py``'s sampler: the age of
the newest committed reading of probe devices, every 20 ms), load readings sent and
readings stored (the server's counter, all sources: the simulated city adds its own),
alarm transitions, the server's CPU. The samples go to ``bench/out/soak-samples.csv``.

At the end, with the first ``--warmup`` minutes (5) left out:

- **RSS growth**: median RSS of the last minute against the first minute after warm-up,
  in % (goal < 5 %), and the fitted slope in MiB/hour;
- **queue depth trend**: mean depth over the last ``--compare`` minutes (5) against the
  first ones after warm-up; "no growth" means the later mean is at most one second of
  offered readings above the earlier one; and the fitted slope;
- **latency steadiness**: p99 over the last ``--compare`` minutes against the first ones
  after warm-up (goal: at most 1.5 ×, our choice: steady within a busy machine's noise);
- **zero loss**: the load's rows in ``telemetry`` counted exactly after the drain, against
  messages sent × 5; no duplicates.

Short runs scale the windows down: warm-up at most a sixth of the run, comparison windows
at most half of what follows it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    Stack,
    console,
    log,
    machine_line,
    percentile,
    run_on_stack,
    table,
    tree_cpu_seconds,
)
from ingest import (
    READINGS_PER_MSG,
    Probe,
    Publishers,
    _dead,
    _dups,
    _stored,
    latency_sampler,
    probe_ids,
)
from report import context as record_context
from report import record

from server.simulate import Simulator

OUT = REPO / "bench" / "out"
DEMO_RULES = REPO / "server" / "cli" / "demo_rules.yaml"
LOAD_WARD = "soak-load"
GOAL_RSS_GROWTH_PCT = 5.0
GOAL_P99_RATIO = 1.5
DRAIN_LIMIT_S = 180.0


# ---------------------------------------------------------------- samples and their analysis
@dataclass
class Sample:
    t: float  # seconds since the load started (end of the window)
    rss_mb: float
    mosquitto_rss_mb: float
    queue_mean: float
    queue_max: float
    sent: int  # load messages published so far
    stored: float  # readings committed so far (server counter since the load started, all sources)
    dead: float  # dead letters so far (the simulator's faults make some)
    duplicates: float
    transitions: float  # alarm transitions so far
    p50_ms: float
    p99_ms: float
    latency_samples: int
    server_cpu_pct: float
    faults_active: int


@dataclass
class Verdict:
    warmup_s: float
    compare_s: float
    rss_start_mb: float = math.nan
    rss_end_mb: float = math.nan
    rss_growth_pct: float = math.nan
    rss_slope_mb_h: float = math.nan
    queue_first: float = math.nan
    queue_last: float = math.nan
    queue_slope_per_min: float = math.nan
    queue_tolerance: float = math.nan
    p99_first_ms: float = math.nan
    p99_last_ms: float = math.nan
    p50_all_ms: float = math.nan
    p99_all_ms: float = math.nan
    notes: list[str] = field(default_factory=list)

    @property
    def rss_met(self) -> bool | None:
        return None if math.isnan(self.rss_growth_pct) else self.rss_growth_pct < GOAL_RSS_GROWTH_PCT

    @property
    def queue_met(self) -> bool | None:
        if math.isnan(self.queue_last):
            return None
        return self.queue_last <= self.queue_first + self.queue_tolerance

    @property
    def p99_ratio(self) -> float:
        return self.p99_last_ms / self.p99_first_ms if self.p99_first_ms > 0 else math.nan

    @property
    def latency_met(self) -> bool | None:
        r = self.p99_ratio
        return None if math.isnan(r) else r <= GOAL_P99_RATIO


def windows(duration_s: float, warmup_s: float, compare_s: float) -> tuple[float, float]:
    """Warm-up and comparison window lengths fitted to the run: warm-up at most a sixth of
    it, each comparison window at most half of what follows the warm-up."""
    warm = min(warmup_s, duration_s / 6)
    return warm, min(compare_s, (duration_s - warm) / 2)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (per unit of x); NaN with fewer than 2 points."""
    if len(points) < 2:
        return math.nan
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else math.nan


def analyse(samples: list[Sample], latency: list[tuple[float, float]], duration_s: float,
            warmup_s: float, compare_s: float, rate: float) -> Verdict:
    """The end-of-run figures. ``latency``: (seconds since the load started, age in s)."""
    warm, cmp_s = windows(duration_s, warmup_s, compare_s)
    v = Verdict(warm, cmp_s)
    v.queue_tolerance = rate * READINGS_PER_MSG  # one second of offered readings
    after = [s for s in samples if s.t > warm]
    if not after:
        v.notes.append("no samples after the warm-up")
        return v
    rss_win = min(60.0, cmp_s)
    first_rss = [s.rss_mb for s in after if s.t <= warm + rss_win]
    last_rss = [s.rss_mb for s in after if s.t > duration_s - rss_win]
    if first_rss and last_rss:
        v.rss_start_mb, v.rss_end_mb = statistics.median(first_rss), statistics.median(last_rss)
        v.rss_growth_pct = 100 * (v.rss_end_mb - v.rss_start_mb) / v.rss_start_mb
    v.rss_slope_mb_h = slope([(s.t, s.rss_mb) for s in after]) * 3600
    first = [s for s in after if s.t <= warm + cmp_s]
    last = [s for s in after if s.t > duration_s - cmp_s]
    if first and last:
        v.queue_first = statistics.fmean(s.queue_mean for s in first)
        v.queue_last = statistics.fmean(s.queue_mean for s in last)
    v.queue_slope_per_min = slope([(s.t, s.queue_mean) for s in after]) * 60
    lat_first = [a for t, a in latency if warm < t <= warm + cmp_s]
    lat_last = [a for t, a in latency if duration_s - cmp_s < t <= duration_s]
    v.p99_first_ms = 1000 * percentile(lat_first, 99)
    v.p99_last_ms = 1000 * percentile(lat_last, 99)
    lat_after = [a for t, a in latency if warm < t <= duration_s]
    v.p50_all_ms = 1000 * percentile(lat_after, 50)
    v.p99_all_ms = 1000 * percentile(lat_after, 99)
    return v


# ---------------------------------------------------------------- the city and the load
def scoped_rules(path: Path, wards: list[str]) -> Path:
    """The demo rules, with every rule that watches streetlights limited to the city's wards:
    the load's lamps send synthetic values (lit by day) that would raise a day-burner alarm
    on each of them."""
    doc = yaml.safe_load(DEMO_RULES.read_text())
    for rule in doc.get("rules", []):
        sel = rule.get("select")
        kinds = sel.get("kind") if isinstance(sel, dict) else None
        if kinds == "streetlight" or (isinstance(kinds, list) and "streetlight" in kinds):
            sel["ward"] = wards
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


async def add_load_devices(url: str, n: int) -> tuple[list[str], int, int, list[str]]:
    """``n`` streetlights SOAK-000001… copied from the city's lamps (position, properties),
    no parent, ward ``soak-load`` (so that rules can leave them out). Returns their ids,
    their key range and the city's wards."""
    conn = await asyncpg.connect(url)
    try:
        wards = [r[0] for r in await conn.fetch(
            "select distinct ward from devices where ward is not null order by 1")]
        unwarded = await conn.fetchval(
            "select count(*) from devices where kind = 'streetlight' and ward is null")
        if unwarded:
            log(f"{unwarded} of the city's lamps have no ward: the lamp rules skip them")
        await conn.execute(
            "with src as (select row_number() over (order by key) - 1 as i, geom, properties,"
            " expected_interval_s from devices where kind = 'streetlight'),"
            " n as (select count(*) as c from src)"
            " insert into devices (id, kind, name, geom, ward, properties, expected_interval_s)"
            " select format('SOAK-%s', lpad(g::text, 6, '0')), 'streetlight',"
            " format('Soak load %s', g), s.geom, $2, s.properties, s.expected_interval_s"
            " from generate_series(1, $1::int) g cross join n join src s on s.i = (g - 1) % n.c",
            n, LOAD_WARD)
        # The ward trigger derives a ward from the position on insert (and on a move), not on
        # an update of the ward alone: set it afterwards.
        await conn.execute("update devices set ward = $1 where id like 'SOAK-%'", LOAD_WARD)
        row = await conn.fetchrow(
            "select min(key) lo, max(key) hi, count(*) filter (where ward = $1) warded from devices"
            " where id like 'SOAK-%'", LOAD_WARD)
        if row["warded"] != n:
            raise RuntimeError(f"only {row['warded']} of {n} load devices kept ward {LOAD_WARD!r}")
        await conn.execute("analyze devices")
    finally:
        await conn.close()
    return [f"SOAK-{i:06d}" for i in range(1, n + 1)], row["lo"], row["hi"], wards


def write_samples(path: Path, samples: list[Sample]) -> None:
    if not samples:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(samples[0])))
        w.writeheader()
        w.writerows(asdict(s) for s in samples)


def _rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return math.nan


# ---------------------------------------------------------------- the run
async def soak(args: argparse.Namespace, stack: Stack) -> int:
    duration = 60 * args.minutes
    url = stack.create_database("ioc")
    counts = stack.seed(url, args.city_lamps)
    log(f"seeded the city: {sum(counts.values()):,} devices ({counts.get('streetlight', 0):,} lamps)")

    sim = Simulator(url, stack.mqtt.url, seed=args.seed, faults=True,
                    fault_interval_s=args.fault_interval, client_id="bench-soak-sim")
    await sim.load()  # the simulated fleet is the city as it is now, before the load's lamps
    load_ids, key_lo, key_hi, wards = await add_load_devices(url, args.devices)
    log(f"added {len(load_ids):,} load lamps (keys {key_lo}-{key_hi}, ward {LOAD_WARD})")
    env = {"IOC_API__RATE_LIMIT": "false"}
    if args.rules:
        rules = scoped_rules(stack.dir / "soak_rules.yaml", wards)
        env["IOC_RULES__PATHS"] = json.dumps([str(rules)])
    try:
        await sim.start()
        gateways = sim.gateway_settings()
        env["IOC_MODBUS__GATEWAYS"] = json.dumps(gateways)
        log(f"simulator: {len(sim.fleet):,} devices, {len(gateways)} Modbus gateways, a fault "
            f"every {args.fault_interval:.0f} s on average")
        srv = stack.start_server(url, extra_env=env)
        log(f"ioc serve pid {srv.pid} ready on {srv.base_url}, RSS {srv.rss_mb():.0f} MiB")
        return await _run(args, stack, srv, sim, url, load_ids, (key_lo, key_hi), duration)
    finally:
        await sim.stop()


async def _run(args, stack: Stack, srv, sim: Simulator, url: str, load_ids: list[str],
               keys: tuple[int, int], duration: float) -> int:
    token = stack.token(url)
    async with contextlib.AsyncExitStack() as ex:
        session = await ex.enter_async_context(aiohttp.ClientSession())
        probe = Probe(session, srv.base_url, token)
        # What the simulated city alone commits, for reading the stored column below; after
        # its first reports (every device reports once within 10 s of connecting).
        await asyncio.sleep(10)
        m_a = await probe.get()
        await asyncio.sleep(10)
        m_b = await probe.get()
        city_rate = (_stored(m_b) - _stored(m_a)) / 10
        log(f"the simulated city alone: {city_rate:,.0f} readings/s committed")

        pubs = Publishers(args.publishers, stack.mqtt.host, stack.mqtt.port, load_ids, args.rate,
                          duration)
        ex.callback(pubs.kill)
        # Publishers.wait blocks a worker thread on the result queue for up to the whole run;
        # when the run is cut short (Ctrl-C, SIGTERM) a message releases it, or asyncio.run
        # would wait for that thread before the stack could stop.
        ex.callback(pubs.results.put, ("error", -1, "the soak stopped"))
        start_at = await pubs.start()
        stop = asyncio.Event()
        lat_raw: list[tuple[float, float, float]] = []
        sampler = asyncio.create_task(latency_sampler(
            url, stop, lat_raw, [], probe_ids(load_ids, args.publishers)))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        m0 = await probe.get()
        pub_task = asyncio.create_task(pubs.wait(duration + 300))
        log(f"load: {args.rate:,} msg/s × {READINGS_PER_MSG} readings to {len(load_ids):,} lamps for "
            f"{args.minutes:g} min; a sample every {args.sample:.0f} s")
        faults: set[tuple[int, str]] = set()
        samples = await _sample(args, stack, srv, sim, probe, pubs, pub_task, m0, start_at, lat_raw,
                                duration, faults)
        if pub_task.done() and pub_task.exception():
            raise pub_task.exception()
        pub = await pub_task
        t_pub_end = time.time()
        await sim.stop()  # the counters settle once the city is quiet too
        stop.set()
        await sampler
        m_end, drained = await _drain(probe)
        drain_s = time.time() - t_pub_end
        conn = await asyncpg.connect(url)
        try:
            stored_load = await conn.fetchval(
                "select count(*) from telemetry where device_key between $1 and $2", *keys)
            alarms = await conn.fetchval("select count(*) from alarms")
        finally:
            await conn.close()

    latency = [(t - start_at, age) for t, age, _ in lat_raw]
    v = analyse(samples, latency, duration, 60 * args.warmup, 60 * args.compare, args.rate)
    loss = pub["sent"] * READINGS_PER_MSG - stored_load
    dups = _dups(m_end) - _dups(m0)
    dead = _dead(m_end) - _dead(m0)
    write_samples(args.samples, samples)
    summary = {
        "sent": pub["sent"], "acked": pub["acked"], "publish_rate": pub["sent"] / max(
            pub["t_last"] - pub["t_first"], 1e-9), "behind_max_s": pub["behind_max"],
        "stored_load": stored_load, "loss": loss, "duplicates": dups, "dead": dead,
        "drain_s": drain_s, "drained": drained, "alarms": alarms,
        "faults": len(faults), "fault_kinds": sorted({k for _, k in faults}),
    }
    print_result(args, v, summary, samples)
    record_result(args, v, summary)
    return 0


async def _sample(args, stack: Stack, srv, sim: Simulator, probe: Probe, pubs: Publishers,
                  pub_task: asyncio.Task, m0: dict, start_at: float,
                  lat_raw: list[tuple[float, float, float]], duration: float,
                  faults: set[tuple[int, str]]) -> list[Sample]:
    """One :class:`Sample` per window until the publishers are done; ``faults`` collects the
    (id, kind) of every fault seen active."""
    samples: list[Sample] = []
    queue: list[float] = []
    lat_i = 0
    cpu_prev, wall_prev = tree_cpu_seconds(srv.pid), time.monotonic()
    next_at = start_at + args.sample
    console.print(f"[dim]{'t s':>6} {'RSS MiB':>8} {'queue mean/max':>15} {'p50/p99 ms':>12} "
                  f"{'sent/s':>8} {'stored/s':>9} {'CPU %':>6} {'alarms±':>7} faults[/dim]")
    last_sent, last_stored = 0, 0.0
    while not pub_task.done():
        await asyncio.wait({pub_task}, timeout=1.0)
        if srv.proc is None or srv.proc.poll() is not None:
            raise RuntimeError(f"ioc serve exited during the soak{srv.tail()}")
        m = await probe.get()
        queue.append(m.get("ioc_ingest_queue_depth", 0.0))
        for f in sim.active_faults:
            faults.add((f.id, f.kind))
        now = time.time()
        if now < next_at and not pub_task.done():
            continue
        t = min(now - start_at, duration)
        window = [(ts, a) for ts, a, _ in lat_raw[lat_i:] if ts <= now]
        lat_i += len(window)
        # After the last publish the newest reading only ages: not a latency.
        ages = [a for ts, a in window if ts <= start_at + duration]
        cpu, wall = tree_cpu_seconds(srv.pid), time.monotonic()
        sent = pubs.sent()
        stored = _stored(m) - _stored(m0)
        s = Sample(
            t=round(t, 1), rss_mb=round(srv.rss_mb(), 2),
            mosquitto_rss_mb=round(_rss_mb(stack.mosquitto_pid), 2),
            queue_mean=round(statistics.fmean(queue), 1) if queue else 0.0,
            queue_max=max(queue, default=0.0), sent=sent, stored=stored,
            dead=_dead(m) - _dead(m0), duplicates=_dups(m) - _dups(m0),
            transitions=m.get("ioc_alarm_transitions_total", 0.0)
            - m0.get("ioc_alarm_transitions_total", 0.0),
            p50_ms=round(1000 * percentile(ages, 50), 1), p99_ms=round(1000 * percentile(ages, 99), 1),
            latency_samples=len(ages), server_cpu_pct=round(100 * (cpu - cpu_prev) / (wall - wall_prev), 1),
            faults_active=len(sim.active_faults),
        )
        span = max(wall - wall_prev, 1e-9)
        prev_transitions = samples[-1].transitions if samples else 0.0
        console.print(
            f"{s.t:6.0f} {s.rss_mb:8.1f} {s.queue_mean:>7,.0f}/{s.queue_max:<7,.0f} "
            f"{s.p50_ms:5.0f}/{s.p99_ms:<6.0f} {(sent - last_sent) * READINGS_PER_MSG / span:8,.0f} "
            f"{(stored - last_stored) / span:9,.0f} {s.server_cpu_pct:6.0f} "
            f"{s.transitions - prev_transitions:7,.0f} {s.faults_active}")
        samples.append(s)
        last_sent, last_stored = sent, stored
        cpu_prev, wall_prev = cpu, wall
        queue = []
        next_at += args.sample
    return samples


async def _drain(probe: Probe) -> tuple[dict, bool]:
    """Until the queue is empty and the stored count has not moved for 3 s (or the limit)."""
    deadline = time.monotonic() + DRAIN_LIMIT_S
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        m = await probe.get()
        stored = _stored(m)
        if stored != last:
            last, since = stored, time.monotonic()
        elif m.get("ioc_ingest_queue_depth", 0.0) == 0 and time.monotonic() - since >= 3:
            return m, True
        await asyncio.sleep(0.5)
    return await probe.get(), False


# ---------------------------------------------------------------- output
def _yn(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "n/a"}[met]


def print_result(args, v: Verdict, r: dict, samples: list[Sample]) -> None:
    warm_min, cmp_min = v.warmup_s / 60, v.compare_s / 60
    rows = [
        ["load messages sent (PUBACKed)", f"{r['sent']:,} ({r['acked']:,})", "", ""],
        ["publish rate achieved", f"{r['publish_rate']:,.0f} msg/s (max {r['behind_max_s'] * 1000:.0f} ms "
         "behind schedule)", f"{args.rate:,}", ""],
        ["load readings stored (exact count) / loss", f"{r['stored_load']:,} / {r['loss']:,}", "0 lost",
         _yn(r["loss"] == 0 and r["duplicates"] == 0)],
        ["duplicates / dead letters (all sources)", f"{r['duplicates']:,.0f} / {r['dead']:,.0f}",
         "0 / –", ""],
        ["drain after the last publish", f"{r['drain_s']:.1f} s" + ("" if r["drained"] else " (NOT drained)"),
         "", ""],
        [f"server RSS: first minute after {warm_min:g} min warm-up → last minute",
         f"{v.rss_start_mb:.1f} → {v.rss_end_mb:.1f} MiB ({v.rss_growth_pct:+.1f} %; "
         f"slope {v.rss_slope_mb_h:+.1f} MiB/h)", f"< {GOAL_RSS_GROWTH_PCT:g} %", _yn(v.rss_met)],
        [f"queue depth mean: first {cmp_min:g} min after warm-up → last {cmp_min:g} min",
         f"{v.queue_first:,.0f} → {v.queue_last:,.0f} readings (slope {v.queue_slope_per_min:+,.1f}/min)",
         f"no growth (≤ +{v.queue_tolerance:,.0f})", _yn(v.queue_met)],
        [f"latency p99: first {cmp_min:g} min after warm-up → last {cmp_min:g} min",
         f"{v.p99_first_ms:.0f} → {v.p99_last_ms:.0f} ms ({v.p99_ratio:.2f} ×)",
         f"≤ {GOAL_P99_RATIO:g} ×", _yn(v.latency_met)],
        ["latency p50 / p99 after warm-up", f"{v.p50_all_ms:.0f} / {v.p99_all_ms:.0f} ms", "", ""],
        ["faults started by the simulator / alarms raised",
         f"{r['faults']} ({', '.join(r['fault_kinds'])}) / {r['alarms']}", "", ""],
    ]
    if samples:
        rows.append(["mosquitto RSS first → last sample",
                     f"{samples[0].mosquitto_rss_mb:.1f} → {samples[-1].mosquitto_rss_mb:.1f} MiB", "", ""])
    console.print(table(f"Soak: {args.rate:,} msg/s × {args.minutes:g} min, faults on", ["figure", "value",
                        "goal", ""], rows))
    for note in v.notes:
        console.print(f"[yellow]{note}[/yellow]")
    console.print(f"samples: {args.samples}")
    console.print(machine_line())


def record_result(args, v: Verdict, r: dict) -> None:
    cmp_min = v.compare_s / 60
    record_context("soak", minutes=f"{args.minutes:g}", rate=f"{args.rate:,} msg/s × 5 readings",
                   load_lamps=f"{args.devices:,}", city_lamps=f"{args.city_lamps:,}",
                   faults=f"one every {args.fault_interval:g} s on average",
                   warmup=f"{v.warmup_s / 60:g} min", compared=f"{cmp_min:g} min windows")
    record("soak", "server RSS growth after warm-up", v.rss_growth_pct, "%",
           goal=f"< {GOAL_RSS_GROWTH_PCT:g} %", met=v.rss_met,
           note=f"{v.rss_start_mb:.0f} → {v.rss_end_mb:.0f} MiB, slope {v.rss_slope_mb_h:+.1f} MiB/h")
    record("soak", "ingest queue depth trend after warm-up", v.queue_slope_per_min, "readings/min",
           goal="no growth", met=v.queue_met,
           note=f"mean {v.queue_first:,.0f} → {v.queue_last:,.0f} (first vs last {cmp_min:g} min)")
    record("soak", f"latency p99, last {cmp_min:g} min", v.p99_last_ms, "ms",
           goal=f"≤ {GOAL_P99_RATIO:g} × the first {cmp_min:g} min", met=v.latency_met,
           baseline=f"p99 of the first {cmp_min:g} min after warm-up", ratio=v.p99_ratio)
    record("soak", "latency p50 after warm-up", v.p50_all_ms, "ms")
    record("soak", "latency p99 after warm-up", v.p99_all_ms, "ms")
    record("soak", "load readings lost", r["loss"], "readings", goal="0, no duplicates",
           met=r["loss"] == 0 and r["duplicates"] == 0,
           note=f"{r['stored_load']:,} stored of {r['sent'] * READINGS_PER_MSG:,} sent; "
                f"{r['duplicates']:,.0f} duplicates")
    record("soak", "publish rate achieved", r["publish_rate"], "msg/s", goal=f"{args.rate:,} msg/s (≥ 98 %)",
           met=r["publish_rate"] >= 0.98 * args.rate)
    record("soak", "faults started / alarms raised", r["faults"], "faults", note=f"{r['alarms']} alarms")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the load (default 30)")
    p.add_argument("--rate", type=int, default=3000, help="load messages/s of 5 readings (default 3000)")
    p.add_argument("--devices", type=int, default=5000, help="load lamps (default 5000)")
    p.add_argument("--city-lamps", type=int, default=5000, help="the simulated city's lamps (default 5000)")
    p.add_argument("--publishers", type=int, default=2, help="publishing processes (default 2)")
    p.add_argument("--fault-interval", type=float, default=60.0,
                   help="mean seconds between the simulator's scheduled faults (default 60)")
    p.add_argument("--no-rules", dest="rules", action="store_false", help="no alarm rules")
    p.add_argument("--warmup", type=float, default=5.0, help="minutes left out at the start (default 5)")
    p.add_argument("--compare", type=float, default=5.0,
                   help="minutes of the first and last windows compared (default 5)")
    p.add_argument("--sample", type=float, default=10.0, help="seconds per sample (default 10)")
    p.add_argument("--seed", type=int, default=42, help="the simulator's seed")
    p.add_argument("--samples", type=Path, default=OUT / "soak-samples.csv", help="CSV of the samples")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server log, rules)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.devices <= 0:
        p.error("--minutes, --rate and --devices must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run_on_stack(soak, args)


if __name__ == "__main__":
    sys.exit(main())
