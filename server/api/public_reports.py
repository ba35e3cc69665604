"""Citizens' reports as open data, for the public pages and anyone else (no token).

- ``GET /api/v1/public/reports.geojson`` and ``.csv``: every report's public fields (id,
  category, status, ward, reporters, when received and resolved, the point), filtered by
  ``category``, ``status`` (or ``open``/``closed``), ``ward``, ``from``, ``to`` (RFC 3339). Never the
  contact, the description or the tracking code (the code is what lets its holder rate the
  report; the public id is the report's number).
- ``GET /api/v1/public/reports/stats/breakdown?by=ward|category&from=&to=``: the figures of
  ``/stats`` per ward or per category in one answer (the statistics table of ``/public``).
- ``GET /api/v1/public/basemap/{z}/{x}/{y}.mvt``: the wards and roads layers of our own tiles
  (public geography, no device, alarm or report), so the citizens' maps need no outside
  service and no token.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from aiohttp import web

from server import keys
from server import reports as domain
from server.api.tiles import MVT, _layers, _matches, _zxy
from server.errors import Invalid
from server.http.jsonutil import json_response
from tiles.service import etag_of

routes = web.RouteTableDef()
LIMIT = 20_000  # a city's reports over a few years; past it, narrow the period
CLOSED = ("resolved", "rejected")
FIELDS = ("id", "category", "status", "ward", "reporters", "created_at", "resolved_at", "lon", "lat")


def _bad(field: str, reason: str) -> Invalid:
    return Invalid(f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def _when(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        out = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        out = None
    if out is None or out.tzinfo is None or "T" not in value.upper():
        raise _bad(field, "is not an RFC 3339 date-time (with its offset, e.g. 2026-12-01T00:00:00+07:00)")
    return out


def _choice(q, name: str, allowed) -> str | None:
    value = q.get(name)
    if value is not None and value not in allowed:
        raise _bad(name, f"is not one of {', '.join(allowed)}")
    return value


def _filters(q) -> tuple:
    category = _choice(q, "category", domain.CATEGORIES)
    status = _choice(q, "status", (*domain.STATUSES, "open", "closed"))
    statuses = (list(domain.OPEN) if status == "open" else list(CLOSED) if status == "closed"
                else [status] if status else None)
    ward = q.get("ward")
    if ward is not None and (not ward or "\x00" in ward or len(ward) > 200):
        raise _bad("ward", "is not a ward code")
    return category, statuses, ward, _when(q.get("from"), "from"), _when(q.get("to"), "to")


async def _rows(request: web.Request):
    category, statuses, ward, start, end = _filters(request.query)
    async with request.app[keys.DB].acquire() as conn:
        return await conn.fetch(
            """select id, category, status, ward, reporters, created_at, resolved_at,
                      round(ST_X(geom)::numeric, 6)::float8 as lon,
                      round(ST_Y(geom)::numeric, 6)::float8 as lat
               from reports
               where ($1::text is null or category = $1) and ($2::text[] is null or status = any($2))
                 and ($3::text is null or ward = $3)
                 and ($4::timestamptz is null or created_at >= $4)
                 and ($5::timestamptz is null or created_at < $5)
               order by created_at desc, id desc limit $6""",
            category, statuses, ward, start, end, LIMIT)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


@routes.get("/api/v1/public/reports.geojson")
async def reports_geojson(request: web.Request) -> web.Response:
    rows = await _rows(request)
    features = [{"type": "Feature", "id": r["id"],
                 "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                 "properties": {"id": r["id"], "category": r["category"], "status": r["status"],
                                "ward": r["ward"], "reporters": r["reporters"],
                                "created_at": _iso(r["created_at"]), "resolved_at": _iso(r["resolved_at"])}}
                for r in rows]
    return json_response({"type": "FeatureCollection", "features": features},
                         content_type="application/geo+json", headers={"Cache-Control": "public, max-age=60"})


@routes.get("/api/v1/public/reports.csv")
async def reports_csv(request: web.Request) -> web.Response:
    rows = await _rows(request)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(FIELDS)
    for r in rows:
        writer.writerow([_iso(r[f]) if isinstance(r[f], datetime) else ("" if r[f] is None else r[f])
                         for f in FIELDS])
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="reports.csv"',
                                 "Cache-Control": "public, max-age=60"})


STATS_SQL = """
with r as (
  select r.*, {key} as key from reports r
  where ($1::timestamptz is null or created_at >= $1) and ($2::timestamptz is null or created_at < $2)
)
select key, count(*) as received,
       count(*) filter (where status = 'resolved') as resolved,
       count(*) filter (where status = 'resolved' and resolved_at <= sla_due) as in_sla,
       percentile_cont(0.5) within group (order by extract(epoch from resolved_at - created_at))
           filter (where status = 'resolved') as median_s,
       count(t.report_id) filter (where t.stars >= 4)::float8 / nullif(count(t.report_id), 0) as sat,
       count(t.report_id) as ratings
