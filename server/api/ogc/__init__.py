"""``/ogc``: OGC API – Features (Part 1 Core, GeoJSON, HTML, OpenAPI 3.0; Part 2 CRS by
reference) and OGC API – Tiles over the same collections, one per device kind.

    common       media types, conformance classes, content negotiation, links
    crs          the CRSs offered (CRS84, EPSG:4326, EPSG:3857, VN-2000) and their SQL
    params       bbox, datetime, limit and offset, each refusal naming its parameter
    collections  the collection catalogue (device kinds; report categories can join it)
    features     landing page, conformance, API definition, collections and items
    openapi      the OpenAPI 3.0 document at /ogc/api (the landing page's service-desc)
    tiles        tile matrix sets, tilesets and tiles (handed to the XYZ tile route)
    html         the HTML forms

Same tokens and roles as the rest of the HTTP API (the auth middleware); the XYZ URLs under
``/tiles`` are unchanged.
"""

from __future__ import annotations

from server.api.ogc import features, tiles

routes = [*features.routes, *tiles.routes]
