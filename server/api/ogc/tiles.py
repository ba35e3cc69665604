"""OGC API – Tiles over the vector layers: the WebMercatorQuad tile matrix set
(morecantile's), tilesets per collection and for all collections together (``/ogc/tiles``),
their metadata with the tile template, and the tiles.

A tile is the XYZ tile ``/tiles/{layer}/{z}/{x}/{y}.mvt`` (server/api/tiles.py) at
``x = tileCol``, ``y = tileRow``: the request is handed to that route's own handler, so its
cache, ETags and whatever role rules it applies hold here unchanged. The path puts the
row before the column, as OGC API – Tiles does.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from yarl import URL

from server import keys
from server.api.ogc.collections import find
from server.api.ogc.common import JSON, MVT, REL_TILING_SCHEME, ROOT, Links, json_doc, wants_html
from server.api.ogc.crs import CRS84
from server.errors import Invalid, NotFound
from tiles.catalogue import AGGREGATE_FIELDS, Layer
from tiles.sql import TMS

routes = web.RouteTableDef()

TMS_ID = "WebMercatorQuad"
MAX_LAYERS = 32  # server/api/tiles.py's MAX_COMPOSITE: at most this many layers in one tile
_DIMENSION = {"point": 0, "line": 1, "polygon": 2}
_TYPES = {"String": "string", "Number": "number", "Boolean": "boolean"}


def _tms_id(request: web.Request) -> str:
    tms_id = request.match_info["tileMatrixSetId"]
    if tms_id != TMS_ID:
        raise NotFound(f"no tile matrix set {tms_id!r}; the one offered is {TMS_ID}",
                       field="tileMatrixSetId")
    return tms_id


def _tms_doc() -> dict[str, Any]:
    """The OGC 2D Tile Matrix Set 2.0 JSON encoding (morecantile's)."""
    return TMS.model_dump(mode="json", by_alias=True, exclude_none=True)


TMS_CRS = _tms_doc()["crs"]  # http://www.opengis.net/def/crs/EPSG/0/3857


@routes.get(ROOT + "/tileMatrixSets")
async def tile_matrix_sets(request: web.Request) -> web.Response:
    wants_html(request, html=False)
    ln = Links(request)
    return json_doc({
        "links": [ln.link("self", ROOT + "/tileMatrixSets", JSON, "Tile matrix sets")],
        "tileMatrixSets": [{
            "id": TMS_ID, "title": TMS.title, "uri": TMS.uri, "crs": TMS_CRS,
            "links": [ln.link("self", f"{ROOT}/tileMatrixSets/{TMS_ID}", JSON, TMS.title),
                      ln.link(REL_TILING_SCHEME, f"{ROOT}/tileMatrixSets/{TMS_ID}", JSON, TMS.title)],
        }],
    })


@routes.get(ROOT + "/tileMatrixSets/{tileMatrixSetId}")
async def tile_matrix_set(request: web.Request) -> web.Response:
    wants_html(request, html=False)
    _tms_id(request)
    return json_doc(_tms_doc())


# ---------------------------------------------------------------- tilesets
def _kind_layers(request: web.Request) -> list[Layer]:
    layers = sorted((lyr for lyr in request.app[keys.TILES].layers.values() if lyr.source == "kind"),
                    key=lambda lyr: lyr.id)
    return layers[:MAX_LAYERS]


def _properties(layer: Layer) -> dict[str, Any]:
    fields = dict(layer.fields)
    if layer.detail_minzoom > layer.minzoom:
        fields.update({k: v for k, v in AGGREGATE_FIELDS.items() if k not in fields})
    props = {}
    for name, desc in fields.items():
        head, _, rest = desc.partition(":")
        props[name] = {"type": _TYPES.get(head.split(" ")[0], "string"), "description": rest.strip() or head}
    return {"type": "object", "properties": props}


def _limits(bounds: tuple[float, float, float, float], minzoom: int, maxzoom: int) -> list[dict[str, Any]]:
    w, s, e, n = bounds
    out = []
    for z in range(minzoom, maxzoom + 1):
        top_left, bottom_right = TMS.tile(w, n, z), TMS.tile(e, s, z)
        last = (1 << z) - 1
        out.append({"tileMatrix": str(z),
                    "minTileRow": max(0, top_left.y), "maxTileRow": min(last, bottom_right.y),
                    "minTileCol": max(0, top_left.x), "maxTileCol": min(last, bottom_right.x)})
    return out


async def _bounds(request: web.Request, layers: list[Layer]) -> tuple[float, float, float, float]:
    service = request.app[keys.TILES]
    boxes = [await service.extent(layer) for layer in layers]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
            max(b[3] for b in boxes))


def _tileset_summary(ln: Links, base: str, title: str) -> dict[str, Any]:
    return {
        "title": title, "dataType": "vector", "crs": TMS_CRS, "tileMatrixSetURI": TMS.uri,
        "links": [ln.link("self", f"{base}/{TMS_ID}", JSON, f"{title}: {TMS_ID} tileset"),
                  ln.link(REL_TILING_SCHEME, f"{ROOT}/tileMatrixSets/{TMS_ID}", JSON, TMS.title)],
    }


