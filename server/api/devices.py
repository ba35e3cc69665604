"""``/api/v1/devices``: the registry as GeoJSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import shapely
from aiohttp import web
from pydantic import ValidationError

from geo.geojson import GeometryError, parse_bbox
from server import keys
from server.api.models import DeviceCollectionIn, DeviceFeatureIn, DevicePatchIn, DeviceQuery
from server.errors import Conflict, Invalid, NotFound
from server.http import validate
from server.http.auth import principal, require
from server.http.jsonutil import json_response, read_json
from server.mqtt.dynsec import devices_changed
from server.registry.devices import (
    COMPUTED,
    ID_RE,
    RESERVED,
    SELECT_FEATURE,
    DeviceIn,
    FieldError,
    feature,
    features_of,
    fetch_one,
    insert_many,
    known_kinds,
)
from server.store.audit import audit
from server.vocab import severity_rank_sql

routes = web.RouteTableDef()

# A device's worst active alarm among one crew's alarms: what a crew token sees as its
# alarm_severity (its own crew's alarms only, as /api/v1/alarms and the tiles show).
CREW_SEVERITY = f"""
select device, (array_agg(severity order by {severity_rank_sql()}))[1] as severity
from alarms
where device = any($1::text[]) and assigned_crew = $2 and active and state <> 'closed'
  and not suppressed and not out_of_service
