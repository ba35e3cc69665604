"""The energy a schedule saved: what its lamps drew, beside the same lamps at 100 % all night.

Measured from history, hour by hour and lamp by lamp:

* **used**: the lamp's mean ``power_w`` in the hour times the part of the hour the period
  covers (hours already rolled up come from ``telemetry_hourly``, the rest from the points,
  through the history's one read path); a lamp without ``power_w`` in the period falls back
  to the rise of its ``energy_kwh`` counter;
* **all night at 100 %**: the lamp's rated power (its ``rated_power_w`` property, else the
  highest hourly mean it drew) times the night in those same hours, sunset to sunrise at
  the lamp (:mod:`rules.sun`). Only hours with a reading count on both sides, so a lamp
  that was silent for a day neither saves nor wastes anything that day.

Also the **planned** share: what the profile itself uses of a night at 100 %, from its
steps at the middle of its lamps (no history needed).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np

from rules.schedules import local_night, nights_of
from rules.sun import sun_times
from server.errors import Invalid
from server.store.compress import UNIX_OFFSET_US
from server.store.history import count_points, read_points, rollup_boundary

__all__ = ["MAX_POINTS", "energy_report"]

MAX_POINTS = 5_000_000  # points read for the hours not rolled up yet
HOUR_S = 3600.0


def _night_seconds(a: np.ndarray, b: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Seconds of [a, b) between sunset and sunrise at each lamp (spans of at most an hour)."""
    rise, set_ = sun_times((a + b) / 2, lat, lon)
    rise = np.where(np.isnan(rise), a, rise)  # polar day or night: count it as day
    set_ = np.where(np.isnan(set_), b, set_)
    before_rise = np.clip(np.minimum(b, rise) - a, 0, None)
    after_set = np.clip(b - np.maximum(a, set_), 0, None)
    return np.minimum(before_rise + after_set, b - a)


