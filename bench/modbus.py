"""Modbus polling at city scale: 2,000 units on 20 gateways, every 10 s, interval jitter.

    .venv/bin/python bench/modbus.py                 # 2,000 units / 20 gateways, 60 s
    .venv/bin/python bench/modbus.py --quick         # 30 s
    .venv/bin/python bench/modbus.py --units 4000 --gateways 40 --interval 5 --duration 120

The gateways are real pymodbus TCP servers (``adapters.modbus.simulator.SimulatedGateway``,
units built from the same profiles the adapter reads) in a separate process, so the
poller's CPU is measured on its own; the poller is the server's own
(``server.polling.modbus.ModbusPoller``), one connection per gateway, with a sink that only
counts (the ingest pipeline's cost is ``bench/ingest.py``'s subject).

Printed:

- polls/s and readings/s over the measured window (after the first interval, when every
  unit has had its first, staggered poll), failures and skipped slots (overruns);
- **interval jitter**: for every unit, the time between the starts of consecutive polls
  minus the interval, as % of the interval (p50, p99, max of the absolute value); the goal
  is under 1 %. Also the lateness of each poll's start behind its scheduled slot (the
  poller's grid ``phase + k × interval``), in ms, and the read time per poll;
- CPU % of one core: the poller process (this one), the gateway process, the machine.

Poll starts are taken by wrapping ``GatewayConnection.read_unit`` in this process, i.e.
when the poller hands the request to the gateway's connection.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import itertools
import logging
import multiprocessing as mp
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import console, install_signal_handlers, log, machine_line, percentile, table
from report import context as record_context
from report import record

GOAL_JITTER_PCT = 1.0


# ================================================================ the gateways (subprocess)
def gateways_main(n_gateways: int, units_per_gateway: int, profile: str, ports: mp.Queue,
                  stop: mp.Event) -> None:
    asyncio.run(_serve(n_gateways, units_per_gateway, profile, ports, stop))


async def _serve(n_gateways, units_per_gateway, profile, ports, stop) -> None:
    from adapters.modbus.simulator import SimulatedGateway

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    gws = []
    for _ in range(n_gateways):
        gw = SimulatedGateway()
        for unit in range(1, units_per_gateway + 1):
            gw.add_unit(unit, profile)
        await gw.start()
        gws.append(gw)
    ports.put([gw.port for gw in gws])
    parent = mp.parent_process()
    while not await asyncio.to_thread(stop.wait, 1.0):
        if parent is not None and not parent.is_alive():
            break  # the bench died without telling us: do not outlive it
    for gw in gws:
        await gw.stop()


# ================================================================ the poller (this process)
class Recorder:
    def __init__(self) -> None:
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.reads: list[float] = []
        self.readings = 0
        self.sink_calls = 0

    async def sink(self, batch) -> None:
        self.sink_calls += 1
        self.readings += len(batch)


def _instrument(recorder: Recorder) -> None:
    """Record when each unit's read starts and how long it takes."""
    from adapters.modbus.connection import GatewayConnection

    original = GatewayConnection.read_unit

    async def read_unit(self, unit):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        recorder.starts[unit.device].append(t0)
        try:
            return await original(self, unit)
        finally:
            recorder.reads.append(loop.time() - t0)

    GatewayConnection.read_unit = read_unit


async def run(args: argparse.Namespace) -> dict:
    from server.polling.modbus import ModbusPoller
    from server.settings import ModbusGateway, ModbusUnit

    per = args.units // args.gateways
    ctx = mp.get_context("spawn")
    ports_q, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=gateways_main, daemon=True,
                       args=(args.gateways, per, args.profile, ports_q, stop))
    proc.start()
    try:
        ports = await asyncio.to_thread(ports_q.get, True, 120)
        log(f"{args.gateways} gateways × {per} units ({args.profile}) listening, pid {proc.pid}")
        gateways = [
            ModbusGateway(name=f"gw-{g:02d}", host="127.0.0.1", port=port, timeout_s=1.0,
                          units=[ModbusUnit(device=f"LC-{g:02d}-{u:03d}", unit=u,
                                            profile=args.profile, interval_s=args.interval)
                                 for u in range(1, per + 1)])
            for g, port in enumerate(ports)
        ]
        recorder = Recorder()
        _instrument(recorder)
        poller = ModbusPoller(gateways, recorder.sink)
        me, gw_ps = psutil.Process(), psutil.Process(proc.pid)
        loop = asyncio.get_running_loop()
        async with poller:
            t_start = loop.time()
            # The first interval staggers and connects; measure after it.
            await asyncio.sleep(args.interval + 1)
            t0 = loop.time()
            c0, g0 = me.cpu_times(), gw_ps.cpu_times()
            busy0 = _busy()
            stats0 = poller.stats()
            readings0 = recorder.readings
            await asyncio.sleep(args.duration)
            t1 = loop.time()
            c1, g1 = me.cpu_times(), gw_ps.cpu_times()
            busy1 = _busy()
            stats1 = poller.stats()
            readings1 = recorder.readings
        wall = t1 - t0
        polls = sum(s.polls for s in stats1.values()) - sum(s.polls for s in stats0.values())
        failures = sum(s.failures for s in stats1.values()) - sum(s.failures for s in stats0.values())
        overruns = sum(s.overruns for s in stats1.values()) - sum(s.overruns for s in stats0.values())
        jitter, late = [], []
        for starts in recorder.starts.values():
            window = [t for t in starts if t0 <= t <= t1]
            jitter += [abs((b - a) - args.interval) / args.interval * 100
                       for a, b in itertools.pairwise(window)]
            # lateness behind the grid: the poller's slots are phase + k × interval, and the
            # first poll (before t0) was on its phase
            phase = starts[0]
            late += [1000 * (t - phase - round((t - phase) / args.interval) * args.interval)
                     for t in window]
        return {
            "wall": wall, "polls": polls, "failures": failures, "overruns": overruns,
            "readings": readings1 - readings0, "jitter": jitter, "late": late,
            "reads_ms": [1000 * r for r in recorder.reads],
            "cpu_poller": 100 * ((c1.user + c1.system) - (c0.user + c0.system)) / wall,
            "cpu_gateways": 100 * ((g1.user + g1.system) - (g0.user + g0.system)) / wall,
            "cpu_machine": 100 * (busy1 - busy0) / wall,
            "units": args.units, "started": t_start,
        }
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


