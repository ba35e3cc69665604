"""Citizens' reports over HTTP: the public side (no token) and the operators' side.

Public: POST /api/v1/public/reports (multipart), GET .../{code}, POST .../{code}/rating,
GET .../stats, and the photos (metadata-free JPEGs by content hash). Operators: the list,
one report, and the lifecycle actions; a crew token sees and resolves only its crew's.
"""

from __future__ import annotations

import math
import time

from aiohttp import web

from server import keys
from server import reports as domain
from server.errors import Invalid, NotFound
from server.http.jsonutil import json_response
from server.http.problems import Problem

routes = web.RouteTableDef()
_BUCKETS: dict[str, tuple[float, float]] = {}  # client address -> (tokens, at)
MAX_TEXT = 4000


def _bad(field: str, reason: str) -> Invalid:
    return Invalid(f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def _text(value: str | None, field: str, required: bool = True, limit: int = MAX_TEXT) -> str | None:
    if value is None or not value.strip():
        if required:
            raise _bad(field, "is required")
        return None
    if "\x00" in value:
        raise _bad(field, "contains a NUL character")
    if len(value) > limit:
        raise _bad(field, f"is longer than {limit} characters")
    return value.strip()


def _take(request: web.Request) -> None:
    rate = request.app[keys.SETTINGS].reports.rate_per_min / 60.0
    burst, now, who = 5.0, time.monotonic(), request.remote or "?"
    tokens, at = _BUCKETS.get(who, (burst, now))
    tokens = min(burst, tokens + (now - at) * rate)
    if tokens < 1.0:
        raise Problem(429, "too many reports from this address; try again later",
                      headers={"Retry-After": str(math.ceil((1.0 - tokens) / rate))})
    _BUCKETS[who] = (tokens - 1.0, now)


@routes.post("/api/v1/public/reports")
async def create_report(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS].reports
    fields: dict[str, str] = {}
    raw_photos: list[bytes] = []
    if request.content_type == "application/x-www-form-urlencoded":  # a form without photos
        try:
            fields = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        except UnicodeDecodeError:
            raise _bad("(body)", "is not UTF-8 text") from None
    elif not request.content_type.startswith("multipart/"):
        raise _bad("(body)", "send multipart/form-data")
    reader = await request.multipart() if request.content_type.startswith("multipart/") else None
    while reader is not None and (part := await reader.next()) is not None:
        if part.name == "photo":
            if len(raw_photos) >= domain.MAX_PHOTOS:
                raise _bad("photo", f"at most {domain.MAX_PHOTOS} photos")
            raw_photos.append(await part.read())
        elif part.name:
            try:
                fields[part.name] = await part.text()
            except UnicodeDecodeError:
                raise _bad(part.name, "is not UTF-8 text") from None
    if fields.get("website"):  # the honeypot: hidden from people, filled by bots
        raise _bad("website", "must be left empty")
    _take(request)
    category = _text(fields.get("category"), "category")
    if category not in domain.CATEGORIES:
        raise _bad("category", f"is not one of {', '.join(domain.CATEGORIES)}")
    coords = {}
    for name, lo, hi in (("lat", -90, 90), ("lon", -180, 180)):
        try:
            coords[name] = float(_text(fields.get(name), name, limit=40))
        except ValueError:
            raise _bad(name, "is not a number") from None
        if not math.isfinite(coords[name]) or not lo <= coords[name] <= hi:
            raise _bad(name, f"must be between {lo} and {hi}")
    description = _text(fields.get("description"), "description")
    contact = _text(fields.get("contact"), "contact", required=False, limit=200)
    cleaned = [domain.clean_photo(p) for p in raw_photos]  # all checked before anything is kept
    store = domain.PhotoStore(settings.photo_dir, settings.photo_quota_bytes)
    if cleaned:
        store.check_room(sum(map(len, cleaned)))
    digests = [store.put(c) for c in cleaned]
    async with request.app[keys.DB].acquire() as conn:
        out = await domain.create(
            conn, category=category, lat=coords["lat"], lon=coords["lon"], description=description,
            contact=contact, photos=digests,
            sla_hours=settings.sla_hours.get(category, settings.default_sla_hours), units=settings.units)
    return json_response({"code": out["code"], "status": out["status"],
                          "url": f"/api/v1/public/reports/{out['code']}"}, status=201)


@routes.get("/api/v1/public/reports/stats")
async def stats(request: web.Request) -> web.Response:
    q = request.query
    async with request.app[keys.DB].acquire() as conn:
        row = await conn.fetchrow(
            """select count(*) as received,
                      count(*) filter (where status = 'resolved') as resolved,
                      count(*) filter (where status = 'resolved' and resolved_at <= sla_due) as in_sla,
                      percentile_cont(0.5) within group (
                          order by extract(epoch from resolved_at - created_at))
                          filter (where status = 'resolved') as median_s,
                      (select count(*) filter (where stars >= 4)::float / nullif(count(*), 0)
                         from report_ratings t where t.report_id = any(array_agg(r.id))) as sat
               from reports r
               where ($1::timestamptz is null or created_at >= $1)
                 and ($2::timestamptz is null or created_at < $2)
                 and ($3::text is null or ward = $3) and ($4::text is null or category = $4)""",
            _when(q.get("from"), "from"), _when(q.get("to"), "to"), q.get("ward"), q.get("category"))
    resolved = row["resolved"]
    return json_response({
        "received": row["received"], "resolved": resolved,
        "within_sla_pct": round(100.0 * row["in_sla"] / resolved, 1) if resolved else None,
        "median_hours_to_resolve": (round(row["median_s"] / 3600.0, 2)
                                    if row["median_s"] is not None else None),
        "satisfaction_pct": round(100.0 * row["sat"], 1) if row["sat"] is not None else None})


def _when(value: str | None, field: str):
    if not value:
        return None
    from datetime import datetime
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(field, "is not an RFC 3339 date-time") from None


@routes.get("/api/v1/public/reports/photos/{name}")
async def photo(request: web.Request) -> web.StreamResponse:
    settings = request.app[keys.SETTINGS].reports
    name = request.match_info["name"]
    path = domain.PhotoStore(settings.photo_dir, 0).path(name.removesuffix(".jpg"))
    if path is None or not name.endswith(".jpg"):
        raise NotFound("no such photo")
    return web.Response(body=path.read_bytes(), content_type="image/jpeg",
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "public, max-age=31536000, immutable"})


@routes.get("/api/v1/public/reports/{code}")
async def public_report(request: web.Request) -> web.Response:
    async with request.app[keys.DB].acquire() as conn:
        return json_response(await domain.public_view(conn, request.match_info["code"]))


@routes.post("/api/v1/public/reports/{code}/rating")
async def rating(request: web.Request) -> web.Response:
    try:
        doc = await request.json()
    except ValueError:
        raise _bad("(body)", "is not JSON") from None
    stars = doc.get("stars") if isinstance(doc, dict) else None
    if not isinstance(stars, int) or isinstance(stars, bool) or not 1 <= stars <= 5:
        raise _bad("stars", "must be an integer from 1 to 5")
    comment = doc.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise _bad("comment", "must be text")
    comment = _text(comment, "comment", required=False)
    async with request.app[keys.DB].acquire() as conn:
        await domain.rate(conn, request.match_info["code"], stars, comment)
    return json_response({"code": request.match_info["code"], "stars": stars}, status=201)
