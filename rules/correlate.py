"""Correlating rules: many member alarms → one incident, the members suppressed by design.

They watch the transitions of their member rule rather than readings:

* topology: at least ``min_count`` children of one parent (lamps of a cabinet, meters of a
  district) raise the member alarm within ``within`` → one incident on the parent;
* neighbourhood: at least ``min_count`` member alarms within ``radius_m`` of each other,
  raised within ``within`` → one incident at the weighted centroid of the members (weights:
  how far each is past its limit), on the member device nearest that point.

Order matters for whoever persists the transitions: :meth:`Correlator.process` returns the
new incidents first, then the input (members joining an incident carry it, so they are
stored suppressed from the start), then suppressions of members raised earlier, then
incidents that ended and the members they release.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rules.devices import DeviceTable, distance_m
from rules.evaluator import Transition, fmt_duration
from rules.models import NeighbourhoodRule, TopologyRule


@dataclass(slots=True)
class Incident:
    device: int  # key of the device the incident is raised on
    members: set[int] = field(default_factory=set)
    point: tuple[float, float] | None = None


class Correlator:
    rule: TopologyRule | NeighbourhoodRule

    def __init__(self, rule, table: DeviceTable) -> None:
        self.rule = rule
        self.table = table
        self.active: dict[int, tuple[float, float]] = {}  # member key -> (raised at, magnitude)
        self.incidents: dict[int, Incident] = {}  # incident device key -> incident
        self.member_of: dict[int, int] = {}  # member key -> incident device key
        self._selected = np.zeros(0, dtype=bool)
        self.rebind(table)

    def rebind(self, table: DeviceTable) -> None:
        self.table = table
        sel = np.zeros(len(table), dtype=bool)
        sel[table.select(self.rule.select)] = True
        self._selected = sel

    # ------------------------------------------------------------------ restore
    def restore_member(self, key: int, raised_at: float, magnitude: float = 1.0) -> None:
        self.active[key] = (raised_at, magnitude)

    def restore_incident(self, key: int, members: list[int],
                         point: tuple[float, float] | None = None) -> None:
        inc = Incident(key, set(members), point)
        self.incidents[key] = inc
        for m in members:
            self.member_of[m] = key

    def level_of(self, key: int) -> int:
        return 1 if key in self.incidents else 0

    def active_keys(self) -> list[int]:
        return list(self.incidents)

    # ------------------------------------------------------------------ process
    def process(self, transitions: list[Transition]) -> list[Transition]:
        member = self.rule.member
        if not any(t.rule == member for t in transitions):
            return transitions
        pre: list[Transition] = []
        post: list[Transition] = []
        raised_here: dict[int, Transition] = {}
        for t in transitions:
            if t.rule != member:
                continue
            if t.event == "raise":
                if t.device in self.active and t.device in self.member_of:
                    continue  # a re-raise (escalation) of a member already in an incident
                self.active[t.device] = (t.ts, t.magnitude)
                raised_here[t.device] = t
                inc_key = self._incident_for(t.device)
                if inc_key is not None:
                    self._join(inc_key, t.device, t, raised_here, post)
                    continue
                new = self._form(t)
                if new is not None:
                    pre.append(new)
                    for m in new.children:
                        self._join(new.device, m, None, raised_here, post)
            elif t.event == "clear":
                self.active.pop(t.device, None)
                inc_key = self.member_of.pop(t.device, None)
                if inc_key is None:
                    continue
                inc = self.incidents.get(inc_key)
                if inc is None:
                    continue
                inc.members.discard(t.device)
                still = [m for m in inc.members if m in self.active]
                if len(still) < self.rule.clear_below:
                    post.append(self._end(inc, t.ts, still))
                    for m in still:
                        self.member_of.pop(m, None)
                        post.append(Transition(member, m, "release", 1, t.ts,
                                               severity=self.rule.severity,
                                               incident_rule=self.rule.id, incident_device=inc_key,
                                               text=f"incident {self.rule.id} ended"))
        for new in pre:  # members that joined later in the same batch count too
            inc = self.incidents.get(new.device)
            if inc is not None and len(inc.members) != len(new.children):
                new.children = tuple(sorted(inc.members))
                new.value = float(len(inc.members))
                new.text = self._text(new)
        return pre + transitions + post

    def _join(self, inc_key: int, key: int, t: Transition | None,
              raised_here: dict[int, Transition], post: list[Transition]) -> None:
        self.member_of[key] = inc_key
        inc = self.incidents[inc_key]
        inc.members.add(key)
        if not self.rule.suppress_children:
            return
        t = t or raised_here.get(key)
        if t is not None:
            t.incident_rule, t.incident_device = self.rule.id, inc_key
        else:
            at = self.active.get(key, (0.0, 1.0))[0]
            post.append(Transition(self.rule.member, key, "suppress", 1, at,
                                   severity=self.rule.severity,
                                   incident_rule=self.rule.id, incident_device=inc_key,
                                   text=f"part of incident {self.rule.id}"))

    def _end(self, inc: Incident, ts: float, still: list[int]) -> Transition:
        del self.incidents[inc.device]
        return Transition(self.rule.id, inc.device, "clear", 0, ts, float(len(still)),
                          self.rule.severity, f"{len(still)} member alarm(s) left: incident over",
                          point=inc.point)

    def _incident_for(self, key: int) -> int | None:
        raise NotImplementedError

    def _form(self, t: Transition) -> Transition | None:
        raise NotImplementedError

    def _text(self, t: Transition) -> str:
        raise NotImplementedError


class TopologyCorrelator(Correlator):
    rule: TopologyRule

    def _parent(self, key: int) -> int | None:
        slot = self.table.slot(key)
        if slot < 0:
            return None
        p = int(self.table.parent_slot[slot])
        if p < 0 or not self._selected[p]:
            return None
        return int(self.table.keys[p])

    def _incident_for(self, key):
        p = self._parent(key)
        return p if p is not None and p in self.incidents else None

    def _children_active(self, parent: int) -> list[int]:
        pslot = self.table.slot(parent)
        return [k for k in self.active
                if (s := self.table.slot(k)) >= 0 and self.table.parent_slot[s] == pslot]

    def _form(self, t):
        p = self._parent(t.device)
        if p is None:
            return None
        since = t.ts - self.rule.within
        recent = [k for k in self._children_active(p) if self.active[k][0] >= since]
        if len(recent) < self.rule.min_count:
            return None
        members = self._children_active(p)
        self.incidents[p] = Incident(p, set())
        pslot = self.table.slot(p)
        total = int((self.table.parent_slot == pslot).sum())
        new = Transition(self.rule.id, p, "raise", 1, t.ts, float(len(members)), self.rule.severity,
                         children=tuple(sorted(members)),
                         details={"member_rule": self.rule.member, "children_total": total})
        new.text = self._text(new)
        return new

    def _text(self, t: Transition) -> str:
        return (f"{len(t.children)} of {t.details['children_total']} children in "
                f"{self.rule.member} alarm within {fmt_duration(self.rule.within)}")


class NeighbourhoodCorrelator(Correlator):
    rule: NeighbourhoodRule

    def _pos(self, keys) -> tuple[np.ndarray, np.ndarray]:
        slots = self.table.slots(np.asarray(list(keys), dtype=np.int64))
        slots = np.where(slots >= 0, slots, 0)
        return self.table.lon[slots], self.table.lat[slots]

    def _selected_key(self, key: int) -> bool:
        slot = self.table.slot(key)
        return slot >= 0 and bool(self._selected[slot])

    def _incident_for(self, key):
        """The incident whose estimate or one of whose members is within the radius."""
        if not self.incidents or not self._selected_key(key):
            return None
        lon, lat = self._pos([key])
        for inc in self.incidents.values():
            mlon, mlat = self._pos(inc.members | {inc.device})
            if inc.point is not None:
                mlon, mlat = np.append(mlon, inc.point[0]), np.append(mlat, inc.point[1])
            if (distance_m(lon[0], lat[0], mlon, mlat) <= self.rule.radius_m).any():
                return inc.device
        return None

    def _form(self, t):
        if not self._selected_key(t.device):
            return None
        since = t.ts - self.rule.within
        cands = [k for k, (at, _) in self.active.items()
                 if at >= since and k not in self.member_of and self._selected_key(k)]
        if len(cands) < self.rule.min_count:
            return None
        lon, lat = self._pos(cands)
        me = cands.index(t.device)
        near = distance_m(lon[me], lat[me], lon, lat) <= self.rule.radius_m
        if int(near.sum()) < self.rule.min_count:
            return None
        members = [k for k, n in zip(cands, near.tolist(), strict=True) if n]
        w = np.array([self.active[k][1] for k in members], dtype=np.float64)
        mlon, mlat = lon[near], lat[near]
        point = weighted_centroid(mlon, mlat, w)
        # The incident lives on the member nearest the estimate: an alarm needs a device.
        anchor = members[int(distance_m(point[0], point[1], mlon, mlat).argmin())]
        self.incidents[anchor] = Incident(anchor, set(), point)
        spread = float(distance_m(point[0], point[1], mlon, mlat).max())
        new = Transition(
            self.rule.id, anchor, "raise", 1, t.ts, float(len(members)), self.rule.severity,
            children=tuple(sorted(members)), point=point,
            details={"member_rule": self.rule.member, "spread_m": round(spread, 1)})
        new.text = self._text(new)
        return new

    def _text(self, t: Transition) -> str:
        lon, lat = t.point or (float("nan"), float("nan"))
        return (f"{len(t.children)} {self.rule.member} alarms within {self.rule.radius_m:.0f} m; "
                f"estimated location {lat:.5f}, {lon:.5f}")


def weighted_centroid(lon, lat, w) -> tuple[float, float]:
    """The centroid of points weighted by ``w`` (equal weights where w is unusable)."""
    w = np.asarray(w, dtype=np.float64)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    if not len(w) or w.sum() <= 0:
        w = np.ones(len(lon))
    return float((lon * w).sum() / w.sum()), float((lat * w).sum() / w.sum())


CORRELATORS = {"topology": TopologyCorrelator, "neighbourhood": NeighbourhoodCorrelator}
