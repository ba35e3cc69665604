"""Bearer tokens, the pages' sessions, and roles.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, so a leaked
database does not leak tokens (no salt or slow hash is needed for random secrets of this
size). Verified tokens are cached for a few seconds so a map pulling hundreds of tiles
does not cost a database round trip each; revocation takes effect within that TTL.

Where a token may come from, and why:

- ``Authorization: Bearer`` on every request: the API's way.
- The ``ioc_session`` cookie (HttpOnly, SameSite=Strict): the pages' way. A page trades the
  token it was given (the login form, or ``?token=`` of a link, which it then removes from
  the address bar and the history) for a session at ``POST /api/v1/session``; the session's
  token lives only in that cookie, out of reach of scripts. Requests that change something
  or open the websocket with it must come from this origin (``Origin``), on top of SameSite.
- ``?token=`` only where a client cannot send a header: the websocket and the map data a
  browser or GIS client loads by URL (tiles, ``/ogc``), and only to read (GET). Anywhere
  else it is refused with a 400 that says to use the header: a token in an address ends up
  in logs, histories and screenshots.

Kinds (``api_tokens.kind``): ``api`` (made by an admin, ``expires_at`` optional),
``sign_in`` (a link's token, minutes long, good only for ``POST /api/v1/session``, once) and
``session`` (a page's, hours long, revoked with the token it came from: ``parent_id``).
``last_used_at`` is written at most once a minute per token and process.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import hdrs, web
from yarl import URL

from server.http.problems import Problem
from server.settings import ROLES

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "ioc_"
CACHE_TTL_S = 5.0
LAST_USED_EVERY_S = 60.0  # last_used_at is a day-to-day "is this token still used?", not a log
SESSION_COOKIE = "ioc_session"
SESSION_PATH = "/api/v1/session"
KINDS = ("api", "sign_in", "session")

# Paths anyone may fetch: probes, and the static pages that then ask for a token.
# The citizens' pages (/report, /public, /reports/{code}) and their API need no token.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/crew", "/api/docs", "/favicon.ico",
                          "/report", "/public"})
PUBLIC_PREFIXES = ("/static/", "/api/v1/public/", "/open311/", "/reports/")
# Where ?token= is taken (GET only): clients that cannot send a header there.
QUERY_TOKEN_PATHS = frozenset({"/api/v1/ws", "/tiles", "/ogc"})
QUERY_TOKEN_PREFIXES = ("/tiles/", "/ogc/")
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    role: str
    crew: str | None = None
    kind: str = "api"
    expires_at: datetime | None = None
    parent_id: int | None = None
    via: str = "header"  # header, cookie or query: how this request presented it

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


def create_token_sync(url: str, role: str, name: str | None = None, crew: str | None = None,
                      *, expires_at: datetime | None = None, kind: str = "api") -> str:
    """Store a new token (for the CLI and the demo, before any event loop runs)."""
    import psycopg

    check_role(role)
    if kind not in KINDS:
        raise ValueError(f"unknown token kind {kind!r}")
    token, digest, prefix = new_token()
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into api_tokens (name, role, token_hash, prefix, crew, kind, expires_at) "
            "values (%s,%s,%s,%s,%s,%s,%s)",
            (name or role, role, digest, prefix, crew, kind, expires_at),
        )
        conn.execute(
            "insert into audit_log (actor, action, target, details) values "
            "('cli', %s, %s, jsonb_build_object('role', %s::text, 'expires_at', %s::text))",
            ("token.sign_in_link" if kind == "sign_in" else "token.create", name or role, role,
             expires_at.isoformat() if expires_at else None),
        )
    return token


def sign_in_link_sync(url: str, base: str, *, role: str = "admin", name: str | None = None,
                      minutes: float = 15.0) -> str:
    """A page link carrying a sign-in token: good for ``minutes``, once, and only to start a
    session (the page trades it at once), so the link in a terminal or a chat is worth little
    once used or a little later."""
    expires = datetime.now(UTC) + timedelta(minutes=minutes)
    token = create_token_sync(url, role, name or f"sign-in link ({role})", kind="sign_in",
                              expires_at=expires)
    return f"{base.rstrip('/')}/?token={token}"


_LOOKUP = """select id, name, role, crew, kind, expires_at, parent_id, last_used_at,
                    expires_at is not null and expires_at <= now() as expired
             from api_tokens where token_hash = $1 and revoked_at is null"""


class TokenStore:
    """Looks tokens up in ``api_tokens`` with a short positive cache."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._used: dict[int, float] = {}  # token id -> when this process last wrote last_used_at

    async def authenticate(self, token: str) -> Principal | None:
        """The token's principal, or None if it is unknown, revoked or expired."""
        found, _ = await self.lookup(token)
        return found

    async def lookup(self, token: str) -> tuple[Principal | None, str]:
        """The principal, or None and why not (for the 401's detail)."""
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit and hit[0] > now:
            p = hit[1]
            if p.expires_at is None or p.expires_at > datetime.now(UTC):
                return p, ""
            self._cache.pop(digest, None)
            return None, f"the token expired at {p.expires_at:%Y-%m-%d %H:%M:%S} UTC"
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_LOOKUP, digest)
            if row is not None and not row["expired"]:
                await self._touch(conn, row["id"], row["last_used_at"], now)
        if row is None:
            self._cache.pop(digest, None)
            return None, "the token is unknown or revoked"
        if row["expired"]:
            return None, f"the token expired at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC"
        principal = Principal(row["id"], row["name"], row["role"], row["crew"], row["kind"],
                              row["expires_at"], row["parent_id"])
        if len(self._cache) > 10_000:
            self._cache.clear()
            self._used.clear()
        self._cache[digest] = (now + CACHE_TTL_S, principal)
        return principal, ""

    async def _touch(self, conn: asyncpg.Connection, token_id: int, last: datetime | None,
                     now: float) -> None:
        """``last_used_at``, at most once a minute: not a write per request (or per cache miss)."""
        if now - self._used.get(token_id, -LAST_USED_EVERY_S) < LAST_USED_EVERY_S:
            return
        if last is not None and datetime.now(UTC) - last < timedelta(seconds=LAST_USED_EVERY_S):
            self._used[token_id] = now  # another process wrote it a moment ago
            return
        self._used[token_id] = now
        # Best effort, after the lookup: a read-only or full database must not lock
        # operators out of the API while it recovers (/metrics, /readyz tell them why).
        try:
            await conn.execute("update api_tokens set last_used_at = now() where id = $1", token_id)
        except asyncpg.PostgresError as err:
            logger.debug("token %s: last_used_at not recorded: %s", token_id, err)

    def forget(self) -> None:
        self._cache.clear()


