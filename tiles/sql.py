"""One ``ST_AsMVT`` statement per tile, built per layer source.

Every statement text is a constant per source (and geometry variant) and every value is a
bound parameter, so asyncpg prepares each statement once per connection and reuses it for
every tile; TiPg writes the tile bounds into the SQL text, so every tile is a new statement
to parse and plan (see the research note). Tile bounds come from morecantile's
WebMercatorQuad; the ``&&`` filter uses the same bounds, widened by the buffer, in WGS 84, so
the GiST index on the EPSG:4326 geometries is used without transforming any row.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import morecantile

from rules.vocab import lamp_out_sql, severity_of_rank_sql, severity_rank_sql
from tiles.catalogue import BUFFER, CELLS, EXTENT, ROADS_RESIDENTIAL_MINZOOM, Layer

# Immutable grid definition; TileMatrixSets.get() deep-copies on every call (0.4 ms), so it
# is looked up once.
TMS = morecantile.tms.get("WebMercatorQuad")
EARTH_RADIUS = 6378137.0
HALF_WORLD = math.pi * EARTH_RADIUS
# Lines and polygons are simplified with a tolerance of this many tile units before
# ST_AsMVTGeom snaps them to the 4096 grid: 4 units are half a pixel of a 512 px tile, so
# simplification is invisible while a z12 tile of the city's mains drops most vertices.
SIMPLIFY_UNITS = 4

_ACTIVE_ALARM = "active and state <> 'closed' and not suppressed and not out_of_service"
_SHELVED = "coalesce(shelved_until > now(), false)"
_RANK = severity_rank_sql("severity")
_SEVERITY = severity_of_rank_sql("{}")
# Attributes of a device that are columns of the tile, and status, which a free property must not
# pose as (the live status comes over the websocket): the free properties must not carry them.
_RESERVED = "'{id,key,kind,name,status,ward,parent}'::text[]"


def crew_scope(n: int, column: str = "assigned_crew") -> str:
    """A crew token's tiles hold its own crew's alarms only, as the API does: parameter
    ``$n`` is that crew, or null for every alarm."""
    return f"(${n}::text is null or {column} = ${n}::text)"


@dataclass(frozen=True, slots=True)
class TileBounds:
    z: int
    x: int
    y: int
    # EPSG:3857 bounds of the tile (morecantile)
    left: float
    bottom: float
    right: float
    top: float
    # WGS 84 bounds of the tile widened by the buffer, for the index filter
    west: float
    south: float
    east: float
    north: float

    @property
    def width(self) -> float:
        return self.right - self.left


def _lon(x: float) -> float:
    return math.degrees(x / EARTH_RADIUS)


def _lat(y: float) -> float:
    return math.degrees(math.atan(math.sinh(y / EARTH_RADIUS)))


@functools.cache
def _matrix(z: int) -> tuple[float, float, float]:
    """Origin (top left) and tile span of zoom ``z``, from morecantile's tile matrix.

    ``TMS.xy_bounds`` computes the same from the matrix on every call, through pydantic
    attribute access: 25 µs a tile, a tenth of the server's CPU for an uncached tile.
    WebMercatorQuad has a top-left origin and no variable matrix widths (checked here, and
    the result against ``xy_bounds`` in the tests).
    """
    m = TMS.matrix(z)
    if m.cornerOfOrigin != "topLeft" or m.variableMatrixWidths:
        raise ValueError(f"zoom {z}: a tile matrix this module does not handle")
    return m.pointOfOrigin[0], m.pointOfOrigin[1], m.cellSize * m.tileWidth


def bounds(z: int, x: int, y: int) -> TileBounds:
    x0, y0, span = _matrix(z)
    left, top = x0 + x * span, y0 - y * span
    right, bottom = left + span, top - span
    margin = span * BUFFER / EXTENT
    return TileBounds(
        z, x, y, left, bottom, right, top,
        _lon(left - margin), _lat(bottom - margin), _lon(right + margin), _lat(top + margin),
    )


def tolerance(t: TileBounds) -> float:
    return t.width / EXTENT * SIMPLIFY_UNITS


# ---------------------------------------------------------------- statements
# $1 layer name, $2-$5 tile bounds (3857), $6-$9 widened bounds (4326), then per source.
_ENV = (
    "cross join (select ST_MakeEnvelope($2, $3, $4, $5, 3857) as env,"
    " ST_MakeEnvelope($6, $7, $8, $9, 4326) as box) e"
)
_MVTGEOM = f"ST_AsMVTGeom({{}}, e.env, {EXTENT}, {BUFFER}, true)"

# No status: tiles carry geometry, ids and slowly changing attributes, and the websocket carries
# state (ARCHITECTURE.md); the map colours devices by feature-state only. Joining device_state
# for a status the map never read was a quarter of a detail tile's cost.
_DEVICE = f"""
select ST_AsMVT(t, $1, {EXTENT}, 'geom', 'key') from (
  select d.key, d.id, d.kind, d.name, d.ward, d.parent,
         {{props}}{_MVTGEOM.format("{geom}")} as geom
  from devices d {_ENV}
  where d.kind = $10 and d.geom && e.box
  order by d.key  -- the same bytes (and ETag) whichever plan the index scan takes
) t"""
_PROPS = f"d.properties - {_RESERVED} as properties,\n         "
_POINT, _SIMPLIFIED = "ST_Transform(d.geom, 3857)", "ST_Simplify(ST_Transform(d.geom, 3857), $11, true)"
# The free properties (a camera's stream URL, a main's diameter) go only into the layers of
# kinds with few devices: they tripled the size of a z14 tile of 4,000 lamps (440 KiB).
DEVICE_POINTS = _DEVICE.replace("{geom}", _POINT).replace("{props}", "")
DEVICE_SIMPLIFIED = _DEVICE.replace("{geom}", _SIMPLIFIED).replace("{props}", "")
DEVICE_POINTS_PROPS = _DEVICE.replace("{geom}", _POINT).replace("{props}", _PROPS)
DEVICE_SIMPLIFIED_PROPS = _DEVICE.replace("{geom}", _SIMPLIFIED).replace("{props}", _PROPS)

# The aggregate grid (migration 0018_tile_grid): a tile at zoom z shows the 8 x 8 cells of grid
# level z + 3 under it. A device's cell at level 21 is ioc_grid_x/y(merc_x/merc_y), its cell at
# any coarser level that number shifted right, so levels nest and a device is in exactly one cell
# of every level (tiles do not count a device on their shared edge twice). tile_grid holds the
# counts of levels 3 to GRID_MAX_LEVEL, tile_grid_log the changes not folded in yet.
GRID_MAX_LEVEL = 19
FINE_LEVEL = 21
CELL_LEVELS = CELLS.bit_length() - 1  # 8 x 8 cells a tile: level = zoom + 3

# $10 kind, $11 grid level (z + 3), $12/$13 the tile's first global cell column/row, $14 the crew
# whose alarms alone count (null: every alarm); $6-$9 the widened WGS 84 bounds, for the alarms.
# A cell's point is the mean position of its devices, from sums of centimetres (exact integers
# that the grid can add and subtract without drift), so both statements put it at the same place.
_CELL_ALARMS = f"""a as (
  select ioc_grid_x(d.merc_x) >> ({FINE_LEVEL} - $11::int) as cx,
         ioc_grid_y(d.merc_y) >> ({FINE_LEVEL} - $11::int) as cy,
         count(*) as alarms, min(r.rank) as rank
  from (select device, min({_RANK}) as rank from alarms
        where {_ACTIVE_ALARM} and {crew_scope(14)} group by device) r
  join devices d on d.id = r.device
  where d.kind = $10 and d.geom && ST_MakeEnvelope($6, $7, $8, $9, 4326)
  group by 1, 2
)"""
_CELLS_TILE = f"""
select ST_AsMVT(t, $1, {EXTENT}, 'geom', 'cid') from (
  select c.cy::bigint * (1::bigint << $11::int) + c.cx as cid,
         'cell:' || ($11::int - 3) || '/' || c.cx || '/' || c.cy as id,
         'cell' as agg, $10::text as kind, c.n::int as count, c.online::int as online,
         c.stale::int as stale, c.offline::int as offline, c.unknown::int as unknown,
         coalesce(a.alarms, 0)::int as alarms, {_SEVERITY.format("a.rank")} as alarm_severity,
         ST_AsMVTGeom(ST_SetSRID(ST_MakePoint(c.sx::float8 / c.n / 100, c.sy::float8 / c.n / 100), 3857),
                      e.env, {EXTENT}, {BUFFER}, true) as geom
  from c left join a on a.cx = c.cx and a.cy = c.cy
  cross join (select ST_MakeEnvelope($2, $3, $4, $5, 3857) as env) e
  order by cid
) t"""
_IN_TILE = "{x} between $12::int and $12::int + " + str(CELLS - 1) + \
    " and {y} between $13::int and $13::int + " + str(CELLS - 1)

# Counting every device under the tile: O(devices), the fallback above GRID_MAX_LEVEL (a dense
# tile at z17-18) and the reference the grid is tested against.
DEVICE_CELLS = f"""
with p as (
  select d.merc_x, d.merc_y, coalesce(s.status, 'unknown') as status,
         ioc_grid_x(d.merc_x) >> ({FINE_LEVEL} - $11::int) as cx,
         ioc_grid_y(d.merc_y) >> ({FINE_LEVEL} - $11::int) as cy
  from devices d left join device_state s on s.device_key = d.key
  where d.kind = $10 and d.geom && ST_MakeEnvelope($6, $7, $8, $9, 4326)
), c as (
  select cx, cy, count(*) as n,
         count(*) filter (where status = 'online') as online,
         count(*) filter (where status = 'stale') as stale,
         count(*) filter (where status = 'offline') as offline,
         count(*) filter (where status = 'unknown') as unknown,
         sum(round(merc_x * 100)::bigint) as sx, sum(round(merc_y * 100)::bigint) as sy
  from p where {_IN_TILE.format(x="cx", y="cy")}
  group by cx, cy
), {_CELL_ALARMS}{_CELLS_TILE}"""

# Reading the counts the grid keeps: O(cells in the tile) whatever the city's size, plus the
# log rows not folded yet (the tile service folds them every few seconds).
DEVICE_GRID = f"""
with g as (
  select cx, cy, n, online, stale, offline, unknown, sx, sy from tile_grid
  where kind = $10 and level = $11::int and {_IN_TILE.format(x="cx", y="cy")}
  union all
  select fx >> ({GRID_MAX_LEVEL} - $11::int), fy >> ({GRID_MAX_LEVEL} - $11::int), n, online, stale,
         offline, unknown, sx, sy
  from tile_grid_log
  where kind = $10 and {_IN_TILE.format(x=f"fx >> ({GRID_MAX_LEVEL} - $11::int)",
                                         y=f"fy >> ({GRID_MAX_LEVEL} - $11::int)")}
), c as (
  select cx, cy, sum(n) as n, sum(online) as online, sum(stale) as stale, sum(offline) as offline,
         sum(unknown) as unknown, sum(sx) as sx, sum(sy) as sy
  from g group by cx, cy having sum(n) > 0
), {_CELL_ALARMS}{_CELLS_TILE}"""

FOLD_GRID = "select ioc_tile_grid_fold()"

# $10 simplification tolerance
WARDS = f"""
select ST_AsMVT(t, $1, {EXTENT}, 'geom') from (
  select w.code as id, w.name, w.properties - '{{id,name}}'::text[] as properties,
         {_MVTGEOM.format("ST_Simplify(ST_Transform(w.geom, 3857), $10, true)")} as geom
  from wards w {_ENV}
  where w.geom && e.box
) t"""

# $10 tolerance, $11 z
ROADS = f"""
select ST_AsMVT(t, $1, {EXTENT}, 'geom', 'key') from (
  select r.id as key, r.id, r.name, r.class,
         {_MVTGEOM.format("ST_Simplify(ST_Transform(r.geom, 3857), $10, true)")} as geom
  from roads r {_ENV}
  where r.geom && e.box and ($11 >= {ROADS_RESIDENTIAL_MINZOOM} or r.class <> 'residential')
) t"""

# $10 tolerance, $11 crew scope
WARD_STATS = f"""
with w as (
  select w.code, w.name, w.geom from wards w
  where w.geom && ST_MakeEnvelope($6, $7, $8, $9, 4326)
), a as (
  -- n and shown: what counts as open (shelved alarms do not, as in the ward summary);
  -- rank: any active alarm, for lamps out
  select device, count(*) filter (where not {_SHELVED}) as n, min({_RANK}) as rank,
         min({_RANK}) filter (where not {_SHELVED}) as shown from alarms
  where {_ACTIVE_ALARM} and {crew_scope(11)} group by device
), o as (
  select distinct device from alarms where state <> 'closed' and {crew_scope(11)}
), c as (
  select d.ward, count(*) as devices,
         count(*) filter (where s.status = 'online') as online,
         count(*) filter (where s.status = 'stale') as stale,
         count(*) filter (where s.status = 'offline') as offline,
         count(*) filter (where coalesce(s.status, 'unknown') = 'unknown') as unknown,
         count(*) filter (where d.kind = 'streetlight') as lamps,
         count(*) filter (where d.kind = 'streetlight'
                          and {lamp_out_sql("s.status", "s.values", "o.device is not null")}) as lamps_out,
         coalesce(sum(a.n), 0)::int as alarms, min(a.shown) as rank
  from devices d
  left join device_state s on s.device_key = d.key
  left join a on a.device = d.id
  left join o on o.device = d.id
  where d.ward in (select code from w)
  group by d.ward
)
select ST_AsMVT(t, $1, {EXTENT}, 'geom') from (
  select w.code as id, w.name, coalesce(c.devices, 0) as devices, coalesce(c.online, 0) as online,
         coalesce(c.stale, 0) as stale, coalesce(c.offline, 0) as offline,
         coalesce(c.unknown, 0) as unknown, coalesce(c.lamps, 0) as lamps,
         coalesce(c.lamps_out, 0) as lamps_out, coalesce(c.alarms, 0) as alarms,
         {_SEVERITY.format("c.rank")} as alarm_severity,
         {_MVTGEOM.format("ST_Simplify(ST_Transform(w.geom, 3857), $10, true)")} as geom
  from w left join c on c.ward = w.code {_ENV}
) t"""

# $10 tolerance, $11 crew scope. One feature per device: its worst active alarm, newest first among equals.
ALARMS = f"""
select ST_AsMVT(t, $1, {EXTENT}, 'geom', 'key') from (
  select distinct on (a.device) d.key, a.device as id, a.id as alarm, a.severity, a.state, a.rule,
         a.message, to_char(a.raised_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as raised_at,
         count(*) over (partition by a.device) as alarms,
         coalesce(a.shelved_until > now(), false) as shelved, a.assigned_crew as crew, d.kind, d.name,
         {_MVTGEOM.format("ST_Simplify(ST_Transform(coalesce(a.geom, d.geom), 3857), $10, true)")}
           as geom
  from alarms a left join devices d on d.id = a.device {_ENV}
  where a.active and a.state <> 'closed' and not a.suppressed and not a.out_of_service
    and coalesce(a.geom, d.geom) && e.box and {crew_scope(11, "a.assigned_crew")}
  order by a.device, {_RANK.replace("severity", "a.severity")}, a.raised_at desc
) t"""


# $10 tolerance (unused: points). Open citizens' reports, with their public fields only.
REPORTS = f"""
select ST_AsMVT(t, $1, {EXTENT}, 'geom', 'id') from (
  select r.id, r.category, r.status, r.ward, r.reporters,
         to_char(r.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as created_at,
         {_MVTGEOM.format("ST_Transform(r.geom, 3857)")} as geom
  from reports r {_ENV}
  where r.status in ('received', 'verified', 'assigned', 'in_progress') and r.geom && e.box
) t"""


# A detail tile of a dense point kind, in one statement: count the devices under the tile (at
# most bound + 1 of them), then make the points or, past the bound, the grid cells. Each branch
# is an uncorrelated subquery, an InitPlan that PostgreSQL runs only when the CASE first needs
# its value, so only the branch taken runs. $1-$14 are the cells' arguments (the points' $1-$10
# are their prefix), $15 the bound; the first column says which branch it was.
_BOUNDED = """
with n as (
  select count(*) > $15::int as dense from (
    select 1 from devices d where d.kind = $10 and d.geom && ST_MakeEnvelope($6, $7, $8, $9, 4326)
    limit $15::int + 1
  ) t
)
select n.dense, case when n.dense then ({cells}) else ({points}) end from n"""


@functools.cache
def _bounded(points: str, cells: str) -> str:
    return _BOUNDED.replace("{cells}", cells).replace("{points}", points)


def tile_statement(layer: Layer, t: TileBounds, crew: str | None, bound: int) -> tuple[str, tuple, bool]:
    """What the tile service runs for one tile: (statement, arguments, bounded); a bounded
    statement (:func:`bounded`) answers (dense, tile), any other the tile alone."""
    if layer.source == "kind" and layer.geometry == "point" and not layer.aggregated(t.z):
        return (*bounded(layer, t, bound, crew), True)
    return (*query(layer, t, crew), False)


def bounded(layer: Layer, t: TileBounds, bound: int, crew: str | None = None) -> tuple[str, tuple]:
    """The statement for a detail tile of a dense point kind and its arguments: it answers
    (dense, tile), the tile holding grid cells when more than ``bound`` devices are under it."""
    assert layer.source == "kind" and layer.geometry == "point" and not layer.aggregated(t.z)
    points, _ = query(layer, t)  # its arguments are the cells' first ten (test_lamp_out)
    cells, args = query(layer, t, crew, aggregate=True)
    return _bounded(points, cells), (*args, bound)


def query(layer: Layer, t: TileBounds, crew: str | None = None, aggregate: bool = False,
          grid: bool = True) -> tuple[str, tuple]:
    """The statement and its arguments for one tile of ``layer``; ``crew``: only this crew's
    alarms count (for a layer that is :meth:`~tiles.catalogue.Layer.crew_scoped`);
    ``aggregate``: grid cells even at a detail zoom (a tile too dense to list its devices);
    ``grid``: cells from the kept counts where the grid has the level (else by counting)."""
    base = (layer.id, t.left, t.bottom, t.right, t.top, t.west, t.south, t.east, t.north)
    src = layer.source
    if src == "kind":
        if layer.aggregated(t.z) or aggregate:
            level = t.z + CELL_LEVELS
            statement = DEVICE_GRID if grid and level <= GRID_MAX_LEVEL else DEVICE_CELLS
            return statement, (*base, layer.kind, level, t.x * CELLS, t.y * CELLS, crew)
        props = layer.detail_minzoom == 0
        if layer.simplify():
            sql = DEVICE_SIMPLIFIED_PROPS if props else DEVICE_SIMPLIFIED
            return sql, (*base, layer.kind, tolerance(t))
        return (DEVICE_POINTS_PROPS if props else DEVICE_POINTS), (*base, layer.kind)
    if src == "wards":
        return WARDS, (*base, tolerance(t))
    if src == "roads":
        return ROADS, (*base, tolerance(t), t.z)
    if src == "ward_stats":
        return WARD_STATS, (*base, tolerance(t), crew)
    if src == "alarms":
        return ALARMS, (*base, tolerance(t), crew)
    if src == "reports":
        return REPORTS, base
    raise ValueError(f"no SQL for layer source {src!r}")
