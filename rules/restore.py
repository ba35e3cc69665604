"""Restart (and rule reload) restore: the stored alarms and readings put back into the
rule engine. Pure: the server reads a :class:`Snapshot` from the database, this module
only computes.

Open alarms of the fresh rules are restored as active conditions, incidents are given
back to their correlators, and the latest state of every device (and the recent
telemetry rate rules need) is replayed without emitting. What the stored state says must
go (alarms of devices deleted, or no longer selected by their rule) comes back in
:attr:`Restored.closing` for the server to close.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rules.engine import RuleEngine
from rules.evaluator import Batch
from rules.models import CORRELATING_KINDS, Rule

# One stored reading: (device key, metric id, time in s, value, quality).
Reading = tuple[int, int, float, float | None, int]


@dataclass(frozen=True, slots=True)
class OpenAlarm:
    """An alarm not closed, as stored."""

    id: int
    rule: str
    device: str
    key: int | None  # the device's key; None when the device no longer exists
    severity: str
    active: bool
    raised_at: float  # s since the epoch
    value: float | None = None
    incident: int | None = None
    point: tuple[float, float] | None = None  # an incident's own location


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device's latest stored state (the ``device_state`` row)."""

    key: int
    values: Mapping[str, float | None] = field(default_factory=dict)
    times: Mapping[str, float] = field(default_factory=dict)  # ms since the epoch, per metric
    quality: Mapping[str, int] = field(default_factory=dict)
    last_seen: float | None = None
    status: str | None = None
    status_changed_at: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the database holds that the fresh rules need to start where they were."""

    open: Sequence[OpenAlarm] = ()
    shelves: Sequence[tuple[float, int]] = ()  # (shelved until, alarm id) of open alarms
    states: Sequence[DeviceState] = ()  # read only when some rule starts afresh
    history: Sequence[tuple[str, Sequence[Reading]]] = ()  # rate rules' recent telemetry
    metric_ids: frozenset[int] = frozenset()  # the metrics whose latest values to replay
    all_metrics: bool = False  # stale and fault rules look at every metric

    def open_by_rule(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for a in self.open:
            out.setdefault(a.rule, []).append(a.id)
        return out


@dataclass(slots=True)
class Restored:
    closing: list[tuple[int, str]] = field(default_factory=list)  # (alarm id, reason)
    shelves: list[tuple[float, int]] = field(default_factory=list)  # a heap; empty: none stored


def restored_level(rule: Rule, severity: str, value: float | None) -> int:
    """The signed level an open alarm stands for (the evaluator's own encoding)."""
    v = value if value is not None and math.isfinite(value) else None
    kind = rule.kind
    if kind == "threshold":
        db = rule.deadband
        high = rule.above is not None and (rule.below is None or v is None or v > rule.above - db)
        if high:
            return 2 if rule.high_high is not None and v is not None and v > rule.high_high - db else 1
        return -2 if rule.low_low is not None and v is not None and v < rule.low_low + db else -1
    if kind == "rate_of_change":
        return 1 if rule.above is not None and (rule.below is None or (v or 0) > 0) else -1
    if kind == "lighting_schedule":
        return 1 if (v or 0) >= 0.5 else -1
    return 1


def rows_batch(core: RuleEngine, rows: Sequence[Reading]) -> Batch:
    a = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return core.batch(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2],
                      a[:, 3], a[:, 4].astype(np.int64))


def restore(core: RuleEngine, snapshot: Snapshot, fresh: set[str], *, now: float,
            grace: float = 0.0) -> Restored:
    """Put the stored state back into the ``fresh`` rules of ``core`` (their state is
    empty); the others keep theirs. ``grace`` is added to stale deadlines (the server's
    own downtime at start); ``now`` stands in for an offline time never recorded."""
    out = Restored()
    incidents: dict[int, tuple[str, int | None, tuple[float, float] | None]] = {}
    # Correlators starting afresh relearn the open alarms of their (unchanged) members.
    learners: dict[str, list] = {}
    for c in core.correlators.values():
        if c.rule.id in fresh:
            learners.setdefault(c.rule.member, []).append(c)
    for a in snapshot.open:
        rule = core.rules.get(a.rule)
        if rule is None:
            continue
        if rule.kind in CORRELATING_KINDS:
            if rule.id in fresh:
                incidents[a.id] = (rule.id, a.key, a.point)
            continue
        if a.key is None:
            if rule.id in fresh:
                out.closing.append((a.id, f"device {a.device} no longer exists"))
            continue
        magnitude = abs(a.value) if a.value is not None else 1.0
        if rule.id in fresh:
            ev = core.evaluators.get(rule.id)
            slot = core.table.slot(a.key)
            if ev is not None and (slot < 0 or ev.local[slot] < 0):
                out.closing.append((a.id, f"rule {rule.id} no longer selects {a.device}"))
                continue
            if a.active:
                core.restore(rule.id, a.key, restored_level(rule, a.severity, a.value),
                             a.raised_at, magnitude)
        elif a.active:
            for c in learners.get(rule.id, []):
                c.restore_member(a.key, a.raised_at, magnitude)
    for aid, (rid, key, point) in incidents.items():
        if key is None:
            out.closing.append((aid, "its device no longer exists"))
            continue
        members = [a.key for a in snapshot.open if a.incident == aid and a.active
                   and a.key is not None]
        core.restore_incident(rid, key, members, point)
    out.shelves = list(snapshot.shelves)
    heapq.heapify(out.shelves)
    for rid, rows in snapshot.history:
        if rows:
            core.replay(rows_batch(core, rows), only=[rid])
    if snapshot.states:
        _replay_states(core, snapshot, fresh, now=now, grace=grace)
    return out


def _replay_states(core: RuleEngine, snapshot: Snapshot, fresh: set[str], *, now: float,
                   grace: float) -> None:
    # Rules on any metric (stale, fault without one) need every metric's latest.
    by_name = {name: m for name, m in core.metrics.items()
               if snapshot.all_metrics or m.id in snapshot.metric_ids}
    rows: list[Reading] = []
    seen_keys, seen_ts, off = [], [], []
    for s in snapshot.states:
        for name, t in s.times.items():
            m = by_name.get(name)
            if m is not None:
                v = s.values.get(name)
                rows.append((s.key, m.id, t / 1000.0, 0.0 if v is None else float(v),
                             int(s.quality.get(name, 0))))
        if s.last_seen is not None:
            seen_keys.append(s.key)
            seen_ts.append(s.last_seen)
        if s.status == "offline":
            changed = s.status_changed_at if s.status_changed_at is not None else s.last_seen
            off.append((s.key, changed if changed is not None else now))
    if rows:
        core.replay(rows_batch(core, rows), only=fresh)
    for rid in fresh:
        ev = core.evaluators.get(rid)
        if ev is not None and ev.rule.kind == "stale" and seen_keys:
            ev.seen(np.array(seen_keys, dtype=np.int64), np.array(seen_ts), grace=grace)
    if off:
        keys = np.array([k for k, _ in off], dtype=np.int64)
        slots = core.table.slots(keys)
        ok = slots >= 0
        for rid in fresh:
            ev = core.evaluators.get(rid)
            if ev is not None and ev.rule.kind == "fault":
                ev.on_status(slots[ok], np.zeros(int(ok.sum()), dtype=bool),
                             np.array([t for _, t in off])[ok],
                             np.zeros(int(ok.sum()), dtype=bool), emit=False)
