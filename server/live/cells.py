"""Grid cells for a wide websocket view: the counts the aggregate tiles show (tiles/sql.py, the
``tile_grid`` kept by migration 0018_tile_grid), for a bbox instead of a tile.

A subscribed kind with more devices in the bbox than ``[hub] max_snapshot_devices`` is sent as
cells: the snapshot carries ``"cells"`` and ``"aggregated"`` (those kinds), the devices of the
other kinds as usual, and no state message is routed for the aggregated kinds' devices (a
million lamps' updates would flood the client); instead the hub reads the cells again every
``cells_refresh_s`` and sends ``{"type": "cells", ...}`` when they changed. Reading them costs
the cells in view, whatever the city's size.

Each cell's ``id`` is the MVT feature id of the same cell in the kind's aggregate tile of zoom
``cell_zoom`` (``cy * 2^(cell_zoom + 3) + cx``), so a map can put the live counts on the very
features it drew from the tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rules.vocab import severity_of_rank_sql, severity_rank_sql
from tiles.sql import CELL_LEVELS, FINE_LEVEL, GRID_MAX_LEVEL, crew_scope

MIN_LEVEL = 3
MAX_CELLS = 4096  # per kind: at most ~600 KB of cells, however wide the view
ACROSS = 32  # without a zoom from the client: about this many cells across the view

_HALF = math.pi * 6378137.0
_SCALE = (1 << FINE_LEVEL) / (2 * _HALF)
_MAX_LAT = 85.0511287798066

# $1 kinds, $2 grid level, $3-$6 first/last cell column/row, $7-$10 the bbox, $11 crew or null.
CELLS_SQL = f"""
with g as (
  select kind, cx, cy, n, online, stale, offline, unknown, sx, sy from tile_grid
  where kind = any($1::text[]) and level = $2::int and cx between $3::int and $5::int
    and cy between $4::int and $6::int
  union all
  select kind, fx >> ({GRID_MAX_LEVEL} - $2::int), fy >> ({GRID_MAX_LEVEL} - $2::int), n, online, stale,
         offline, unknown, sx, sy
  from tile_grid_log
  where kind = any($1::text[]) and (fx >> ({GRID_MAX_LEVEL} - $2::int)) between $3::int and $5::int
    and (fy >> ({GRID_MAX_LEVEL} - $2::int)) between $4::int and $6::int
), c as (
  select kind, cx, cy, sum(n) as n, sum(online) as online, sum(stale) as stale,
         sum(offline) as offline, sum(unknown) as unknown, sum(sx) as sx, sum(sy) as sy
  from g group by kind, cx, cy having sum(n) > 0
), a as (
  select d.kind, ioc_grid_x(d.merc_x) >> ({FINE_LEVEL} - $2::int) as cx,
         ioc_grid_y(d.merc_y) >> ({FINE_LEVEL} - $2::int) as cy, count(*) as alarms, min(r.rank) as rank
  from (select device, min({severity_rank_sql("severity")}) as rank from alarms
        where active and state <> 'closed' and not suppressed and not out_of_service
          and {crew_scope(11)} group by device) r
  join devices d on d.id = r.device
  where d.kind = any($1::text[]) and d.geom && ST_MakeEnvelope($7, $8, $9, $10, 4326)
  group by 1, 2, 3
), p as (
  select c.*, coalesce(a.alarms, 0) as alarms, a.rank,
         ST_Transform(ST_SetSRID(ST_MakePoint(c.sx::float8 / c.n / 100, c.sy::float8 / c.n / 100), 3857),
                      4326) as pt
  from c left join a on a.kind = c.kind and a.cx = c.cx and a.cy = c.cy
)
select coalesce(json_agg(json_build_object(
    'id', p.cy::bigint * (1::bigint << $2::int) + p.cx,
    'cell', 'cell:' || ($2::int - {CELL_LEVELS}) || '/' || p.cx || '/' || p.cy,
    'kind', p.kind, 'count', p.n, 'online', p.online, 'stale', p.stale, 'offline', p.offline,
    'unknown', p.unknown, 'alarms', p.alarms, 'alarm_severity', {severity_of_rank_sql("p.rank")},
    'lon', round(ST_X(p.pt)::numeric, 6), 'lat', round(ST_Y(p.pt)::numeric, 6)
  ) order by p.kind, p.cy, p.cx), '[]')::text
from p
"""

# How many devices of each kind the bbox holds, counting at most the bound + 1 of each.
DENSE_SQL = """
select k.kind from unnest($1::text[]) as k(kind)
where (select count(*) from (select 1 from devices d where d.kind = k.kind
       and d.geom && ST_MakeEnvelope($2, $3, $4, $5, 4326) limit $6 + 1) t) > $6
"""


def grid_x(lon: float) -> int:
    """The level-21 cell column of a longitude (as ioc_grid_x does for stored coordinates)."""
    return min(max(math.floor((6378137.0 * math.radians(lon) + _HALF) * _SCALE), 0), (1 << FINE_LEVEL) - 1)


def grid_y(lat: float) -> int:
    lat = min(max(lat, -_MAX_LAT), _MAX_LAT)
    merc = 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    return min(max(math.floor((_HALF - merc) * _SCALE), 0), (1 << FINE_LEVEL) - 1)


@dataclass(frozen=True, slots=True)
class CellView:
    """The aggregated part of a subscription: which kinds, at which level, over which cells."""

    kinds: tuple[str, ...]
    bbox: tuple[float, float, float, float]
    level: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def zoom(self) -> int:
        return self.level - CELL_LEVELS

    def args(self, crew: str | None) -> tuple:
        return (list(self.kinds), self.level, self.x0, self.y0, self.x1, self.y1, *self.bbox, crew)


def cell_view(kinds: tuple[str, ...], bbox: tuple[float, float, float, float],
              zoom: int | None) -> CellView:
    """The cells of ``bbox``: those of the aggregate tiles of ``zoom`` (the map's tile zoom) if
    given, else about ``ACROSS`` across; never more than ``MAX_CELLS`` per kind."""
    fx0, fy0 = grid_x(bbox[0]), grid_y(bbox[3])
    fx1, fy1 = grid_x(bbox[2]), grid_y(bbox[1])
    if zoom is not None:
        level = zoom + CELL_LEVELS
    else:
        span = max(fx1 - fx0, fy1 - fy0, 1)
        level = FINE_LEVEL - max(0, math.ceil(math.log2(span / ACROSS)))
    level = min(max(level, MIN_LEVEL), GRID_MAX_LEVEL)
    while level > MIN_LEVEL:
        shift = FINE_LEVEL - level
        if ((fx1 >> shift) - (fx0 >> shift) + 1) * ((fy1 >> shift) - (fy0 >> shift) + 1) <= MAX_CELLS:
            break
        level -= 1
    shift = FINE_LEVEL - level
    return CellView(kinds, bbox, level, fx0 >> shift, fy0 >> shift, fx1 >> shift, fy1 >> shift)
