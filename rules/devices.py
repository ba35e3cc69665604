"""The devices as rules see them: columns of numpy arrays, one row (a *slot*) per device.

Built by the server from the registry; pure from here on. Rows are sorted by device key so
a key finds its slot by one lookup in ``slot_of_key`` (keys are small integers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rules.models import Select

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True, slots=True)
class DeviceRow:
    key: int
    id: str
    kind: str
    lon: float
    lat: float
    parent: str | None = None
    ward: str | None = None
    interval_s: float = 60.0  # expected reporting interval


@dataclass(slots=True)
class DeviceTable:
    keys: np.ndarray  # int64, sorted
    ids: list[str]
    kinds: np.ndarray  # object (str)
    wards: np.ndarray  # object (str | None)
    parents: np.ndarray  # object (str | None): the parent's device id
    parent_slot: np.ndarray  # int64, -1 without a (known) parent
    lon: np.ndarray
    lat: np.ndarray
    interval_s: np.ndarray
    slot_of_key: np.ndarray  # key -> slot, -1 unknown
    slot_of_id: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, rows: Sequence[DeviceRow]) -> DeviceTable:
        rows = sorted(rows, key=lambda r: r.key)
        keys = np.array([r.key for r in rows], dtype=np.int64)
        ids = [r.id for r in rows]
        slot_of_id = {d: i for i, d in enumerate(ids)}
        parents = np.array([r.parent for r in rows], dtype=object)
        parent_slot = np.array([slot_of_id.get(r.parent, -1) if r.parent else -1 for r in rows],
                               dtype=np.int64)
        size = int(keys.max()) + 1 if len(keys) else 1
        slot_of_key = np.full(size, -1, dtype=np.int64)
        slot_of_key[keys] = np.arange(len(keys))
        return cls(
            keys=keys, ids=ids,
            kinds=np.array([r.kind for r in rows], dtype=object),
            wards=np.array([r.ward for r in rows], dtype=object),
            parents=parents, parent_slot=parent_slot,
            lon=np.array([r.lon for r in rows], dtype=np.float64),
            lat=np.array([r.lat for r in rows], dtype=np.float64),
            interval_s=np.array([r.interval_s for r in rows], dtype=np.float64),
            slot_of_key=slot_of_key, slot_of_id=slot_of_id,
        )

    def __len__(self) -> int:
        return len(self.keys)

    def slots(self, keys: np.ndarray) -> np.ndarray:
        """Slots of device keys; -1 for keys this table does not know (yet)."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full(len(keys), -1, dtype=np.int64)
        inside = (keys >= 0) & (keys < len(self.slot_of_key))
        out[inside] = self.slot_of_key[keys[inside]]
        return out

    def slot(self, key: int) -> int:
        return int(self.slot_of_key[key]) if 0 <= key < len(self.slot_of_key) else -1

    def select(self, sel: Select) -> np.ndarray:
        """The slots a rule's ``select`` picks, sorted."""
        mask = np.ones(len(self), dtype=bool)
        if sel.kind is not None:
            mask &= np.isin(self.kinds, sel.kind)
        if sel.ward is not None:
            mask &= np.isin(self.wards, sel.ward)
        if sel.parent is not None:
            mask &= np.isin(self.parents, sel.parent)
        if sel.devices is not None:
            wanted = np.zeros(len(self), dtype=bool)
            idx = [self.slot_of_id[d] for d in sel.devices if d in self.slot_of_id]
            wanted[idx] = True
            mask &= wanted
        if sel.bbox is not None:
            w, s, e, n = sel.bbox
            mask &= (self.lon >= w) & (self.lon <= e) & (self.lat >= s) & (self.lat <= n)
        return np.flatnonzero(mask)


def distance_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle (haversine) distance in metres; arrays broadcast."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
