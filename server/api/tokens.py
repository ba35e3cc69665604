"""``/api/v1/tokens`` (admin): list, create and revoke bearer tokens; ``/api/v1/session``: the
pages' sign-in.

The secret is shown once, in the answer to POST; only its SHA-256 is stored (see
server/http/auth.py), so listings show the id, the name and the first characters instead.
Revoking takes effect at once in this process (its token cache is cleared) and within the
cache's few seconds in any other; it also ends the sessions signed in with that token.

``POST /api/v1/session`` trades the token it is sent (a sign-in link's, or any other) for a
session: a new token of the same role and crew, kept only in an HttpOnly, SameSite=Strict
cookie, so no script on the page can read it. A sign-in link's token is used up by it.
``DELETE /api/v1/session`` signs out (the session is revoked and the cookie cleared).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from server import keys
from server.api.models import TokenIn, TokenQuery
from server.errors import Conflict, Invalid, NotFound
from server.http import validate
from server.http.auth import SESSION_COOKIE, new_token, principal, require
from server.http.jsonutil import json_response
from server.store.audit import audit

routes = web.RouteTableDef()

_COLUMNS = ("id, name, role, crew, prefix, created_at, last_used_at, revoked_at, kind, "
            "expires_at, parent_id")
_NO_STORE = {"Cache-Control": "no-store"}


def _token(row: Mapping[str, Any]) -> dict[str, Any]:
    expired = row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC)
    return {
        "id": row["id"], "name": row["name"], "role": row["role"], "crew": row["crew"],
        "prefix": row["prefix"], "created_at": row["created_at"],
        "last_used_at": row["last_used_at"], "revoked_at": row["revoked_at"],
        "active": row["revoked_at"] is None and not expired,
        "kind": row["kind"], "expires_at": row["expires_at"], "parent": row["parent_id"],
    }


def _expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    if t <= datetime.now(UTC):
        raise Invalid(f"expires_at {text} has passed: give a time in the future",
                      errors=[{"field": "expires_at", "reason": "must be in the future"}])
    return t


@routes.get("/api/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    require(request)
    q = validate.query(request, TokenQuery)
    sql = f"select {_COLUMNS} from api_tokens"
    if not q.include_revoked:
        sql += " where revoked_at is null and (expires_at is null or expires_at > now())"
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
    expires_at = _expiry(doc.expires_at)
    token, digest, prefix = new_token()
    async with request.app[keys.DB].acquire() as conn:
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"""insert into api_tokens (name, role, token_hash, prefix, crew, expires_at)
                        values ($1, $2, $3, $4, $5, $6) returning {_COLUMNS}""",
                    name, role, digest, prefix, crew, expires_at)
                await audit(conn, who.actor, "token.create", target=f"token {row['id']}",
                            details={"role": role, "name": row["name"], "crew": crew,
                                     "expires_at": doc.expires_at})
        except asyncpg.ForeignKeyViolationError:
            raise Invalid(f"no crew with id {crew!r}", field="crew") from None
    body = _token(row)
    body["token"] = token
    return json_response(body, status=201, headers={"Location": f"/api/v1/tokens/{row['id']}",
                                                    **_NO_STORE})


@routes.delete("/api/v1/tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    who = require(request)
    raw = request.match_info["id"]
    try:
        token_id = int(raw)
    except ValueError:
        raise NotFound(f"no token with id {raw!r}; token ids are integers") from None
    if token_id in (who.token_id, who.parent_id):
        raise Conflict( "this is the token you are using; revoke it with another admin token "
                           "(or 'ioc token revoke') so you do not lock yourself out")
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "update api_tokens set revoked_at = now() where id = $1 and revoked_at is null "
            "returning id, name, role", token_id) if -2**31 <= token_id < 2**31 else None
        if row is None:
            raise NotFound(f"no active token with id {token_id}")
        # The pages signed in with it go too.
        sessions = await conn.fetch(
            "update api_tokens set revoked_at = now() where parent_id = $1 and revoked_at is null "
            "returning id", token_id)
        await audit(conn, who.actor, "token.revoke", target=f"token {token_id}",
                    details={"role": row["role"], "name": row["name"],
                             "sessions": [r["id"] for r in sessions]})
    _forget(request, token_id, *(r["id"] for r in sessions))
    return web.Response(status=204)


def _forget(request: web.Request, *token_ids: int) -> None:
    request.app[keys.TOKENS].forget()
    limiter = request.app.get(keys.RATE_LIMITER)
    if limiter is not None:
        for token_id in token_ids:
            limiter.forget(token_id)


@routes.post("/api/v1/session")
async def sign_in(request: web.Request) -> web.Response:
    """Any valid token (a sign-in link's included, which this uses up) → a session cookie."""
    who = principal(request)
    if request.can_read_body and (await request.read()).strip() not in (b"", b"{}"):
        raise Invalid("POST /api/v1/session takes no body: the token to sign in with is the "
                      "bearer token", errors=[{"field": "body", "reason": "must be empty"}])
    settings = request.app[keys.SETTINGS].security
    now = datetime.now(UTC)
    expires = now + timedelta(hours=settings.session_hours)
    if who.expires_at is not None and who.kind != "sign_in":
        expires = min(expires, who.expires_at)  # never outlives the token it came from
    # A session's parent is the lasting token behind it, so revoking that one ends them all.
    parent = who.parent_id if who.kind == "session" else (
        None if who.kind == "sign_in" else who.token_id)
    token, digest, prefix = new_token()
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        if who.kind == "sign_in":
            used = await conn.fetchval(
                "update api_tokens set revoked_at = now(), last_used_at = now() "
                "where id = $1 and revoked_at is null returning id", who.token_id)
            if used is None:
                raise Conflict("this sign-in link has been used already: ask for a new one "
                               "(ioc token link) or sign in with a token")
        row = await conn.fetchrow(
            """insert into api_tokens (name, role, token_hash, prefix, crew, kind, expires_at,
                                       parent_id)
               values ($1, $2, $3, $4, $5, 'session', $6, $7) returning id""",
            who.name, who.role, digest, prefix, who.crew, expires, parent)
        await audit(conn, who.actor, "session.create", target=f"token {row['id']}",
                    details={"from": who.token_id, "kind": who.kind,
                             "expires_at": expires.isoformat()})
    if who.kind == "sign_in":
        _forget(request, who.token_id)
    resp = json_response({"name": who.name, "role": who.role, "crew": who.crew,
                          "expires_at": expires}, status=201, headers=_NO_STORE)
    resp.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, samesite="Strict",
                    secure=request.secure, max_age=int((expires - now).total_seconds()))
    return resp


@routes.delete("/api/v1/session")
async def sign_out(request: web.Request) -> web.Response:
    """Ends the session this request came with (its cookie); other tokens are left alone."""
    who = principal(request)
    if who.kind == "session":
        async with request.app[keys.DB].acquire() as conn, conn.transaction():
            await conn.execute("update api_tokens set revoked_at = now() "
                               "where id = $1 and revoked_at is null", who.token_id)
            await audit(conn, who.actor, "session.end", target=f"token {who.token_id}")
        _forget(request, who.token_id)
    resp = web.Response(status=204, headers=_NO_STORE)
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp
