"""ISA-18.2 / IEC 62682 alarm-system performance figures, from alarm activations. Pure.

Targets (DOMAIN.md, ISA-18.2 Table 5 via EEMUA 191): about 1 annunciated alarm per
operator per 10 minutes is acceptable and 2 the most manageable (6 and 12 an hour); a flood
is more than 10 alarms in 10 minutes and should be under 1 % of the time; no chattering
alarms; fewer than 5 stale alarms (standing over 24 h); the top ten alarms under 5 % of
the load; priorities split about 80 % low, 15 % medium, 5 % high.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

PERIOD_S = 600.0
FLOOD_ABOVE = 10  # alarms in one 10-minute period


def _kpi(value, target, limit: str, *, max_manageable=None, unit: str = "") -> dict:
    """``limit``: "max" (value should not exceed target) or "eq" (should equal)."""
    ok = value <= target if limit == "max" else value == target
    out = {"value": value, "target": target, "unit": unit, "ok": bool(ok)}
    if max_manageable is not None:
        out["max_manageable"] = max_manageable
        out["status"] = ("acceptable" if value <= target else
                         "manageable" if value <= max_manageable else "overloaded")
    return out


def alarm_kpis(times: Sequence[float], priorities: Sequence[int], points: Sequence[str],
               start: float, end: float, *, consoles: int = 1, chattering: int = 0,
               stale: int = 0) -> dict:
    """``times``: annunciated activations (epoch s) in [start, end); ``priorities`` 1-3 of
    each; ``points``: each one's "rule:device"."""
    span = max(end - start, 1.0)
    t = np.asarray(times, dtype=np.float64)
    n = len(t)
    periods = max(int(np.ceil(span / PERIOD_S)), 1)
    per_period = np.bincount(np.clip(((t - start) // PERIOD_S).astype(np.int64), 0, periods - 1),
                             minlength=periods) if n else np.zeros(periods, dtype=np.int64)
    per_console = per_period / consoles
    flood = int((per_console > FLOOD_ABOVE).sum())
    per_10 = n / consoles / (span / PERIOD_S)
    top10 = sum(c for _, c in Counter(points).most_common(10))
    prio = Counter(int(p) for p in priorities)
    split = {name: round(100.0 * prio.get(level, 0) / n, 1) if n else 0.0
             for name, level in (("high", 1), ("medium", 2), ("low", 3))}
    return {
        "alarms": n,
        "periods": periods,
        "kpis": {
            "alarms_per_operator_per_10min": _kpi(round(per_10, 3), 1, "max", max_manageable=2),
            "alarms_per_operator_per_hour": _kpi(round(per_10 * 6, 2), 6, "max", max_manageable=12),
            "peak_alarms_per_10min": _kpi(int(per_console.max()) if periods else 0, FLOOD_ABOVE, "max"),
            "time_in_flood_pct": _kpi(round(100.0 * flood / periods, 2), 1, "max", unit="%"),
            "chattering_alarms": _kpi(chattering, 0, "eq"),
            "stale_alarms": _kpi(stale, 5, "max"),
            "top10_share_pct": _kpi(round(100.0 * top10 / n, 1) if n else 0.0, 5, "max", unit="%"),
            "priority_split_pct": {
                "value": split, "target": {"high": 5, "medium": 15, "low": 80}, "unit": "%",
                # within 10 points of the split the standard suggests
                "ok": bool(n == 0 or all(abs(split[k] - v) <= 10 for k, v in
                                         (("high", 5), ("medium", 15), ("low", 80)))),
            },
        },
    }


SERIES_BUCKETS = (PERIOD_S, 3600.0, 86400.0)


def activation_series(times: Sequence[float], start: float, end: float, *, consoles: int = 1,
                      max_points: int = 1000) -> dict:
    """Annunciated activations per operator in buckets over [start, end), for charts: 10
    minutes (the flood period) while that makes at most ``max_points`` buckets, else hours,
    else days. ``targets`` are the acceptable and most manageable rates for the bucket."""
    span = max(end - start, 1.0)
    bucket = next((b for b in SERIES_BUCKETS if span / b <= max_points), SERIES_BUCKETS[-1])
    n = max(int(np.ceil(span / bucket)), 1)
    t = np.asarray(times, dtype=np.float64)
    counts = (np.bincount(np.clip(((t - start) // bucket).astype(np.int64), 0, n - 1), minlength=n)
              if len(t) else np.zeros(n, dtype=np.int64))
    per_console = counts / consoles
    scale = bucket / PERIOD_S  # targets are per 10 minutes
    return {
        "bucket_s": int(bucket),
        "t": [start + i * bucket for i in range(n)],
        "per_operator": [round(float(v), 3) for v in per_console],
        "target": round(1 * scale, 3),
        "max_manageable": round(2 * scale, 3),
        "flood_above": FLOOD_ABOVE if bucket == PERIOD_S else None,
    }
