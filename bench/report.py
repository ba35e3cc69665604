"""Benchmark figures as data: every benchmark records its figures here, ``make bench`` renders them.

A benchmark calls :func:`record` once per figure at its end::

    from report import record

    record("tiles", "our server, uncached: tiles/s", 812.4, "tiles/s",
           goal="≥ 4 × TiPg", met=True, baseline="TiPg", ratio=5.3)

Each call appends one JSON line to the file named by ``IOC_BENCH_RESULTS``; without that
variable it does nothing, so a benchmark run by hand prints what it always printed.
``bench/run_all.py`` sets the variable, adds a line per benchmark run (status, exit code,
wall time, the machine's load before it started) and renders ``bench/REPORT.md`` with
:func:`render`.

Kinds of line (``"type"``): ``figure`` (:func:`record`), ``context`` (:func:`context`:
how the benchmark was configured, e.g. the city size or the HTTP client), ``run`` (written
by run_all: one per benchmark run) and ``session`` (written by run_all: the machine,
date and commit). Non-finite values (a NaN when nothing was measured) are stored as null
and shown as "n/a".
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ENV = "IOC_BENCH_RESULTS"


# ---------------------------------------------------------------- writing
def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def append(line: dict, path: str | os.PathLike | None = None) -> None:
    """One JSON line onto the results file (``path``, or ``$IOC_BENCH_RESULTS``; none: no-op)."""
    target = path or os.environ.get(ENV)
    if not target:
        return
    data = json.dumps({**line, "at": round(time.time(), 3)}, ensure_ascii=False) + "\n"
    # One write() of one line on an O_APPEND file: lines of concurrent writers do not mix.
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def record(bench: str, figure: str, value: float | None, unit: str, *, goal: str | None = None,
           met: bool | None = None, baseline: str | None = None, ratio: float | None = None,
           note: str = "") -> None:
    """One figure of one benchmark.

    ``goal``: the target as people read it ("≥ 5,000 tiles/s"); ``met``: whether this run
    reached it (None: no goal, or it could not be judged). ``baseline``: what the figure is
    compared with, measured in the same run ("raw COPY", "TiPg"), and ``ratio``: figure ÷
    baseline. ``note``: anything a reader needs to trust the figure (a fallback client).
    """
    append({"type": "figure", "bench": bench, "figure": figure, "value": _finite(value),
            "unit": unit, "goal": goal, "met": met, "baseline": baseline,
            "ratio": _finite(ratio), "note": note})


def context(bench: str, **items: object) -> None:
    """How a benchmark was configured (``lamps=100000, client="wrk -t1 -c8"``), for the report."""
    append({"type": "context", "bench": bench, "items": {k: str(v) for k, v in items.items()}})


# ---------------------------------------------------------------- the machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict:
    """What the figures depend on: CPU, cores, memory, OS, Python, and how busy it is now."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": psutil.cpu_count() or 0,
        "physical_cores": psutil.cpu_count(logical=False) or 0,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in load],
    }


def busy_percent(seconds: float = 1.0) -> float:
    """CPU the whole machine used over the next ``seconds``, % of one core (max 100 × cores)."""
    return psutil.cpu_percent(interval=seconds) * (psutil.cpu_count() or 1)


def git_facts(repo: Path) -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines() if ln]
    return {"commit": git("rev-parse", "--short=12", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "changed_files": len(changed)}


# ---------------------------------------------------------------- reading and merging
@dataclass
class Figure:
    figure: str
    value: float | None
    unit: str
    goal: str | None = None
    met: bool | None = None
    baseline: str | None = None
    ratio: float | None = None
    note: str = ""


@dataclass
class BenchResult:
    name: str
    # ok | failed | missing | interrupted | timeout | running (started, never ended) |
    # recorded (figures without a run line: a benchmark run by hand with the variable set)
    status: str = "recorded"
    detail: str = ""
    seconds: float | None = None
    started: float | None = None
    args: list[str] = field(default_factory=list)
    log: str | None = None
    loadavg: list[float] | None = None
    busy_pct: float | None = None
    context: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)  # in first-recorded order

    @property
    def goals(self) -> tuple[int, int]:
        """(met, judged) over the figures that have a goal."""
        judged = [f for f in self.figures.values() if f.goal and f.met is not None]
        return sum(1 for f in judged if f.met), len(judged)


@dataclass
class Results:
    session: dict = field(default_factory=dict)
    benches: dict[str, BenchResult] = field(default_factory=dict)

    def bench(self, name: str) -> BenchResult:
        if name not in self.benches:
            self.benches[name] = BenchResult(name)
        return self.benches[name]


def read_lines(path: str | os.PathLike) -> list[dict]:
    """The JSON lines of a results file; a torn or foreign line is skipped, not fatal."""
    out = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "type" in item:
            out.append(item)
    return out


def merge(lines: Iterable[dict]) -> Results:
    """Lines in file order → one result per benchmark.

    A ``run`` line starts that benchmark afresh (a benchmark run again replaces what an
    earlier run of it recorded, so ``run_all.py --only X`` updates X and keeps the rest);
    a figure recorded twice in one run keeps its last value and its first position; the
    last ``session`` line wins (the report's date and commit are those of the latest run).
    """
    res = Results()
    for ln in lines:
        kind = ln.get("type")
        if kind == "session":
            res.session = ln
            continue
        name = ln.get("bench")
        if not isinstance(name, str) or not name:
            continue
        if kind == "run":
            b = res.benches.get(name)
            if b is None or ln.get("phase") == "start":
                b = res.benches[name] = BenchResult(name)
            b.status = ln.get("status", b.status)
            b.detail = ln.get("detail", b.detail)
            for attr in ("seconds", "started", "log", "loadavg", "busy_pct"):
                if ln.get(attr) is not None:
                    setattr(b, attr, ln[attr])
            if ln.get("args") is not None:
                b.args = list(ln["args"])
        elif kind == "figure":
            fig = Figure(str(ln.get("figure", "")), ln.get("value"), str(ln.get("unit", "")),
                         ln.get("goal"), ln.get("met"), ln.get("baseline"), ln.get("ratio"),
                         str(ln.get("note") or ""))
            res.bench(name).figures[fig.figure] = fig
        elif kind == "context":
            res.bench(name).context.update(ln.get("items") or {})
    return res