from r left join report_ratings t on t.report_id = r.id
group by key order by key nulls last"""


def stats_doc(row) -> dict:
    resolved = row["resolved"]
    return {"received": row["received"], "resolved": resolved,
            "within_sla_pct": round(100.0 * row["in_sla"] / resolved, 1) if resolved else None,
            "median_hours_to_resolve": (round(row["median_s"] / 3600.0, 2)
                                        if row["median_s"] is not None else None),
            "satisfaction_pct": round(100.0 * row["sat"], 1) if row["sat"] is not None else None,
            "ratings": row["ratings"]}


@routes.get("/api/v1/public/reports/stats/breakdown")
async def stats_breakdown(request: web.Request) -> web.Response:
    q = request.query
    by = _choice(q, "by", ("ward", "category")) or "ward"
    start, end = _when(q.get("from"), "from"), _when(q.get("to"), "to")
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(STATS_SQL.format(key="r.ward" if by == "ward" else "r.category"), start, end)
        total = await conn.fetchrow(STATS_SQL.format(key="'all'::text"), start, end)
        names = dict(await conn.fetch("select code, name from wards")) if by == "ward" else {}
    out = []
    for r in rows:
        key = r["key"]
        name = (names.get(key, key) if by == "ward" else domain.CATEGORIES.get(key, (key, key)))
        out.append({by: key, "name": name if by == "ward" else name[0],
                    "name_vi": name if by == "ward" else name[1], **stats_doc(r)})
    empty = {"received": 0, "resolved": 0, "in_sla": 0, "median_s": None, "sat": None, "ratings": 0}
    return json_response({"by": by, "from": _iso(start), "to": _iso(end), "rows": out,
                          "total": stats_doc(total or empty)})


@routes.get("/api/v1/public/basemap/{z}/{x}/{y}.mvt")
async def basemap_tile(request: web.Request) -> web.Response:
    service = request.app[keys.TILES]
    layers = _layers(service, "wards,roads")
    z, x, y = _zxy(layers, request.match_info)
    entries = [await service.tile(layer, z, x, y, None) for layer in layers]
    data = b"".join(e.data for e in entries)
    etag = etag_of("".join(e.etag for e in entries).encode())
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={service.settings.max_age_s}"}
    inm = request.headers.get("If-None-Match")
    if inm and _matches(inm, etag):
        return web.Response(status=304, headers=headers)
    if not data:
        return web.Response(status=204, headers=headers)
    return web.Response(body=data, content_type=MVT, headers=headers)


@routes.get("/api/v1/public/basemap.json")
async def basemap_tilejson(request: web.Request) -> web.Response:
    """TileJSON 3.0 of the public base map: where the city is, and its tile URL."""
    service = request.app[keys.TILES]
    layers = _layers(service, "wards,roads")
    w, s, e, n = await service.extent(layers[0])
    return json_response({
        "tilejson": "3.0.0", "name": "ioc-public-basemap", "scheme": "xyz",
        "tiles": [f"{request.url.origin()}/api/v1/public/basemap/{{z}}/{{x}}/{{y}}.mvt"],
        "minzoom": 0, "maxzoom": min(layer.maxzoom for layer in layers),
        "bounds": [w, s, e, n], "center": [(w + e) / 2, (s + n) / 2, 13],
        "vector_layers": [{"id": layer.id, "fields": dict(layer.fields)} for layer in layers]},
        headers={"Cache-Control": "public, max-age=300"})
