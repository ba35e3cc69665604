"""The OpenAPI 3.0 definition of /ogc (the landing page's ``service-desc``).

Its server URL is ``{origin}/ogc`` and its paths are relative to it, as OGC API documents
are. Clients read it: QGIS takes the page size from ``components.parameters.limit``
(``default`` and ``maximum``), so those are the server's own constants.
"""

from __future__ import annotations

from typing import Any

from server.api.ogc.common import GEOJSON, HTML, JSON, MVT, OPENAPI
from server.api.ogc.params import LIMIT_DEFAULT, LIMIT_MAX, OFFSET_MAX


def _param(name: str, where: str, description: str, schema: dict[str, Any], *,
           required: bool = False) -> dict[str, Any]:
    out = {"name": name, "in": where, "description": description, "required": required,
           "schema": schema}
    if where == "query":
        out.update(style="form", explode=False)
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _json(description: str, *types: str) -> dict[str, Any]:
    return {"description": description,
            "content": {t: {"schema": {"type": "string"} if t == HTML else {"type": "object"}}
                        for t in types}}


_ERRORS = {
    "400": {"$ref": "#/components/responses/Problem"},
    "401": {"$ref": "#/components/responses/Problem"},
    "404": {"$ref": "#/components/responses/Problem"},
}


def _get(summary: str, op_id: str, params: list, ok: dict[str, Any],
         **more: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "operationId": op_id, "parameters": [_ref("f"), *params],
                    "responses": {"200": ok, **more, **_ERRORS}}}


def document(server_url: str, collections: list[str]) -> dict[str, Any]:
    """``collections``: the collection ids, listed as the ``collectionId`` values."""
    collection = _ref("collectionId")
    tile_path = [collection, _ref("tileMatrixSetId"),
                 _param("tileMatrix", "path", "Zoom level, 0 to 18", {"type": "string"}, required=True),
                 _param("tileRow", "path", "Row (from the top)", {"type": "integer", "minimum": 0},
                        required=True),
                 _param("tileCol", "path", "Column (from the left)", {"type": "integer", "minimum": 0},
                        required=True)]
    tile_ok = {"description": "A Mapbox vector tile",
               "content": {MVT: {"schema": {"type": "string", "format": "binary"}}}}
    tile_more = {"204": {"description": "No features in this tile"},
                 "304": {"description": "Not modified (If-None-Match)"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "IOC city devices: OGC API – Features and Tiles", "version": "1.0.0",
                 "description": "Devices by kind as OGC API – Features collections (GeoJSON, HTML; "
                                "CRS by reference) and vector tiles over WebMercatorQuad.",
                 "contact": {"name": "IOC operations centre"}},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/": _get("The landing page", "getLandingPage", [], _json("Links to the API", JSON, HTML)),
            "/conformance": _get("The conformance classes", "getConformance", [],
                                 _json("conformsTo", JSON, HTML)),
            "/api": _get("This API definition", "getApi", [], _json("OpenAPI 3.0", OPENAPI, HTML)),
            "/collections": _get("The collections, one per device kind", "getCollections", [],
                                 _json("Collections", JSON, HTML)),
            "/collections/{collectionId}": _get("One collection", "describeCollection", [collection],
                                                _json("The collection", JSON, HTML)),
            "/collections/{collectionId}/items": _get(
                "The devices of a collection", "getFeatures",
                [collection, _ref("limit"), _ref("offset"), _ref("bbox"), _ref("bbox-crs"), _ref("crs"),
                 _ref("datetime")],
                _json("A GeoJSON FeatureCollection (Content-Crs names its CRS)", GEOJSON, HTML)),
            "/collections/{collectionId}/items/{featureId}": _get(
                "One device", "getFeature",
                [collection, _param("featureId", "path", "The device id", {"type": "string"},
                                    required=True), _ref("crs")],
                _json("A GeoJSON Feature", GEOJSON, HTML)),
            "/tileMatrixSets": _get("The tile matrix sets", "getTileMatrixSetsList", [],
                                    _json("WebMercatorQuad", JSON)),
            "/tileMatrixSets/{tileMatrixSetId}": _get(
                "A tile matrix set (OGC 2D TMS 2.0 JSON)", "getTileMatrixSet", [_ref("tileMatrixSetId")],
                _json("The tile matrix set", JSON)),
            "/tiles": _get("Vector tilesets of all collections together", "getDatasetTileSetsList", [],
                           _json("Tilesets", JSON)),
            "/tiles/{tileMatrixSetId}": _get(
                "The dataset's tileset metadata and its tile template", "getDatasetTileSet",
                [_ref("tileMatrixSetId")], _json("Tileset", JSON)),
            "/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}": _get(
                "A vector tile of every collection", "getDatasetTile", tile_path[1:], tile_ok, **tile_more),
            "/collections/{collectionId}/tiles": _get(
                "A collection's vector tilesets", "getCollectionTileSetsList", [collection],
                _json("Tilesets", JSON)),
            "/collections/{collectionId}/tiles/{tileMatrixSetId}": _get(
                "A collection's tileset metadata and its tile template", "getCollectionTileSet",
                [collection, _ref("tileMatrixSetId")], _json("Tileset", JSON)),
            "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}": _get(
                "A vector tile of a collection", "getCollectionTile", tile_path, tile_ok, **tile_more),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {
                "f": _param("f", "query", "The format (instead of the Accept header)",
                            {"type": "string", "enum": ["json", "html"]}),
                "collectionId": _param("collectionId", "path", "A device kind",
                                       {"type": "string", "enum": collections}, required=True),
                "tileMatrixSetId": _param("tileMatrixSetId", "path", "The tile matrix set",
                                          {"type": "string", "enum": ["WebMercatorQuad"]}, required=True),
                "limit": _param("limit", "query", "Features per page",
                                {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX,
                                 "default": LIMIT_DEFAULT}),
                "offset": _param("offset", "query", "Features to skip (the next link sets it)",
                                 {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX, "default": 0}),
                "bbox": _param("bbox", "query", "minLon,minLat,maxLon,maxLat in CRS84, or in bbox-crs's "
                               "axis order", {"type": "array", "minItems": 4, "maxItems": 6,
                                              "items": {"type": "number"}}),
                "bbox-crs": _param("bbox-crs", "query", "The CRS of bbox (default CRS84)",
                                   {"type": "string", "format": "uri"}),
                "crs": _param("crs", "query", "The CRS of the geometries (default CRS84)",
                              {"type": "string", "format": "uri"}),
                "datetime": _param("datetime", "query", "An instant, a date or an interval (.. for an "
                                   "open end), matched against last_seen", {"type": "string"}),
            },
            "responses": {
                "Problem": {"description": "An RFC 9457 problem naming the parameter at fault",
                            "content": {"application/problem+json": {"schema": {"type": "object"}}}},
            },
        },
    }
