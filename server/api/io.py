"""``POST /api/v1/import`` and ``GET /api/v1/export``: the registry in bulk.

Import (integrator or admin): the body is the file, GeoJSON (``Content-Type:
application/geo+json``) or CSV (``text/csv``), or say ``?format=``. ``?dry_run=true``
validates and reports without writing. The whole file is validated first; any problem
gives 422 with every problem listed, and nothing is written. See server/registry/importer.py for
the create-or-update rules and the CSV columns.
"""

from __future__ import annotations

import asyncio
from functools import partial

from aiohttp import web

from server import keys
from server.api.models import ExportQuery, ImportQuery
from server.errors import Invalid
from server.http import validate
from server.http.auth import require
from server.http.jsonutil import json_response
from server.http.problems import Problem
from server.http.ratelimit import large_body, read_bounded
from server.mqtt.dynsec import devices_changed
from server.registry import exporter, importer

routes = web.RouteTableDef()


def _format(request: web.Request, fmt: str | None, data: bytes) -> importer.Format:
    if fmt is not None:
        return fmt  # type: ignore[return-value]
    return importer.detect_format(content_type=request.content_type, data=data)


@routes.post("/api/v1/import")
@large_body
async def import_devices(request: web.Request) -> web.Response:
    who = require(request, "integrator")
    q = validate.query(request, ImportQuery)
    data = await read_bounded(request, request.app[keys.SETTINGS].api.max_import_bytes)
    if not data.strip():
        raise Invalid("the body is empty; send a GeoJSON FeatureCollection or a CSV file")
    fmt = _format(request, q.format, data)
    loop = asyncio.get_running_loop()

    async def in_thread(fn, *args):
        # Parsing and checking 100,000 features takes seconds of CPU: off the event loop.
        return await loop.run_in_executor(None, partial(fn, *args))

    async with request.app[keys.DB].acquire() as conn:
        try:
            plan = await importer.prepare(conn, data, fmt, run=in_thread)
        except importer.ImportFileError as err:
            raise Invalid(f"cannot read the {fmt} file: {err}; nothing was imported") from None
        if not plan.ok:
            n = len(plan.issues)
            first = plan.issues[0]
            raise Problem(
                422, f"{n} problem(s) in the file, the first at {first.where}: {first.field}: "
                     f"{first.reason}; nothing was imported",
                **importer.issues_problem(plan))
        if q.dry_run:
            return json_response(plan.report(dry_run=True))
        applied = await importer.apply(conn, plan, who.actor, source=f"api ({fmt})")
        await devices_changed(request.app, added=[d.id for d in plan.items])
        directory = request.app.get(keys.DIRECTORY)
        if directory is not None:
            await directory.load(conn)
    return json_response(plan.report(dry_run=False, applied=applied))


@routes.get("/api/v1/export")
async def export_devices(request: web.Request) -> web.StreamResponse:
    q = validate.query(request, ExportQuery)
    fmt = q.format
    async with request.app[keys.DB].acquire() as conn:
        try:
            bbox, kinds = await exporter.parse_filters(conn, q.bbox, ",".join(q.kind or ()))
        except exporter.ExportFilterError as err:
            raise Invalid(str(err)) from None
        resp = web.StreamResponse(headers={
            "Content-Type": exporter.CONTENT_TYPES[fmt] + ("; charset=utf-8" if fmt == "csv" else ""),
            "Content-Disposition": f'attachment; filename="devices.{fmt}"',
        })
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        async with conn.transaction(readonly=True):
            async for chunk in exporter.chunks(conn, fmt, bbox, kinds):
                await resp.write(chunk)
    await resp.write_eof()
    return resp
