"""Crews' notes and photos on finished work (alarms and work orders, issue 18 and 14).

The photo code is the citizens' reports' (server/reports): checked by content with Pillow,
re-encoded as a metadata-free JPEG, kept by content hash. Crews' photos live in their own
directory beside the reports' (``<reports.photo_dir>/../work-photos``, under the same quota
setting) because they are not public: each is served only through the alarm or work order
it belongs to, to the roles that may see that object.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from aiohttp import web

from server import keys
from server import reports as photos
from server.api.reports import _bad, _read_multipart, _text
from server.errors import NotFound
from server.http.jsonutil import read_json
from server.http.problems import Problem


def store(request: web.Request) -> photos.PhotoStore:
    settings = request.app[keys.SETTINGS].reports
    root = Path(settings.photo_dir).parent / "work-photos"
    return photos.PhotoStore(root, settings.photo_quota_bytes)


async def read_form(request: web.Request) -> tuple[dict, bytes | None]:
    """The body's fields and its one photo: JSON or a form (no photo), or multipart/form-data."""
    if request.content_type == "application/x-www-form-urlencoded":
        try:
            fields = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        except (UnicodeDecodeError, ValueError):
            raise _bad("(body)", "is not UTF-8 text") from None
        if "note" in fields:
            fields["note"] = _text(fields["note"], "note", required=False)
        return {k: v for k, v in fields.items() if v is not None}, None
    if request.content_type.startswith("multipart/"):
        fields: dict[str, str] = {}
        raw: list[bytes] = []
        try:
            await _read_multipart(request, fields, raw)
        except Problem:
            raise
        except Exception:
            raise _bad("(body)", "is not readable multipart/form-data") from None
        if len(raw) > 1:
            raise _bad("photo", "one photo at a time")
        if "note" in fields:
            fields["note"] = _text(fields["note"], "note", required=False)
        return {k: v for k, v in fields.items() if v is not None}, (raw[0] if raw else None)
    if not (await request.read()).strip():
        return {}, None
    doc = await read_json(request)
    if not isinstance(doc, dict):
        raise _bad("(body)", "must be a JSON object")
    if isinstance(doc.get("note"), str):  # plain text, as in a form: the same rules either way
        doc["note"] = _text(doc["note"], "note", required=False)
        if doc["note"] is None:
            del doc["note"]
    return doc, None


async def clean(request: web.Request, raw: bytes) -> tuple[str, bytes]:
    """One photo checked and re-encoded (in a thread: ~10 ms of CPU), room for it checked:
    its content hash and bytes, for :func:`put` once the action it comes with is stored (a
    refused action keeps nothing)."""
    where = store(request)

    def work() -> tuple[str, bytes]:
        jpeg = photos.clean_photo(raw)
        where.check_room(len(jpeg))
        return hashlib.sha256(jpeg).hexdigest(), jpeg

    return await asyncio.to_thread(work)


async def put(request: web.Request, jpeg: bytes) -> str:
    return await asyncio.to_thread(store(request).put, jpeg)


def serve(request: web.Request, name: str) -> web.Response:
    """A stored photo by its file name (``<sha256>.jpg``); never cached by shared caches."""
    path = store(request).path(name.removesuffix(".jpg")) if name.endswith(".jpg") else None
    if path is None:
        raise NotFound("no such photo")
    return web.Response(body=path.read_bytes(), content_type="image/jpeg",
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "private, max-age=86400"})
