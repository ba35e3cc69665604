"""``/api/v1/crews``: the maintenance crews alarms are routed and escalated to.

A crew: ``id``, ``name``, ``ward`` (the ward it answers for), ``location`` (a GeoJSON Point:
its depot or last reported position, for nearest-crew routing), ``available``,
``escalation_level`` (1 first line, 2 supervisors, ...), ``contacts`` (``email``,
``webhook``, ``webhook_secret``, ``phone``). Everyone may read (the secret is never
shown); operators and admins write; a crew's own token may update its ``available`` and
``location`` (from the crew page on a phone).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from yarl import URL

from geo.geojson import GeometryError, parse_geometry
from server import keys
from server.http.auth import require
from server.http.jsonutil import json_response, read_json
from server.http.problems import Problem, bad_request
from server.notify import signing
from server.registry.devices import ID_RE
from server.settings import ROLES
from server.store.audit import audit

routes = web.RouteTableDef()

READERS = tuple(r for r in ROLES if r != "admin")
WRITERS = ("operator",)
FIELDS = ("id", "name", "ward", "location", "available", "escalation_level", "contacts")
CREW_SELF_FIELDS = frozenset({"available", "location"})
CONTACT_KEYS = ("email", "webhook", "webhook_secret", "phone")
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
MAX_LEVEL = 9

SELECT = """
    select c.id, c.name, c.ward, ST_AsGeoJSON(c.location)::jsonb as location, c.available,
           c.escalation_level, c.contacts, c.updated_at,
           (select count(*) from alarms a
            where a.assigned_crew = c.id and a.state <> 'closed') as open_alarms
    from crews c
