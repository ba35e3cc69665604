"""RFC 9457 problem details: the one place errors become HTTP responses.

Services raise the domain's errors (:mod:`server.errors`); handlers may raise
:class:`Problem` for what only HTTP knows (authentication, methods, bodies). The middleware
renders every error, the domain's, ours or aiohttp's, as ``application/problem+json`` with
a message a person can act on, through the one table :data:`STATUS_OF`. Unexpected
exceptions are logged with their traceback and answered with a 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from server import errors

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    """An HTTP error with a detail for people and optional machine-readable extras."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.type = type_
        self.headers = headers or {}
        self.extra = extra

    def response(self, instance: str | None = None) -> web.Response:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return web.Response(
            status=self.status,
            body=orjson.dumps(body),
            content_type=PROBLEM_TYPE,
            headers=self.headers,
        )


# The domain's errors and their statuses: the error table.
STATUS_OF: dict[type[errors.DomainError], int] = {
    errors.Invalid: 400,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Unavailable: 503,
}


def from_domain(err: errors.DomainError) -> Problem:
    status = next((s for cls, s in STATUS_OF.items() if isinstance(err, cls)), 400)
    headers = {}
    if isinstance(err, errors.Unavailable) and err.retry_after_s is not None:
        headers["Retry-After"] = str(err.retry_after_s)
    return Problem(status, err.detail, headers=headers, **err.extra)


@web.middleware
async def problem_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except Problem as p:
        return p.response(request.path)
    except errors.DomainError as err:
        return from_domain(err).response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else None
        if exc.status == 404 and not detail:
            detail = f"no resource at {request.path}"
        elif exc.status == 405:
            detail = f"{request.method} is not allowed on {request.path}"
        elif exc.status == 413:
            detail = "request body too large"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return Problem(exc.status, detail or exc.reason, headers=headers).response(request.path)
    except ConnectionResetError:
        raise
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return Problem(500, "the server failed on this request; it has been logged").response(
            request.path
        )
