"""JSON responses with orjson (datetimes as RFC 3339, numpy values natively)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from server.http.problems import Problem

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPTS)


def json_response(
    obj: Any, *, status: int = 200, content_type: str = "application/json", headers=None
) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type=content_type, headers=headers)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400/415 that says what is wrong with it."""
    ctype = request.content_type
    if ctype not in ("application/json", "application/geo+json", "application/merge-patch+json",
                     "text/plain", "application/octet-stream", ""):
        raise Problem(415, f"send JSON (Content-Type: application/json), not {ctype}")
    body = await request.read()
    if not body.strip():
        raise Problem(400, "the request body is empty; send a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise Problem(400, f"the body is not valid JSON: {err}") from None
