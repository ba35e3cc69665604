"""The items query: ``bbox``, ``datetime``, ``limit`` and ``offset`` read as OGC API –
Features Part 1 defines them, each refusal a 400 naming its parameter. Pure, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from server.api.ogc.crs import Crs
from server.errors import Invalid

LIMIT_DEFAULT = 100
LIMIT_MAX = 10_000
OFFSET_MAX = 10_000_000


def integer(text: str | None, param: str, default: int, lo: int, hi: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.strip().isdigit()) or len(text) > 12:
        raise Invalid(f"{param} must be a whole number from {lo} to {hi}, got {text!r}", field=param)
    value = int(text)
    if not lo <= value <= hi:
        raise Invalid(f"{param} must be from {lo} to {hi}, got {value}", field=param)
    return value


def bbox(text: str | None, crs: Crs) -> tuple[float, float, float, float] | None:
    """4 numbers (or 6, whose heights are ignored: devices have none) in ``crs``'s axis order."""
    if text is None:
        return None
    parts = text.split(",")
    order = ("minLat,minLon,maxLat,maxLon" if crs.lat_first and crs.geographic
             else "minLon,minLat,maxLon,maxLat" if crs.geographic else "minX,minY,maxX,maxY")
    if len(parts) not in (4, 6):
        raise Invalid(f"bbox must be {order} (4 numbers, or 6 with heights), got {len(parts)} values",
                      field="bbox")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise Invalid(f"bbox values must be numbers, got {text!r}", field="bbox") from None
    if not all(math.isfinite(v) for v in vals):
        raise Invalid("bbox values must be finite numbers", field="bbox")
    if len(vals) == 6:
        vals = [vals[0], vals[1], vals[3], vals[4]]
    x0, y0, x1, y1 = vals
    if x0 > x1 or y0 > y1:
        raise Invalid(f"bbox must be {order} with each minimum at most its maximum", field="bbox")
    if crs.geographic:
        lon0, lat0, lon1, lat1 = (y0, x0, y1, x1) if crs.lat_first else (x0, y0, x1, y1)
        if not (-180 <= lon0 <= 180 and -180 <= lon1 <= 180 and -90 <= lat0 <= 90 and -90 <= lat1 <= 90):
            raise Invalid(f"bbox is outside the longitudes -180..180 and latitudes -90..90 ({order})",
                          field="bbox")
    return x0, y0, x1, y1


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime | None  # None: open (..)
    end: datetime | None
    instant: bool = False


def _moment(text: str, *, end: bool) -> datetime:
    """An RFC 3339 date-time with its offset, or a date (its first instant, or for the end of
    an interval its last)."""
    t = text.strip()
    if len(t) == 10:
        try:
            d = date.fromisoformat(t)
        except ValueError:
            raise Invalid(f"datetime: {text!r} is not a date (YYYY-MM-DD)", field="datetime") from None
        start = datetime(d.year, d.month, d.day, tzinfo=UTC)
        return start + timedelta(days=1, microseconds=-1) if end else start
    try:
        moment = datetime.fromisoformat(t.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise Invalid(f"datetime: {text!r} is not an RFC 3339 date-time such as 2026-12-05T08:30:00Z",
                      field="datetime") from None
    if moment.tzinfo is None:
        raise Invalid(f"datetime: {text!r} has no time zone; add Z or an offset such as +07:00",
                      field="datetime")
    return moment


def datetime_filter(text: str | None) -> Interval | None:
    """An instant, a date, or an interval ``start/end`` whose ends may be open (``..`` or empty)."""
    if text is None:
        return None
    if "/" not in text:
        if text.strip() == "..":
            raise Invalid("datetime '..' is an open end of an interval; write ../.. for all times",
                          field="datetime")
        if len(text.strip()) == 10:  # a date is the interval of its day
            return Interval(_moment(text, end=False), _moment(text, end=True))
        moment = _moment(text, end=False)
        return Interval(moment, moment, instant=True)
    parts = text.split("/")
    if len(parts) != 2:
        raise Invalid(f"datetime must be an instant or start/end, got {text!r}", field="datetime")
    lo, hi = (None if p.strip() in ("", "..") else p for p in parts)
    start = _moment(lo, end=False) if lo else None
    end = _moment(hi, end=True) if hi else None
    if start and end and start > end:
        raise Invalid(f"datetime interval {text!r} ends before it starts", field="datetime")
    return Interval(start, end)