group by device"""


async def _crew_view(request: web.Request, conn: asyncpg.Connection,
                     features: list[dict[str, Any]]) -> None:
    """For a crew token, each feature's alarm_severity from its own crew's alarms only."""
    who = principal(request)
    if who.role != "crew" or not features:
        return
    rows = await conn.fetch(CREW_SEVERITY, [f["id"] for f in features], who.crew or "")
    own = {r["device"]: r["severity"] for r in rows}
    for f in features:
        f["properties"]["alarm_severity"] = own.get(f["id"])

GEOJSON = "application/geo+json"


@routes.get("/api/v1/devices")
async def list_devices(request: web.Request) -> web.Response:
    q = validate.query(request, DeviceQuery)
    try:
        bbox = parse_bbox(q.bbox)
    except GeometryError as e:
        raise Invalid(str(e), field="bbox") from None
    limit, after, ward, parent = q.limit, q.after, q.ward, q.parent
    kinds_param = q.kind or []
    async with request.app[keys.DB].acquire() as conn:
        if kinds_param:
            known = await known_kinds(conn)
            unknown = [k for k in kinds_param if k not in known]
            if unknown:
                raise Invalid(
                    f"unknown kind {', '.join(unknown)}; known kinds: {', '.join(sorted(known))}",
                    field="kind")
        where, args = [], []

        def arg(v: Any) -> str:
            args.append(v)
            return f"${len(args)}"

        if bbox:
            env = f"ST_MakeEnvelope({arg(bbox[0])}, {arg(bbox[1])}, {arg(bbox[2])}, {arg(bbox[3])}, 4326)"
            where.append(f"d.geom && {env} and ST_Intersects(d.geom, {env})")
        if kinds_param:
            where.append(f"d.kind = any({arg(kinds_param)}::text[])")
        if ward:
            where.append(f"d.ward = {arg(ward)}")
        if parent:
            where.append(f"d.parent = {arg(parent)}")
        if after:
            where.append(f"d.id > {arg(after)}")
        sql = SELECT_FEATURE
        if where:
            sql += " where " + " and ".join(where)
        sql += f" order by d.id limit {arg(limit + 1)}"
        rows = await conn.fetch(sql, *args)
        more = len(rows) > limit
        rows = rows[:limit]
        features = [feature(r) for r in rows]
        await _crew_view(request, conn, features)
    body: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": features,
        "numberReturned": len(rows),
    }
    if more:
        q = dict(request.query)
        q["after"] = rows[-1]["id"]
        body["links"] = [{"rel": "next", "type": GEOJSON,
                          "href": str(request.rel_url.with_query(q))}]
    return json_response(body, content_type=GEOJSON)


@routes.get("/api/v1/devices/{id}")
async def get_device(request: web.Request) -> web.Response:
    dev_id = request.match_info["id"]
    async with request.app[keys.DB].acquire() as conn:
        feat = await fetch_one(conn, dev_id)
        if feat is not None:
            await _crew_view(request, conn, [feat])
    if feat is None:
        raise NotFound(f"no device with id {dev_id!r}")
    return json_response(feat, content_type=GEOJSON)


@routes.post("/api/v1/devices")
async def create_devices(request: web.Request) -> web.Response:
    who = require(request, "integrator")
    doc = await read_json(request)
    validate.refuse_nul(doc, "the features")
    try:
        feats = features_of(doc)
    except ValueError as e:
        raise Invalid(str(e)) from None
    single = isinstance(doc, Mapping) and doc.get("type") == "Feature"
    pool = request.app[keys.DB]
    async with pool.acquire() as conn:
        items, errors = _parse_features(doc, feats, single, await known_kinds(conn))
        ids = [d.id for d in items]
        dupes = sorted({x for x in ids if ids.count(x) > 1})
        if dupes:
            raise Invalid(f"the same id appears more than once: {', '.join(dupes[:20])}")
        if errors:
            raise Invalid(
                f"{len(errors)} problem(s) in the submitted features; nothing was stored",
                errors=[e.as_dict() for e in errors[:1000]],
            )
        existing = await conn.fetch("select id from devices where id = any($1::text[])", ids)
        if existing:
            taken = ", ".join(r["id"] for r in existing[:20])
            raise Conflict(f"device id(s) already exist: {taken}; use PATCH to change them")
        await _check_refs(conn, items, ids)
        async with conn.transaction():
            await insert_many(conn, items)
            await audit(conn, who.actor, "device.create", target=f"{len(items)} device(s)",
                        device=items[0].id if len(items) == 1 else None,
                        details={"ids": ids[:100]})
        await request.app[keys.DIRECTORY].sync(conn, ids)
        await devices_changed(request.app, added=ids)
        if single:
            feat = await fetch_one(conn, items[0].id)
            return json_response(feat, status=201, content_type=GEOJSON,
                                 headers={"Location": f"/api/v1/devices/{items[0].id}"})
        rows = await conn.fetch(SELECT_FEATURE + " where d.id = any($1::text[]) order by d.id", ids)
    return json_response({"type": "FeatureCollection", "features": [feature(r) for r in rows]},
                         status=201, content_type=GEOJSON)


def _raw_id(feat: Any) -> str | None:
    props = feat.get("properties") if isinstance(feat, Mapping) else None
    dev_id = feat.get("id") if isinstance(feat, Mapping) else None
    if dev_id is None and isinstance(props, Mapping):
        dev_id = props.get("id")
    return dev_id if isinstance(dev_id, str) and ID_RE.fullmatch(dev_id) else None


def _parse_features(doc: Any, feats: list[Any], single: bool,
                    kinds: frozenset[str]) -> tuple[list[DeviceIn], list[FieldError]]:
    """The features as DeviceIn (models DeviceFeatureIn, DeviceCollectionIn), or every problem
    of every feature, each with the feature's index and id."""
    errors: list[FieldError] = []
    parsed: list[DeviceFeatureIn] = []
    try:
        got = (DeviceFeatureIn if single else DeviceCollectionIn).model_validate(
            doc, context={"kinds": kinds})
        parsed = [got] if isinstance(got, DeviceFeatureIn) else got.features
    except ValidationError as err:
        for e in err.errors(include_url=False):
            index, loc = (None, e["loc"]) if single else (e["loc"][1], e["loc"][2:])
            field = validate.field_name(loc) or "type"  # the item is no Feature at all
            dev_id = None if field == "id" else _raw_id(feats[index or 0])
            errors.append(FieldError(index, dev_id, field, validate.reason_of(e)))
    for i, f in enumerate(feats):  # a rule across two members, reported beside the others
        props = f.get("properties") if isinstance(f, Mapping) else None
        dev_id = _raw_id(f)
        if isinstance(props, Mapping) and dev_id is not None and props.get("parent") == dev_id:
            errors.append(FieldError(None if single else i, dev_id, "properties.parent",
                                     "a device cannot be its own parent"))
    if errors:
        return [], errors
    items = []
    for f in parsed:
        p = f.properties
        free = {k: v for k, v in (p.model_extra or {}).items()
                if k not in RESERVED and k not in COMPUTED and k != "id"}
        items.append(DeviceIn(f.id, p.kind, p.name or "", f.geometry, p.parent, p.external_id,
                              free, p.adapter, dict(p.adapter_config) if p.adapter_config else None))
    return items, []


