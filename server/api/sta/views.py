"""The routes: the service root, and every resource path below it (entity sets, entities,
navigation, properties, ``$value`` and ``$ref``), rendered as SensorThings 1.1 JSON with
``@iot.id``, ``@iot.selfLink``, navigation links, ``@iot.count`` and ``@iot.nextLink``.

Same tokens and roles as the rest of the HTTP API (the auth middleware): every role may
read devices and their telemetry, and nothing here carries alarms, crews or people.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from yarl import URL

from server import keys
from server.api.sta.model import SETS, EntitySet
from server.api.sta.query import Expand, Options, Segment, parse_options, parse_path
from server.api.sta.resources import Link, Rows, collection, expand_many, expand_one, one
from server.errors import Invalid, NotFound
from server.http.jsonutil import dumps

ROOT = "/sta/v1.1"
_REQ = "http://www.opengis.net/spec/iot_sensing/1.1/req/"
CONFORMANCE = (
    _REQ + "datamodel",
    _REQ + "resource-path/resource-path-to-entities",
    _REQ + "request-data",
)

routes = web.RouteTableDef()


def _json(obj: Any) -> web.Response:
    return web.Response(body=dumps(obj), content_type="application/json")


def _base(request: web.Request) -> str:
    return str(request.url.origin()) + ROOT


def self_link(base: str, es: EntitySet, entity_id: str) -> str:
    return f"{base}/{es.name}('{entity_id.replace(chr(39), chr(39) * 2)}')"


@routes.get(ROOT)
async def service_root(request: web.Request) -> web.Response:
    base = _base(request)
    return _json({"value": [{"name": name, "url": f"{base}/{name}"} for name in SETS],
                  "serverSettings": {"conformance": list(CONFORMANCE)}})


@routes.get(ROOT + "/{path:.*}")
async def resource(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    if not path.strip("/"):
        return await service_root(request)
    segments = parse_path(path)
    first = segments[0]
    es = SETS.get(first.name)
    if es is None:
        raise NotFound(f"no entity set {first.name[:60]!r}; the entity sets are {', '.join(SETS)}",
                       field="path")
    async with request.app[keys.DB].acquire() as conn:
        return await _answer(request, conn, es, first.key, segments[1:])


async def _answer(request: web.Request, conn: asyncpg.Connection, es: EntitySet, key: str | None,
                  rest: list[Segment]) -> web.Response:
    """Walk the path: every segment but the last names one entity (keyed, or a to-one
    navigation) whose row links the next set."""
    base = _base(request)
    links: list[Link] = []
    single = key is not None
    where = f"{es.name}('{key}')" if key is not None else es.name
    while rest:
        seg, rest = rest[0], rest[1:]
        if seg.name == "$ref" and not rest:
            return await _refs(request, conn, es, key, links, single, base)
        if not single:
            raise Invalid(f"{where} is a collection: name one entity, e.g. {es.name}('…')/{seg.name}",
                          field="path")
        row = await _entity(conn, es, key, links, where)
        if seg.name in es.navs:
            nav = es.navs[seg.name]
            links = [Link(nav.link, (nav.value(row),))]
            es, key = SETS[nav.target], seg.key
            single = key is not None or not nav.many
            where = f"{where}/{seg.name}" + (f"('{key}')" if key is not None else "")
            continue
        if seg.key is None and seg.name in (*es.fields, "@iot.id", "id"):
            return _property(es, row, seg.name, rest, base, where)
        raise NotFound(f"{es.name} have no property or navigation {seg.name[:60]!r}; they have "
                       f"{', '.join([*es.fields, *es.navs])}", field="path")
    opts = parse_options(request.query, es)
    if single:
        if key is None:  # a to-one navigation: the one entity under the link
            got = await collection(conn, es, links, Options(top=1))
            if not got.rows:
                raise NotFound(f"{where} is not set", field="path")
            row = got.rows[0]
        else:
            row = await _entity(conn, es, key, links, where)
        if opts.filter is not None or opts.orderby or "$top" in opts.raw or "$skip" in opts.raw:
            raise Invalid("one entity takes $select and $expand only; $filter, $orderby, $top and "
                          "$skip apply to collections", field=next(
                              n for n in ("$filter", "$orderby", "$top", "$skip") if n in opts.raw))
        body = (await _render(conn, es, [row], opts, base))[0]
        return _json(body)
    page = await collection(conn, es, links, opts)
    body: dict[str, Any] = {}
    if page.total is not None:
        body["@iot.count"] = page.total
    if page.more and opts.top:  # $top=0 asks for the count alone: no next page
        body["@iot.nextLink"] = _next(request, opts)
    body["value"] = await _render(conn, es, page.rows, opts, base)
    return _json(body)


async def _entity(conn: asyncpg.Connection, es: EntitySet, key: str | None, links: list[Link],
                  where: str) -> Any:
    if key is None:
        got = await collection(conn, es, links, Options(top=1))
        if not got.rows:
            raise NotFound(f"{where} is not set", field="path")
        return got.rows[0]
    _check_key(es, key)
    row = await one(conn, es, key, links)
    if row is None:
        raise NotFound(f"no {where}", field="path")
    return row


def _check_key(es: EntitySet, key: str) -> None:
    """Ids of a shape the set never has are a 400 saying the shape (not a 404)."""
    if es.name == "Datastreams" and key.count("~") != 1:
        raise Invalid(f"a Datastream's id is '<device id>~<metric>', e.g. 'SL-000123~power_w', "
                      f"got {key[:80]!r}", field="@iot.id")
    if es.name == "Observations":
        parts = key.split("~")
        if len(parts) != 3 or not (parts[2].isascii() and parts[2].isdigit()) or len(parts[2]) > 18:
            raise Invalid("an Observation's id is '<device id>~<metric>~<microseconds since "
                          f"1970-01-01>', e.g. 'SL-000123~power_w~1796036400000000', got {key[:80]!r}",
                          field="@iot.id")


def _property(es: EntitySet, row: Any, name: str, rest: list[Segment], base: str,
              where: str) -> web.Response:
    name = "@iot.id" if name == "id" else name
    value = es.id_of(row) if name == "@iot.id" else es.render(row, base).get(name)
    if not rest:
        return _json({name: value})
    if len(rest) == 1 and rest[0].name == "$value" and rest[0].key is None:
        if value is None:
            raise NotFound(f"{where}/{name} has no value", field="path")
        text = value if isinstance(value, str) else dumps(value).decode()
        return web.Response(text=text, content_type="text/plain")
    raise NotFound(f"nothing below {where}/{name} but $value", field="path")


async def _refs(request: web.Request, conn: asyncpg.Connection, es: EntitySet, key: str | None,
                links: list[Link], single: bool, base: str) -> web.Response:
    opts = parse_options(request.query, es)
    if opts.expand or opts.select:
        raise Invalid("$ref lists links only: $select and $expand do not apply",
                      field="$select" if opts.select else "$expand")
    if single:
        row = await _entity(conn, es, key, links, es.name)
        return _json({"@iot.selfLink": self_link(base, es, es.id_of(row))})
    page = await collection(conn, es, links, opts)
    body: dict[str, Any] = {}
    if page.total is not None:
        body["@iot.count"] = page.total
    if page.more and opts.top:  # $top=0 asks for the count alone: no next page
        body["@iot.nextLink"] = _next(request, opts)
    body["value"] = [{"@iot.selfLink": self_link(base, es, es.id_of(r))} for r in page.rows]
    return _json(body)


def _next(request: web.Request, opts: Options) -> str:
    return str(request.url.update_query({"$top": str(opts.top), "$skip": str(opts.skip + opts.top)}))


# ---------------------------------------------------------------- rendering
def entity(es: EntitySet, row: Any, base: str, select: tuple[str, ...] | None) -> dict[str, Any]:
    entity_id = es.id_of(row)
    link = self_link(base, es, entity_id)
    out: dict[str, Any] = {"@iot.id": entity_id, "@iot.selfLink": link}
    out.update(es.render(row, base))
    for nav in es.navs:
        out[f"{nav}@iot.navigationLink"] = f"{link}/{nav}"
    if select is not None:
        keep = {f"{n}@iot.navigationLink" if n in es.navs else n for n in select}
        out = {k: v for k, v in out.items() if k in keep}
    return out


async def _render(conn: asyncpg.Connection, es: EntitySet, rows: list[Any], opts: Options,
                  base: str) -> list[dict[str, Any]]:
    out = [entity(es, r, base, opts.select) for r in rows]
    for ex in opts.expand:
        await _expand(conn, es, rows, out, ex, base)
    return out


async def _expand(conn: asyncpg.Connection, es: EntitySet, rows: list[Any],
                  out: list[dict[str, Any]], ex: Expand, base: str) -> None:
    nav = es.navs[ex.nav]
    target = SETS[nav.target]
    values = [nav.value(r) for r in rows]
    parents = sorted(set(values))
    if not nav.many:
        found = await expand_one(conn, target, nav.link, parents, ex.options)
        for body, value in zip(out, values, strict=True):
            if value in found:
                body[ex.nav] = entity(target, found[value], base, ex.options.select)
        return
    pages: dict[str, Rows] = await expand_many(conn, target, nav.link, parents, ex.options)
    for body, row, value in zip(out, rows, values, strict=True):
        page = pages.get(value) or Rows([], 0 if ex.options.count else None, False)
        body[ex.nav] = [entity(target, r, base, ex.options.select) for r in page.rows]
        if page.total is not None:
            body[f"{ex.nav}@iot.count"] = page.total
        if page.more and ex.options.top:
            query = {**ex.options.raw, "$top": str(ex.options.top),
                     "$skip": str(ex.options.skip + ex.options.top)}
            nav_url = URL(f"{self_link(base, es, es.id_of(row))}/{ex.nav}")
            body[f"{ex.nav}@iot.nextLink"] = str(nav_url.with_query(query))
