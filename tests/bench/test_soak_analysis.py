"""bench/soak.py's end-of-run judgement, on made-up samples (pure: no services)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load_soak():
    saved = list(sys.path)
    try:  # the script puts bench/ on sys.path for its siblings; leave the session's as it was
        spec = importlib.util.spec_from_file_location("bench_soak", BENCH / "soak.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved


soak = _load_soak()


def _samples(duration: float, rss, queue) -> list:
    """A sample every 10 s; ``rss(t)`` and ``queue(t)`` give the values."""
    return [soak.Sample(t=t, rss_mb=rss(t), mosquitto_rss_mb=10.0, queue_mean=queue(t), queue_max=queue(t),
                        sent=0, stored=0.0, dead=0.0, duplicates=0.0, transitions=0.0, p50_ms=0.0,
                        p99_ms=0.0, latency_samples=0, server_cpu_pct=0.0, faults_active=0)
            for t in range(10, int(duration) + 1, 10)]


def _latency(duration: float, age) -> list[tuple[float, float]]:
    return [(t / 10, age(t / 10)) for t in range(1, int(duration * 10) + 1)]


def test_windows_fit_short_runs():
    assert soak.windows(1800, 300, 300) == (300, 300)
    assert soak.windows(180, 300, 300) == (30, 75)


def test_memory_that_grows_after_warm_up_fails_and_flat_memory_passes():
    duration = 1800
    # The warm-up's own growth (caches filling) is left out: flat afterwards.
    flat = soak.analyse(_samples(duration, lambda t: 100 + min(t, 250) / 10, lambda t: 50),
                        _latency(duration, lambda t: 0.1), duration, 300, 300, 3000)
    assert flat.rss_start_mb == pytest.approx(125) and flat.rss_end_mb == pytest.approx(125)
    assert flat.rss_growth_pct == pytest.approx(0) and flat.rss_met is True
    # 10 % over the run after warm-up: a leak of ~24 MiB/h.
    leak = soak.analyse(_samples(duration, lambda t: 200 + 20 * max(0, t - 300) / 1500, lambda t: 50),
                        _latency(duration, lambda t: 0.1), duration, 300, 300, 3000)
    assert leak.rss_growth_pct == pytest.approx(10, abs=1) and leak.rss_met is False
    assert leak.rss_slope_mb_h == pytest.approx(48, rel=0.05)


def test_a_growing_queue_fails_and_a_bounded_noisy_one_passes():
    duration = 1800
    noisy = soak.analyse(_samples(duration, lambda t: 100, lambda t: 2000 + 1500 * math.sin(t)),
                         _latency(duration, lambda t: 0.1), duration, 300, 300, 3000)
    assert noisy.queue_met is True
    growing = soak.analyse(_samples(duration, lambda t: 100, lambda t: 20 * t),
                           _latency(duration, lambda t: 0.1), duration, 300, 300, 3000)
    assert growing.queue_last - growing.queue_first > 15_000 and growing.queue_met is False
    assert growing.queue_slope_per_min == pytest.approx(1200)


def test_latency_is_compared_between_the_first_and_last_windows_after_warm_up():
    duration = 1800
    # Slow during the warm-up only: left out; then steady.
    steady = soak.analyse(_samples(duration, lambda t: 100, lambda t: 0),
                          _latency(duration, lambda t: 5.0 if t < 300 else 0.1), duration, 300, 300, 3000)
    assert steady.p99_first_ms == pytest.approx(100) and steady.latency_met is True
    # Twice as slow at the end.
    worse = soak.analyse(_samples(duration, lambda t: 100, lambda t: 0),
                         _latency(duration, lambda t: 0.2 if t > 1500 else 0.1), duration, 300, 300, 3000)
    assert worse.p99_ratio == pytest.approx(2) and worse.latency_met is False


def test_no_samples_after_warm_up_judges_nothing():
    v = soak.analyse([], [], 60, 300, 300, 3000)
    assert v.rss_met is None and v.queue_met is None and v.latency_met is None
    assert v.notes
