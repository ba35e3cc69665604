"""``GET /api/v1/audit``: the audit log for admins, filtered, newest first, in pages."""

from __future__ import annotations

from aiohttp import web

from server import keys
from server.http.auth import require
from server.http.jsonutil import json_response
from server.http.problems import bad_request, int_param
from server.store.audit import AuditQuery, query
from server.store.history import parse_time

routes = web.RouteTableDef()

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
FILTERS = ("actor", "device", "action", "from", "to", "limit", "after")


@routes.get("/api/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    require(request, "admin")
    params = request.query
    unknown = sorted(set(params) - set(FILTERS) - {"token"})
    if unknown:
        raise bad_request(f"unknown parameter(s) {', '.join(unknown)}; filters: {', '.join(FILTERS)}")
    since, until = parse_time(params.get("from"), "from"), parse_time(params.get("to"), "to")
    if since and until and since >= until:
        raise bad_request("from must be earlier than to")
    q = AuditQuery(
        actor=params.get("actor") or None,
        device=params.get("device") or None,
        action=params.get("action") or None,
        since=since,
        until=until,
        after=int_param(params, "after", None, 1, 2**63 - 1),
        limit=int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    )
    async with request.app[keys.DB].acquire() as conn:
        entries, more = await query(conn, q)
    body: dict = {"entries": entries, "numberReturned": len(entries)}
    if more:
        nxt = {k: v for k, v in params.items() if k != "token"}
        nxt["after"] = str(entries[-1]["id"])
        body["links"] = [{"rel": "next", "type": "application/json",
                          "href": str(request.rel_url.with_query(nxt))}]
    return json_response(body)
