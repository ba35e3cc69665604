"""GeoJSON validation and bbox parsing: pure, no I/O.

Errors are :class:`GeometryError` with a message naming what is wrong and where, so the
API can pass it straight to a person.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
     "GeometryCollection"}
)


class GeometryError(ValueError):
    """A geometry or bbox a person must fix; the message says how."""


def parse_geometry(obj: Any, where: str = "geometry") -> BaseGeometry:
    """A valid WGS 84 shapely geometry from a GeoJSON geometry object."""
    if not isinstance(obj, Mapping):
        raise GeometryError(f"{where} must be a GeoJSON geometry object, got {type(obj).__name__}")
    gtype = obj.get("type")
    if not isinstance(gtype, str) or gtype not in GEOMETRY_TYPES:
        raise GeometryError(
            f"{where}.type must be one of {', '.join(sorted(GEOMETRY_TYPES))}, got {gtype!r}"
        )
    if gtype != "GeometryCollection" and "coordinates" not in obj:
        raise GeometryError(f"{where} has no coordinates")
    try:
        geom = shape(obj)
    except Exception as err:  # shapely raises several types for malformed coordinates
        raise GeometryError(f"{where}: malformed {gtype} coordinates ({err})") from None
    if geom.is_empty:
        raise GeometryError(f"{where} is empty")
    coords = shapely.get_coordinates(geom)
    if not all(math.isfinite(v) for v in coords.flat):
        raise GeometryError(f"{where} has a non-finite coordinate")
    lon, lat = coords[:, 0], coords[:, 1]
    if (lon < -180).any() or (lon > 180).any() or (lat < -90).any() or (lat > 90).any():
        raise GeometryError(
            f"{where} has coordinates outside WGS 84 lon/lat ranges "
            "(longitude first, -180..180; latitude -90..90)"
        )
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        raise GeometryError(f"{where} is not a valid {gtype}: {reason}")
    return geom


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``minLon,minLat,maxLon,maxLat`` → a tuple, or a GeometryError saying what to send."""
    if text is None or text == "":
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise GeometryError(
            f"bbox must be minLon,minLat,maxLon,maxLat (4 numbers), got {len(parts)} values"
        )
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise GeometryError(f"bbox values must be numbers, got {text!r}") from None
    return check_bbox(vals)  # type: ignore[arg-type]


def check_bbox(vals: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    if not all(math.isfinite(v) for v in vals):
        raise GeometryError("bbox values must be finite numbers")
    min_lon, min_lat, max_lon, max_lat = vals
    if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
        raise GeometryError("bbox longitudes must be within -180..180")
    if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
        raise GeometryError("bbox latitudes must be within -90..90")
    if min_lon > max_lon or min_lat > max_lat:
        raise GeometryError("bbox must be minLon,minLat,maxLon,maxLat with min <= max")
    return vals
