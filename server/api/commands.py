"""Device commands over HTTP: one device, a group (with a preview first), and their status.

    POST /api/v1/devices/{id}/commands   {"name": "set_dim", "args": {"level": 50}, "ttl_s": 600}
    GET  /api/v1/commands/{id}
    GET  /api/v1/devices/{id}/commands   newest first, ?limit=&after=
    POST /api/v1/commands/preview        {"target": {...}, "name": ..., "args": ...}
    POST /api/v1/commands                the same body: 202 with the group's id
    GET  /api/v1/command-groups/{id}     counts by status and a result per device (?status=)

Only operators and admins may command; a refused attempt is audited (``command.denied``).
Everyone with a token may read a command's status.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from server import keys
from server.commands.service import CommandService
from server.commands.views import COMMAND_COLS, command_json, fetch_command, fetch_group
from server.http.auth import Principal, principal, require
from server.http.jsonutil import json_response, read_json
from server.http.problems import Problem, bad_request, int_param
from server.store.audit import audit
from server.vocab import CommandState, values

routes = web.RouteTableDef()

SINGLE_KEYS = ("name", "args", "ttl_s")
GROUP_KEYS = ("target", "name", "args", "ttl_s")
STATUSES = values(CommandState)


def _service(request: web.Request) -> CommandService:
    service = request.app.get(keys.COMMANDS)
    if service is None:
        raise Problem(503, "the command service is not running")
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


async def _body(request: web.Request, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    doc = await read_json(request)
    if not isinstance(doc, Mapping):
        raise bad_request('send a JSON object, e.g. {"name": "set_dim", "args": {"level": 50}}')
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise bad_request(f"unexpected member(s) {', '.join(unknown)}; send {', '.join(allowed)}")
    if "name" not in doc:
        raise bad_request('name is required, e.g. {"name": "set_dim", "args": {"level": 50}}')
    return doc


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(404, f"no {what} with id {raw!r} (ids are UUIDs)") from None


@routes.post("/api/v1/devices/{id}/commands")
async def post_command(request: web.Request) -> web.Response:
    device = request.match_info["id"]
    who = await _commander(request, "command", device)
    doc = await _body(request, SINGLE_KEYS)
    service = _service(request)
    cmd = await service.submit(who.actor, device, doc["name"], doc.get("args"),
                               service.check_ttl(doc.get("ttl_s")))
    href = f"/api/v1/commands/{cmd['id']}"
    cmd["links"] = [{"rel": "self", "href": href}]
    return json_response(cmd, status=202, headers={"Location": href})


@routes.get("/api/v1/commands/{id}")
async def get_command(request: web.Request) -> web.Response:
    cmd_id = _uuid(request.match_info["id"], "command")
    async with request.app[keys.DB].acquire() as conn:
        cmd = await fetch_command(conn, cmd_id)
    if cmd is None:
        raise Problem(404, f"no command with id {cmd_id}")
    return json_response(cmd)


@routes.get("/api/v1/devices/{id}/commands")
async def device_commands(request: web.Request) -> web.Response:
    device = request.match_info["id"]
    limit = int_param(request.query, "limit", 50, 1, 1000)
    after = request.query.get("after")
    args: list[Any] = [device, limit + 1]
    sql = f"select {COMMAND_COLS} from commands where device = $1"
    if after:
        args.append(_uuid(after, "command"))
        sql += " and (created_at, id) < (select created_at, id from commands where id = $3)"
    async with request.app[keys.DB].acquire() as conn:
        if not await conn.fetchval("select exists(select 1 from devices where id = $1)", device):
            raise Problem(404, f"no device with id {device!r}")
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
    doc = await _body(request, GROUP_KEYS)
    service = _service(request)
    service.check_ttl(doc.get("ttl_s"))
    sel = await service.select(doc.get("target"), doc["name"], doc.get("args"))
    return json_response(sel.summary())


@routes.post("/api/v1/commands")
async def post_group(request: web.Request) -> web.Response:
    who = await _commander(request, "command_group")
    doc = await _body(request, GROUP_KEYS)
    service = _service(request)
    group = await service.submit_group(who.actor, doc.get("target"), doc["name"],
                                       doc.get("args"), service.check_ttl(doc.get("ttl_s")))
    href = f"/api/v1/command-groups/{group['id']}"
    group["links"] = [{"rel": "self", "href": href}]
    return json_response(group, status=202, headers={"Location": href})


@routes.get("/api/v1/command-groups/{id}")
async def get_group(request: web.Request) -> web.Response:
    group_id = _uuid(request.match_info["id"], "command group")
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise bad_request(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    async with request.app[keys.DB].acquire() as conn:
        group = await fetch_group(conn, group_id, status)
    if group is None:
        raise Problem(404, f"no command group with id {group_id}")
    return json_response(group)
