"""JSON responses with orjson (datetimes as RFC 3339, numpy values natively), and JSON
request bodies read with the limits every stored document must keep (:func:`flaw`)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

from server.http.problems import Problem

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS

# orjson serialises at most 254 levels and the server writes back what it stores (jsonb,
# audit details, dead letters): a document nested deeper could be read but never written.
# No document of this API needs more than a dozen (a GeometryCollection of MultiPolygons).
MAX_DEPTH = 32
# Longer text is refused before it reaches PostgreSQL, whose indexes take at most ~2,700
# bytes a row (a 10 kB name or id is an error there, not a 400); a comment or a description
# is far shorter, and a bulk load of properties goes through the import.
MAX_TEXT = 10_000


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPTS)


def json_response(
    obj: Any, *, status: int = 200, content_type: str = "application/json", headers=None
) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type=content_type, headers=headers)


def text_flaw(text: str, max_chars: int = MAX_TEXT) -> str | None:
    """What makes ``text`` unstorable, in words, or None: a NUL (PostgreSQL text cannot hold
    one), an unpaired surrogate (not UTF-8 at all), or more than ``max_chars`` characters."""
    if "\x00" in text:
        return "must not contain NUL characters (PostgreSQL cannot store them)"
    if len(text) > max_chars:
        return f"is too long: {len(text):,} characters, at most {max_chars:,}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogates (it is not valid Unicode text)"
    return None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def flaw(doc: Any, max_depth: int = MAX_DEPTH, max_chars: int = MAX_TEXT) -> tuple[str, str] | None:
    """The first member of a JSON document that cannot be stored, as ``(field, reason)``:
    text (keys included) with a :func:`text_flaw`, or nesting deeper than ``max_depth``.
    Iterative, so a document nested thousands deep costs no Python recursion."""
    stack: list[tuple[Any, str, int]] = [(doc, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            reason = text_flaw(value, max_chars)
            if reason:
                return path or "(body)", reason
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                return path or "(body)", f"is nested deeper than {max_depth} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                child = _join(path, k)
                if isinstance(k, str):
                    reason = text_flaw(k, max_chars)
                    if reason:
                        return child, "has a member name that " + reason
                stack.append((v, child, depth + 1))
    return None


def refuse_flaws(doc: Any, what: str = "the body") -> Any:
    """``doc``, or a 400 naming its first member that cannot be stored (see :func:`flaw`)."""
    found = flaw(doc)
    if found:
        field, reason = found
        raise Problem(400, f"{field} in {what} {reason}", errors=[{"field": field, "reason": reason}])
    return doc


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
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        if "surrogate" in str(err):  # orjson refuses "\ud800"; Python's json reads it, and
            try:                     # then the member that holds it can be named
                refuse_flaws(json.loads(body))
            except (ValueError, RecursionError):
                pass
        raise Problem(400, f"the body is not valid JSON: {err}") from None
    return refuse_flaws(doc)
