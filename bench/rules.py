"""Alarm rules: evaluations per second, reading → alarm-committed latency, timer lateness.

    .venv/bin/python bench/rules.py --quick          # evaluator 100k devices + 10 s end to end
    .venv/bin/python bench/rules.py                  # 60 s end to end at 5,000 msg/s
    .venv/bin/python bench/rules.py --no-e2e         # only the in-process evaluator figures

1. **Evaluator inside the pipeline** (in this process, no I/O): 100,000 streetlights, 5
   rules each (fault on ``lamp_fault``, threshold with an on-delay on ``power_w``, rate of
   change on ``power_w``, the lighting schedule from the sun at each lamp, stale data),
   plus a topology rule over the lamp faults of 4,000 cabinets. Batches are built exactly
   as ingest hands them to listeners (``Committed.rows``: tuples with datetimes, 20,000
   readings = 5,000 messages of 4 metrics), and timed through ``server.alarms.engine`` 's
   conversion and ``RuleEngine.evaluate``: device-rule evaluations per second, with and
   without the conversion. 0.1 % of the readings are faults, so transitions are made
   too. Then the timer sweep: ``next_deadline`` + ``fire`` over all rules.
2. **End to end** (``bench/common.py``'s stack: PostgreSQL with fsync on, mosquitto,
   ``ioc serve`` as its own process, seeded city): publishers send 5,000 msg/s (bench/
   ingest.py's) to the city's lamps, each evaluated by 5 rules that stay quiet. Probe
   lamps, outside that load, get a reading over a limit every 100 ms (and a normal one
   after it): ``probe-now`` raises at once, ``probe-delayed`` after a 2 s on-delay.
   Afterwards, from ``alarm_events``: reading → alarm-committed latency (event time minus
   the reading's ``ts``; the event time is its transaction's start, a few ms before its
   commit) p50/p99/max for raises and clears, and the delayed probe's lateness (event
   time minus ``ts`` + 2 s: timer lateness plus storing). The server's own timer lateness
   histogram (``ioc_alarm_timer_lateness_seconds``) is printed beside it.

Goals (issue 4): over 1,000,000 device-rule evaluations/s; p99 under 1 s at 5,000 msg/s;
timers within a second of their deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from common import (
    Stack,
    console,
    install_signal_handlers,
    log,
    machine_line,
    parse_metrics,
    percentile,
    table,
)
from report import context as record_context
from report import record

from rules.devices import DeviceRow, DeviceTable
from rules.engine import RuleEngine
from rules.evaluator import MetricInfo
from rules.models import parse_rule
from server.alarms.engine import committed_batch

GOAL_EVALS = 1_000_000
GOAL_P99_S = 1.0
DEVICES = 100_000
PER_CABINET = 25
METRICS = {"lamp_on": MetricInfo(1, True), "power_w": MetricInfo(2, False),
           "lamp_fault": MetricInfo(3, True), "dim_level_pct": MetricInfo(4, False)}
LAMP_RULES = [
    {"id": "lamp-fault", "kind": "fault", "select": {"kind": "streetlight"}, "metric": "lamp_fault",
     "severity": "minor"},
    {"id": "lamp-overpower", "kind": "threshold", "select": {"kind": "streetlight"},
     "metric": "power_w", "above": 150, "deadband": 5, "on_delay": "30s", "severity": "minor"},
    {"id": "lamp-power-jump", "kind": "rate_of_change", "select": {"kind": "streetlight"},
     "metric": "power_w", "window": "10m", "above": 50, "severity": "warning"},
    {"id": "lamp-sched", "kind": "lighting_schedule", "select": {"kind": "streetlight"},
     "check": "day_burner", "severity": "warning"},
    {"id": "lamp-silent", "kind": "stale", "select": {"kind": "streetlight"},
     "missed_intervals": 3, "severity": "minor"},
]
FEEDER = {"id": "feeder-dark", "kind": "topology", "member": "lamp-fault", "min_count": 4,
          "within": "5m", "severity": "critical"}


# ================================================================ 1. the evaluator
def lamp_table(n: int) -> DeviceTable:
    rng = np.random.default_rng(1)
    lon = 105.75 + rng.random(n) * 0.2
    lat = 21.5 + rng.random(n) * 0.2
    cabinets = n // PER_CABINET
    rows = [DeviceRow(k + 1, f"LC-{k:06d}", "lighting_cabinet", 105.8, 21.6, interval_s=10)
            for k in range(cabinets)]
    rows += [DeviceRow(cabinets + i + 1, f"SL-{i:06d}", "streetlight", float(lon[i]), float(lat[i]),
                       parent=f"LC-{i // PER_CABINET:06d}", interval_s=300) for i in range(n)]
    return DeviceTable.build(rows)


def committed_rows(table: DeviceTable, start: int, n_msgs: int, t: float, fault_every: int,
                   seq: int) -> list[tuple]:
    """Rows as ingest commits them: (key, metric id, ts, value, quality, received)."""
    lamps = np.flatnonzero(table.kinds == "streetlight")
    received = datetime.now(UTC)
    rows = []
    for j in range(n_msgs):
        i = lamps[(start + j) % len(lamps)]
        key = int(table.keys[i])
        ts = datetime.fromtimestamp(t + j * 1e-4, UTC)
        m = seq + j
        fault = fault_every and m % fault_every == 0
        rows += [(key, 1, ts, 0.0 if fault else 1.0, 0, received),
                 (key, 2, ts, 0.0 if fault else 40.0 + (m % 7), 0, received),
                 (key, 3, ts, 1.0 if fault else 0.0, 0, received),
                 (key, 4, ts, 70.0, 0, received)]
    return rows


def bench_evaluator(n_devices: int, rounds: int) -> dict[str, float]:
    table = lamp_table(n_devices)
    engine = RuleEngine(table, METRICS)
    changes = engine.set_rules([parse_rule(d) for d in [*LAMP_RULES, FEEDER]])
    assert not changes.errors, changes.errors
    msgs_per_batch = 5000
    # Night at the lamps (so lamps on is normal), one batch every ~second of simulated time.
    t0 = datetime(2026, 1, 15, 16, 0, tzinfo=UTC).timestamp()  # 23:00 in Hanoi
    batches = []
    per_round = math.ceil(n_devices / msgs_per_batch)
    log(f"building {per_round * rounds} batches of {msgs_per_batch * 4:,} readings "
        f"({n_devices:,} lamps × {rounds} rounds)")
    for r in range(rounds):
        for b in range(per_round):
            seq = (r * per_round + b) * msgs_per_batch
            batches.append(committed_rows(table, b * msgs_per_batch, msgs_per_batch,
                                          t0 + r * 60 + b, 1000, seq))
    transitions = 0
    convert_s = eval_s = 0.0
    before = engine.evaluations
    for rows in batches:
        a = time.perf_counter()
        batch = committed_batch(engine, rows)
        b = time.perf_counter()
        transitions += len(engine.evaluate(batch))
        c = time.perf_counter()
        convert_s += b - a
        eval_s += c - b
    evals = engine.evaluations - before
    # The timer task's work per wake: the nearest deadline, then what is due.
    now = t0 + rounds * 60 + 900
    a = time.perf_counter()
    for _ in range(20):
        engine.next_deadline()
    sweep_s = (time.perf_counter() - a) / 20
    a = time.perf_counter()
    fired = engine.fire(now)
    fire_s = time.perf_counter() - a
    return {"devices": n_devices, "rules": len(LAMP_RULES), "evaluations": evals,
            "readings": sum(len(r) for r in batches), "convert_s": convert_s, "eval_s": eval_s,
            "transitions": transitions, "sweep_ms": sweep_s * 1000, "fire_ms": fire_s * 1000,
            "fired": len(fired)}


def print_evaluator(r: dict[str, float]) -> None:
    total = r["convert_s"] + r["eval_s"]
    rows = [
        ["device-rule evaluations", f"{r['evaluations']:,}", ""],
        ["readings (in Committed batches)", f"{r['readings']:,}", ""],
        ["transitions made", f"{r['transitions']:,}", ""],
        ["evaluations/s, pipeline (convert + evaluate)", f"{r['evaluations'] / total:,.0f}",
         f"goal > {GOAL_EVALS:,}: {'met' if r['evaluations'] / total > GOAL_EVALS else 'NOT met'}"],
        ["evaluations/s, evaluate only", f"{r['evaluations'] / r['eval_s']:,.0f}", ""],
        ["readings/s converted (Committed rows → arrays)", f"{r['readings'] / r['convert_s']:,.0f}", ""],
        ["timer: next deadline over all rules", f"{r['sweep_ms']:.2f} ms", ""],
        ["timer: fire (stale sweep, 15 min later)", f"{r['fire_ms']:.1f} ms",
         f"{r['fired']:,} fired"],
    ]
    console.print(table(f"Evaluator: {r['devices']:,} devices × {r['rules']} rules (+ topology)",
                        ["", "value", "note"], rows))
    # For bench/REPORT.md (bench/report.py; nothing when run by hand).
    record_context("rules", evaluator=f"{r['devices']:,} devices × {r['rules']} rules (+ topology), "
                                      "in process")
    pipeline, only = r["evaluations"] / total, r["evaluations"] / r["eval_s"]
    record("rules", "evaluations/s, pipeline (convert + evaluate)", pipeline, "evals/s",
           goal=f"> {GOAL_EVALS:,}", met=pipeline > GOAL_EVALS, baseline="evaluate only",
           ratio=pipeline / only)
    record("rules", "evaluations/s, evaluate only", only, "evals/s")
    record("rules", "timer: fire (stale sweep)", r["fire_ms"], "ms", note=f"{r['fired']:,} fired")


# ================================================================ 2. end to end
def rules_file(path: Path, now_ids: list[str], delayed_ids: list[str]) -> Path:
    import yaml

    quiet = [
        {"id": "lamp-overpower", "kind": "threshold", "select": {"kind": "streetlight"},
         "metric": "power_w", "above": 500, "on_delay": "30s", "severity": "minor"},
        {"id": "lamp-power-jump", "kind": "rate_of_change", "select": {"kind": "streetlight"},
         "metric": "power_w", "window": "10m", "above": 5000, "severity": "warning"},
        {"id": "lamp-silent", "kind": "stale", "select": {"kind": "streetlight"},
         "missed_intervals": 3, "interval": "10m", "severity": "minor"},
        {"id": "lamp-dim-odd", "kind": "state", "select": {"kind": "streetlight"},
         "metric": "dim_level_pct", "in": [-1], "severity": "warning"},
        {"id": "lamp-bad", "kind": "fault", "select": {"kind": "streetlight"},
         "metric": "power_w", "severity": "minor"},
    ]
    probes = [
        {"id": "probe-now", "kind": "threshold", "select": {"devices": now_ids},
         "metric": "power_w", "above": 1000, "severity": "minor"},
        {"id": "probe-delayed", "kind": "threshold", "select": {"devices": delayed_ids},
         "metric": "power_w", "above": 1000, "on_delay": "2s", "severity": "minor"},
    ]
    path.write_text(yaml.safe_dump({"rules": quiet + probes}, sort_keys=False))
    return path


async def probe_loop(mqtt_url: str, now_ids: list[str], delayed_ids: list[str], duration: float,
                     every: float = 0.1) -> int:
    """Alternate over/under the limit on each probe lamp in turn; ts = now."""
    import aiomqtt
    import orjson

    from server.mqtt.link import parse_mqtt_url

    sent = 0
    state: dict[str, bool] = {}
    async with aiomqtt.Client(**parse_mqtt_url(mqtt_url), identifier="probe-" + uuid.uuid4().hex[:6]) as c:
        end = time.time() + duration
        i = 0
        ids = [d for pair in zip(now_ids, delayed_ids, strict=False) for d in pair]
        while time.time() < end:
            dev = ids[i % len(ids)]
            over = not state.get(dev, False)
            if dev in delayed_ids and not over:
                # Keep a delayed probe over its limit past the 2 s on-delay before clearing.
                raised_at = state.get(dev + ":t", 0.0)
                if time.time() - raised_at < 3.0:
                    i += 1
                    await asyncio.sleep(every / 4)
                    continue
            state[dev] = over
            if over:
                state[dev + ":t"] = time.time()
            ms = int(time.time() * 1000)
            ts = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
            payload = {"ts": ts, "values": {"power_w": 2000.0 if over else 40.0}}
            await c.publish(f"ioc/v1/{dev}/telemetry", orjson.dumps(payload), qos=1)
            sent += 1
            i += 1
            await asyncio.sleep(every)
    return sent


async def bench_e2e(args) -> dict:
    import asyncpg
    from ingest import Publishers

    with Stack(keep=args.keep) as stack:
        url = stack.create_database("rules")
        log(f"seeding the city ({args.lamps:,} streetlights)")
        stack.seed(url, args.lamps)
        conn = await asyncpg.connect(url)
        try:
            lamps = [r["id"] for r in await conn.fetch(
                "select id from devices where kind = 'streetlight' order by id")]
        finally:
            await conn.close()
        now_ids, delayed_ids, load_ids = lamps[:20], lamps[20:40], lamps[40:]
        path = rules_file(stack.dir / "rules.yaml", now_ids, delayed_ids)
        srv = stack.start_server(url, {"IOC_RULES__PATHS": f'["{path}"]'})
        host, port = stack.mqtt.url.removeprefix("mqtt://").split(":")
        pubs = Publishers(args.publishers, host, int(port), load_ids, args.rate, args.duration)
        start_at = await pubs.start()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        probes = asyncio.create_task(probe_loop(stack.mqtt.url, now_ids, delayed_ids, args.duration))
        result = await pubs.wait(args.duration + 120)
        n_probe = await probes
        log(f"published {result['sent']:,} load messages and {n_probe} probes; settling")
        await asyncio.sleep(5)
        import aiohttp

        token = stack.token(url, "viewer")
        async with aiohttp.ClientSession() as s:
            async with s.get(srv.base_url + "/metrics",
                             headers={"Authorization": f"Bearer {token}"}) as resp:
                metrics = parse_metrics(await resp.text())
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                """select a.rule, e.event, extract(epoch from e.at)::float8 as at,
                          (e.details ->> 'since')::float8 as since
                   from alarm_events e join alarms a on a.id = e.alarm_id
                   where a.rule like 'probe-%' and e.event in ('raised', 'cleared')
                     and e.actor = 'rules'""")
            quiet = await conn.fetchval("select count(*) from alarms where rule not like 'probe-%'")
            stored = await conn.fetchval("select count(*) from telemetry")
        finally:
            await conn.close()
    lat = {"raised": [], "cleared": []}
    late = []
    for r in rows:
        if r["since"] is None:
            continue
        if r["rule"] == "probe-now":
            lat[r["event"]].append(r["at"] - r["since"])
        elif r["event"] == "raised":
            late.append(r["at"] - (r["since"] + 2.0))
    return {"rate": args.rate, "duration": args.duration, "sent": result["sent"],
            "behind_max": result["behind_max"], "stored": stored, "probes": n_probe,
            "raised": lat["raised"], "cleared": lat["cleared"], "late": late,
            "quiet_alarms": quiet, "metrics": metrics}


def print_e2e(r: dict) -> None:
    def ms(v: float) -> str:
        return f"{v * 1000:,.0f} ms" if not math.isnan(v) else "-"

    rows = []
    for name, vals in (("raise (probe-now)", r["raised"]), ("clear (probe-now)", r["cleared"]),
                       ("timer lateness + store (probe-delayed)", r["late"])):
        rows.append([name, str(len(vals)), ms(percentile(vals, 50)), ms(percentile(vals, 99)),
                     ms(max(vals) if vals else float("nan"))])
    console.print(table(
        f"End to end at {r['rate']:,} msg/s for {r['duration']:.0f} s "
        f"({r['sent']:,} sent, {r['stored']:,} readings stored, publishers at most "
        f"{r['behind_max']:.2f} s behind)",
        ["reading → alarm committed", "n", "p50", "p99", "max"], rows))
    m = r["metrics"]
    count = m.get("ioc_alarm_timer_lateness_seconds_count", 0.0)
    mean = m.get("ioc_alarm_timer_lateness_seconds_sum", 0.0) / count if count else float("nan")
    evals = m.get("ioc_rule_evaluations_total", 0.0)
    p99 = percentile(r["raised"], 99)
    console.print(f"server: {evals:,.0f} device-rule evaluations; timer fired {count:.0f}×, "
                  f"mean lateness {ms(mean)}; alarms from the quiet rules: {r['quiet_alarms']}")
    console.print(f"goal p99 < {GOAL_P99_S:.0f} s at 5,000 msg/s: "
                  f"{'met' if p99 < GOAL_P99_S else 'NOT met'} ({ms(p99)})")
    record_context("rules", end_to_end=f"{r['rate']:,} msg/s for {r['duration']:.0f} s over MQTT, "
                                       "PostgreSQL fsync on")
    record("rules", "reading → alarm committed p50", percentile(r["raised"], 50) * 1000, "ms",
           note=f"{len(r['raised'])} probes")
    record("rules", "reading → alarm committed p99", p99 * 1000, "ms",
           goal=f"< {GOAL_P99_S * 1000:,.0f} ms at {r['rate']:,} msg/s", met=p99 < GOAL_P99_S)
    late = percentile(r["late"], 99)
    record("rules", "timer lateness + store p99 (on_delay rule)", late * 1000, "ms",
           goal="< 1,000 ms", met=late < 1.0)
    record("rules", "alarms from the quiet rules", r["quiet_alarms"], "alarms", goal="0",
           met=r["quiet_alarms"] == 0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 evaluator rounds, 10 s end to end")
    p.add_argument("--devices", type=int, default=DEVICES)
    p.add_argument("--rounds", type=int, default=5, help="times every device reports")
    p.add_argument("--no-e2e", action="store_true", help="only the in-process evaluator")
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--lamps", type=int, default=20_000, help="seeded streetlights (e2e)")
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the stack's directory (logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 2, 10.0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    console.print(machine_line())
    print_evaluator(bench_evaluator(args.devices, args.rounds))
    if not args.no_e2e:
        print_e2e(asyncio.run(bench_e2e(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
