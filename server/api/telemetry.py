"""HTTP push (``POST /api/v1/telemetry``) and history (``GET …/devices/{id}/telemetry``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import orjson
from aiohttp import web
from pydantic import ValidationError

from adapters.mqtt import protocol as native
from adapters.sdk import DecodeError
from server import keys
from server.api.models import HistoryQuery, ReadingIn
from server.errors import Invalid, NotFound
from server.http import validate
from server.http.auth import require
from server.http.jsonutil import flaw, json_response
from server.store.history import history_query

routes = web.RouteTableDef()


@routes.post("/api/v1/telemetry")
async def push(request: web.Request) -> web.Response:
    """The MQTT payload plus ``device_id``, or an array of those → 202.

    Entries that fail validation become dead letters and are listed in ``rejected``; the
    good ones are stored all the same.
    """
    require(request, "integrator")
    raw = await request.read()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise Invalid(f"the body is not valid JSON: {err}") from None
    entries = doc if isinstance(doc, list) else [doc]
    if not entries:
        raise Invalid("the array is empty; send at least one reading object")
    now = datetime.now(UTC)
    readings, errors = [], []
    for i, entry in enumerate(entries):
        where = f"entry {i}: " if isinstance(doc, list) else ""
        try:
            device_id = ReadingIn.model_validate(entry).device_id
        except ValidationError:
            if not isinstance(entry, Mapping):
                raise Invalid(f"{where}expected an object with device_id, ts and values") from None
            raise Invalid(f"{where}device_id is missing; each object names its device") from None
        found = flaw(entry)
        if found:  # unstorable (a NUL, nesting orjson cannot write back): a dead letter
            errors.append(DecodeError(f"{where}{found[0]} {found[1]}", field=found[0],
                                      device_id=device_id))
            continue
        body = {k: v for k, v in entry.items() if k != "device_id"}
        got, errs = native.decode_telemetry(device_id, orjson.dumps(body), now)
        readings.extend(got)
        errors.extend(errs)
    result = await request.app[keys.INGEST].submit(
        readings, errors=errors, source="http", raw=raw, topic=None
    )
    return json_response({"accepted": result.accepted, "rejected": result.rejected},
                         status=202)


@routes.get("/api/v1/devices/{id}/telemetry")
async def history(request: web.Request) -> web.Response:
    dev_id = request.match_info["id"]
    q = validate.query(request, HistoryQuery)
    async with request.app[keys.DB].acquire() as conn:
        key = await conn.fetchval("select key from devices where id = $1", dev_id)
        if key is None:
            raise NotFound(f"no device with id {dev_id!r}")
        body = await history_query(conn, key, dev_id,
                                   q.model_dump(by_alias=True, exclude_none=True, mode="json"))
    return json_response(body)
