"""``/api/v1/tokens`` (admin): list, create and revoke bearer tokens.

The secret is shown once, in the answer to POST; only its SHA-256 is stored (see
server/http/auth.py), so listings show the id, the name and the first characters instead.
Revoking takes effect at once in this process (its token cache is cleared) and within the
cache's few seconds in any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from server import keys
from server.api.models import TokenIn, TokenQuery
from server.errors import Conflict, Invalid, NotFound
from server.http import validate
from server.http.auth import new_token, require
from server.http.jsonutil import json_response
from server.store.audit import audit

routes = web.RouteTableDef()

_COLUMNS = "id, name, role, crew, prefix, created_at, last_used_at, revoked_at"


def _token(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "role": row["role"], "crew": row["crew"],
        "prefix": row["prefix"], "created_at": row["created_at"],
        "last_used_at": row["last_used_at"], "revoked_at": row["revoked_at"],
        "active": row["revoked_at"] is None,
    }


@routes.get("/api/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    require(request)
    q = validate.query(request, TokenQuery)
    sql = f"select {_COLUMNS} from api_tokens"
    if not q.include_revoked:
        sql += " where revoked_at is null"
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(sql + " order by id")
    return json_response({"tokens": [_token(r) for r in rows]})


@routes.post("/api/v1/tokens")
async def create_token(request: web.Request) -> web.Response:
    who = require(request)
    doc = await validate.body(request, TokenIn)
    role, crew = doc.role, doc.crew
    name = (doc.name or role).strip()
    if role == "crew" and crew is None:
        raise Invalid("a crew token acts for one crew: give its id in crew", field="crew")
    token, digest, prefix = new_token()
    async with request.app[keys.DB].acquire() as conn:
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"""insert into api_tokens (name, role, token_hash, prefix, crew)
                        values ($1, $2, $3, $4, $5) returning {_COLUMNS}""",
                    name, role, digest, prefix, crew)
                await audit(conn, who.actor, "token.create", target=f"token {row['id']}",
                            details={"role": role, "name": row["name"], "crew": crew})
        except asyncpg.ForeignKeyViolationError:
            raise Invalid(f"no crew with id {crew!r}", field="crew") from None
    body = _token(row)
    body["token"] = token
    return json_response(body, status=201, headers={"Location": f"/api/v1/tokens/{row['id']}",
                                                    "Cache-Control": "no-store"})


@routes.delete("/api/v1/tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    who = require(request)
    raw = request.match_info["id"]
    try:
        token_id = int(raw)
    except ValueError:
        raise NotFound(f"no token with id {raw!r}; token ids are integers") from None
    if token_id == who.token_id:
        raise Conflict( "this is the token you are using; revoke it with another admin token "
                           "(or 'ioc token revoke') so you do not lock yourself out")
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "update api_tokens set revoked_at = now() where id = $1 and revoked_at is null "
            "returning id, name, role", token_id) if -2**31 <= token_id < 2**31 else None
        if row is None:
            raise NotFound(f"no active token with id {token_id}")
        await audit(conn, who.actor, "token.revoke", target=f"token {token_id}",
                    details={"role": row["role"], "name": row["name"]})
    request.app[keys.TOKENS].forget()
    limiter = request.app.get(keys.RATE_LIMITER)
    if limiter is not None:
        limiter.forget(token_id)
    return web.Response(status=204)
