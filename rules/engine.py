"""The rule set over the device table: batches and timers in, transitions out. Pure.

The server owns the I/O around it: it feeds committed batches (:meth:`evaluate`), link
status (:meth:`status`), calls :meth:`fire` at :meth:`next_deadline`, and persists what
comes out. After a restart it puts back the open alarms (:meth:`restore`), then replays
the latest state without emitting (:meth:`replay`) and fires what is due: a condition
whose alarm is already stored raises nothing, so nothing fires twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from rules.correlate import CORRELATORS, Correlator
from rules.devices import DeviceTable
from rules.evaluator import EVALUATORS, INF, Batch, Evaluator, MetricInfo, Transition
from rules.models import CORRELATING_KINDS, Rule
from rules.schedules import Assignments


@dataclass(slots=True)
class RuleChanges:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> list[str]:
        """Rules whose state starts empty and must be restored and replayed."""
        return self.added + self.changed

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def check_metrics(rule: Rule, metrics: Mapping[str, MetricInfo]) -> list[str]:
    name = getattr(rule, "metric", None)
    if name is not None and name not in metrics:
        return [f"rule {rule.id!r}: metric: unknown metric {name!r}; known metrics: "
                f"{', '.join(sorted(metrics))}"]
    return []


class RuleEngine:
    def __init__(self, table: DeviceTable, metrics: Mapping[str, MetricInfo]) -> None:
        self.table = table
        self.metrics = dict(metrics)
        self.rules: dict[str, Rule] = {}
        self.evaluators: dict[str, Evaluator] = {}
        self.correlators: dict[str, Correlator] = {}
        self.schedules: Assignments | None = None  # lamps' lighting schedules

    # ------------------------------------------------------------------ configuration
    def validate(self, rules: Iterable[Rule]) -> list[str]:
        """What is wrong with this rule set (metrics unknown, members missing)."""
        return [e for errs in self._problems(list(rules)).values() for e in errs]

    def _problems(self, rules: list[Rule]) -> dict[str, list[str]]:
        by_id = {r.id: r for r in rules}
        out: dict[str, list[str]] = {}
        for r in rules:
            errs = check_metrics(r, self.metrics)
            for m in r.members:
                target = by_id.get(m)
                if target is None:
                    errs.append(f"rule {r.id!r}: member: no enabled rule {m!r}")
                elif target.kind in CORRELATING_KINDS:
                    errs.append(f"rule {r.id!r}: member: {m!r} is itself a {target.kind} rule; "
                                "name a rule that watches devices")
            if errs:
                out[r.id] = errs
        return out

    def plan(self, rules: Iterable[Rule]) -> tuple[dict[str, Rule], list[str]]:
        """The enabled, valid rules of a rule set by id, and what is wrong with the others;
        nothing is built or changed."""
        rules = [r for r in rules if r.enabled]
        problems = self._problems(rules)
        # A correlating rule whose member is left out goes too.
        left_out = set(problems)
        for r in rules:
            for m in r.members:
                if m in left_out and r.id not in problems:
                    problems[r.id] = [f"rule {r.id!r}: member: rule {m!r} is invalid"]
        errors = [e for errs in problems.values() for e in errs]
        return {r.id: r for r in rules if r.id not in problems}, errors

    def set_rules(self, rules: Iterable[Rule]) -> RuleChanges:
        """Install a rule set; unchanged rules keep their state. Invalid rules are left
        out and named in ``errors``; disabled rules are not evaluated."""
        changes = RuleChanges()
        new, changes.errors = self.plan(rules)
        for rid in list(self.rules):
            if rid not in new:
                changes.removed.append(rid)
            elif new[rid] != self.rules[rid]:
                changes.changed.append(rid)
        changes.added = [rid for rid in new if rid not in self.rules]
        for rid in changes.removed + changes.changed:
            self.evaluators.pop(rid, None)
            self.correlators.pop(rid, None)
        for rid in changes.added + changes.changed:
            r = new[rid]
            if r.kind in CORRELATING_KINDS:
                self.correlators[rid] = CORRELATORS[r.kind](r, self.table)
            else:
                ev = self.evaluators[rid] = EVALUATORS[r.kind](r, self.table, self.metrics)
                ev.schedules = self.schedules
        # A correlator's members are re-learnt when its member rule starts afresh.
        for rid, c in self.correlators.items():
            if c.rule.member in changes.fresh and rid not in changes.fresh:
                changes.changed.append(rid)
                self.correlators[rid] = CORRELATORS[c.rule.kind](c.rule, self.table)
        self.rules = new
        return changes

    def set_schedules(self, schedules: Assignments | None) -> None:
        """Which lamps follow which lighting schedule; the lighting rule checks them
        against it from their next reading on."""
        self.schedules = schedules
        for ev in self.evaluators.values():
            ev.schedules = schedules

    def set_table(self, table: DeviceTable) -> None:
        """New or edited devices: every rule follows, keeping its state per device."""
        self.table = table
        for ev in self.evaluators.values():
            ev.rebind(table)
        for c in self.correlators.values():
            c.rebind(table)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, batch: Batch) -> list[Transition]:
        out: list[Transition] = []
        for ev in self.evaluators.values():
            out += ev.on_rows(batch)
        return self._correlate(out)

    def status(self, keys, online, ts, retained) -> list[Transition]:
        """Link status: [(device key, online, time, retained by the broker), ...] as arrays."""
        slots = self.table.slots(keys)
        ok = slots >= 0
        args = (slots[ok], np.asarray(online, dtype=bool)[ok], np.asarray(ts, dtype=np.float64)[ok],
                np.asarray(retained, dtype=bool)[ok])
        out: list[Transition] = []
        for ev in self.evaluators.values():
            out += ev.on_status(*args)
        return self._correlate(out)

    def next_deadline(self) -> float:
        return min((ev.next_deadline() for ev in self.evaluators.values()), default=INF)

    def fire(self, now: float) -> list[Transition]:
        out: list[Transition] = []
        for ev in self.evaluators.values():
            out += ev.fire(now)
        return self._correlate(out)

    def _correlate(self, out: list[Transition]) -> list[Transition]:
        for c in self.correlators.values():
            out = c.process(out)
        return out

    # ------------------------------------------------------------------ restart
    def restore(self, rule_id: str, key: int, level: int, since: float,
                magnitude: float = 1.0) -> None:
        """An alarm open in the database whose condition is active."""
        ev = self.evaluators.get(rule_id)
        if ev is not None:
            ev.restore(key, level, since)
        for c in self.correlators.values():
            if c.rule.member == rule_id and level:
                c.restore_member(key, since, magnitude)

    def restore_incident(self, rule_id: str, key: int, members: list[int],
                         point: tuple[float, float] | None = None) -> None:
        c = self.correlators.get(rule_id)
        if c is not None:
            c.restore_incident(key, members, point)

    def replay(self, batch: Batch, only: Iterable[str] | None = None) -> None:
        """Bring conditions up to date from stored readings without emitting anything."""
        wanted = set(only) if only is not None else None
        for rid, ev in self.evaluators.items():
            if wanted is None or rid in wanted:
                ev.on_rows(batch, emit=False)

    def level(self, rule_id: str, key: int) -> int:
        ev = self.evaluators.get(rule_id)
        if ev is not None:
            return ev.level_of(key)
        c = self.correlators.get(rule_id)
        return c.level_of(key) if c is not None else 0

    @property
    def evaluations(self) -> int:
        """Device-rule evaluations so far (readings a rule looked at)."""
        return sum(ev.evaluations for ev in self.evaluators.values())

    def batch(self, keys, metric, ts, value, quality) -> Batch:
        return Batch(self.table.slots(keys), metric, ts, value, quality)