async def _tileset(request: web.Request, base: str, title: str, layers: list[Layer],
                   spec: str) -> dict[str, Any]:
    ln = Links(request)
    bounds = await _bounds(request, layers)
    minzoom, maxzoom = min(lyr.minzoom for lyr in layers), max(lyr.maxzoom for lyr in layers)
    w, s, e, n = bounds
    return {
        "title": title,
        "dataType": "vector",
        "crs": TMS_CRS,
        "tileMatrixSetURI": TMS.uri,
        "boundingBox": {"lowerLeft": [w, s], "upperRight": [e, n], "crs": CRS84},
        "tileMatrixSetLimits": _limits(bounds, minzoom, maxzoom),
        "layers": [{"id": lyr.id, "title": lyr.title_en, "dataType": "vector",
                    **({"geometryDimension": _DIMENSION[lyr.geometry]} if lyr.geometry in _DIMENSION else {}),
                    "minTileMatrix": str(lyr.minzoom), "maxTileMatrix": str(lyr.maxzoom),
                    "propertiesSchema": _properties(lyr)} for lyr in layers],
        "links": [
            ln.link("self", f"{base}/{TMS_ID}", JSON, f"{title}: {TMS_ID} tileset"),
            ln.link(REL_TILING_SCHEME, f"{ROOT}/tileMatrixSets/{TMS_ID}", JSON, TMS.title),
            {"rel": "item", "type": MVT, "templated": True, "title": f"{title}: Mapbox vector tiles",
             "href": ln.template(f"{base}/{TMS_ID}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}")},
            {"rel": "alternate", "type": "application/vnd.mapbox.tile+json", "title": "TileJSON",
             "href": ln.href(f"/tiles/{spec}.json")},
        ],
    }


@routes.get(ROOT + "/collections/{collectionId}/tiles")
async def collection_tilesets(request: web.Request) -> web.Response:
    wants_html(request, html=False)
    layer = find(request)
    ln = Links(request)
    base = f"{ROOT}/collections/{layer.id}/tiles"
    return json_doc({"links": [ln.link("self", base, JSON, f"{layer.title_en}: tilesets")],
                     "tilesets": [_tileset_summary(ln, base, layer.title_en)]})


@routes.get(ROOT + "/collections/{collectionId}/tiles/{tileMatrixSetId}")
async def collection_tileset(request: web.Request) -> web.Response:
    wants_html(request, html=False)
    layer = find(request)
    _tms_id(request)
    base = f"{ROOT}/collections/{layer.id}/tiles"
    doc = await _tileset(request, base, layer.title_en, [layer], layer.id)
    doc["links"].append(Links(request).link("collection", f"{ROOT}/collections/{layer.id}", JSON,
                                            layer.title_en))
    return json_doc(doc)


@routes.get(ROOT + "/tiles")
async def dataset_tilesets(request: web.Request) -> web.Response:
    wants_html(request, html=False)
    ln = Links(request)
    base = ROOT + "/tiles"
    return json_doc({"links": [ln.link("self", base, JSON, "Tilesets of every collection")],
                     "tilesets": [_tileset_summary(ln, base, "Every collection")]})


@routes.get(ROOT + "/tiles/{tileMatrixSetId}")
async def dataset_tileset(request: web.Request) -> web.Response:
    wants_html(request, html=False)
    _tms_id(request)
    layers = _kind_layers(request)
    if not layers:
        raise NotFound("there are no collections, so no tiles")
    spec = ",".join(lyr.id for lyr in layers)
    return json_doc(await _tileset(request, ROOT + "/tiles", "Every collection", layers, spec))


# ---------------------------------------------------------------- tiles
def _index(request: web.Request, name: str, limit: int, zoom: int) -> int:
    raw = request.match_info[name]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise Invalid(f"{name} must be a non-negative integer, got {raw!r}", field=name)
    value = int(raw)
    if value >= limit:
        raise NotFound(f"{name}={value} is outside tile matrix {zoom} of {TMS_ID} (0 to {limit - 1})",
                       field=name)
    return value


def _coords(request: web.Request, layers: list[Layer]) -> tuple[int, int, int]:
    _tms_id(request)
    raw = request.match_info["tileMatrix"]
    maxzoom = max(lyr.maxzoom for lyr in layers)
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 3:
        raise Invalid(f"tileMatrix must be a zoom level 0 to {maxzoom}, got {raw!r}", field="tileMatrix")
    z = int(raw)
    if z > maxzoom:
        raise NotFound(f"tileMatrix {z} is beyond this tileset's deepest level, {maxzoom}",
                       field="tileMatrix")
    n = 1 << z
    return z, _index(request, "tileRow", n, z), _index(request, "tileCol", n, z)


async def _xyz(request: web.Request, spec: str, z: int, row: int, col: int) -> web.StreamResponse:
    """The XYZ route's answer for this tile, from its own handler."""
    sub = request.clone(rel_url=URL(f"/tiles/{spec}/{z}/{col}/{row}.mvt").with_query(request.query))
    match = await request.app.router.resolve(sub)
    match.add_app(request.app)
    match.freeze()
    sub._match_info = match  # what aiohttp's Application._handle sets before calling a handler
    return await match.handler(sub)


@routes.get(ROOT + "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}")
async def collection_tile(request: web.Request) -> web.StreamResponse:
    layer = find(request)
    z, row, col = _coords(request, [layer])
    return await _xyz(request, layer.id, z, row, col)


@routes.get(ROOT + "/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}")
async def dataset_tile(request: web.Request) -> web.StreamResponse:
    layers = _kind_layers(request)
    if not layers:
        raise NotFound("there are no collections, so no tiles")
    z, row, col = _coords(request, layers)
    return await _xyz(request, ",".join(lyr.id for lyr in layers), z, row, col)
