"""What every simulated device reads right now: patterns, then commands, then faults.

Both fleets ask the world, never the patterns directly, so a device reports the same
value whichever transport carries it, and a cabinet's meter sees its lamps *after* faults
(a tripped cabinet's lamps are dark, so its current falls). Values are computed once per
kind per second and per fault change, whoever asks first.
"""

from __future__ import annotations

import numpy as np

from server.simulate.faults import FaultBook
from server.simulate.fleet import Fleet
from server.simulate.patterns import Patterns


class World:
    def __init__(self, fleet: Fleet, patterns: Patterns, faults: FaultBook) -> None:
        self.fleet = fleet
        self.patterns = patterns
        self.faults = faults
        self._cache: dict[str, tuple[tuple[int, int, int], dict[str, np.ndarray]]] = {}
        lamps = fleet.groups.get("streetlight")
        #: dim level set by a ``set_dim`` command (NaN: follow the schedule)
        self.dim_override = np.full(len(lamps) if lamps else 0, np.nan)
        self._commands = 0

    def advance(self, now: float) -> None:
        self.faults.advance(now)

    def values(self, kind: str, t: float) -> dict[str, np.ndarray]:
        """``{metric: array}`` for every device of ``kind`` at ``t`` (do not modify)."""
        key = (int(t), self.faults.version, self._commands)
        hit = self._cache.get(kind)
        if hit is not None and hit[0] == key:
            return hit[1]
        if kind == "lighting_cabinet":
            vals = self.patterns.lighting_cabinet(t, self.values("streetlight", t))
        else:
            vals = self.patterns.values(kind, t)
        if kind == "streetlight":
            self._apply_dim(vals)
        self.faults.apply(kind, t, vals)
        self._cache[kind] = (key, vals)
        return vals

    def silent(self, kind: str) -> np.ndarray:
        g = self.fleet.groups[kind]
        return self.faults.silent_mask(kind, len(g))

    def set_dim(self, index: int, level: float) -> None:
        """A ``set_dim`` command: the lamp holds this level while it is on."""
        self.dim_override[index] = level
        self._commands += 1
        self.faults.changed.add(("streetlight", index))

    def _apply_dim(self, vals: dict[str, np.ndarray]) -> None:
        held = ~np.isnan(self.dim_override) & vals["lamp_on"]
        if held.any():
            scheduled = np.where(vals["dim_level_pct"] > 0, vals["dim_level_pct"], 100.0)
            level = self.dim_override[held]
            vals["power_w"][held] *= level / scheduled[held]
            vals["dim_level_pct"][held] = level
            vals["lamp_on"][held] = level > 0
