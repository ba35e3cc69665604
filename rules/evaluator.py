"""Vectorised evaluation of device rules over batches of readings, with on/off delays.

Each rule keeps its state in numpy arrays, one row per device it selects (its *local*
index): the alarm level it has raised, the condition the latest reading shows, since when,
and the time of the latest reading it used. A batch is sorted once by (metric, device,
time); each rule takes its metric's slice and works through it in *rounds*, the r-th
reading of every device at once, so two readings of one device in one batch are still
seen in order. Readings not newer than the last one a rule used are ignored, which makes
redelivered and replayed messages harmless.

Levels are small signed integers: 0 normal, +1 high, +2 high-high, -1 low, -2 low-low
(for a lighting rule +1 is a day-burner and -1 a night outage). A change of level becomes
a :class:`Transition` once it has held for the rule's on-delay (away from normal or up)
or off-delay (back towards normal); :meth:`next_deadline` and :meth:`fire` let one timer
task fire those at their deadline without waiting for the next reading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from rules.devices import DeviceTable
from rules.models import (
    FaultRule,
    LightingScheduleRule,
    RateOfChangeRule,
    Rule,
    StaleRule,
    StateRule,
    ThresholdRule,
)
from rules.schedules import Assignments
from rules.sun import daylight
from rules.vocab import Severity

INF = math.inf


@dataclass(slots=True)
class Transition:
    """A change of one rule's alarm condition on one device (or of an incident)."""

    rule: str
    device: int  # device key
    event: str  # raise | clear | update (level changed, still active) | suppress | release
    level: int
    ts: float  # epoch seconds: the reading's time, or the timer's
    value: float | None = None
    severity: str = Severity.MINOR
    text: str = ""
    magnitude: float = 1.0  # how far past the limit: weights a neighbourhood's centroid
    incident_rule: str | None = None  # set: this alarm belongs to that incident, suppressed
    incident_device: int | None = None
    children: tuple[int, ...] = ()  # an incident's member devices (keys)
    point: tuple[float, float] | None = None  # an incident's estimated location (lon, lat)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricInfo:
    id: int
    is_bool: bool


