"""The simulated devices, read from the registry so any seeded or imported city works.

Devices are grouped by kind into column arrays (ids, lon, lat, parent index) because the
patterns compute every device of a kind in one numpy expression: 50,000 lamps cost the
same Python overhead as one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

#: Kinds the simulator brings to life; other kinds (water_pipe, tree, green_area, …) are static
#: map features: nothing reports for them, so they never go stale or offline.
SIMULATED_KINDS = (
    "streetlight", "lighting_cabinet", "water_meter", "pressure_sensor", "flow_meter",
    "traffic_controller", "road_segment", "env_sensor", "camera",
)

_QUERY = """
select d.id, d.kind, d.parent, st_x(p.pt) as lon, st_y(p.pt) as lat, d.properties
from devices d, lateral (select st_pointonsurface(d.geom) as pt) p
where d.kind = any($1::text[])
order by d.kind, d.id
"""

METRES_PER_DEG_LAT = 111_320.0


@dataclass(slots=True)
class KindGroup:
    """Every device of one kind, as parallel columns."""

    kind: str
    ids: list[str]
    lon: np.ndarray
    lat: np.ndarray
    parent: list[str | None]
    properties: list[dict[str, Any]]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {d: i for i, d in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def prop(self, name: str, default: float) -> np.ndarray:
        """A numeric property per device, ``default`` where missing or not a number."""
        out = np.full(len(self.ids), float(default))
        for i, p in enumerate(self.properties):
            v = p.get(name)
            if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
                out[i] = float(v)
        return out


@dataclass(slots=True)
class Fleet:
    groups: dict[str, KindGroup]
    #: for each streetlight, the index of its cabinet in ``groups["lighting_cabinet"]``, or -1
    lamp_cabinet: np.ndarray
    centre: tuple[float, float]

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Fleet:
        """Rows with ``id, kind, parent, lon, lat, properties`` (a dict or JSON text)."""
        by_kind: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            if r["kind"] in SIMULATED_KINDS and r["lon"] is not None:
                by_kind.setdefault(r["kind"], []).append(r)
        groups = {}
        for kind, rs in by_kind.items():
            rs.sort(key=lambda r: r["id"])
            props = [r.get("properties") or {} for r in rs]
            props = [orjson.loads(p) if isinstance(p, str | bytes) else dict(p) for p in props]
            groups[kind] = KindGroup(
                kind, [r["id"] for r in rs],
                np.array([r["lon"] for r in rs], dtype=float),
                np.array([r["lat"] for r in rs], dtype=float),
                [r.get("parent") for r in rs], props,
            )
        lamps = groups.get("streetlight")
        cabinets = groups.get("lighting_cabinet")
        link = np.full(len(lamps) if lamps else 0, -1, dtype=np.int64)
        if lamps and cabinets:
            for i, p in enumerate(lamps.parent):
                link[i] = cabinets.index.get(p, -1) if p else -1
        if groups:
            lon = np.concatenate([g.lon for g in groups.values()])
            lat = np.concatenate([g.lat for g in groups.values()])
            centre = (float(np.median(lon)), float(np.median(lat)))
        else:
            centre = (105.84, 21.59)  # Thái Nguyên, the synthetic city
        return cls(groups, link, centre)

    def group(self, kind: str) -> KindGroup | None:
        return self.groups.get(kind)

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def locate(self, device_id: str) -> tuple[str, int]:
        """(kind, index) of a simulated device; KeyError names it if unknown."""
        for kind, g in self.groups.items():
            i = g.index.get(device_id)
            if i is not None:
                return kind, i
        raise KeyError(f"{device_id!r} is not a simulated device")

    def distances_m(self, kind: str, lon: float, lat: float) -> np.ndarray:
        """Metres from (lon, lat) to each device of ``kind`` (equirectangular: a city is
        small enough that the error is well under a metre per kilometre)."""
        g = self.groups.get(kind)
        if g is None:
            return np.zeros(0)
        dx = (g.lon - lon) * METRES_PER_DEG_LAT * np.cos(np.radians(lat))
        dy = (g.lat - lat) * METRES_PER_DEG_LAT
        return np.hypot(dx, dy)


async def load_fleet(database_url: str) -> Fleet:
    """Read every simulated device from the registry (one query, then the link closes)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(_QUERY, list(SIMULATED_KINDS))
    finally:
        await conn.close()
    return Fleet.from_rows(dict(r) for r in rows)