async def _hourly_power(conn: asyncpg.Connection, keys: list[int], metric: int, frm: datetime,
                        to: datetime) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(device key, hour start epoch s, mean W) for every hour of [frm, to) with readings."""
    through = await rollup_boundary(conn)
    split = max(frm, min(to, through)) if through is not None else frm
    parts_k, parts_h, parts_v = [], [], []
    if split > frm:
        rows = await conn.fetch(
            "select device_key, extract(epoch from hour) as h, sum / n as w from telemetry_hourly "
            "where device_key = any($1::int[]) and metric_id = $2 and hour >= $3 and hour < $4 "
            "and n > 0", keys, metric, frm - timedelta(hours=1), split)
        # an hour that starts before frm counts for the part inside the period (below)
        parts_k.append(np.array([r["device_key"] for r in rows], dtype=np.int64))
        parts_h.append(np.array([float(r["h"]) for r in rows], dtype=np.float64))
        parts_v.append(np.array([r["w"] for r in rows], dtype=np.float64))
    if to > split:
        total = await count_points(conn, split, to, keys, [metric])
        if total > MAX_POINTS:
            raise Invalid(f"{total:,} power readings not rolled up yet in that period; ask for "
                          "fewer days (the hourly rollup covers the older ones)", field="days")
        p = await read_points(conn, split, to, keys, [metric])
        ok = (p.quality == 0) & np.isfinite(p.value)
        if ok.any():
            dev = p.device[ok].astype(np.int64)
            hour = np.floor(((p.ts[ok] + UNIX_OFFSET_US) / 1e6) / HOUR_S) * HOUR_S
            val = p.value[ok]
            pairs, inv = np.unique(np.stack([dev, hour.astype(np.int64)]), axis=1, return_inverse=True)
            inv = inv.reshape(-1)
            sums = np.bincount(inv, weights=val, minlength=pairs.shape[1])
            counts = np.bincount(inv, minlength=pairs.shape[1])
            parts_k.append(pairs[0])
            parts_h.append(pairs[1].astype(np.float64))
            parts_v.append(sums / counts)
    if not parts_k:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(parts_k), np.concatenate(parts_h), np.concatenate(parts_v)


async def energy_report(conn: asyncpg.Connection, keys: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                        frm: datetime, to: datetime, tz) -> dict[str, Any]:
    """Used and all-night-100 % energy of these lamps over [frm, to), in total and per night."""
    keys = np.asarray(keys, dtype=np.int64)
    out: dict[str, Any] = {"from": frm, "to": to, "lamps": len(keys), "measured_lamps": 0,
                           "used_kwh": 0.0, "full_kwh": 0.0, "saved_kwh": 0.0, "saved_pct": None,
                           "source": None, "nights": []}
    if not len(keys):
        return out
    metric_ids = {r["name"]: r["id"] for r in await conn.fetch(
        "select id, name from metrics where name = any($1::text[])", ["power_w", "energy_kwh"])}
    rated_rows = await conn.fetch(
        "select key, (properties->>'rated_power_w') as rated from devices where key = any($1::int[])",
        keys.tolist())
    rated = {r["key"]: _positive(r["rated"]) for r in rated_rows}
    slot = {int(k): i for i, k in enumerate(keys.tolist())}
    lo_s, hi_s = frm.timestamp(), to.timestamp()
    used = np.zeros(0)
    full = np.zeros(0)
    night_of = np.zeros(0, dtype=np.int64)
    measured: set[int] = set()
    sources = []
    if "power_w" in metric_ids:
        k, h, w = await _hourly_power(conn, keys.tolist(), metric_ids["power_w"], frm, to)
        if len(k):
            a = np.maximum(h, lo_s)
            b = np.minimum(h + HOUR_S, hi_s)
            keep = b > a
            k, h, w, a, b = k[keep], h[keep], w[keep], a[keep], b[keep]
            idx = np.array([slot[int(x)] for x in k.tolist()], dtype=np.int64)
            top = {}
            for key, watts in zip(k.tolist(), w.tolist(), strict=True):
                top[key] = max(top.get(key, 0.0), watts)
            rated_w = np.array([rated.get(key) or top[key] for key in k.tolist()], dtype=np.float64)
            night_s = _night_seconds(a, b, lat[idx], lon[idx])
            used = w * (b - a) / 3.6e6  # W·s → kWh
            full = rated_w * night_s / 3.6e6
            night_of = nights_of(tz, (a + b) / 2)
            measured.update(k.tolist())
            sources.append("power_w")
    rest = [int(x) for x in keys.tolist() if int(x) not in measured]
    if rest and "energy_kwh" in metric_ids:
        rows = await conn.fetch(
            """select device_key, min(ts) as t0, max(ts) as t1,
                      (array_agg(value order by ts desc))[1] - (array_agg(value order by ts))[1] as kwh
               from telemetry where device_key = any($1::int[]) and metric_id = $2
                 and ts >= $3 and ts < $4 and quality = 0
               group by device_key having count(*) > 1""",
            rest, metric_ids["energy_kwh"], frm, to)
        if rows:
            e_used, e_full, e_night = [], [], []
            for r in rows:
                i = slot[r["device_key"]]
                a0, b0 = r["t0"].timestamp(), r["t1"].timestamp()
                edges = np.arange(a0, b0, HOUR_S)
                ends = np.minimum(edges + HOUR_S, b0)
                ns = _night_seconds(edges, ends, np.full(len(edges), lat[i]), np.full(len(edges), lon[i]))
                watts = rated.get(r["device_key"])
                if watts is None or r["kwh"] is None or r["kwh"] < 0:
                    continue
                e_used.append(float(r["kwh"]))
                e_full.append(watts * float(ns.sum()) / 3.6e6)
                e_night.append(local_night(tz, r["t1"]))
                measured.add(r["device_key"])
            if e_used:
                used = np.concatenate([used, e_used])
                full = np.concatenate([full, e_full])
                night_of = np.concatenate([night_of, np.array(e_night, dtype=np.int64)])
                sources.append("energy_kwh")
    out["measured_lamps"] = len(measured)
    out["source"] = "+".join(sources) or None
    total_used, total_full = float(used.sum()), float(full.sum())
    out["used_kwh"], out["full_kwh"] = round(total_used, 3), round(total_full, 3)
    out["saved_kwh"] = round(total_full - total_used, 3)
    out["saved_pct"] = round(100 * (1 - total_used / total_full), 1) if total_full > 0 else None
    if len(night_of):
        for n in np.unique(night_of).tolist():
            sel = night_of == n
            u, f = float(used[sel].sum()), float(full[sel].sum())
            out["nights"].append({"night": _date(n), "used_kwh": round(u, 3), "full_kwh": round(f, 3),
                                  "saved_pct": round(100 * (1 - u / f), 1) if f > 0 else None})
    return out


def _positive(raw: Any) -> float | None:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        return None
    return v if v > 0 and np.isfinite(v) else None


def _date(night: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=night)).isoformat()