class Batch:
    """Readings sorted by (metric, device slot, time), with per-metric slices and rounds."""

    __slots__ = ("_bounds", "_devices", "metric", "quality", "rank", "slot", "ts", "value")

    def __init__(self, slot, metric, ts, value, quality) -> None:
        slot = np.asarray(slot, dtype=np.int64)
        keep = slot >= 0
        if not keep.all():
            slot, metric, ts, value, quality = (np.asarray(a)[keep] for a in
                                                (slot, metric, ts, value, quality))
        metric = np.asarray(metric, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.float64)
        order = np.lexsort((ts, slot, metric))
        self.slot, self.metric, self.ts = slot[order], metric[order], ts[order]
        self.value = np.asarray(value, dtype=np.float64)[order]
        self.quality = np.asarray(quality, dtype=np.int64)[order]
        n = len(self.slot)
        if n:
            new = np.ones(n, dtype=bool)
            new[1:] = (self.metric[1:] != self.metric[:-1]) | (self.slot[1:] != self.slot[:-1])
            pos = np.arange(n)
            self.rank = pos - np.maximum.accumulate(np.where(new, pos, 0))
            mids, starts = np.unique(self.metric, return_index=True)
            ends = np.append(starts[1:], n)
            self._bounds = {int(m): (int(a), int(b)) for m, a, b in zip(mids, starts, ends, strict=True)}
        else:
            self.rank = np.zeros(0, dtype=np.int64)
            self._bounds = {}
        self._devices: tuple | None = None

    def __len__(self) -> int:
        return len(self.slot)

    @classmethod
    def empty(cls) -> Batch:
        z = np.zeros(0)
        return cls(z, z, z, z, z)

    def of_metric(self, metric_id: int):
        a, b = self._bounds.get(metric_id, (0, 0))
        return (self.slot[a:b], self.ts[a:b], self.value[a:b], self.quality[a:b], self.rank[a:b])

    def devices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per device in the batch: its slot, newest reading time, and whether any reading
        at that time is of bad quality."""
        if self._devices is None:
            if not len(self.slot):
                z = np.zeros(0, dtype=np.int64)
                self._devices = (z, np.zeros(0), np.zeros(0, dtype=bool))
            else:
                slots, inv = np.unique(self.slot, return_inverse=True)
                newest = np.full(len(slots), -INF)
                np.maximum.at(newest, inv, self.ts)
                bad = np.zeros(len(slots), dtype=bool)
                at_newest = self.ts == newest[inv]
                np.logical_or.at(bad, inv[at_newest], self.quality[at_newest] != 0)
                self._devices = (slots, newest, bad)
        return self._devices


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def fmt_duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


class Evaluator:
    """Base: the state arrays of one rule over the devices it selects."""

    rule: Rule
    # Which lamps follow which lighting schedule (the engine sets it; the lighting rule reads it).
    schedules: Assignments | None = None
    fields: ClassVar[dict[str, tuple[Any, Any]]] = {
        "level": (np.int8, 0), "cond": (np.int8, 0), "since": (np.float64, -INF),
        "last_ts": (np.float64, -INF), "value": (np.float64, np.nan),
    }

    def __init__(self, rule: Rule, table: DeviceTable, metrics: Mapping[str, MetricInfo]) -> None:
        self.rule = rule
        self.metrics = metrics
        self.evaluations = 0
        self.table = table
        self._bind(table, None)

    # ------------------------------------------------------------------ state
    def _bind(self, table: DeviceTable, old: Evaluator | None) -> None:
        self.table = table
        self.slots = table.select(self.rule.select)
        self.keys = table.keys[self.slots]
        self.local = np.full(len(table), -1, dtype=np.int64)
        self.local[self.slots] = np.arange(len(self.slots))
        n = len(self.slots)
        for name, (dtype, default) in self.fields.items():
            shape = (n, *self._extra_shape(name))
            arr = np.full(shape, default, dtype=dtype)
            if old is not None:
                _, mine, theirs = np.intersect1d(self.keys, old.keys, assume_unique=True,
                                                 return_indices=True)
                arr[mine] = getattr(old, name)[theirs]
            setattr(self, name, arr)
        self._on_bind(table)

    def _extra_shape(self, name: str) -> tuple[int, ...]:
        return ()

    def _on_bind(self, table: DeviceTable) -> None:
        pass

    def rebind(self, table: DeviceTable) -> None:
        """Follow a new device table, keeping the state of the devices still selected."""
        old = object.__new__(type(self))
        old.keys = self.keys
        for name in self.fields:
            setattr(old, name, getattr(self, name))
        self._bind(table, old)

    def restore(self, key: int, level: int, since: float) -> None:
        """An alarm open in the database: the level this rule had raised on that device."""
        slot = self.table.slot(key)
        i = self.local[slot] if slot >= 0 else -1
        if i >= 0:
            self.level[i] = level
            self.cond[i] = level
            self.since[i] = since

    def level_of(self, key: int) -> int:
        slot = self.table.slot(key)
        i = self.local[slot] if slot >= 0 else -1
        return int(self.level[i]) if i >= 0 else 0

    def active_keys(self) -> np.ndarray:
        return self.keys[self.level != 0]

    # ------------------------------------------------------------------ evaluation
    def on_rows(self, batch: Batch, emit: bool = True) -> list[Transition]:
        return []

    def on_status(self, slots: np.ndarray, online: np.ndarray, ts: np.ndarray,
                  retained: np.ndarray, emit: bool = True) -> list[Transition]:
        return []

    def next_deadline(self) -> float:
        return INF

    def fire(self, now: float) -> list[Transition]:
        return []

    def severity(self, level: int) -> str:
        return self.rule.severity


class ConditionEvaluator(Evaluator):
    """A condition per reading (subclasses), held for on/off delays before it counts."""

    metric_name: str | None = None

    def _on_bind(self, table: DeviceTable) -> None:
        self.on_delay = float(getattr(self.rule, "on_delay", 0.0))
        self.off_delay = float(getattr(self.rule, "off_delay", 0.0))
        name = self.metric_name
        self.metric = self.metrics[name] if name is not None else None

    def condition(self, idx: np.ndarray, t: np.ndarray, v: np.ndarray,
                  q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(new condition level, which rows count); rows that don't count change nothing."""
        raise NotImplementedError

    def on_rows(self, batch: Batch, emit: bool = True) -> list[Transition]:
        if self.metric is None or not len(self.slots):
            return []
        slot, ts, value, quality, rank = batch.of_metric(self.metric.id)
        if not len(slot):
            return []
        loc = self.local[slot]
        mine = loc >= 0
        if not mine.all():
            loc, ts, value, quality, rank = loc[mine], ts[mine], value[mine], quality[mine], rank[mine]
        self.evaluations += len(loc)
        out: list[Transition] = []
        rounds = int(rank.max()) + 1 if len(rank) else 0
        for r in range(rounds):
            if rounds == 1:
                idx, t, v, q = loc, ts, value, quality
            else:
                sel = rank == r
                idx, t, v, q = loc[sel], ts[sel], value[sel], quality[sel]
            fresh = t > self.last_ts[idx]
            if not fresh.all():
                idx, t, v, q = idx[fresh], t[fresh], v[fresh], q[fresh]
            if not len(idx):
                continue
            self.last_ts[idx] = t
            cond, counts = self.condition(idx, t, v, q)
            if not counts.all():
                idx, t, v, cond = idx[counts], t[counts], v[counts], cond[counts]
            self._set(idx, cond, t, v)
            if emit:
                out += self._due(idx, t)
        return out

    def _set(self, idx, cond, t, v) -> None:
        changed = cond != self.cond[idx]
        if changed.any():
            self.since[idx[changed]] = t[changed]
            self.cond[idx[changed]] = cond[changed]
        self.value[idx] = v

    def _delays(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, lv = self.cond[idx].astype(np.int64), self.level[idx].astype(np.int64)
        rising = (c != 0) & ((np.abs(c) > np.abs(lv)) | (np.sign(c) != np.sign(lv)))
        return rising, np.where(rising, self.on_delay, self.off_delay)

    def _due(self, idx: np.ndarray, now) -> list[Transition]:
        differ = self.cond[idx] != self.level[idx]
        if not differ.any():
            return []
        idx = idx[differ]
        now = now[differ] if isinstance(now, np.ndarray) else np.full(len(idx), now)
        rising, delay = self._delays(idx)
        due = now - self.since[idx] >= delay
        if not due.any():
            return []
        idx, now, rising = idx[due], now[due], rising[due]
        out = []
        for i, t, up in zip(idx.tolist(), now.tolist(), rising.tolist(), strict=True):
            new = int(self.cond[i])
            old = int(self.level[i])
            self.level[i] = new
            event = "clear" if new == 0 else ("raise" if up else "update")
            out.append(self._transition(i, event, new, old, t))
        return out

    def _transition(self, i: int, event: str, new: int, old: int, t: float) -> Transition:
        v = float(self.value[i])
        shown = v if math.isfinite(v) else None
        lvl = new if new else old
        # "since": when the condition began (its reading's time): delays are counted from it.
        return Transition(
            self.rule.id, int(self.keys[i]), event, new, t, shown, self.severity(lvl),
            self.describe(i, new, old), self.magnitude(i, lvl),
            details={**self.details(i, lvl), "since": float(self.since[i])})

    def next_deadline(self) -> float:
        if self.on_delay == 0 and self.off_delay == 0:
            return INF
        idx = np.flatnonzero(self.cond != self.level)
        if not len(idx):
            return INF
        _, delay = self._delays(idx)
        return float((self.since[idx] + delay).min())

    def fire(self, now: float) -> list[Transition]:
        idx = np.flatnonzero(self.cond != self.level)
        return self._due(idx, now) if len(idx) else []

    def describe(self, i: int, new: int, old: int) -> str:
        return ""

    def magnitude(self, i: int, level: int) -> float:
        return 1.0

    def details(self, i: int, level: int) -> dict[str, Any]:
        return {}


class ThresholdEvaluator(ConditionEvaluator):
    rule: ThresholdRule

    @property
    def metric_name(self) -> str:  # type: ignore[override]
        return self.rule.metric

    def condition(self, idx, t, v, q):
        r = self.rule
        prev = self.cond[idx]
        db = r.deadband
        c = np.zeros(len(idx), dtype=np.int8)
        if r.above is not None:
            c[(v > r.above) | ((prev >= 1) & (v > r.above - db))] = 1
            if r.high_high is not None:
                c[(v > r.high_high) | ((prev >= 2) & (v > r.high_high - db))] = 2
        if r.below is not None:
            c[(v < r.below) | ((prev <= -1) & (v < r.below + db))] = -1
            if r.low_low is not None:
                c[(v < r.low_low) | ((prev <= -2) & (v < r.low_low + db))] = -2
        return c, q == 0  # a bad reading is a fault (see the fault rule), not a process value

    def limit(self, level: int) -> float | None:
        r = self.rule
        return {2: r.high_high, 1: r.above, -1: r.below, -2: r.low_low}.get(level)

    def severity(self, level: int) -> str:
        return self.rule.high_high_severity if abs(level) == 2 else self.rule.severity

    def describe(self, i, new, old):
        v = float(self.value[i])
        m = self.rule.metric
        if new == 0:
            lim = self.limit(old)
            return f"{m} {_fmt(v)} back within {_fmt(lim)}" if lim is not None else f"{m} normal"
        word = {2: "above high-high", 1: "above", -1: "below", -2: "below low-low"}[new]
        return f"{m} {_fmt(v)} {word} {_fmt(self.limit(new))}"

    def magnitude(self, i, level):
        lim = self.limit(level)
        return abs(float(self.value[i]) - lim) if lim is not None else 1.0

    def details(self, i, level):
        return {"metric": self.rule.metric, "limit": self.limit(level)}


class RateOfChangeEvaluator(ConditionEvaluator):
    """Change per minute against the oldest sample inside the window (ring of samples)."""

    rule: RateOfChangeRule
    HISTORY = 24
    fields = ConditionEvaluator.fields | {
        "hist_t": (np.float64, -INF), "hist_v": (np.float64, np.nan), "head": (np.int64, 0)}

    @property
    def metric_name(self) -> str:  # type: ignore[override]
        return self.rule.metric

    def _extra_shape(self, name: str) -> tuple[int, ...]:
        return (self.HISTORY,) if name in ("hist_t", "hist_v") else ()

    def condition(self, idx, t, v, q):
        good = q == 0
        r = self.rule
        prev = self.cond[idx]
        g_idx, g_t, g_v = idx[good], t[good], v[good]
        pos = self.head[g_idx]
        self.hist_t[g_idx, pos] = g_t
        self.hist_v[g_idx, pos] = g_v
        self.head[g_idx] = (pos + 1) % self.HISTORY
        ht = self.hist_t[idx]
        inside = ht >= (t - r.window)[:, None]
        oldest = np.where(inside, ht, INF).argmin(axis=1)
        t_old = ht[np.arange(len(idx)), oldest]
        v_old = self.hist_v[idx][np.arange(len(idx)), oldest]
        span = t - t_old
        valid = good & (span >= r.min_span * r.window)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(valid, (v - v_old) / np.where(span > 0, span, 1.0) * 60.0, np.nan)
        c = np.zeros(len(idx), dtype=np.int8)
        db = r.deadband
        if r.above is not None:
            c[(rate > r.above) | ((prev >= 1) & (rate > r.above - db))] = 1
        if r.below is not None:
            c[(rate < r.below) | ((prev <= -1) & (rate < r.below + db))] = -1
        # The value an alarm shows is the rate, not the reading.
        v[:] = rate
        return c, valid

    def describe(self, i, new, old):
        rate = float(self.value[i])
        m, w = self.rule.metric, fmt_duration(self.rule.window)
        if new == 0:
            return f"{m} changing {_fmt(rate)}/min over {w}: back to normal"
        lim = self.rule.above if new > 0 else self.rule.below
        return f"{m} changing {_fmt(rate)}/min over {w} ({'above' if new > 0 else 'below'} {_fmt(lim)}/min)"

    def magnitude(self, i, level):
        v = float(self.value[i])
        return abs(v) if math.isfinite(v) else 1.0

    def details(self, i, level):
        return {"metric": self.rule.metric, "rate_per_min": self.value[i].item(),
                "window_s": self.rule.window}

    def on_rows(self, batch, emit=True):
        # condition() writes the rate into the values it is given: work on a copy.
        return super().on_rows(_CopyValues(batch), emit)


class _CopyValues:
    """A view of a batch whose per-metric values are copies (safe to overwrite)."""

    def __init__(self, batch: Batch) -> None:
        self._b = batch

    def of_metric(self, mid: int):
        slot, ts, value, quality, rank = self._b.of_metric(mid)
        return slot, ts, value.copy(), quality, rank


class StateEvaluator(ConditionEvaluator):
    rule: StateRule

    @property
    def metric_name(self) -> str:  # type: ignore[override]
        return self.rule.metric

    def _on_bind(self, table):
        super()._on_bind(table)
        self._states = np.array(self.rule.in_, dtype=np.float64)

    def condition(self, idx, t, v, q):
        return np.isin(v, self._states).astype(np.int8), q == 0

    def describe(self, i, new, old):
        v = float(self.value[i])
        return f"{self.rule.metric} is {_fmt(v)}" + (" (normal)" if new == 0 else "")

    def details(self, i, level):
        return {"metric": self.rule.metric}


class LightingEvaluator(ConditionEvaluator):
    """+1: on when it should be off (a day-burner); -1: off when it should be on (an outage).

    "Should" is the sun at the lamp, or the lamp's lighting schedule when it follows one
    (``schedules``, set by the engine): a lamp dimmed off at 05:00 by its profile is off
    as it should be, though the sun is still down.
    """

    rule: LightingScheduleRule
    # The level the lamp's schedule asked for at its latest reading (NaN: no schedule).
    fields = ConditionEvaluator.fields | {"expected": (np.float64, np.nan)}

    @property
    def metric_name(self) -> str:  # type: ignore[override]
        return self.rule.metric

    def condition(self, idx, t, v, q):
        slots = self.slots[idx]
        margin = self.rule.margin
        day, night = daylight(t, self.table.lat[slots], self.table.lon[slots], margin)
        self.expected[idx] = np.nan
        plans = self.schedules
        if plans is not None and len(plans) and self.rule.schedules:
            which, pos = plans.lookup(self.keys[idx])
            for p in np.unique(which[which >= 0]).tolist():
                rows = np.flatnonzero(which == p)
                # "surely off" plays the part of daylight, "surely on" of the night
                day[rows], night[rows], level = plans.lamps[p].certain(t[rows], pos[rows], margin)
                self.expected[idx[rows]] = level
        on = v >= 0.5
        c = np.zeros(len(idx), dtype=np.int8)
        if self.rule.check in ("both", "day_burner"):
            c[on & day] = 1
        if self.rule.check in ("both", "night_outage"):
            c[~on & night] = -1
        # Around sunrise and sunset (within the margin) neither state is wrong: keep the
        # condition as it was rather than clear an alarm at every dusk.
        twilight = ~day & ~night
        c[twilight] = self.cond[idx][twilight]
        return c, q == 0

    def _schedule_of(self, i: int) -> str | None:
        plans = self.schedules
        if plans is None or not len(plans) or not self.rule.schedules:
            return None
        which, _ = plans.lookup(self.keys[i:i + 1])
        return plans.ids[int(which[0])] if which[0] >= 0 else None

    def describe(self, i, new, old):
        lvl = new or old
        sched = self._schedule_of(i)
        if sched is not None:
            expected = float(self.expected[i])
            if lvl > 0:
                what = f"on while its lighting schedule {sched} has it off"
            else:
                shown = f" at {expected:g} %" if math.isfinite(expected) and expected > 0 else " on"
                what = f"off while its lighting schedule {sched} has it{shown}"
            return f"lamp {what}" + (": back to normal" if new == 0 else "")
        what = "on in daylight (day-burner)" if lvl > 0 else "off at night (outage)"
        return f"lamp {what}" + (": back to normal" if new == 0 else "")

    def details(self, i, level):
        out: dict[str, Any] = {"check": "day_burner" if level > 0 else "night_outage"}
        sched = self._schedule_of(i)
        if sched is not None:
            out["schedule"] = sched
            if math.isfinite(float(self.expected[i])):
                out["expected_level"] = float(self.expected[i])
        return out


class FaultEvaluator(ConditionEvaluator):
    """A boolean fault metric, a bad-quality reading, or (``offline``) an offline link."""

    rule: FaultRule
    fields = ConditionEvaluator.fields | {"mfault": (np.int8, 0), "offline": (np.int8, 0)}

    @property
    def metric_name(self) -> str | None:  # type: ignore[override]
        return self.rule.metric

    def condition(self, idx, t, v, q):
        m = self.metric
        bad = np.zeros(len(idx), dtype=bool)
        if m is not None and m.is_bool:
            bad |= (v >= 0.5) & (q == 0)
        if self.rule.bad_quality:
            bad |= q != 0
        self.mfault[idx] = bad
        self.offline[idx] = 0  # it is reporting
        return np.maximum(self.mfault[idx], self.offline[idx]), np.ones(len(idx), dtype=bool)

    def on_rows(self, batch, emit=True):
        if self.rule.metric is not None:
            out = super().on_rows(batch, emit)
            if self.rule.offline:
                out += self._reporting(batch, emit)
            return out
        if not len(self.slots):
            return []
        # Any metric: one verdict per device, from its newest readings in the batch.
        slots, newest, bad = batch.devices()
        loc = self.local[slots]
        mine = loc >= 0
        idx, t, bad = loc[mine], newest[mine], bad[mine]
        fresh = t > self.last_ts[idx]
        idx, t, bad = idx[fresh], t[fresh], bad[fresh]
        self.evaluations += len(idx)
        if not len(idx):
            return []
        self.last_ts[idx] = t
        self.mfault[idx] = bad if self.rule.bad_quality else 0
        self.offline[idx] = 0
        self._set(idx, np.maximum(self.mfault[idx], self.offline[idx]), t, np.where(bad, 1.0, 0.0))
        return self._due(idx, t) if emit else []

    def _reporting(self, batch, emit):
        """Readings of any metric show the device online again."""
        slots, newest, _ = batch.devices()
        loc = self.local[slots]
        mine = (loc >= 0)
        idx, t = loc[mine], newest[mine]
        back = self.offline[idx] == 1
        idx, t = idx[back], t[back]
        if not len(idx):
            return []
        self.offline[idx] = 0
        self._set(idx, self.mfault[idx], t, self.value[idx])
        return self._due(idx, t) if emit else []

    def on_status(self, slots, online, ts, retained, emit=True):
        if not self.rule.offline or not len(self.slots):
            return []
        loc = self.local[slots]
        mine = loc >= 0
        idx, online, ts, retained = loc[mine], online[mine], ts[mine], retained[mine]
        # A retained "offline" is the broker replaying old news: it never raises.
        counts = online | ~retained
        idx, online, ts = idx[counts], online[counts], ts[counts]
        if not len(idx):
            return []
        self.offline[idx] = ~online
        self._set(idx, np.maximum(self.mfault[idx], self.offline[idx]), ts, self.value[idx])
        return self._due(idx, ts) if emit else []

    def describe(self, i, new, old):
        if new == 0:
            return "fault cleared"
        if self.offline[i] and not self.mfault[i]:
            return "device offline (its link reports no answer)"
        m = self.rule.metric
        if self.metric is not None and self.metric.is_bool and self.value[i] >= 0.5:
            return f"{m} reported"
        return f"bad reading of {m}" if m else "a reading of bad quality"

    def details(self, i, level):
        return {"metric": self.rule.metric, "offline": bool(self.offline[i])}


class StaleEvaluator(Evaluator):
    """No reading for ``missed_intervals`` × the expected interval: raise at that moment."""

    rule: StaleRule
    # grace: seconds added to a device's deadline until it reports again (the server's own
    # downtime at start: silence nobody was listening to is not the device's; see seen()).
    fields: ClassVar[dict[str, tuple[Any, Any]]] = {"level": (np.int8, 0), "last_seen": (np.float64, -INF),
                                                     "since": (np.float64, -INF),
                                                     "grace": (np.float64, 0.0)}

    def _on_bind(self, table):
        iv = self.rule.interval
        per = np.full(len(self.slots), iv) if iv else table.interval_s[self.slots]
        self.limit = per * self.rule.missed_intervals

    def restore(self, key, level, since):
        slot = self.table.slot(key)
        i = self.local[slot] if slot >= 0 else -1
        if i >= 0:
            self.level[i] = level
            self.since[i] = since

    def seen(self, keys: np.ndarray, ts: np.ndarray, grace: float = 0.0) -> None:
        """Last-seen times from the database (at start): the clocks to run from.

        ``grace``: how long the server was not listening (its downtime), added to these
        devices' deadlines until they report again, so a restart after an outage does not
        raise a stale alarm for every device at once (an alarm flood, ISA-18.2); silence
        before the outage still counts.
        """
        slots = self.table.slots(keys)
        ok = slots >= 0
        loc = self.local[slots[ok]]
        mine = loc >= 0
        idx, t = loc[mine], np.asarray(ts, dtype=np.float64)[ok][mine]
        self.last_seen[idx] = np.maximum(self.last_seen[idx], t)
        self.grace[idx] = max(grace, 0.0)

    def on_rows(self, batch, emit=True):
        if not len(self.slots):
            return []
        slots, newest, _ = batch.devices()
        loc = self.local[slots]
        mine = loc >= 0
        idx, t = loc[mine], newest[mine]
        self.evaluations += len(idx)
        self.last_seen[idx] = np.maximum(self.last_seen[idx], t)
        self.grace[idx] = 0.0
        back = self.level[idx] != 0
        if not emit or not back.any():
            return []
        out = []
        for i, at in zip(idx[back].tolist(), t[back].tolist(), strict=True):
            self.level[i] = 0
            out.append(Transition(self.rule.id, int(self.keys[i]), "clear", 0, at, None,
                                  self.rule.severity, "reporting again"))
        return out

    def _overdue(self, now: float) -> np.ndarray:
        # Never seen: status unknown, not stale (no clock to run from).
        return np.flatnonzero((self.level == 0) & np.isfinite(self.last_seen)
                              & (self.last_seen + self.grace + self.limit <= now))

    def next_deadline(self) -> float:
        waiting = (self.level == 0) & np.isfinite(self.last_seen)
        if not waiting.any():
            return INF
        return float((self.last_seen[waiting] + self.grace[waiting] + self.limit[waiting]).min())

    def fire(self, now):
        out = []
        for i in self._overdue(now).tolist():
            self.level[i] = 1
            age = now - float(self.last_seen[i])
            expected = float(self.limit[i] / self.rule.missed_intervals)
            out.append(Transition(
                self.rule.id, int(self.keys[i]), "raise", 1, now, round(age, 3), self.rule.severity,
                f"no data for {fmt_duration(age)} (expected every {fmt_duration(expected)})",
                details={"last_seen": float(self.last_seen[i]), "expected_interval_s": expected}))
        return out


EVALUATORS: dict[str, type[Evaluator]] = {
    "threshold": ThresholdEvaluator,
    "rate_of_change": RateOfChangeEvaluator,
    "stale": StaleEvaluator,
    "fault": FaultEvaluator,
    "state": StateEvaluator,
    "lighting_schedule": LightingEvaluator,
}