def _busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def report(r: dict, args: argparse.Namespace) -> None:
    expected = r["units"] / args.interval
    j = r["jitter"]
    rows = [
        ["units / gateways / interval", f"{r['units']:,} / {args.gateways} / {args.interval:g} s", ""],
        ["polls/s (expected)", f"{r['polls'] / r['wall']:,.1f} ({expected:,.1f})", ""],
        ["readings/s", f"{r['readings'] / r['wall']:,.0f}", ""],
        ["failures / skipped slots", f"{r['failures']} / {r['overruns']}", "0 / 0"],
        ["interval jitter p50 / p99 / max (% of interval)",
         f"{percentile(j, 50):.3f} / {percentile(j, 99):.3f} / {max(j, default=0):.3f} %",
         f"< {GOAL_JITTER_PCT:g} %"],
        ["start behind its slot (grid of its first poll) p50 / p99 / max (ms)",
         f"{percentile(r['late'], 50):.1f} / {percentile(r['late'], 99):.1f} / "
         f"{max(r['late'], default=0):.1f}", ""],
        ["read time per poll p50 / p99 (ms)",
         f"{percentile(r['reads_ms'], 50):.1f} / {percentile(r['reads_ms'], 99):.1f}", ""],
        ["CPU % of one core: poller / gateways (pymodbus servers) / machine",
         f"{r['cpu_poller']:.1f} / {r['cpu_gateways']:.1f} / {r['cpu_machine']:.0f}", ""],
        ["poller CPU per poll", f"{1e6 * r['cpu_poller'] / 100 * r['wall'] / max(r['polls'], 1):.0f} µs", ""],
        ["measured window", f"{r['wall']:.0f} s, {len(j):,} intervals", ""],
    ]
    console.print(table("Modbus polling", ["figure", "value", "goal"], rows))
    console.print(machine_line())
    record_context("modbus", units=f"{r['units']:,}", gateways=args.gateways,
                   interval=f"{args.interval:g} s", profile=args.profile,
                   window=f"{r['wall']:.0f} s")
    record("modbus", "polls/s", r["polls"] / r["wall"], "polls/s", goal=f"{expected:,.0f}",
           met=r["polls"] / r["wall"] >= 0.99 * expected)
    p99 = percentile(j, 99)
    record("modbus", "interval jitter p50", percentile(j, 50), "% of interval")
    record("modbus", "interval jitter p99", p99, "% of interval", goal=f"< {GOAL_JITTER_PCT:g} %",
           met=p99 < GOAL_JITTER_PCT)
    record("modbus", "failures", r["failures"], "polls", goal="0", met=r["failures"] == 0)
    record("modbus", "poller CPU", r["cpu_poller"], "% of one core")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=2000)
    p.add_argument("--gateways", type=int, default=20)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between polls of a unit")
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument("--quick", action="store_true", help="30 s measured")
    p.add_argument("--profile", default="eastron_sdm630", help="the units' profile")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 30.0
    if args.units % args.gateways or args.units // args.gateways > 247:
        p.error("--units must be a multiple of --gateways, at most 247 units per gateway")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    # pymodbus dumps its last frames on every "not connected" at shutdown; as the server does
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # A hang anywhere shows where, instead of waiting forever.
    faulthandler.dump_traceback_later(args.interval + args.duration + 120, exit=True)
    t = time.monotonic()
    try:
        r = asyncio.run(run(args))
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    report(r, args)
    log(f"done in {time.monotonic() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
