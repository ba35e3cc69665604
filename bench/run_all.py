"""``make bench``: run every benchmark in bench/, one after the other, and write bench/REPORT.md.

    .venv/bin/python bench/run_all.py                 # full length (about 12 minutes here)
    .venv/bin/python bench/run_all.py --quick         # short runs, to check everything works
    .venv/bin/python bench/run_all.py --soak          # also the 30-minute soak (last; 31 more)
    .venv/bin/python bench/run_all.py --only tiles    # re-run one; the others' figures are kept
    .venv/bin/python bench/run_all.py --list          # what would run, with which arguments

Each benchmark runs as its own process (``python -u bench/<name>.py …``) with
``IOC_BENCH_RESULTS`` naming the results file (bench/out/results.jsonl), where
``bench/report.py`` appends its figures. Its output goes to the console and to
bench/out/<name>.log. A benchmark that fails, times out or is missing is recorded as such
and the next one runs. Before each one this script notes the machine's load average and a
second of its CPU use, since the machine may be shared. After each benchmark (so an
interrupted run still leaves one) bench/REPORT.md is rewritten from the results file:
per benchmark each figure, its goal, whether it was met, and its ratio to the baseline
measured in the same run; the machine, the date and the git commit.

Ctrl-C or SIGTERM stops the running benchmark (it gets SIGTERM and cleans up its stack),
writes the report and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
RESULTS = OUT / "results.jsonl"
REPORT = BENCH / "REPORT.md"
# Modules of bench/ that are not benchmarks.
HELPERS = {"common", "report", "run_all"}


@dataclass
class Bench:
    name: str
    full: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=lambda: ["--quick"])
    timeout_min: float = 120.0  # full length; quick runs get a third
    about: str = ""

    @property
    def script(self) -> Path:
        return BENCH / f"{self.name}.py"


# The order: the ingest path first (everything else stands on it), then what rides on it
# (websocket fan-out, Modbus polling, alarm rules), the map's tiles (which installs TiPg on
# first use), the bulk import, and the soak last: it is the longest and optional.
PLAN = [
    Bench("ingest", about="MQTT → committed readings, beside raw COPY"),
    Bench("ws", about="websocket fan-out to 100 map clients"),
    Bench("modbus", about="Modbus polling"),
    Bench("rules", about="alarm rule evaluation and reading → alarm latency"),
    Bench("audit_chain", timeout_min=15,
          about="alarm events and audit rows with the hash chain, beside without it"),
    Bench("commands_map", quick=["--quick"],
          about="a group to 5,000 lamps from a drawn polygon beside the same by the API"),
    Bench("tiles", about="vector tiles beside TiPg and raw ST_AsMVT"),
    Bench("storage", timeout_min=30,
          about="a city day: row store, compressed, Parquet; reads raw vs compressed"),
    Bench("reports", timeout_min=20,
          about="citizens' reports with photos at 1,000/min beside ingest at 5,000 msg/s"),
    Bench("import_devices", quick=["--devices", "20000"], timeout_min=60,
          about="ioc import of 100,000 devices"),
    Bench("soak", quick=["--minutes", "3"], timeout_min=60,
          about="30 minutes at 3,000 msg/s with faults on"),
]
OPTIONAL = {"soak"}  # only with --soak (or --only soak)


def plan(args: argparse.Namespace) -> list[Bench]:
    known = {b.name for b in PLAN}
    # A benchmark added to bench/ without an entry here still runs (after the known ones).
    extra = [Bench(p.stem, about="(not in run_all's plan: default arguments)")
             for p in sorted(BENCH.glob("*.py")) if p.stem not in known | HELPERS]
    todo = [b for b in PLAN if b.name not in OPTIONAL or args.soak] + extra
    if args.only:
        wanted = set(args.only)
        unknown = wanted - {b.name for b in PLAN + extra}
        if unknown:
            raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(b.name for b in PLAN + extra)}")
        todo = [b for b in PLAN + extra if b.name in wanted]
    return [b for b in todo if b.name not in set(args.skip)]


def arguments(b: Bench, args: argparse.Namespace) -> list[str]:
    out = list(b.quick if args.quick else b.full)
    if b.name == "soak" and args.soak_minutes is not None:
        out = ["--minutes", f"{args.soak_minutes:g}"]
    return out + shlex.split(args.bench_args.get(b.name, ""))


# ---------------------------------------------------------------- running one benchmark
class Interrupted(Exception):
    pass


def _on_signal(signum, frame):  # pragma: no cover - signal handler
    raise Interrupted(signal.Signals(signum).name)


def _stop_group(proc: subprocess.Popen, grace: float = 60.0) -> None:
    """SIGTERM to the benchmark's process group (it tears its stack down); after ``grace``
    seconds SIGKILL to the group and to every descendant, since the servers a benchmark
    starts (PostgreSQL, mosquitto, ioc serve) run in sessions of their own."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
        return
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    print(f"=== the benchmark did not stop within {grace:.0f} s of SIGTERM: killing it and its "
          "servers (their temp directory stays)", flush=True)
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for p in descendants:
        with contextlib.suppress(psutil.Error):
            p.kill()
    proc.wait()


