"""``GET /api/v1/state?at=&bbox=&kind=``: every device as it was at a past instant (status,
latest values, worst active alarm), as a FeatureCollection shaped like ``/api/v1/devices``.
What each part is read from, and the limits, are in :mod:`server.live.past`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import Field

from geo.geojson import GeometryError, parse_bbox
from server import keys
from server.api.models import Bbox, Kinds, Time, limit
from server.errors import Invalid
from server.http import validate
from server.http.auth import principal
from server.http.jsonutil import json_response
from server.live.past import Scope, feature_of, state_at
from server.registry.devices import known_kinds
from server.store.history import parse_time

routes = web.RouteTableDef()

GEOJSON = "application/geo+json"


class StateQuery(validate.Query):
    at: Time = Field(description="the instant, RFC 3339 (not in the future)")
    bbox: Bbox | None = None
    kind: Kinds | None = None
    limit: int = limit(50_000, 200_000)


def crew_scope(who: Any) -> str | None:
    """A crew token sees only its crew's alarms ("" when it names no crew: none at all)."""
    return (who.crew or "") if who.role == "crew" else None


@routes.get("/api/v1/state")
async def state(request: web.Request) -> web.Response:
    who = principal(request)
    q = validate.query(request, StateQuery)
    try:
        at = parse_time(q.at, "at")
    except Invalid as err:
        raise Invalid(err.detail, field="at") from None
    if at > datetime.now(UTC):
        raise Invalid(f"at {q.at} is in the future; the state is known up to now", field="at")
    try:
        bbox = parse_bbox(q.bbox)
    except GeometryError as e:
        raise Invalid(str(e), field="bbox") from None
    async with request.app[keys.DB].acquire() as conn:
        if q.kind:
            known = await known_kinds(conn)
            unknown = [k for k in q.kind if k not in known]
            if unknown:
                raise Invalid(f"unknown kind {', '.join(unknown)}; known kinds: "
                              f"{', '.join(sorted(known))}", field="kind")
        devices, truncated = await state_at(
            conn, at, Scope(bbox, tuple(q.kind) if q.kind else None, crew_scope(who), q.limit))
    body: dict[str, Any] = {"type": "FeatureCollection", "at": at,
                            "features": [feature_of(d) for d in devices],
                            "numberReturned": len(devices)}
    if truncated:
        body["truncated"] = True
    return json_response(body, content_type=GEOJSON)
