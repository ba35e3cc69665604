"""bench/report.py: figures appended as JSON lines, merged per benchmark run, rendered as Markdown."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = _load("report")


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv(report.ENV, str(path))
    return path


def test_record_without_the_variable_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(report.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    report.record("tiles", "cached: tiles/s", 6000.0, "tiles/s")
    report.context("tiles", lamps=100_000)
    assert list(tmp_path.iterdir()) == []


def test_record_appends_one_json_line_per_figure(results):
    report.record("tiles", "cached: tiles/s", 6012.5, "tiles/s", goal="≥ 5,000 tiles/s", met=True,
                  baseline="TiPg", ratio=7.25, note="wrk")
    report.record("tiles", "p99", float("nan"), "ms")
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [x["figure"] for x in lines] == ["cached: tiles/s", "p99"]
    first = lines[0]
    assert (first["type"], first["bench"], first["value"], first["unit"]) == (
        "figure", "tiles", 6012.5, "tiles/s")
    assert (first["goal"], first["met"], first["baseline"], first["ratio"], first["note"]) == (
        "≥ 5,000 tiles/s", True, "TiPg", 7.25, "wrk")
    assert lines[1]["value"] is None  # NaN is not JSON: stored as null


def _session(path: Path, commit: str) -> None:
    report.append({"type": "session", "command": "bench/run_all.py --quick", "mode": "quick",
                   "machine": {"cpu": "Test CPU 3000", "cores": 2, "physical_cores": 1, "ram_gib": 8.0,
                               "os": "Linux 6", "python": "3.11.9", "host": "box",
                               "loadavg": [1.5, 1.0, 0.5]},
                   "git": {"commit": commit, "changed_files": 2}}, path)


def _run(path: Path, bench: str) -> None:
    report.append({"type": "run", "phase": "start", "bench": bench, "status": "running",
                   "args": [f"bench/{bench}.py", "--quick"], "log": f"bench/out/{bench}.log",
                   "loadavg": [1.25, 1, 1], "busy_pct": 37.0}, path)


def _end(path: Path, bench: str, status: str = "ok", detail: str = "", seconds: float = 75) -> None:
    report.append({"type": "run", "phase": "end", "bench": bench, "status": status, "detail": detail,
                   "seconds": seconds}, path)


def test_a_benchmark_run_again_replaces_its_earlier_figures_and_keeps_the_others(results):
    _session(results, "aaaa")
    _run(results, "ingest")
    report.record("ingest", "commit rate", 40_000, "readings/s", baseline="raw COPY", ratio=0.4)
    report.record("ingest", "stale figure", 1, "")
    _end(results, "ingest")
    _run(results, "tiles")
    report.record("tiles", "cached: tiles/s", 4000, "tiles/s", goal="≥ 5,000", met=False)
    _end(results, "tiles")
    # run_all.py --only ingest, later: a new session and a new run of ingest only
    _session(results, "bbbb")
    _run(results, "ingest")
    report.record("ingest", "commit rate", 45_000, "readings/s", baseline="raw COPY", ratio=0.45)
    report.record("ingest", "commit rate", 46_000, "readings/s", baseline="raw COPY", ratio=0.46)
    _end(results, "ingest")

    res = report.merge(report.read_lines(results))
    assert res.session["git"]["commit"] == "bbbb"
    assert list(res.benches) == ["ingest", "tiles"]
    ingest = res.benches["ingest"]
    assert list(ingest.figures) == ["commit rate"]  # the earlier run's other figure is gone
    assert (ingest.figures["commit rate"].value, ingest.figures["commit rate"].ratio) == (46_000, 0.46)
    assert res.benches["tiles"].figures["cached: tiles/s"].met is False
    assert (ingest.status, ingest.seconds, ingest.loadavg) == ("ok", 75, [1.25, 1, 1])


def test_torn_or_foreign_lines_are_skipped(results):
    _run(results, "ws")
    with open(results, "a") as f:
        f.write('{"type": "figure", "bench": "ws", "figure": "p99", "val\n')  # a torn write
        f.write("not json at all\n")
        f.write('["a list"]\n')
    report.record("ws", "p99", 120.0, "ms", goal="< 250 ms", met=True)
    res = report.merge(report.read_lines(results))
    assert list(res.benches["ws"].figures) == ["p99"]


def test_render_shows_goals_ratios_failures_and_missing_benchmarks(results):
    _session(results, "abc123")
    _run(results, "tiles")
    report.context("tiles", lamps="100,000", client="wrk -t1 -c8")
    report.record("tiles", "uncached: tiles/s", 812.4, "tiles/s", goal="≥ 4 × TiPg", met=True,
                  baseline="TiPg", ratio=5.31)
    report.record("tiles", "cached: tiles/s", 4200, "tiles/s", goal="≥ 5,000 tiles/s", met=False)
    report.record("tiles", "TiPg: p99", None, "ms")
    _end(results, "tiles")
    _run(results, "ingest")
    _end(results, "ingest", "failed", "exit code 1, last line: RuntimeError: ioc serve exited")
    report.append({"type": "run", "phase": "start", "bench": "modbus", "status": "missing",
                   "detail": "bench/modbus.py does not exist yet", "args": ["bench/modbus.py"]}, results)
    _run(results, "ws")
    _end(results, "ws")

    md = report.render(report.merge(report.read_lines(results)))
    assert md.startswith("# Benchmark report\n")
    assert "`abc123`, plus 2 uncommitted changed file(s) (quick)" in md
    assert "Test CPU 3000, 2 cores (1 physical), 8.0 GiB RAM" in md
    assert "load average before the run 1.50 / 1 / 0.50" in md
    lines = md.splitlines()
    summary = {ln.split("|")[1].strip(): ln for ln in lines if ln.startswith("| ") and ln.count("|") == 7}
    assert "**1 of 2**" in summary["tiles"] and "1 min 15 s" in summary["tiles"]
    assert "1.25 (37 % CPU busy)" in summary["tiles"]
    assert "**FAILED**: exit code 1, last line: RuntimeError: ioc serve exited" in summary["ingest"]
    assert "missing: bench/modbus.py does not exist yet" in summary["modbus"]
    assert "no figures recorded" in summary["ws"]
    assert "| uncached: tiles/s | 812 tiles/s | ≥ 4 × TiPg | yes | 5.31 × TiPg |  |" in lines
    assert "| cached: tiles/s | 4,200 tiles/s | ≥ 5,000 tiles/s | **NO** |  |  |" in lines
    assert "| TiPg: p99 | n/a |  |  |  |  |" in lines
    assert "Configuration: lamps 100,000; client wrk -t1 -c8." in lines
    assert "Not run: bench/modbus.py does not exist yet." in lines
    assert any("does not call `bench/report.py` yet" in ln for ln in lines)


def test_write_report_writes_the_file(results, tmp_path):
    _session(results, "c0ffee")
    report.record("soak", "RSS growth after warm-up", 1.2, "%", goal="< 5 %", met=True)
    out = tmp_path / "REPORT.md"
    res = report.write_report(results, out)
    assert "| RSS growth after warm-up | 1.20 % | < 5 % | yes |" in out.read_text()
    assert res.benches["soak"].status == "recorded"


@pytest.mark.parametrize(("value", "text"), [
    (12345.6, "12,346"), (123.4, "123"), (12.34, "12.3"), (1.234, "1.23"), (0.01234, "0.0123"),
    (3.0, "3"), (0.0, "0"), (None, "n/a"), (float("inf"), "n/a"),
])
def test_numbers_read_as_people_write_them(value, text):
    assert report.fmt_number(value) == text
