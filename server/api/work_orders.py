"""``/api/v1/work-orders``: inspections and work (pruning, removal) on a device, such as a
tree, done by a crew (issue 14, point 7).

A work order names its device, its type (``inspection``, ``pruning``, ``removal``) and the
crew assigned; it goes ``open`` -> ``in_progress`` (start) -> ``done``, each step an event
with who, when, the crew's note and photo (multipart, cleaned as the reports' photos are:
server/api/workphotos.py). Operators create them; a crew token lists, reads, starts and
finishes its own crew's only (another crew's, or one that does not exist, is a 403 to it,
so ids cannot be probed). Finishing a pruning sets the tree's ``last_pruned``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from server import keys
from server.api import workphotos
from server.api.reports import _bad, _text
from server.errors import Forbidden, NotFound
from server.http.auth import principal, require
from server.http.jsonutil import json_response
from server.http.problems import Problem
from server.store.audit import audit
from server.store.schema import WORK_ORDER_STATUSES, WORK_ORDER_TYPES

routes = web.RouteTableDef()

SELECT = """select w.id, w.device, w.type, w.status, w.crew, w.note, w.created_by, w.created_at,
                   w.updated_at, w.done_at, d.kind, d.name,
                   ST_AsGeoJSON(ST_PointOnSurface(d.geom), 7)::json as geometry
            from work_orders w join devices d on d.id = w.device"""
MAX_ID = 2**63 - 1
# step -> (statuses it starts from, the status it leads to)
STEPS = {"start": (("open",), "in_progress"), "done": (("open", "in_progress"), "done")}


def _view(r) -> dict[str, Any]:
    return {"id": r["id"], "device": r["device"], "device_kind": r["kind"], "device_name": r["name"],
            "type": r["type"], "status": r["status"], "crew": r["crew"], "note": r["note"],
            "created_by": r["created_by"], "created_at": r["created_at"], "updated_at": r["updated_at"],
            "done_at": r["done_at"], "geometry": r["geometry"]}


def photo_url(wo_id: int, digest: str) -> str:
    return f"/api/v1/work-orders/{wo_id}/photos/{digest}.jpg"


async def _events(conn, wo_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch("select at, status, note, photo, by from work_order_events "
                            "where work_order_id = $1 order by at, id", wo_id)
    return [{"at": e["at"], "status": e["status"], "note": e["note"], "by": e["by"],
             "photo": photo_url(wo_id, e["photo"]) if e["photo"] else None} for e in rows]


async def _load(conn, request: web.Request, *roles: str):
    """The work order of the path, if the caller may see it (a crew: its own only)."""
    who = require(request, *roles)
    raw = request.match_info["id"]
    row = None
    if raw.isdigit() and int(raw) <= MAX_ID:
        row = await conn.fetchrow(SELECT + " where w.id = $1", int(raw))
    if who.role == "crew" and (row is None or row["crew"] != who.crew):
        raise Forbidden(f"a crew token sees only its own crew's work orders ({who.crew or 'none'})")
    if row is None:
        raise NotFound(f"no work order {raw!r}")
    return who, row


def _choice(value: Any, field: str, allowed: tuple[str, ...], required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise _bad(field, f"is required: one of {', '.join(allowed)}")
        return None
    if value not in allowed:
        raise _bad(field, f"is not one of {', '.join(allowed)}")
    return value


@routes.get("/api/v1/work-orders")
async def list_work_orders(request: web.Request) -> web.Response:
    who = principal(request)
    q = request.query
    status = q.get("status")
    if status is not None and status not in ("all", "active", *WORK_ORDER_STATUSES):
        raise _bad("status", f"is not one of {', '.join(WORK_ORDER_STATUSES)}, active, all")
    kind = q.get("type")
    if kind is not None and kind not in WORK_ORDER_TYPES:
        raise _bad("type", f"is not one of {', '.join(WORK_ORDER_TYPES)}")
    crew = q.get("crew") or None
    if who.role == "crew":
        if crew not in (None, who.crew):
            raise Forbidden(f"a crew token sees its own crew's work orders ({who.crew}) only")
        crew = who.crew or ""
    statuses = (["open", "in_progress"] if status == "active" else None if status in (None, "all")
                else [status])
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(
            SELECT + """ where ($1::text[] is null or w.status = any($1)) and ($2::text is null or
                 w.device = $2) and ($3::text is null or w.crew = $3) and ($4::text is null or w.type = $4)
                 order by w.id desc limit 1000""",
            statuses, q.get("device") or None, crew, kind)
    return json_response({"work_orders": [_view(r) for r in rows]})


@routes.post("/api/v1/work-orders")
async def create_work_order(request: web.Request) -> web.Response:
    who = require(request, "operator")
    doc, raw = await workphotos.read_form(request)
    if raw is not None:
        raise _bad("photo", "photos come with start and done, not with the order")
    unknown = set(doc) - {"device", "type", "crew", "note"}
    if unknown:
        raise _bad(sorted(unknown)[0], "is not a field of a work order")
    kind = _choice(doc.get("type"), "type", WORK_ORDER_TYPES, required=True)
    for name in ("device", "crew", "note"):
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise _bad(name, "must be text")
    device = _text(doc.get("device"), "device", limit=128)
    note = _text(doc.get("note"), "note", required=False)
    crew = _text(doc.get("crew"), "crew", required=False, limit=128)
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        if not await conn.fetchval("select exists(select 1 from devices where id = $1)", device):
            raise _bad("device", f"no device {device!r}")
        if crew and not await conn.fetchval("select exists(select 1 from crews where id = $1)", crew):
            raise _bad("crew", f"no crew {crew!r}; GET /api/v1/crews lists them")
        wo_id = await conn.fetchval(
            "insert into work_orders (device, type, crew, note, created_by) values ($1, $2, $3, $4, $5) "
            "returning id", device, kind, crew, note, who.actor)
        await conn.execute("insert into work_order_events (work_order_id, status, note, by) "
                           "values ($1, 'open', $2, $3)", wo_id, note, who.actor)
        await audit(conn, who.actor, "work_order.create", device=device, target=str(wo_id),
                    details={"type": kind, "crew": crew})
        out = _view(await conn.fetchrow(SELECT + " where w.id = $1", wo_id))
        out["events"] = await _events(conn, wo_id)
    return json_response(out, status=201, headers={"Location": f"/api/v1/work-orders/{wo_id}"})


@routes.get("/api/v1/work-orders/{id}")
async def get_work_order(request: web.Request) -> web.Response:
    async with request.app[keys.DB].acquire() as conn:
        _, row = await _load(conn, request, "viewer", "operator", "integrator", "crew")
        out = _view(row)
        out["events"] = await _events(conn, row["id"])
    return json_response(out)


def _step(name: str):
    sources, target = STEPS[name]

    async def handler(request: web.Request) -> web.Response:
        async with request.app[keys.DB].acquire() as conn:
            who, row = await _load(conn, request, "operator", "crew")
        doc, raw = await workphotos.read_form(request)
        unknown = set(doc) - {"note"}
        if unknown:
            raise _bad(sorted(unknown)[0], "is not a field of this step (note, and a file 'photo')")
        if doc.get("note") is not None and not isinstance(doc["note"], str):
            raise _bad("note", "must be text")
        note = _text(doc.get("note"), "note", required=False)
        digest = jpeg = None
        if raw is not None:
            digest, jpeg = await workphotos.clean(request, raw)
        async with request.app[keys.DB].acquire() as conn, conn.transaction():
            row = await conn.fetchrow("select * from work_orders where id = $1 for update", row["id"])
            if row is None:
                raise NotFound("the work order was deleted meanwhile")
            if row["status"] not in sources:
                raise Problem(409, f"work order {row['id']} is {row['status']}: it cannot be {name} now")
            if who.role == "crew" and row["crew"] != who.crew:
                raise Forbidden("the work order was given to another crew meanwhile")
            await conn.execute(
                "update work_orders set status = $2, updated_at = now(), "
                "done_at = case when $2 = 'done' then now() else done_at end where id = $1",
                row["id"], target)
            await conn.execute("insert into work_order_events (work_order_id, status, note, photo, by) "
                               "values ($1, $2, $3, $4, $5)", row["id"], target, note, digest, who.actor)
            if target == "done" and row["type"] == "pruning":
                today = datetime.now(UTC).date().isoformat()
                await conn.execute(
                    "update devices set properties = coalesce(properties, '{}'::jsonb) || "
                    "jsonb_build_object('last_pruned', $2::text) where id = $1 and kind = 'tree'",
                    row["device"], today)
            if jpeg is not None:
                await workphotos.put(request, jpeg)
            out = _view(await conn.fetchrow(SELECT + " where w.id = $1", row["id"]))
            out["events"] = await _events(conn, row["id"])
        return json_response(out)

    handler.__name__ = f"work_order_{name}"
    return handler


for _name in STEPS:
    routes.post(f"/api/v1/work-orders/{{id}}/{_name}")(_step(_name))


@routes.get("/api/v1/work-orders/{id}/photos/{name}")
async def work_order_photo(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    async with request.app[keys.DB].acquire() as conn:
        _, row = await _load(conn, request, "viewer", "operator", "integrator", "crew")
        known = await conn.fetchval(
            "select exists(select 1 from work_order_events where work_order_id = $1 and photo = $2)",
            row["id"], name.removesuffix(".jpg"))
    if not known:
        raise NotFound(f"work order {row['id']} has no photo {name}")
    return workphotos.serve(request, name)


