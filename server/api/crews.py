"""``/api/v1/crews``: the maintenance crews alarms are routed and escalated to.

A crew: ``id``, ``name``, ``ward`` (the ward it answers for), ``location`` (a GeoJSON Point:
its depot or last reported position, for nearest-crew routing), ``available``,
``escalation_level`` (1 first line, 2 supervisors, ...), ``contacts`` (``email``,
``webhook``, ``webhook_secret``, ``phone``). Everyone may read (the secret is never
shown; a crew token reads its own crew only); operators and admins write; a crew's own token
may update its ``available`` and ``location`` (from the crew page on a phone).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from aiohttp import web

from server import keys
from server.api.models import CrewIn, CrewPatch, CrewQuery
from server.errors import Conflict, Forbidden, Invalid, NotFound
from server.http import validate
from server.http.auth import require
from server.http.jsonutil import json_response, read_json
from server.notify.outbound import OutboundPolicy
from server.settings import ROLES
from server.store.audit import audit

routes = web.RouteTableDef()

READERS = tuple(r for r in ROLES if r != "admin")
WRITERS = ("operator",)
FIELDS = ("id", "name", "ward", "location", "available", "escalation_level", "contacts")
CREW_SELF_FIELDS = frozenset({"available", "location"})

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


def parse(doc: Any, *, patch: bool) -> dict[str, Any]:
    """The columns a crew document sets, or a 400 naming every bad field."""
    crew = validate.parse(CrewPatch if patch else CrewIn, doc, "the crew")
    out = crew.model_dump(include=set(FIELDS), exclude_unset=True)
    if "name" in out:
        out["name"] = out["name"].strip()
    if out.get("location") is not None:
        out["location"] = orjson.dumps(out["location"]).decode()
    return out


async def _check_outbound(request: web.Request, cols: dict[str, Any]) -> None:
    """A webhook must not lead the notifier inward (server/notify/outbound.py): 400 if it does."""
    hook = (cols.get("contacts") or {}).get("webhook")
    if hook:
        policy = OutboundPolicy(request.app[keys.SETTINGS].security.allow_outbound)
        await policy.check_url(hook, field="contacts.webhook")


async def _check_ward(conn: asyncpg.Connection, ward: str | None) -> None:
    if ward is None or await conn.fetchval("select 1 from wards where code = $1", ward):
        return
    known = [r["code"] for r in await conn.fetch("select code from wards order by code limit 50")]
    hint = f"; known wards: {', '.join(known)}" if known else "; no wards are loaded"
    raise Invalid(f"unknown ward {ward!r}{hint}", errors=[{"field": "ward", "reason": "no such ward"}])


async def _fetch(conn: asyncpg.Connection, crew_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(SELECT + " where c.id = $1", crew_id)
    if row is None:
        raise NotFound(f"no crew with id {crew_id!r}")
    return view(row)


@routes.get("/api/v1/crews")
async def list_crews(request: web.Request) -> web.Response:
    who = require(request, *READERS)
    q = validate.query(request, CrewQuery)
    where, args = [], []
    if who.role == "crew":  # its own crew only: others' contacts and open alarms are not its
        args.append(who.crew or "")
        where.append(f"c.id = ${len(args)}")
    if q.ward:
        args.append(q.ward)
        where.append(f"c.ward = ${len(args)}")
    if q.available is not None:
        args.append(q.available)
        where.append(f"c.available = ${len(args)}")
    sql = SELECT + (" where " + " and ".join(where) if where else "") + " order by c.id"
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(sql, *args)
    return json_response({"crews": [view(r) for r in rows], "numberReturned": len(rows)})


@routes.get("/api/v1/crews/{id}")
async def get_crew(request: web.Request) -> web.Response:
    who = require(request, *READERS)
    crew_id = request.match_info["id"]
    if who.role == "crew" and crew_id != who.crew:
        raise Forbidden(f"a crew token reads its own crew ({who.crew or 'none'}) only")
    async with request.app[keys.DB].acquire() as conn:
        return json_response(await _fetch(conn, crew_id))


@routes.post("/api/v1/crews")
async def create_crew(request: web.Request) -> web.Response:
    who = require(request, *WRITERS)
    cols = parse(await read_json(request), patch=False)
    await _check_outbound(request, cols)
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
            raise Conflict(f"crew {cols['id']!r} already exists; PATCH it to change it") from None
        body = await _fetch(conn, cols["id"])
    return json_response(body, status=201, headers={"Location": f"/api/v1/crews/{cols['id']}"})


@routes.patch("/api/v1/crews/{id}")
async def patch_crew(request: web.Request) -> web.Response:
    """JSON merge patch (RFC 7396); ``contacts`` merge key by key, null removes one."""
    crew_id = request.match_info["id"]
    who = require(request, *WRITERS, "crew")
    if who.role == "crew" and who.crew != crew_id:  # before the body: whose it is comes first
        raise Forbidden(f"a crew token may only update its own crew ({who.crew})")
    cols = parse(await read_json(request), patch=True)
    if cols.pop("id", crew_id) != crew_id:
        raise Invalid("a crew id cannot be changed; create a new crew instead", field="id")
    if who.role == "crew":
        extra = sorted(set(cols) - CREW_SELF_FIELDS)
        if extra:
            raise Forbidden(f"a crew token may update only available and location, not "
                            f"{', '.join(extra)}")
    await _check_outbound(request, cols)
    async with request.app[keys.DB].acquire() as conn:
        if "ward" in cols:
            await _check_ward(conn, cols["ward"])
        async with conn.transaction():
            current = await conn.fetchval("select contacts from crews where id = $1 for update",
                                          crew_id)
            if current is None:
                raise NotFound(f"no crew with id {crew_id!r}")
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
            raise NotFound(f"no crew with id {crew_id!r}")
        open_alarms = await conn.fetchval(
            "select count(*) from alarms where assigned_crew = $1 and state <> 'closed'", crew_id)
        if open_alarms:
            raise Conflict(f"crew {crew_id!r} has {open_alarms} open alarm(s) assigned; "
                               "reassign them first, or set available to false instead")
        await conn.execute("delete from crews where id = $1", crew_id)
        await audit(conn, who.actor, "crew.delete", target=crew_id)
    return web.Response(status=204)
