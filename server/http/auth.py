"""Bearer tokens and roles.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, so a leaked
database does not leak tokens (no salt or slow hash is needed for random secrets of this
size). Verified tokens are cached for a few seconds so a map pulling hundreds of tiles
does not cost a database round trip each; revocation takes effect within that TTL.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from server.http.problems import Problem
from server.settings import ROLES

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "ioc_"
CACHE_TTL_S = 5.0

# Paths anyone may fetch: probes, and the static pages that then ask for a token.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/crew", "/api/docs", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/", "/api/v1/public/", "/open311/")  # citizens' reports: no token


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    role: str
    crew: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.role})"


def new_token() -> tuple[str, str, str]:
    """A fresh token, its stored hash, and the short prefix shown in listings."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token), token[:10]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return role


def create_token_sync(url: str, role: str, name: str | None = None, crew: str | None = None) -> str:
    """Store a new token (for the CLI and the demo, before any event loop runs)."""
    import psycopg

    check_role(role)
    token, digest, prefix = new_token()
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into api_tokens (name, role, token_hash, prefix, crew) values (%s,%s,%s,%s,%s)",
            (name or role, role, digest, prefix, crew),
        )
        conn.execute(
            "insert into audit_log (actor, action, target, details) values "
            "('cli', 'token.create', %s, jsonb_build_object('role', %s::text))",
            (name or role, role),
        )
    return token


class TokenStore:
    """Looks tokens up in ``api_tokens`` with a short positive cache."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit and hit[0] > now:
            return hit[1]
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "select id, name, role, crew from api_tokens "
                "where token_hash = $1 and revoked_at is null",
                digest,
            )
            if row is not None:
                # Best effort, after the lookup: a read-only or full database must not lock
                # operators out of the API while it recovers (/metrics, /readyz tell them why).
                try:
                    await conn.execute(
                        "update api_tokens set last_used_at = now() where id = $1", row["id"])
                except asyncpg.PostgresError as err:
                    logger.debug("token %s: last_used_at not recorded: %s", row["id"], err)
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(row["id"], row["name"], row["role"], row["crew"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_TTL_S, principal)
        return principal

    def forget(self) -> None:
        self._cache.clear()


PRINCIPAL = web.RequestKey("principal", "Principal")


def _token_from(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Problem(
                401, "use 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="ioc"'},
            )
        return value.strip()
    # Browsers cannot set headers on a websocket or an <img>: allow ?token= there.
    return request.query.get("token")


def auth_middleware(store_key: web.AppKey):
    @web.middleware
    async def middleware(request: web.Request, handler):
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        token = _token_from(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="ioc"'}
        if not token:
            raise Problem(401, "this endpoint needs a bearer token (ioc token create --role viewer)",
                          headers=challenge)
        principal = await request.app[store_key].authenticate(token)
        if principal is None:
            raise Problem(401, "the token is unknown or revoked", headers=challenge)
        request[PRINCIPAL] = principal
        return await handler(request)

    return middleware


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def require(request: web.Request, *roles: str) -> Principal:
    """The caller, if its role is one of ``roles`` (admin always is); else 403."""
    p = principal(request)
    if p.role == "admin" or p.role in roles:
        return p
    wanted = " or ".join(roles) if roles else "admin"
    raise Problem(403, f"this needs the {wanted} role; your token has the {p.role} role")