def run_one(b: Bench, argv: list[str], timeout_s: float, results: Path) -> tuple[str, str, float]:
    """Run one benchmark, teeing its output; returns (status, detail, seconds)."""
    log_path = OUT / f"{b.name}.log"
    cmd = [sys.executable, "-u", str(b.script.relative_to(REPO)), *argv]
    env = {**os.environ, report.ENV: str(results), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    last_lines: list[str] = []
    timed_out = threading.Event()
    with open(log_path, "wb") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        # Its own session: the benchmark's processes (servers, publishers) are one group we
        # can stop, and a Ctrl-C reaches them only through us, in order.
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)

        def watchdog() -> None:
            if proc.poll() is None:
                timed_out.set()
                _stop_group(proc)

        def tee() -> None:
            # In a thread, so the benchmark's last words while it stops still reach the log.
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                try:
                    log.write(raw)
                    log.flush()
                    sys.stdout.buffer.write(raw)
                    sys.stdout.flush()
                except (ValueError, OSError):  # the log closed: a leftover grandchild's output
                    return
                text = raw.decode(errors="replace").strip()
                if text:
                    last_lines[:] = [*last_lines, text][-5:]

        reader = threading.Thread(target=tee, name=f"tee-{b.name}", daemon=True)
        reader.start()
        timer = threading.Timer(timeout_s, watchdog)
        timer.daemon = True
        timer.start()
        try:
            rc = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
        finally:
            timer.cancel()
            reader.join(10)
    seconds = time.monotonic() - t0
    if timed_out.is_set():
        return "timeout", f"stopped after {timeout_s / 60:.0f} min", seconds
    if rc == 0:
        return "ok", "", seconds
    why = last_lines[-1][:200] if last_lines else ""
    return "failed", f"exit code {rc}" + (f", last line: {why}" if why else ""), seconds


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true", help="short runs of each benchmark")
    p.add_argument("--soak", action="store_true", help="also run bench/soak.py (30 min; 3 with --quick)")
    p.add_argument("--soak-minutes", type=float, default=None, help="the soak's length")
    p.add_argument("--only", type=lambda s: [x for x in s.split(",") if x], default=[],
                   help="comma-separated benchmarks to run; the others' earlier figures are kept")
    p.add_argument("--skip", type=lambda s: [x for x in s.split(",") if x], default=[],
                   help="comma-separated benchmarks not to run")
    p.add_argument("--bench-args", action="append", default=[], metavar="NAME=ARGS",
                   help='extra arguments for one benchmark, e.g. --bench-args "tiles=--no-tipg"')
    p.add_argument("--timeout", type=float, default=None, metavar="MIN",
                   help="minutes per benchmark before it is stopped (default: its own)")
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--results", type=Path, default=RESULTS, help=f"default {RESULTS.relative_to(REPO)}")
    p.add_argument("--report", type=Path, default=REPORT, help=f"default {REPORT.relative_to(REPO)}")
    args = p.parse_args(argv)
    extra = {}
    for item in args.bench_args:
        name, sep, rest = item.partition("=")
        if not sep:
            p.error(f"--bench-args wants NAME=ARGS, got {item!r}")
        extra[name] = rest
    args.bench_args = extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    todo = plan(args)
    if args.list:
        for b in todo:
            state = "" if b.script.exists() else "  (missing)"
            print(f"{b.name:16} {shlex.join(arguments(b, args)) or '(defaults)':24} {b.about}{state}")
        return 0
    OUT.mkdir(exist_ok=True)
    results = args.results.resolve()
    if not args.only:
        results.unlink(missing_ok=True)  # a full run starts a fresh file; --only merges into it
    command = "bench/run_all.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])
                                    if (argv if argv is not None else sys.argv[1:]) else "")
    report.append({"type": "session", "command": command, "mode": "quick" if args.quick else "full length",
                   "machine": report.machine_facts(), "git": report.git_facts(REPO)}, results)
    signal.signal(signal.SIGTERM, _on_signal)
    failed = 0
    try:
        for b in todo:
            argv_b = arguments(b, args)
            start = {"type": "run", "phase": "start", "bench": b.name,
                     "args": ["bench/" + b.script.name, *argv_b]}
            if not b.script.exists():
                report.append({**start, "status": "missing",
                               "detail": f"bench/{b.script.name} does not exist yet"}, results)
                print(f"\n=== {b.name}: bench/{b.script.name} does not exist, skipped", flush=True)
                continue
            facts = report.machine_facts()
            busy = report.busy_percent(1.0)
            report.append({**start, "status": "running", "log": f"bench/out/{b.name}.log",
                           "loadavg": facts["loadavg"], "busy_pct": round(busy, 1),
                           "started": time.time()}, results)
            timeout_s = 60 * (args.timeout or (b.timeout_min / 3 if args.quick else b.timeout_min))
            if b.name == "soak":
                minutes = float(argv_b[argv_b.index("--minutes") + 1]) if "--minutes" in argv_b else 30
                timeout_s = max(timeout_s, 60 * (minutes + 20))
            print(f"\n=== {b.name}: {shlex.join(['bench/' + b.script.name, *argv_b])} "
                  f"(load {facts['loadavg'][0]:.2f}, CPU busy {busy:.0f} %)", flush=True)
            try:
                status, detail, secs = run_one(b, argv_b, timeout_s, results)
            except (KeyboardInterrupt, Interrupted) as err:
                why = f"{err} received" if isinstance(err, Interrupted) else "Ctrl-C"
                report.append({"type": "run", "phase": "end", "bench": b.name, "status": "interrupted",
                               "detail": why}, results)
                raise
            report.append({"type": "run", "phase": "end", "bench": b.name, "status": status,
                           "detail": detail, "seconds": round(secs, 1)}, results)
            failed += status != "ok"
            print(f"=== {b.name}: {status}{': ' + detail if detail else ''} ({secs:.0f} s)", flush=True)
            report.write_report(results, args.report)
    except (KeyboardInterrupt, Interrupted):
        report.write_report(results, args.report)
        print(f"\ninterrupted; report so far in {args.report}", flush=True)
        return 130
    res = report.write_report(results, args.report)
    print(f"\nreport: {args.report} ({sum(len(b.figures) for b in res.benches.values())} figures, "
          f"{failed} benchmark(s) did not finish)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
