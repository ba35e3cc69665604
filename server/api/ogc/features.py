"""OGC API – Features: the landing page, conformance, the API definition, collections and
their items, in JSON (GeoJSON for features) or HTML by ``f=`` or the Accept header.

Items are the devices of the collection's kind, the same features and properties as
``GET /api/v1/devices`` (less the adapter binding, which is integration configuration, not
geodata), ordered by id and paged by ``offset`` with ``next``/``prev`` links and
``numberMatched``. ``datetime`` filters on ``last_seen``: a device never heard from has no
time and so matches no ``datetime`` filter. Every authenticated role may read them, as it
may read ``/api/v1/devices``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from server import keys
from server.api.ogc import crs as crs_mod
from server.api.ogc import html, params
from server.api.ogc.collections import Collection, catalogue, collection_ids, describe, find
from server.api.ogc.common import (
    CONFORMANCE,
    GEOJSON,
    HTML,
    JSON,
    OPENAPI,
    REL_TILESETS_VECTOR,
    REL_TMS,
    ROOT,
    Links,
    check_params,
    json_doc,
    wants_html,
)
from server.api.ogc.openapi import document
from server.errors import Invalid, NotFound
from server.registry.devices import ID_RE, SELECT_FEATURE, feature
from tiles.catalogue import Layer

routes = web.RouteTableDef()

TITLE = "IOC city devices"
DESCRIPTION = ("The city's devices (streetlights, cabinets, meters, sensors, cameras, …) as OGC API "
               "– Features collections, one per kind, and their vector tiles (OGC API – Tiles).")
TRS = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"

_GEOMETRY = "ST_AsGeoJSON(d.geom, 7)::jsonb as geometry"
if _GEOMETRY not in SELECT_FEATURE:  # a change there must be followed here, not go unnoticed
    raise ImportError("server.registry.devices.SELECT_FEATURE no longer selects " + _GEOMETRY)


def _select(crs: crs_mod.Crs) -> str:
    return SELECT_FEATURE.replace(_GEOMETRY, crs_mod.geometry_sql("d.geom", crs) + " as geometry")


def _feature(row) -> dict[str, Any]:
    feat = feature(row)
    feat["properties"].pop("adapter", None)
    feat["properties"].pop("adapter_config", None)
    return feat


def _crumbs(links: Links, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Landing page", links.href(ROOT, f="html")),
            ("Collections", links.href(ROOT + "/collections", f="html")), *extra]


# ---------------------------------------------------------------- landing, conformance, API
@routes.get(ROOT)
@routes.get(ROOT + "/")
async def landing(request: web.Request) -> web.Response:
    as_html = wants_html(request)
    ln = Links(request)
    doc = {
        "title": TITLE,
        "description": DESCRIPTION,
        "links": [
            *ln.self_and_alternate(ROOT, JSON, "This document", html=as_html),
            ln.link("service-desc", ROOT + "/api", OPENAPI, "The API definition (OpenAPI 3.0)"),
            ln.link("service-doc", ROOT + "/api", HTML, "The API documentation", f="html"),
            ln.link("conformance", ROOT + "/conformance", JSON, "Conformance classes", f="json"),
            ln.link("data", ROOT + "/collections", JSON, "The collections", f="json"),
            ln.link(REL_TMS, ROOT + "/tileMatrixSets", JSON, "Tile matrix sets"),
            ln.link(REL_TILESETS_VECTOR, ROOT + "/tiles", JSON, "Vector tiles of every collection"),
        ],
    }
    if as_html:
        return html.page(TITLE, html.paragraph(DESCRIPTION) + html.links(doc["links"]))
    return json_doc(doc)


@routes.get(ROOT + "/conformance")
async def conformance(request: web.Request) -> web.Response:
    doc = {"conformsTo": list(CONFORMANCE)}
    if wants_html(request):
        ln = Links(request)
        body = "<ul>" + "".join(f"<li>{html.value(c)}</li>" for c in CONFORMANCE) + "</ul>"
        return html.page("Conformance", body, [("Landing page", ln.href(ROOT, f="html"))])
    return json_doc(doc)


@routes.get(ROOT + "/api")
async def api(request: web.Request) -> web.Response:
    ln = Links(request)
    doc = document(ln.origin + ROOT, collection_ids(request))
    if wants_html(request):
        rows = [(html.value(method.upper()), html.value(path), html.value(op.get("summary")))
                for path, item in doc["paths"].items() for method, op in item.items()]
        body = (html.paragraph("Every request takes 'Authorization: Bearer <token>' (or ?token=).")
                + html.anchor(ln.href(ROOT + "/api", f="json"), "The OpenAPI 3.0 document")
                + html.table(("Method", "Path", "What it does"), rows))
        return html.page("API definition", body, [("Landing page", ln.href(ROOT, f="html"))])
    return json_doc(doc, OPENAPI)


# ---------------------------------------------------------------- collections
def _collection_doc(c: Collection, ln: Links, offered: list[crs_mod.Crs], *, as_html: bool,
                    own_links: bool) -> dict[str, Any]:
    path = f"{ROOT}/collections/{c.id}"
    first, last = c.interval
    links = (ln.self_and_alternate(path, JSON, c.title, html=as_html) if own_links
             else [ln.link("self", path, JSON, c.title, f="json")])
    return {
        "id": c.id,
        "title": c.title,
        "description": f"{c.title} ({c.title_vi}): the devices of kind {c.kind!r}",
        "itemType": "feature",
        "extent": {
            "spatial": {"bbox": [list(c.bbox)], "crs": crs_mod.CRS84},
            "temporal": {"interval": [[first, last]], "trs": TRS},
        },
        "crs": [x.uri for x in offered],
        "storageCrs": crs_mod.CRS84,
        "links": [
            *links,
            ln.link("items", path + "/items", GEOJSON, f"{c.title}: features", f="json"),
            ln.link("items", path + "/items", HTML, f"{c.title}: features (HTML)", f="html"),
            ln.link(REL_TILESETS_VECTOR, path + "/tiles", JSON, f"{c.title}: vector tiles"),
        ],
    }


@routes.get(ROOT + "/collections")
async def collections(request: web.Request) -> web.Response:
    as_html = wants_html(request)
    ln = Links(request)
    found = await catalogue(request)
    async with request.app[keys.DB].acquire() as conn:
        offered = await crs_mod.offered(conn)
    doc = {
        "links": ln.self_and_alternate(ROOT + "/collections", JSON, "The collections", html=as_html),
        "collections": [_collection_doc(c, ln, offered, as_html=as_html, own_links=False)
                        for c in found],
    }
    if as_html:
        rows = [(html.anchor(ln.href(f"{ROOT}/collections/{c.id}", f="html"), c.id), html.value(c.title),
                 html.anchor(ln.href(f"{ROOT}/collections/{c.id}/items", f="html"), "items"))
                for c in found]
        return html.page("Collections", html.table(("Collection", "Title", "Features"), rows),
                         [("Landing page", ln.href(ROOT, f="html"))])
    return json_doc(doc)


@routes.get(ROOT + "/collections/{collectionId}")
async def collection(request: web.Request) -> web.Response:
    layer = find(request)
    as_html = wants_html(request)
    ln = Links(request)
    (c,) = await describe(request, [layer])
    async with request.app[keys.DB].acquire() as conn:
        offered = await crs_mod.offered(conn)
    doc = _collection_doc(c, ln, offered, as_html=as_html, own_links=True)
    if as_html:
        first, last = c.interval
        body = (html.paragraph(doc["description"])
                + html.table(("Extent", ""), [
                    ("bbox (CRS84)", html.value(c.bbox)),
                    ("last_seen", html.value(f"{first or '..'} / {last or '..'}")),
                    ("CRS", html.value(doc["crs"]))])
                + html.links(doc["links"]))
        return html.page(c.title, body, _crumbs(ln))
    return json_doc(doc)


# ---------------------------------------------------------------- items
def _filters(layer: Layer, box: tuple | None, box_crs: crs_mod.Crs,
             when: params.Interval | None) -> tuple[str, list[Any]]:
    where, args = ["d.kind = $1"], [layer.kind]
    if box is not None:
        args.extend(box)
        where.append(f"ST_Intersects(d.geom, {crs_mod.bbox_sql(box_crs, len(args) - 3)})")
    if when is not None:
        if when.instant:
            args.append(when.start)
            where.append(f"s.last_seen = ${len(args)}")
        else:
            where.append("s.last_seen is not null")
            if when.start is not None:
                args.append(when.start)
                where.append(f"s.last_seen >= ${len(args)}")
            if when.end is not None:
                args.append(when.end)
                where.append(f"s.last_seen <= ${len(args)}")
    return " and ".join(where), args


_MATCHING = "from devices d left join device_state s on s.device_key = d.key where "


@routes.get(ROOT + "/collections/{collectionId}/items")
async def items(request: web.Request) -> web.Response:
    check_params(request, ("limit", "offset", "bbox", "bbox-crs", "crs", "datetime"))
    layer = find(request)
    as_html = wants_html(request)
    q = request.query
    limit = params.integer(q.get("limit"), "limit", params.LIMIT_DEFAULT, 1, params.LIMIT_MAX)
    offset = params.integer(q.get("offset"), "offset", 0, 0, params.OFFSET_MAX)
    when = params.datetime_filter(q.get("datetime"))
    async with request.app[keys.DB].acquire() as conn:
        offered = await crs_mod.offered(conn)
        out_crs = crs_mod.parse(q.get("crs"), offered, "crs")
        box_crs = crs_mod.parse(q.get("bbox-crs"), offered, "bbox-crs")
        box = params.bbox(q.get("bbox"), box_crs)
        box = crs_mod.clamp(box, box_crs) if box else None
        where, args = _filters(layer, box, box_crs, when)
        try:
            matched = await conn.fetchval("select count(*) " + _MATCHING + where, *args)
        except asyncpg.PostgresError as err:
            if box is None or box_crs.srid == 4326:
                raise
            # PROJ refuses points its projection cannot invert (far outside its domain)
            raise Invalid(f"bbox cannot be transformed from {box_crs.uri}: {err}", field="bbox") from None
        # The page's keys first, then their features: the feature query's per-device alarm
        # lookup then runs for the page only, not for every row an offset skips.
        n = len(args)
        page = (f"select d.key {_MATCHING}{where} order by d.id offset ${n + 1} limit ${n + 2}")
        rows = await conn.fetch(
            _select(out_crs) + f" where d.key = any(array({page})) order by d.id", *args, offset, limit)
    feats = [_feature(r) for r in rows]
    ln = Links(request)
    path = f"{ROOT}/collections/{layer.id}/items"
    query = {k: v for k, v in q.items() if k not in ("f", "token")}
    links = ln.self_and_alternate(path, GEOJSON, "This page", query, html=as_html)
    fmt, mtype = ("html", HTML) if as_html else ("json", GEOJSON)
    if offset + len(feats) < matched:
        links.append(ln.link("next", path, mtype, "Next page", {**query, "offset": offset + limit}, f=fmt))
    if offset > 0:
        links.append(ln.link("prev", path, mtype, "Previous page",
                             {**query, "offset": max(0, offset - limit)}, f=fmt))
    links.append(ln.link("collection", f"{ROOT}/collections/{layer.id}", JSON, layer.title_en, f="json"))
    doc = {
        "type": "FeatureCollection",
        "timeStamp": datetime.now(UTC),
        "numberMatched": matched,
        "numberReturned": len(feats),
        "links": links,
        "features": feats,
    }
    headers = {"Content-Crs": out_crs.header}
    if as_html:
        rows_html = [(html.anchor(ln.href(f"{path}/{f['id']}", f="html"), f["id"]),
                      html.value(f["properties"].get("name")), html.value(f["properties"].get("status")),
                      html.value(f["properties"].get("last_seen")), html.value(f["properties"].get("ward")))
                     for f in feats]
        body = (html.paragraph(f"{matched} matched; {offset + 1 if feats else offset}"
                               f"-{offset + len(feats)} shown.")
                + html.table(("id", "name", "status", "last_seen", "ward"), rows_html)
                + html.links([lk for lk in links if lk["rel"] in ("next", "prev", "alternate")]))
        resp = html.page(f"{layer.title_en}: features", body,
                         _crumbs(ln, (layer.title_en, ln.href(f"{ROOT}/collections/{layer.id}", f="html"))))
        resp.headers.update(headers)
        return resp
    return json_doc(doc, GEOJSON, headers)


@routes.get(ROOT + "/collections/{collectionId}/items/{featureId}")
async def item(request: web.Request) -> web.Response:
    check_params(request, ("crs",))
    layer = find(request)
    as_html = wants_html(request)
    fid = request.match_info["featureId"]
    if not ID_RE.fullmatch(fid):  # no device has such an id (and PostgreSQL text holds no NUL)
        raise NotFound(f"no feature {fid!r} in collection {layer.id!r}", field="featureId")
    async with request.app[keys.DB].acquire() as conn:
        offered = await crs_mod.offered(conn)
        out_crs = crs_mod.parse(request.query.get("crs"), offered, "crs")
        row = await conn.fetchrow(_select(out_crs) + " where d.id = $1 and d.kind = $2", fid, layer.kind)
    if row is None:
        raise NotFound(f"no feature {fid!r} in collection {layer.id!r}", field="featureId")
    feat = _feature(row)
    ln = Links(request)
    path = f"{ROOT}/collections/{layer.id}/items/{fid}"
    query = {k: v for k, v in request.query.items() if k not in ("f", "token")}
    feat["links"] = [
        *ln.self_and_alternate(path, GEOJSON, fid, query, html=as_html),
        ln.link("collection", f"{ROOT}/collections/{layer.id}", JSON, layer.title_en, f="json"),
    ]
    headers = {"Content-Crs": out_crs.header}
    if as_html:
        props = feat["properties"]
        rows = [(html.value(k), html.value(v)) for k, v in props.items()]
        rows.append(("geometry", html.value(feat["geometry"])))
        body = html.table(("Property", "Value"), rows) + html.links(feat["links"])
        resp = html.page(f"{fid}: {props.get('name') or ''}", body, _crumbs(
            ln, (layer.title_en, ln.href(f"{ROOT}/collections/{layer.id}", f="html")),
            ("Features", ln.href(f"{ROOT}/collections/{layer.id}/items", f="html"))))
        resp.headers.update(headers)
        return resp
    return json_doc(feat, GEOJSON, headers)