"""


def view(row: asyncpg.Record) -> dict[str, Any]:
    contacts = dict(row["contacts"] or {})
    signed = contacts.pop("webhook_secret", None) is not None
    return {
        "id": row["id"], "name": row["name"], "ward": row["ward"], "location": row["location"],
        "available": row["available"], "escalation_level": row["escalation_level"],
        "contacts": contacts, "webhook_signed": signed, "open_alarms": row["open_alarms"],
        "updated_at": row["updated_at"],
    }


def _check_contacts(value: Any, errors: list[dict[str, str]], *, patch: bool) -> dict | None:
    if not isinstance(value, Mapping):
        errors.append({"field": "contacts", "reason": "must be an object such as "
                       '{"email": "crew01@example.org", "webhook": "https://..."}'})
        return None
    for key, v in value.items():
        where = f"contacts.{key}"
        if key not in CONTACT_KEYS:
            errors.append({"field": where, "reason": f"unknown contact; use {', '.join(CONTACT_KEYS)}"})
        elif v is None:
            if not patch:
                errors.append({"field": where, "reason": "omit it rather than sending null"})
        elif not isinstance(v, str) or not v.strip():
            errors.append({"field": where, "reason": "must be a non-empty string"})
        elif key == "email" and not EMAIL_RE.fullmatch(v):
            errors.append({"field": where, "reason": f"{v!r} is not an e-mail address"})
        elif key == "webhook":
            url = URL(v)
            if url.scheme not in ("http", "https") or not url.host:
                errors.append({"field": where, "reason": f"{v!r} is not an http(s) URL"})
        elif key == "webhook_secret":
            try:
                signing.check_secret(v)
            except ValueError as err:
                errors.append({"field": where, "reason": f"{err} (Standard Webhooks)"})
    return dict(value)


def parse(doc: Any, *, patch: bool) -> dict[str, Any]:
    """The columns a crew document sets, or a 400 naming every bad field."""
    if not isinstance(doc, Mapping):
        raise bad_request("send a JSON object with the crew's fields: " + ", ".join(FIELDS))
    errors: list[dict[str, str]] = []
    unknown = sorted(set(doc) - set(FIELDS) - {"webhook_signed", "open_alarms", "updated_at"})
    for k in unknown:
        errors.append({"field": k, "reason": f"unknown field; crews have {', '.join(FIELDS)}"})
    out: dict[str, Any] = {}
    if not patch:
        cid = doc.get("id")
        if not isinstance(cid, str) or not ID_RE.fullmatch(cid):
            errors.append({"field": "id", "reason": "required: letters, digits and _.:- "
                           "(up to 128), e.g. CREW-09"})
        else:
            out["id"] = cid
        if "name" not in doc:
            errors.append({"field": "name", "reason": "required"})
    if "name" in doc:
        if not isinstance(doc["name"], str) or not doc["name"].strip():
            errors.append({"field": "name", "reason": "must be a non-empty string"})
        else:
            out["name"] = doc["name"].strip()
    if "ward" in doc:
        if doc["ward"] is not None and (not isinstance(doc["ward"], str) or not doc["ward"]):
            errors.append({"field": "ward", "reason": "must be a ward code (e.g. W05) or null"})
        else:
            out["ward"] = doc["ward"]
    if "location" in doc:
        loc = doc["location"]
        if loc is None:
            out["location"] = None
        else:
            try:
                geom = parse_geometry(loc, "location")
                if geom.geom_type != "Point":
                    raise GeometryError(f"location must be a GeoJSON Point, got {geom.geom_type}")
                out["location"] = orjson.dumps(loc).decode()
            except GeometryError as err:
                errors.append({"field": "location", "reason": str(err)})
    if "available" in doc:
        if not isinstance(doc["available"], bool):
            errors.append({"field": "available", "reason": "must be true or false"})
        else:
            out["available"] = doc["available"]
    if "escalation_level" in doc:
        lvl = doc["escalation_level"]
        if isinstance(lvl, bool) or not isinstance(lvl, int) or not 1 <= lvl <= MAX_LEVEL:
            errors.append({"field": "escalation_level",
                           "reason": f"must be an integer 1 (first line) to {MAX_LEVEL}"})
        else:
            out["escalation_level"] = lvl
    if "contacts" in doc:
        contacts = _check_contacts(doc["contacts"], errors, patch=patch)
        if contacts is not None:
            out["contacts"] = contacts
    if errors:
        raise bad_request(f"{len(errors)} problem(s) in the crew; nothing was changed",
                          errors=errors)
    return out


async def _check_ward(conn: asyncpg.Connection, ward: str | None) -> None:
    if ward is None or await conn.fetchval("select 1 from wards where code = $1", ward):
        return
    known = [r["code"] for r in await conn.fetch("select code from wards order by code limit 50")]
    hint = f"; known wards: {', '.join(known)}" if known else "; no wards are loaded"
    raise bad_request(f"unknown ward {ward!r}{hint}",
                      errors=[{"field": "ward", "reason": "no such ward"}])


async def _fetch(conn: asyncpg.Connection, crew_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(SELECT + " where c.id = $1", crew_id)
    if row is None:
        raise Problem(404, f"no crew with id {crew_id!r}")
    return view(row)


@routes.get("/api/v1/crews")
async def list_crews(request: web.Request) -> web.Response:
    require(request, *READERS)
    where, args = [], []
    if ward := request.query.get("ward"):
        args.append(ward)
        where.append(f"c.ward = ${len(args)}")
    if (avail := request.query.get("available")) is not None:
        if avail not in ("true", "false"):
            raise bad_request(f"available must be true or false, got {avail!r}")
        args.append(avail == "true")
        where.append(f"c.available = ${len(args)}")
    sql = SELECT + (" where " + " and ".join(where) if where else "") + " order by c.id"
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(sql, *args)
    return json_response({"crews": [view(r) for r in rows], "numberReturned": len(rows)})


@routes.get("/api/v1/crews/{id}")
async def get_crew(request: web.Request) -> web.Response:
    require(request, *READERS)
    async with request.app[keys.DB].acquire() as conn:
        return json_response(await _fetch(conn, request.match_info["id"]))


@routes.post("/api/v1/crews")
async def create_crew(request: web.Request) -> web.Response:
    who = require(request, *WRITERS)
    cols = parse(await read_json(request), patch=False)
    async with request.app[keys.DB].acquire() as conn:
        await _check_ward(conn, cols.get("ward"))
        try:
            async with conn.transaction():
                await conn.execute(
                    """insert into crews (id, name, ward, location, available, escalation_level,
                                          contacts)
                       values ($1, $2, $3, ST_SetSRID(ST_GeomFromGeoJSON($4::text), 4326),
                               coalesce($5, true), coalesce($6, 1), coalesce($7, '{}'::jsonb))""",
                    cols["id"], cols["name"], cols.get("ward"), cols.get("location"),
                    cols.get("available"), cols.get("escalation_level"), cols.get("contacts"))
                await audit(conn, who.actor, "crew.create", target=cols["id"],
                            details={"fields": sorted(cols)})
        except asyncpg.UniqueViolationError:
            raise Problem(409, f"crew {cols['id']!r} already exists; PATCH it to change it") from None
        body = await _fetch(conn, cols["id"])
    return json_response(body, status=201, headers={"Location": f"/api/v1/crews/{cols['id']}"})


@routes.patch("/api/v1/crews/{id}")
async def patch_crew(request: web.Request) -> web.Response:
    """JSON merge patch (RFC 7396); ``contacts`` merge key by key, null removes one."""
    crew_id = request.match_info["id"]
    who = require(request, *WRITERS, "crew")
    doc = await read_json(request)
    if isinstance(doc, Mapping) and doc.get("id") not in (None, crew_id):
        raise bad_request("a crew id cannot be changed; create a new crew instead")
    cols = parse({k: v for k, v in doc.items() if k != "id"} if isinstance(doc, Mapping) else doc,
                 patch=True)
    if who.role == "crew":
        if who.crew != crew_id:
            raise Problem(403, f"a crew token may only update its own crew ({who.crew})")
        extra = sorted(set(cols) - CREW_SELF_FIELDS)
        if extra:
            raise Problem(403, f"a crew token may update only available and location, not "
                               f"{', '.join(extra)}")
    async with request.app[keys.DB].acquire() as conn:
        if "ward" in cols:
            await _check_ward(conn, cols["ward"])
        async with conn.transaction():
            current = await conn.fetchval("select contacts from crews where id = $1 for update",
                                          crew_id)
            if current is None:
                raise Problem(404, f"no crew with id {crew_id!r}")
            sets, args = [], [crew_id]
            for col, value in cols.items():
                if col == "contacts":
                    merged = dict(current)
                    for k, v in value.items():
                        if v is None:
                            merged.pop(k, None)
                        else:
                            merged[k] = v
                    value = merged
                args.append(value)
                expr = (f"ST_SetSRID(ST_GeomFromGeoJSON(${len(args)}::text), 4326)"
                        if col == "location" else f"${len(args)}")
                sets.append(f"{col} = {expr}")
            if sets:
                await conn.execute(
                    f"update crews set {', '.join(sets)}, updated_at = now() where id = $1", *args)
                await audit(conn, who.actor, "crew.update", target=crew_id,
                            details={"changed": sorted(cols)})
        body = await _fetch(conn, crew_id)
    return json_response(body)


@routes.delete("/api/v1/crews/{id}")
async def delete_crew(request: web.Request) -> web.Response:
    who = require(request, *WRITERS)
    crew_id = request.match_info["id"]
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        exists = await conn.fetchval("select 1 from crews where id = $1 for update", crew_id)
        if not exists:
            raise Problem(404, f"no crew with id {crew_id!r}")
        open_alarms = await conn.fetchval(
            "select count(*) from alarms where assigned_crew = $1 and state <> 'closed'", crew_id)
        if open_alarms:
            raise Problem(409, f"crew {crew_id!r} has {open_alarms} open alarm(s) assigned; "
                               "reassign them first, or set available to false instead")
        await conn.execute("delete from crews where id = $1", crew_id)
        await audit(conn, who.actor, "crew.delete", target=crew_id)
    return web.Response(status=204)
