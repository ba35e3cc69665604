"""Bounds on one client: request bodies by size, requests per token by a token bucket.

Bodies: ``Content-Length`` above the route's limit is refused before anything is read;
the application's ``client_max_size`` (the ordinary limit) stops a chunked body that grows
past it while being read. Only handlers marked :func:`large_body` (the import) read their
body themselves, up to ``max_import_bytes``, with :func:`read_bounded`.

Rates: one bucket per token, refilled at the role's ``rate_per_s`` up to ``burst``. A
request that finds the bucket empty gets 429 with ``Retry-After`` (whole seconds, as
RFC 9110 wants) and changes nothing. Buckets live in this process: behind a load balancer
each node allows the rate, which is fine for a limit meant to stop runaway clients.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from server import keys
from server.http.auth import PRINCIPAL
from server.http.problems import Problem
from server.settings import ApiSettings, RateLimit

_LARGE_BODY = "_ioc_large_body"


def large_body(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Mark a handler that may receive bodies up to ``max_import_bytes``."""
    setattr(handler, _LARGE_BODY, True)
    return handler


def _is_large(request: web.Request) -> bool:
    handler = getattr(request.match_info, "handler", None)
    return bool(getattr(handler, _LARGE_BODY, False))


def _too_large(limit: int, size: int | None = None) -> Problem:
    got = f" (this one is {size:,} bytes)" if size is not None else ""
    return Problem(413, f"the request body is larger than the {limit:,} bytes this endpoint "
                        f"accepts{got}; split it, or use POST /api/v1/import for bulk loads",
                   limit=limit)


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it passes ``limit`` (chunked uploads included)."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, request.content_length)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def body_limit_middleware(settings: ApiSettings):
    @web.middleware
    async def middleware(request: web.Request, handler):
        size = request.content_length
        if size is not None:
            limit = settings.max_import_bytes if _is_large(request) else settings.max_body_bytes
            if size > limit:
                raise _too_large(limit, size)
        return await handler(request)

    return middleware


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets per API token, with the limits of its role."""

    def __init__(self, limits: dict[str, RateLimit], clock: Callable[[], float] = time.monotonic):
        self._limits = limits
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}

    def take(self, token_id: int, role: str) -> float:
        """Spend one request: 0 if allowed, else the seconds until one is available."""
        limit = self._limits.get(role)
        if limit is None:
            return 0.0
        now = self._clock()
        b = self._buckets.get(token_id)
        if b is None:
            b = self._buckets[token_id] = _Bucket(float(limit.burst), now)
        b.tokens = min(float(limit.burst), b.tokens + (now - b.at) * limit.rate_per_s)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / limit.rate_per_s

    def limit_for(self, role: str) -> RateLimit | None:
        return self._limits.get(role)

    def forget(self, token_id: int) -> None:
        self._buckets.pop(token_id, None)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler):
    """After authentication: the caller's token is known (public paths carry none).

    Only the API is limited. Tiles are not: a map panning across a city asks for hundreds
    at once, they come from a cache, and a limit there would blank the operators' map.
    """
    who = request.get(PRINCIPAL)
    limiter = request.app.get(keys.RATE_LIMITER)
    if who is not None and limiter is not None and request.path.startswith("/api/"):
        wait = limiter.take(who.token_id, who.role)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise Problem(
                429, f"too many requests for this token (the {who.role} role allows "
                     f"{limiter.limit_for(who.role).rate_per_s:g} per second); retry in {retry} s",
                headers={"Retry-After": str(retry)}, retry_after=retry,
            )
    return await handler(request)


def install(app: web.Application, settings: ApiSettings) -> None:
    """Create the limiter the middleware and the tokens API share."""
    if settings.rate_limit:
        app[keys.RATE_LIMITER] = RateLimiter(settings.rate_limits)