# ---------------------------------------------------------------- rendering
def fmt_number(x: float | None) -> str:
    """Figures as people read them: 12,345 / 123 / 12.3 / 1.23 / 0.0123."""
    if x is None or not math.isfinite(x):
        return "n/a"
    a = abs(x)
    if a >= 100 or (x == int(x) and a < 1e15):
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = round(seconds)
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


_STATUS = {"ok": "ran", "failed": "**FAILED**", "missing": "missing", "interrupted": "**interrupted**",
           "timeout": "**timed out**", "recorded": "recorded by hand", "running": "**did not finish**"}


def render(res: Results) -> str:
    s = res.session
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(s["at"])) if s.get("at") else "unknown"
    git = s.get("git") or {}
    m = s.get("machine") or {}
    out = ["# Benchmark report", ""]
    commit = git.get("commit") or "unknown"
    dirty = (f", plus {git['changed_files']} uncommitted changed file(s)"
             if git.get("changed_files") else "")
    mode = s.get("mode", "")
    if s:
        out.append(f"Written by `{s.get('command') or 'bench/run_all.py'}` on {when}, at commit "
                   f"`{commit}`{dirty}" + (f" ({mode})" if mode else "") + ".")
    else:
        out.append("Figures recorded outside `bench/run_all.py`: no date, commit or machine facts.")
    out.append("")
    if m:
        la = m.get("loadavg") or []
        out.append(f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores "
                   f"({m.get('physical_cores', '?')} physical), {m.get('ram_gib', '?')} GiB RAM, "
                   f"{m.get('os', '')}, Python {m.get('python', '')}, host `{m.get('host', '')}`; "
                   f"load average before the run {' / '.join(fmt_number(x) for x in la)} (1/5/15 min).")
        out.append("")
    out.append("Every ratio compares two figures measured in the same run of the same benchmark, on "
               "this machine; ratios travel between machines, absolute figures much less.")
    out.append("")
    out += ["## Summary", "", "| benchmark | result | time | goals met | load before | log |",
            "|---|---|---|---|---|---|"]
    for b in res.benches.values():
        met, judged = b.goals
        goals = f"{met} of {judged}" if judged else ("no figures recorded" if not b.figures else "–")
        if b.status == "missing":
            goals = ""
        if judged and met < judged:
            goals = f"**{goals}**"
        load = f"{b.loadavg[0]:.2f}" if b.loadavg else ""
        if b.busy_pct is not None:
            load += f" ({b.busy_pct:.0f} % CPU busy)"
        status = _STATUS.get(b.status, b.status)
        if b.detail and b.status != "ok":
            status += f": {b.detail}"
        out.append(f"| {_cell(b.name)} | {_cell(status)} | {_duration(b.seconds)} | {goals} | {load} | "
                   f"{f'`{b.log}`' if b.log else ''} |")
    out.append("")
    for b in res.benches.values():
        out += _render_bench(b)
    return "\n".join(out).rstrip() + "\n"


def _render_bench(b: BenchResult) -> list[str]:
    out = [f"## {b.name}", ""]
    if b.started:
        out += [f"Started {time.strftime('%Y-%m-%d %H:%M', time.localtime(b.started))}.", ""]
    if b.args:
        out.append(f"Command: `{' '.join(b.args)}`" + (f" ({_duration(b.seconds)})" if b.seconds else ""))
        out.append("")
    if b.status == "missing":
        out += [f"Not run: {b.detail or 'the script does not exist'}.", ""]
        return out
    if b.status not in ("ok", "recorded"):
        out += [f"Result: {_STATUS.get(b.status, b.status)}"
                + (f" ({b.detail})" if b.detail else "")
                + (f"; see `{b.log}`" if b.log else "") + "."
                + (" The figures below are those it recorded before it stopped." if b.figures else ""), ""]
    if b.context:
        out.append("Configuration: " + "; ".join(f"{k.replace('_', ' ')} {v}"
                                                 for k, v in b.context.items()) + ".")
        out.append("")
    if not b.figures and b.status == "ok":
        out += ["No figures recorded (the script does not call `bench/report.py` yet; its printed "
                "figures are in the log).", ""]
        return out
    if not b.figures:
        return out
    out += ["| figure | value | goal | met | ratio to baseline | note |", "|---|---|---|---|---|---|"]
    for f in b.figures.values():
        value = fmt_number(f.value) + (f" {f.unit}" if f.unit and f.value is not None else "")
        met = {True: "yes", False: "**NO**", None: ""}[f.met] if f.goal else ""
        if f.goal and f.met is None:
            met = "n/a"
        ratio = ""
        if f.baseline:
            ratio = f"{fmt_number(f.ratio)} × {f.baseline}" if f.ratio is not None else f"({f.baseline}: n/a)"
        out.append(f"| {_cell(f.figure)} | {_cell(value)} | {_cell(f.goal or '')} | {met} | "
                   f"{_cell(ratio)} | {_cell(f.note)} |")
    out.append("")
    return out


def write_report(results_path: str | os.PathLike, report_path: str | os.PathLike) -> Results:
    res = merge(read_lines(results_path))
    Path(report_path).write_text(render(res), encoding="utf-8")
    return res
