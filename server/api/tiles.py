"""``/tiles``: the layer list, TileJSON per layer, and MVT tiles (WebMercatorQuad, XYZ).

``{layer}`` may also name several layers separated by commas (``streetlight,camera,alarms``):
the tile then holds one MVT layer each (MVT layers concatenate as bytes, so each comes from
the cache on its own), so a map needs one request per tile position instead of one per
layer.

A client that sends ``Accept-Encoding: gzip`` gets the tile gzip-compressed
(``Content-Encoding: gzip``, its own ETag); every tile response says ``Vary: Accept-Encoding``.
The compressed bytes are cached beside the tiles (keyed by the uncompressed ETag), so a tile is
compressed once per change, and no middleware compresses the responses again.

Any valid token may read tiles (viewers included); the auth middleware checks it, from the
``Authorization`` header or ``?token=`` (which MapLibre tile URLs can carry). A crew token's
tiles show its own crew's alarms only, as ``/api/v1/alarms`` does: the ``alarms`` layer, and
the alarm counts and severities of ``ward_stats`` and of aggregate device tiles.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from server import keys
from server.http.auth import principal
from server.http.jsonutil import json_response
from server.http.problems import Problem
from server.store.db import create_pool
from tiles.cache import Entry
from tiles.catalogue import Layer
from tiles.service import TileService, etag_of
from tiles.tilejson import layer_list, tilejson

MVT = "application/vnd.mapbox-vector-tile"
MAX_COMPOSITE = 32
# Compressing a large tile takes milliseconds: off the event loop beyond this size.
GZIP_INLINE_MAX = 64 * 1024
GZIP_LEVEL = 6
GZIP_KEEP_S = 3600.0  # the key holds the ETag, so this only ages unused entries out

routes = web.RouteTableDef()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) on release.

    The tile pool runs only read-only single statements, which leave no session state behind;
    the reset was one more round trip per tile, about a tenth of an uncached tile's cost.
    """


async def tiles_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = await create_pool(settings.database_url, min_size=1, max_size=settings.tiles.pool_size,
                             reset=_keep_session, application_name="ioc-server tiles")
    service = TileService(pool, settings.tiles)
    try:
        await service.start()
        app[keys.TILES] = service
        yield
    finally:
        await service.close()
        await pool.close()


def _layer(service: TileService, name: str) -> Layer:
    layer = service.layers.get(name)
    if layer is None:
        raise Problem(404, f"no tile layer {name!r}; the layers are: {', '.join(sorted(service.layers))}"
                           " (GET /tiles lists them)")
    return layer


def _layers(service: TileService, spec: str) -> list[Layer]:
    names = list(dict.fromkeys(spec.split(",")))
    if len(names) > MAX_COMPOSITE:
        raise Problem(400, f"at most {MAX_COMPOSITE} layers in one tile, got {len(names)}")
    return [_layer(service, name) for name in names]


def _coord(name: str, raw: str, limit: int, zoom: int) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise Problem(400, f"tile {name} must be a non-negative integer, got {raw!r}")
    value = int(raw)
    if value >= limit:
        raise Problem(400, f"tile {name}={value} is out of range at zoom {zoom}: 0 to {limit - 1}")
    return value


def _zxy(layers: list[Layer], match: dict[str, str]) -> tuple[int, int, int]:
    raw_z = match["z"]
    if not (raw_z.isascii() and raw_z.isdigit()) or len(raw_z) > 3:
        raise Problem(400, f"tile zoom must be a non-negative integer, got {raw_z!r}")
    z = int(raw_z)
    for layer in layers:
        if z > layer.maxzoom:
            raise Problem(400, f"zoom {z} is beyond the maxzoom {layer.maxzoom} of layer {layer.id!r};"
                               " over-zoom the maxzoom tile instead (TileJSON maxzoom)")
    n = 1 << z
    return z, _coord("x", match["x"], n, z), _coord("y", match["y"], n, z)


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header accepts gzip (``gzip;q=0`` refuses it)."""
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return True
    return False


async def _gzipped(service: TileService, key: tuple, etag: str, data: bytes) -> bytes:
    """``data`` compressed, from the tile cache when this ETag was compressed before."""
    now = time.monotonic()
    if service.cache.max_bytes:
        hit = service.cache.get(key, etag, now)
        if hit is not None:
            return hit.data
    if len(data) <= GZIP_INLINE_MAX:
        packed = gzip.compress(data, GZIP_LEVEL, mtime=0)
    else:
        packed = await asyncio.to_thread(gzip.compress, data, GZIP_LEVEL, mtime=0)
    if service.cache.max_bytes:
        service.cache.put(key, Entry(packed, etag, etag, now + GZIP_KEEP_S))
    return packed


def _base(request: web.Request) -> str:
    return str(request.url.origin())


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


@routes.get("/tiles")
async def list_layers(request: web.Request) -> web.Response:
    service = request.app[keys.TILES]
    s = service.settings
    layers = sorted(service.layers.values(), key=lambda lyr: (lyr.source != "kind", lyr.id))
    return json_response(layer_list(layers, _base(request), request.query.get("token"),
                                    s.max_age_s, round(s.live_ttl_s)))


@routes.get("/tiles/{layer}.json")
async def get_tilejson(request: web.Request) -> web.Response:
    service = request.app[keys.TILES]
    layers = _layers(service, request.match_info["layer"])
    s = service.settings
    boxes = [await service.extent(layer) for layer in layers]
    bounds = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
              max(b[3] for b in boxes))
    doc = tilejson(layers, _base(request), request.query.get("token"), bounds, s.max_age_s,
                   round(s.live_ttl_s))
    return json_response(doc)


@routes.get("/tiles/{layer}/{z}/{x}/{y}.mvt")
async def get_tile(request: web.Request) -> web.Response:
    service = request.app[keys.TILES]
    match = request.match_info
    layers = _layers(service, match["layer"])
    z, x, y = _zxy(layers, match)
    who = principal(request)
    crew = (who.crew or "") if who.role == "crew" else None  # "": a crew token of no crew
    if len(layers) == 1:
        entry = await service.tile(layers[0], z, x, y, crew)
        data, etag, max_age = entry.data, entry.etag, service.max_age(layers[0], z)
    else:
        entries = await asyncio.gather(*(service.tile(layer, z, x, y, crew) for layer in layers))
        data = b"".join(e.data for e in entries)
        etag = etag_of("".join(e.etag for e in entries).encode())
        max_age = min(service.max_age(layer, z) for layer in layers)
    gz = bool(data) and accepts_gzip(request.headers.get("Accept-Encoding"))
    if gz:
        etag = etag[:-1] + '-gz"'  # a representation of its own (RFC 9110 8.8.3)
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={max_age}", "Vary": "Accept-Encoding"}
    inm = request.headers.get("If-None-Match")
    if inm and _matches(inm, etag):
        return web.Response(status=304, headers=headers)
    if not data:
        return web.Response(status=204, headers=headers)
    if gz:
        key = ("gzip", match["layer"], z, x, y, crew)
        data = await _gzipped(service, key, etag, data)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=data, content_type=MVT, headers=headers)
