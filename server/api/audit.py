"""``GET /api/v1/audit``: the audit log for admins, filtered, newest first, in pages."""

from __future__ import annotations

from aiohttp import web

from server import keys
from server.api.models import AuditFilter
from server.errors import Invalid
from server.http import validate
from server.http.auth import require
from server.http.jsonutil import json_response
from server.store.audit import AuditQuery, query
from server.store.history import parse_time

routes = web.RouteTableDef()



@routes.get("/api/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    require(request, "admin")
    params = request.query
    f = validate.query(request, AuditFilter)
    since, until = parse_time(f.from_, "from"), parse_time(f.to, "to")
    if since and until and since >= until:
        raise Invalid("from must be earlier than to", field="from")
    q = AuditQuery(actor=f.actor or None, device=f.device or None, action=f.action or None,
                   since=since, until=until, after=f.after, limit=f.limit)
    async with request.app[keys.DB].acquire() as conn:
        entries, more = await query(conn, q)
    body: dict = {"entries": entries, "numberReturned": len(entries)}
    if more:
        nxt = {k: v for k, v in params.items() if k != "token"}
        nxt["after"] = str(entries[-1]["id"])
        body["links"] = [{"rel": "next", "type": "application/json",
                          "href": str(request.rel_url.with_query(nxt))}]
    return json_response(body)
