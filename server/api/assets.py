"""Assets for the operator's console: ``/api/v1/search`` (find a device by id, name, ward or
address from the map's header) and ``/api/v1/devices/{id}/media`` (a camera's picture through
the server).

The media proxy exists because cameras sit on the city's private networks, which browsers in
the operations centre cannot reach and which must not be opened to them. The server fetches
the camera's ``stream_url`` (HLS playlist, MJPEG) or ``snapshot_url`` under the same rule as
every other outbound request (server/notify/outbound.py): a camera on a loopback, link-local
or private address is reached only when ``[security] allow_outbound`` names its network, and
the name is resolved through the guarded resolver, so DNS rebinding leads nowhere. An HLS
playlist's segments are relative to it, so ``media/{path}`` fetches them from the same
directory of the same origin, and nothing else: the proxy cannot be steered to another host.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from server import keys
from server.errors import Invalid, NotFound
from server.http.auth import require
from server.http.jsonutil import json_response
from server.notify.outbound import GuardedResolver, OutboundPolicy, RefusedAddress

routes = web.RouteTableDef()

SEARCH_LIMIT = 20
MEDIA_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=15)
# What the browser may receive: the stream's own types, nothing the page would run.
MEDIA_TYPES = re.compile(
    r"^(application/(vnd\.apple\.mpegurl|x-mpegurl)|audio/mpegurl|video/[\w.+-]+|image/(jpeg|png|webp)"
    r"|multipart/x-mixed-replace(;.*)?|application/octet-stream)$", re.I)


def _invalid(field: str, reason: str) -> Invalid:
    return Invalid(f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Ranked: an exact id, then ids that start with the text, then names, wards and addresses
# that contain it. `lower(...) like` on ~100k rows is a few tens of milliseconds.
SEARCH_SQL = r"""
select d.id, d.kind, d.name, d.ward, w.name as ward_name,
       coalesce(d.properties->>'address', d.properties->>'road') as address,
       ST_X(ST_PointOnSurface(d.geom)) as lon, ST_Y(ST_PointOnSurface(d.geom)) as lat,
       case when lower(d.id) = $1 then 0
            when lower(d.id) like $2 || '%' then 1
            when lower(d.name) like $2 || '%' then 2
            else 3 end as rank
from devices d left join wards w on w.code = d.ward
where lower(d.id) like '%' || $2 || '%'
   or lower(d.name) like '%' || $2 || '%'
   or lower(d.ward) = $1
   or lower(w.name) like '%' || $2 || '%'
   or lower(d.properties->>'address') like '%' || $2 || '%'
   or lower(d.properties->>'road') like '%' || $2 || '%'
order by rank, d.id
limit $3
"""

WARD_SQL = r"""
select code, name, ST_XMin(geom) as xmin, ST_YMin(geom) as ymin, ST_XMax(geom) as xmax,
       ST_YMax(geom) as ymax
from wards
where lower(code) like $1 || '%' or lower(name) like '%' || $1 || '%'
order by code limit 5
"""


@routes.get("/api/v1/search")
async def search(request: web.Request) -> web.Response:
    """``?q=`` (2 to 100 characters) and ``limit`` (1-50): ``{"wards": [...], "devices": [...]}``."""
    require(request, "viewer", "crew", "operator", "integrator")
    q = request.query.get("q") or ""
    if len(q) < 2 or len(q) > 100 or "\x00" in q:
        raise _invalid("q", "give 2 to 100 characters to search for (a device id, name, ward or address)")
    raw_limit = request.query.get("limit", "10")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 50:
        raise _invalid("limit", "a whole number from 1 to 50")
    text = q.strip().lower()
    if not text:
        return json_response({"q": q, "wards": [], "devices": []}, headers={"Cache-Control": "no-store"})
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(SEARCH_SQL, text, _like(text), int(raw_limit))
        ward_rows = await conn.fetch(WARD_SQL, _like(text))
    devices = [{"id": r["id"], "kind": r["kind"], "name": r["name"], "ward": r["ward"],
                "ward_name": r["ward_name"], "address": r["address"], "center": [r["lon"], r["lat"]]}
               for r in rows]
    wards = [{"code": r["code"], "name": r["name"],
              "bbox": [r["xmin"], r["ymin"], r["xmax"], r["ymax"]]} for r in ward_rows]
    return json_response({"q": q, "wards": wards, "devices": devices},
                         headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- media proxy

def _media_source(props: dict[str, Any], src: str) -> tuple[str, str]:
    """The camera's URL for ``src`` (stream or snapshot), and the field it came from."""
    field = "snapshot_url" if src == "snapshot" else "stream_url"
    url = props.get(field)
    if not isinstance(url, str) or not url:
        raise NotFound(f"this device has no {field}")
    scheme = URL(url).scheme
    if scheme not in ("http", "https"):
        raise _invalid(f"properties.{field}", f"a {scheme or 'relative'} URL cannot be played in a "
                       "browser; the server relays http(s) streams (HLS, MJPEG) and snapshots")
    return url, field