PRINCIPAL = web.RequestKey("principal", "Principal")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ioc"'}


def _query_token_path(path: str) -> bool:
    return path in QUERY_TOKEN_PATHS or path.startswith(QUERY_TOKEN_PREFIXES)


def _token_from(request: web.Request) -> tuple[str | None, str]:
    """The presented token and how: the header, else the session cookie, else ?token=
    (read only by GET on the paths that take it; other methods there are the router's 405)."""
    if "token" in request.query and not _query_token_path(request.path):
        raise Problem(
            400, "a token in the address (?token=) is refused here: send it as "
                 "'Authorization: Bearer <token>' (only the websocket, tiles and /ogc take "
                 "?token=, for clients that cannot send a header)",
            errors=[{"field": "token", "reason": "not accepted in the query on this path"}])
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Problem(401, "use 'Authorization: Bearer <token>'", headers=_CHALLENGE)
        return value.strip(), "header"
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, "cookie"
    if request.method not in ("GET", "HEAD"):
        return None, "query"
    return request.query.get("token"), "query"


def _same_origin(request: web.Request) -> bool:
    """A cookie-borne request that changes something (or opens the websocket) comes from our
    own pages. SameSite=Strict already keeps other sites' requests cookie-less; this is the
    second lock. Host names are compared, not scheme and port: behind a TLS proxy that is not
    in http_trusted_proxies the server sees http and the proxy's port, and another port of
    the same host is the same site to the cookie anyway."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True  # not a browser's cross-origin request: browsers send Origin on those
    try:
        host = URL(origin).host
    except ValueError:
        return False
    return host is not None and host.lower() == (request.url.host or "").lower()


def auth_middleware(store_key: web.AppKey):
    @web.middleware
    async def middleware(request: web.Request, handler):
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        token, via = _token_from(request)
        if not token:
            raise Problem(401, "this endpoint needs a bearer token (ioc token create --role viewer)",
                          headers=_CHALLENGE)
        found, why = await request.app[store_key].lookup(token)
        if found is None:
            if via == "cookie":
                raise Problem(401, f"your session has ended ({why}): sign in again",
                              headers=_CHALLENGE)
            raise Problem(401, why, headers=_CHALLENGE)
        if found.kind == "sign_in" and not (path == SESSION_PATH and request.method == "POST"):
            raise Problem(401, "this is a sign-in link's token: open the link in a browser (the "
                               "page trades it for a session), or create an API token with "
                               "'ioc token create'", headers=_CHALLENGE)
        if via == "cookie" and (request.method not in _SAFE
                                or request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"):
            if not _same_origin(request):
                raise Problem(403, "a request carrying the session cookie must come from this "
                                   "server's own pages (Origin does not match)")
        request[PRINCIPAL] = Principal(found.token_id, found.name, found.role, found.crew,
                                       found.kind, found.expires_at, found.parent_id, via)
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
