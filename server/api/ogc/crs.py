"""OGC API – Features Part 2 (CRS by reference): which CRSs the collections offer, how a
``crs``/``bbox-crs`` value is read, and how PostGIS writes coordinates in each.

Devices are stored in EPSG:4326 and served in CRS84 (longitude first) by default. Offered
besides: EPSG:4326 itself (latitude first, as EPSG defines its axes), EPSG:3857, and the
VN-2000 systems (the national datum, geographic and its UTM and TM-3 grids) that PostGIS's
``spatial_ref_sys`` holds: which ones depends on the PostGIS version (3.3 has 4756, 3405,
3406 and 5896-5898; the TM-3 provincial zones 9205-9218 came later), so they are looked up.
PostGIS always writes x = easting/longitude first; the CRSs whose EPSG axis order is
northing/latitude first are flipped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import asyncpg
from pyproj import CRS as ProjCrs
from pyproj import Transformer

from server.errors import Invalid

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"


@dataclass(frozen=True, slots=True)
class Crs:
    uri: str
    srid: int
    lat_first: bool = False  # the first axis is latitude (or northing): flip PostGIS's x/y
    geographic: bool = False

    @property
    def decimals(self) -> int:
        return 7 if self.geographic else 3  # ~1 cm either way

    @property
    def header(self) -> str:
        return f"<{self.uri}>"


DEFAULT = Crs(CRS84, 4326, geographic=True)
FIXED = (DEFAULT, Crs(EPSG + "4326", 4326, lat_first=True, geographic=True), Crs(EPSG + "3857", 3857))
# VN-2000 (EPSG:4756, latitude first) and its projected grids, all easting first.
VN2000 = (Crs(EPSG + "4756", 4756, lat_first=True, geographic=True),
          *(Crs(EPSG + str(code), code) for code in (3405, 3406, 5896, 5897, 5898, *range(9205, 9219))))


async def offered(conn: asyncpg.Connection) -> list[Crs]:
    """CRS84, EPSG:4326, EPSG:3857 and the VN-2000 systems this PostGIS knows."""
    known = {r["srid"] for r in await conn.fetch(
        "select srid from spatial_ref_sys where auth_name = 'EPSG' and srid = any($1::int[])",
        [c.srid for c in VN2000])}
    return [*FIXED, *(c for c in VN2000 if c.srid in known)]


def _normalise(text: str) -> str:
    """The URI for the short forms people type: ``EPSG:3857``, ``[EPSG:3857]``, ``CRS84``."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    upper = t.upper()
    if upper in ("CRS84", "OGC:CRS84"):
        return CRS84
    if upper.startswith("EPSG:") and t[5:].isdigit():
        return EPSG + t[5:]
    if t.startswith("https://"):
        t = "http://" + t[len("https://"):]
    return t


def parse(text: str | None, offered_crs: list[Crs], param: str) -> Crs:
    if text is None or text == "":
        return DEFAULT
    uri = _normalise(text)
    for c in offered_crs:
        if c.uri == uri:
            return c
    raise Invalid(f"{param} {text!r} is not offered; use one of: "
                  + ", ".join(c.uri for c in offered_crs), field=param)


@functools.cache
def _domain(srid: int) -> tuple[float, float, float, float]:
    """A projected CRS's area of use in its own easting/northing (PROJ's EPSG database)."""
    crs = ProjCrs.from_epsg(srid)
    area = crs.area_of_use
    if area is None:
        return (-float("inf"), -float("inf"), float("inf"), float("inf"))
    to_crs = Transformer.from_crs(4326, crs, always_xy=True)
    return to_crs.transform_bounds(*area.bounds, densify_pts=21)


def clamp(box: tuple[float, float, float, float], crs: Crs) -> tuple[float, float, float, float]:
    """A projected bbox clipped to where its projection is defined: PROJ cannot invert points
    far outside it (a box of ±1e300 in EPSG:3857 came back as nothing at all), and a box
    larger than the domain covers all of it. A box wholly outside it is a 400."""
    if crs.geographic:
        return box
    x0, y0, x1, y1 = box
    dx0, dy0, dx1, dy1 = _domain(crs.srid)
    out = (max(x0, dx0), max(y0, dy0), min(x1, dx1), min(y1, dy1))
    if out[0] > out[2] or out[1] > out[3]:
        raise Invalid(f"bbox lies outside the area {crs.uri} is defined for "
                      f"({dx0:.0f},{dy0:.0f},{dx1:.0f},{dy1:.0f})", field="bbox")
    return out


def geometry_sql(column: str, crs: Crs) -> str:
    """The GeoJSON geometry of ``column`` (EPSG:4326) written in ``crs``."""
    geom = column if crs.srid == 4326 else f"ST_Transform({column}, {crs.srid})"
    if crs.lat_first:
        geom = f"ST_FlipCoordinates({geom})"
    # options 0: no "crs" member (PostGIS adds one for SRIDs other than 4326; RFC 7946 has none)
    return f"ST_AsGeoJSON({geom}, {crs.decimals}, 0)::jsonb"


def bbox_sql(crs: Crs, first_arg: int) -> str:
    """A WGS 84 polygon from a bbox given in ``crs`` as 4 bound parameters from ``$first_arg``
    (in the CRS's axis order: minLat,minLon,maxLat,maxLon for EPSG:4326)."""
    a, b, c, d = (f"${first_arg + i}::float8" for i in range(4))
    if crs.lat_first:
        a, b, c, d = b, a, d, c
    env = f"ST_MakeEnvelope({a}, {b}, {c}, {d}, {crs.srid})"
    if crs.srid == 4326:
        return env
    # Densified before it is transformed (a grid's straight edges are curves in lon/lat), and
    # clipped to the world: a box larger than the projection's domain covers all of it.
    dense = f"ST_Segmentize({env}, greatest(({c} - {a}) / 16, ({d} - {b}) / 16, 1e-6))"
    return f"ST_Intersection(ST_Transform({dense}, 4326), ST_MakeEnvelope(-180, -90, 180, 90, 4326))"
