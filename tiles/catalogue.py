"""The layer catalogue: which layers exist, their zoom ranges and what their features carry.

One layer per device kind (named by the kind, as the websocket's ``layers`` are), plus the
basemap (``wards``, ``roads``; the water mains are the ``water_pipe`` kind layer), the
``alarms`` layer (one feature per device with an active alarm) and ``ward_stats`` (ward
polygons with device counts by status and the worst active alarm).

Point kinds with many devices are aggregated below their ``detail_minzoom``: a tile then
holds one feature per grid cell (8 × 8 cells per tile) with counts by status and the worst
active alarm severity. The thresholds come from the size of a city of 100,000 lamps in
12 km × 12 km: a z13 tile covers about 4.9 km × 4.9 km, i.e. about 25,000 lamps (several
hundred KiB, 60-130 ms of PostGIS even at the floor, see the research note), a z14 tile
about 6,000 (a few tens of KiB); 10,000 water meters are about 2,500 per z13 tile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Source = Literal["kind", "wards", "roads", "alarms", "ward_stats", "reports"]

MAXZOOM = 18  # beyond it MapLibre over-zooms the z18 tile: nothing new to draw at 1 px ≈ 0.6 m
EXTENT = 4096
BUFFER = 64  # tile units: icons and line joins drawn across tile edges are not cut off
CELLS = 8  # aggregate grid: cells per tile side (64 CSS px on a 512 px vector tile)
# Bump when the SQL or the attributes of any layer change: cached tiles of the old shape
# must not be served (the version is part of every cache key and ETag).
# 2: detail device tiles no longer carry status; 3: the reports layer; 4: lamps_out as the ward
# summary counts it (rules.vocab.lamp_out_sql); 5: ward_stats leaves shelved alarms out of its
# alarm count and severity; 6: cells of one global grid per level (tile_grid)
CONFIG_VERSION = 6

# Zoom below which a point kind's tiles hold grid aggregates instead of devices.
DETAIL_MINZOOM = {"streetlight": 14, "water_meter": 13, "lighting_cabinet": 12}
# Residential roads appear from this zoom; arterials and secondary roads at every zoom.
ROADS_RESIDENTIAL_MINZOOM = 12

DEVICE_FIELDS = {
    "id": "String: the device id (use promoteId: 'id' for feature-state)",
    "kind": "String",
    "name": "String",
    "ward": "String: ward code",
    "parent": "String: parent device id (a lamp's cabinet, a meter's main)",
}
AGGREGATE_FIELDS = {
    "id": "String: cell:{z}/{x}/{y} of the aggregate grid",
    "agg": "String: 'cell' for an aggregate feature",
    "kind": "String",
    "count": "Number: devices in the cell",
    "online": "Number", "stale": "Number", "offline": "Number", "unknown": "Number",
    "alarms": "Number: devices with an active alarm",
    "alarm_severity": "String: worst active alarm (critical, major, minor, warning), absent if none",
}


@dataclass(frozen=True, slots=True)
class Layer:
    id: str
    source: Source
    title_en: str
    title_vi: str
    geometry: Literal["point", "line", "polygon", "mixed"]
    fields: Mapping[str, str] = field(default_factory=dict)
    kind: str | None = None
    minzoom: int = 0
    maxzoom: int = MAXZOOM
    detail_minzoom: int = 0
    # Content that changes with telemetry or alarms, whatever the zoom.
    live: bool = False

    def aggregated(self, z: int) -> bool:
        return z < self.detail_minzoom

    def live_at(self, z: int) -> bool:
        return self.live or self.aggregated(z)

    def crew_scoped(self, z: int) -> bool:
        """Whether the tile at ``z`` shows alarms (their details, counts or worst severity):
        a crew token's tile then holds only its own crew's alarms. A dense point kind's
        detail tile may turn into aggregates too (``max_point_features``)."""
        return self.source in ("alarms", "ward_stats") or self.aggregated(z) or self.detail_minzoom > 0

    def simplify(self) -> bool:
        return self.geometry != "point"


BASE_LAYERS = (
    Layer("wards", "wards", "Wards", "Phường", "polygon",
          {"id": "String: ward code", "name": "String", "area_km2": "Number"}),
    Layer("roads", "roads", "Roads", "Đường phố", "line",
          {"id": "Number", "name": "String", "class": "String: primary, secondary or residential"}),
    Layer("ward_stats", "ward_stats", "Ward roll-up", "Tổng hợp theo phường", "polygon",
          {"id": "String: ward code", "name": "String", "devices": "Number",
           "online": "Number", "stale": "Number", "offline": "Number", "unknown": "Number",
           "lamps": "Number: streetlights",
           "lamps_out": "Number: streetlights out (offline, lamp or driver fault, open alarm:"
                        " rules.vocab.lamp_out_sql, as /api/v1/wards/summary)",
           "alarms": "Number: active alarms", "alarm_severity": "String: worst active alarm"},
          live=True),
    Layer("alarms", "alarms", "Active alarms", "Cảnh báo đang hoạt động", "mixed",
          {"id": "String: device id", "alarm": "Number: id of the worst active alarm",
           "alarms": "Number: active alarms of the device", "severity": "String",
           "state": "String", "rule": "String", "message": "String", "raised_at": "String (RFC 3339)",
           "shelved": "Boolean", "crew": "String: assigned crew", "kind": "String", "name": "String"},
          live=True),
    # Citizens' reports still open: public fields only (never the contact or the description).
    Layer("reports", "reports", "Citizens' reports", "Phản ánh của người dân", "point",
          {"id": "Number: report id", "category": "String: service_code", "status": "String",
           "ward": "String: ward code", "reporters": "Number: citizens who reported it",
           "created_at": "String (RFC 3339)"},
          live=True),
)


def kind_layer(kind: str, title_en: str, title_vi: str, points: bool | None) -> Layer:
    """``points``: every device of the kind is a point (None: no devices yet, assume not)."""
    geometry = "point" if points else "mixed"
    detail = DETAIL_MINZOOM.get(kind, 0) if points else 0
    return Layer(kind, "kind", title_en, title_vi, geometry, DEVICE_FIELDS, kind=kind,
                 detail_minzoom=detail)


def build(kinds: Iterable[tuple[str, str, str, bool | None]]) -> dict[str, Layer]:
    """The catalogue from ``(kind, label_en, label_vi, all_points)`` rows of the kinds table."""
    layers = {k: kind_layer(k, en, vi, points) for k, en, vi, points in kinds}
    for base in BASE_LAYERS:
        layers.setdefault(base.id, base)  # a kind named like a base layer keeps its own
    return layers