async def _check_refs(conn: asyncpg.Connection, items, ids: list[str]) -> None:
    """Parents must exist (in the database or the same request); external ids be free."""
    batch = set(ids)
    parents = {d.parent for d in items if d.parent and d.parent not in batch}
    if parents:
        found = {r["id"] for r in await conn.fetch(
            "select id from devices where id = any($1::text[])", list(parents))}
        missing = sorted(parents - found)
        if missing:
            raise Invalid(f"unknown parent device(s): {', '.join(missing[:20])}")
    ext = [d.external_id for d in items if d.external_id]
    if len(ext) != len(set(ext)):
        raise Invalid("the same external_id appears more than once in the request")
    if ext:
        clash = await conn.fetch(
            "select id, external_id from devices where external_id = any($1::text[])", ext)
        if clash:
            c = clash[0]
            raise Conflict(f"external_id {c['external_id']!r} already belongs to {c['id']}")


@routes.patch("/api/v1/devices/{id}")
async def patch_device(request: web.Request) -> web.Response:
    """JSON merge patch (RFC 7396) of a device: geometry and/or properties."""
    who = require(request, "integrator")
    dev_id = request.match_info["id"]
    doc = await read_json(request)
    validate.refuse_nul(doc, "the patch")
    if not isinstance(doc, Mapping):
        raise Invalid("send a JSON object with geometry and/or properties")
    sets, args = [], [dev_id]

    def set_(col: str, expr: str, value: Any) -> None:
        args.append(value)
        sets.append(f"{col} = {expr.replace('?', f'${len(args)}')}")

    async with request.app[keys.DB].acquire() as conn:
        props = doc.get("properties") or {}  # as sent: a member present, or null, or absent
        # A kind must be one the database knows; the document lists the catalogue's.
        kinds = await known_kinds(conn) if isinstance(props, Mapping) and "kind" in props else None
        patch = validate.parse(DevicePatchIn, doc, "the patch", context={"kinds": kinds})
        if patch.id not in (None, dev_id):
            raise Invalid("a device id cannot be changed; create a new device instead")
        if "geometry" in doc:
            set_("geom", "ST_GeomFromWKB(?, 4326)", shapely.to_wkb(patch.geometry))
        current = await conn.fetchrow("select properties from devices where id = $1", dev_id)
        if current is None:
            raise NotFound(f"no device with id {dev_id!r}")
        if props.get("parent") == dev_id:
            raise Invalid("properties.parent must be another device's id", field="properties.parent")
        for col in ("kind", "name", "parent", "external_id", "adapter", "adapter_config"):
            if col in props:  # checked by DevicePatchIn
                set_(col, "?", props[col])
        free = dict(current["properties"])
        changed_free = False
        for k, v in props.items():
            if k in ("kind", "name", "parent", "external_id", "adapter", "adapter_config", "id"):
                continue
            if k in COMPUTED:
                continue  # read-only, computed on the way out
            changed_free = True
            if v is None:
                free.pop(k, None)
            else:
                free[k] = v
        if changed_free:
            set_("properties", "?", free)
        if sets:
            try:
                async with conn.transaction():
                    await conn.execute(
                        f"update devices set {', '.join(sets)}, updated_at = now() where id = $1",
                        *args)
                    changed = sorted({*props.keys(), *(["geometry"] if "geometry" in doc else [])})
                    await audit(conn, who.actor, "device.update", device=dev_id,
                                details={"changed": changed})
            except asyncpg.ForeignKeyViolationError:
                raise Invalid(f"unknown parent device {props.get('parent')!r}") from None
            except asyncpg.UniqueViolationError:
                ext = props.get("external_id")
                raise Conflict(f"external_id {ext!r} already belongs to another device") from None
        await request.app[keys.DIRECTORY].sync(conn, [dev_id])
        feat = await fetch_one(conn, dev_id)
    return json_response(feat, content_type=GEOJSON)


@routes.delete("/api/v1/devices/{id}")
async def delete_device(request: web.Request) -> web.Response:
    who = require(request, "integrator")
    dev_id = request.match_info["id"]
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        gone = await conn.fetchval("delete from devices where id = $1 returning id", dev_id)
        if gone is None:
            raise NotFound(f"no device with id {dev_id!r}")
        await audit(conn, who.actor, "device.delete", device=dev_id)
    request.app[keys.DIRECTORY].remove(dev_id)
    await devices_changed(request.app, removed=[dev_id])  # the broker disconnects it
    return web.Response(status=204)
