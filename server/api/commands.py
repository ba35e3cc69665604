"""Device commands over HTTP: one device, a group (with a preview first), and their status.

    POST /api/v1/devices/{id}/commands   {"name": "set_dim", "args": {"level": 50}, "ttl_s": 600}
    GET  /api/v1/commands/{id}
    GET  /api/v1/devices/{id}/commands   newest first, ?limit=&after=
    POST /api/v1/commands/preview        {"target": {...}, "name": ..., "args": ...}
    POST /api/v1/commands                the same body: 202 with the group's id
    GET  /api/v1/command-groups          past groups, newest first, with who sent them (?limit=)
    GET  /api/v1/command-groups/{id}     counts by status and a result per device (?status=)
    POST /api/v1/command-groups/{id}/cancel  withdraw the commands not sent yet
    GET  /api/v1/command-catalog         what each kind can be told, with its arguments (the
                                         map's command picker reads it)

Only operators and admins may command; a refused attempt is audited (``command.denied``).
Everyone with a token may read a command's status.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from server import keys
from server.api.models import CommandIn, CommandListQuery, GroupCommandIn, GroupListQuery, GroupQuery
from server.commands.catalog import CATALOGUE
from server.commands.service import CommandService
from server.commands.views import COMMAND_COLS, command_json, fetch_command, fetch_group
from server.errors import NotFound, Unavailable
from server.http import validate
from server.http.auth import Principal, principal, require
from server.http.jsonutil import json_response
from server.http.problems import Problem
from server.store.audit import audit

routes = web.RouteTableDef()

M = TypeVar("M", bound=BaseModel)


def _service(request: web.Request) -> CommandService:
    service = request.app.get(keys.COMMANDS)
    if service is None:
        raise Unavailable("the command service is not running")
    return service


async def _commander(request: web.Request, what: str, device: str | None = None) -> Principal:
    try:
        return require(request, "operator")
    except Problem:
        who = principal(request)
        async with request.app[keys.DB].acquire() as conn:
            await audit(conn, who.actor, "command.denied", device=device, target=what,
                        details={"role": who.role, "path": request.path})
        raise


async def _body(request: web.Request, model: type[M]) -> M:
    return await validate.body(request, model)


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no {what} with id {raw!r} (ids are UUIDs)") from None


def _target(doc: GroupCommandIn) -> dict[str, Any]:
    return doc.target.model_dump(exclude_unset=True)


@routes.post("/api/v1/devices/{id}/commands")
async def post_command(request: web.Request) -> web.Response:
    device = request.match_info["id"]
    who = await _commander(request, "command", device)
    doc = await _body(request, CommandIn)
    service = _service(request)
    cmd = await service.submit(who.actor, device, doc.name, doc.args, service.check_ttl(doc.ttl_s))
    href = f"/api/v1/commands/{cmd['id']}"
    cmd["links"] = [{"rel": "self", "href": href}]
    return json_response(cmd, status=202, headers={"Location": href})


@routes.get("/api/v1/commands/{id:(?!preview$)[^/]+}")
async def get_command(request: web.Request) -> web.Response:
    cmd_id = _uuid(request.match_info["id"], "command")
    async with request.app[keys.DB].acquire() as conn:
        cmd = await fetch_command(conn, cmd_id)
    if cmd is None:
        raise NotFound(f"no command with id {cmd_id}")
    return json_response(cmd)


@routes.get("/api/v1/devices/{id}/commands")
async def device_commands(request: web.Request) -> web.Response:
    device = request.match_info["id"]
    q = validate.query(request, CommandListQuery)
    limit, after = q.limit, q.after
    args: list[Any] = [device, limit + 1]
    sql = f"select {COMMAND_COLS} from commands where device = $1"
    if after:
        args.append(_uuid(after, "command"))
        sql += " and (created_at, id) < (select created_at, id from commands where id = $3)"
    async with request.app[keys.DB].acquire() as conn:
        if not await conn.fetchval("select exists(select 1 from devices where id = $1)", device):
            raise NotFound(f"no device with id {device!r}")
        rows = await conn.fetch(sql + " order by created_at desc, id desc limit $2", *args)
    items = [command_json(r) for r in rows[:limit]]
    body: dict[str, Any] = {"device": device, "commands": items, "numberReturned": len(items)}
    if len(rows) > limit:
        q = {k: v for k, v in request.query.items() if k != "token"}
        q["after"] = items[-1]["id"]
        body["links"] = [{"rel": "next", "href": str(request.rel_url.with_query(q))}]
    return json_response(body)


@routes.post("/api/v1/commands/preview")
async def preview_group(request: web.Request) -> web.Response:
    await _commander(request, "command_group.preview")
    doc = await _body(request, GroupCommandIn)
    service = _service(request)
    service.check_ttl(doc.ttl_s)
    sel = await service.select(_target(doc), doc.name, doc.args)
    body = sel.summary()
    # The contract's shape: ids, and what cannot take it with why; "details" keeps each
    # device's kind, status and route for the console.
    body["details"] = body["devices"]
    body["devices"] = [d["id"] for d in sel.devices]
    body["excluded"] = sel.skipped
    return json_response(body)


@routes.post("/api/v1/commands")
async def post_group(request: web.Request) -> web.Response:
    who = await _commander(request, "command_group")
    doc = await _body(request, GroupCommandIn)
    service = _service(request)
    group = await service.submit_group(who.actor, _target(doc), doc.name, doc.args,
                                       service.check_ttl(doc.ttl_s))
    href = f"/api/v1/command-groups/{group['id']}"
    group["links"] = [{"rel": "self", "href": href}]
    return json_response(group, status=202, headers={"Location": href})


@routes.get("/api/v1/command-groups/{id}")
async def get_group(request: web.Request) -> web.Response:
    group_id = _uuid(request.match_info["id"], "command group")
    status = validate.query(request, GroupQuery).status
    async with request.app[keys.DB].acquire() as conn:
        group = await fetch_group(conn, group_id, status)
    if group is None:
        raise NotFound(f"no command group with id {group_id}")
    return json_response(group)


@routes.get("/api/v1/command-groups")
async def list_groups(request: web.Request) -> web.Response:
    limit = validate.query(request, GroupListQuery).limit
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(
            """select g.id, g.name, g.args, g.target, g.requested_by, g.created_at, g.total,
                      jsonb_array_length(g.skipped) as skipped,
                      (select jsonb_object_agg(status, n) from (select status, count(*) as n
                         from commands where group_id = g.id group by status) c) as counts
               from command_groups g order by g.created_at desc, g.id desc limit $1""", limit)
    groups = [{"id": str(r["id"]), "name": r["name"], "args": r["args"], "target": r["target"],
               "requested_by": r["requested_by"], "created_at": r["created_at"], "total": r["total"],
               "skipped": r["skipped"], "counts": r["counts"] or {}} for r in rows]
    return json_response({"groups": groups, "numberReturned": len(groups)})


@routes.post("/api/v1/command-groups/{id}/cancel")
async def cancel_group(request: web.Request) -> web.Response:
    group_id = _uuid(request.match_info["id"], "command group")
    who = await _commander(request, "command_group.cancel")
    return json_response(await _service(request).cancel_group(who.actor, group_id))


@routes.get("/api/v1/command-catalog")
async def command_catalog(request: web.Request) -> web.Response:
    commands = [{
        "name": c.name, "description": c.description, "kinds": sorted(c.kinds),
        "group_kinds": sorted(c.group_kinds),
        "args": {k: {"type": a.type, "minimum": a.minimum, "maximum": a.maximum, "required": a.required}
                 for k, a in c.args.items()},
    } for c in sorted(CATALOGUE.values(), key=lambda c: c.name)]
    return json_response({"commands": commands})