def _resolve(base: str, path: str) -> URL:
    """``path`` relative to the stream's directory, refused if it leaves that origin."""
    root = URL(base)
    if not path:
        return root
    if path.startswith("/") or "\\" in path or any(seg == ".." for seg in path.split("/")):
        raise _invalid("path", "a media path stays below the camera's stream")
    target = root.join(URL(path))
    if target.origin() != root.origin():
        raise _invalid("path", "a media path stays on the camera's own host")
    return target


@routes.get("/api/v1/devices/{id}/media")
@routes.get("/api/v1/devices/{id}/media/{path:.+}")
async def media(request: web.Request) -> web.StreamResponse:
    """A camera's stream (``?src=stream``, the default; an HLS playlist's segments by their
    relative path) or its snapshot (``?src=snapshot``), relayed."""
    # Pictures of streets and people: the console's roles, not the crews' phone page.
    require(request, "viewer", "operator", "integrator")
    dev_id = request.match_info["id"]
    src = request.query.get("src", "stream")
    if src not in ("stream", "snapshot"):
        raise _invalid("src", "stream or snapshot")
    async with request.app[keys.DB].acquire() as conn:
        row = await conn.fetchrow("select kind, properties from devices where id = $1", dev_id)
    if row is None:
        raise NotFound(f"no device with id {dev_id!r}")
    base, field = _media_source(row["properties"] or {}, src)
    target = _resolve(base, request.match_info.get("path", ""))
    # Extra query parameters (HLS low-latency hints) are passed on; ours are not.
    extra = {k: v for k, v in request.query.items() if k not in ("src", "token")}
    if extra:
        target = target.update_query(extra)
    policy = OutboundPolicy(request.app[keys.SETTINGS].security.allow_outbound)
    await policy.check_url(str(target), field=f"properties.{field}")

    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=MEDIA_TIMEOUT,
                                     auto_decompress=False) as session:
        try:
            upstream = await session.get(target, allow_redirects=False)
        except RefusedAddress as err:
            raise _invalid(f"properties.{field}", str(err)) from None
        except (aiohttp.ClientError, TimeoutError) as err:
            return _problem(502, f"the camera did not answer: {err}")
        async with upstream:
            if upstream.status != 200:
                return _problem(502, f"the camera answered {upstream.status} for {target.path}")
            ctype = upstream.headers.get("Content-Type", "application/octet-stream")
            if not MEDIA_TYPES.match(ctype.split(";")[0].strip()) and not ctype.startswith("multipart/"):
                return _problem(502, f"the camera sent {ctype}, which is not a stream or a picture")
            resp = web.StreamResponse(headers={
                "Content-Type": ctype, "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'none'; sandbox"})
            if upstream.content_length is not None:
                resp.content_length = upstream.content_length
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp


def _problem(status: int, detail: str) -> web.Response:
    return json_response({"type": "about:blank", "title": "Bad Gateway", "status": status,
                          "detail": detail}, status=status, content_type="application/problem+json")
