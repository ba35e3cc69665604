"""Backtest: a rule run over stored readings with the same evaluator as live, reporting what
it would have raised (how many, when, where) before anyone enables it.

Readings arrive in time order, in chunks. Timers (delays, stale data) fire at their
deadlines in simulated time: a chunk is cut at the next deadline and at most a minute of
readings is evaluated at once, so a timer is never more than a minute late even when it
starts and ends inside one slice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from rules.devices import DeviceTable
from rules.engine import RuleEngine
from rules.evaluator import INF, MetricInfo, Transition
from rules.models import Rule, RuleError

SLICE_S = 60.0
MAX_LISTED = 1000


@dataclass(slots=True)
class Occurrence:
    device: str
    raised_at: float
    value: float | None
    message: str
    cleared_at: float | None = None
    children: int = 0


@dataclass(slots=True)
class Backtest:
    rule: Rule
    members: list[Rule]
    table: DeviceTable
    metrics: Mapping[str, MetricInfo]
    engine: RuleEngine = field(init=False)
    occurrences: list[Occurrence] = field(default_factory=list)
    member_raises: int = 0
    open: dict[int, Occurrence] = field(default_factory=dict)
    rows: int = 0
    last_t: float = -INF

    def __post_init__(self) -> None:
        self.engine = RuleEngine(self.table, self.metrics)
        rules = [r.model_copy(update={"enabled": True}) for r in [*self.members, self.rule]]
        changes = self.engine.set_rules(rules)
        if changes.errors:
            raise RuleError(changes.errors)

    def metric_ids(self) -> list[int] | None:
        """Metrics to read, or None: every metric (stale and any-metric fault rules)."""
        ids = set()
        for r in self.engine.rules.values():
            if r.kind == "stale" or (r.kind == "fault" and r.metric is None):
                return None
            name = getattr(r, "metric", None)
            if name is not None:
                ids.add(self.metrics[name].id)
        return sorted(ids)

    def device_keys(self) -> np.ndarray:
        """Devices whose readings matter: those the rule (or its member) selects."""
        keys = [ev.keys for ev in self.engine.evaluators.values()]
        return np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)

    def feed(self, keys, metric, ts, value, quality) -> None:
        """Readings sorted by time."""
        ts = np.asarray(ts, dtype=np.float64)
        n = len(ts)
        self.rows += n
        i = 0
        while i < n:
            self.fire_until(ts[i])
            deadline = self.engine.next_deadline()
            j = int(np.searchsorted(ts, min(deadline, ts[i] + SLICE_S), side="left"))
            j = max(j, i + 1)
            b = self.engine.batch(keys[i:j], metric[i:j], ts[i:j], value[i:j], quality[i:j])
            self._collect(self.engine.evaluate(b))
            self.last_t = float(ts[j - 1])
            i = j

    def fire_until(self, t: float) -> None:
        while (d := self.engine.next_deadline()) <= t:
            self._collect(self.engine.fire(d))

    def _collect(self, transitions: list[Transition]) -> None:
        for tr in transitions:
            if tr.rule != self.rule.id:
                if tr.event == "raise":
                    self.member_raises += 1
                continue
            if tr.event == "raise" and tr.device not in self.open:
                occ = Occurrence(self._id(tr.device), tr.ts, tr.value, tr.text,
                                 children=len(tr.children))
                self.open[tr.device] = occ
                self.occurrences.append(occ)
            elif tr.event == "clear":
                occ = self.open.pop(tr.device, None)
                if occ is not None:
                    occ.cleared_at = tr.ts

    def _id(self, key: int) -> str:
        slot = self.table.slot(key)
        return self.table.ids[slot] if slot >= 0 else str(key)

    def report(self, end: float) -> dict:
        self.fire_until(end)
        per_device = Counter(o.device for o in self.occurrences)
        times = [o.raised_at for o in self.occurrences]
        return {
            "rule": self.rule.id,
            "count": len(self.occurrences),
            "devices": len(per_device),
            "still_active": len(self.open),
            "member_raises": self.member_raises if self.rule.members else None,
            "readings": self.rows,
            "first": min(times) if times else None,
            "last": max(times) if times else None,
            "by_device": [{"device": d, "count": c} for d, c in per_device.most_common(50)],
            "alarms": [
                {"device": o.device, "raised_at": o.raised_at, "cleared_at": o.cleared_at,
                 "value": o.value, "message": o.message,
                 **({"children": o.children} if o.children else {})}
                for o in self.occurrences[:MAX_LISTED]],
            "truncated": len(self.occurrences) > MAX_LISTED,
        }
