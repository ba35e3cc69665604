"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /api/v1/openapi.json``.

What a request may carry comes from the code that checks it, so the two cannot drift: the
pydantic models of server/api/models.py (bodies become components, query models become
parameters), the rule models of rules/models.py and the command catalogue. Responses and
the import file (GeoJSON or CSV, which the registry parses itself) are described by hand.

``build`` has the builders, ``schemas`` the components, ``paths`` the operations; this
module assembles them. Two tests keep it honest: every route the app registers under
/api/v1 must appear in ``paths`` (tests/server/test_openapi.py), and schemathesis sends
generated requests to the live app and checks every answer against this document.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server import keys
from server.http.jsonutil import json_response
from server.http.openapi.build import RESPONSES
from server.http.openapi.paths import paths
from server.http.openapi.schedules import components as schedule_components
from server.http.openapi.schemas import SCHEMAS, model_components, rule_components
from server.settings import Settings


def _configured(schemas: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The bounds this server is configured with, where the models carry the widest."""
    schemas["ShelveIn"]["properties"]["minutes"]["maximum"] = settings.rules.shelve_max_minutes
    for name in ("CommandIn", "GroupCommandIn"):
        ttl = schemas[name]["properties"]["ttl_s"]
        next(b for b in ttl["anyOf"] if b.get("type") == "number")["maximum"] = \
            settings.commands.max_ttl_s
    return schemas


def document(settings: Settings | None = None) -> dict[str, Any]:
    schemas = {**SCHEMAS, **model_components(), **rule_components(), **schedule_components()}
    if settings is not None:
        schemas = _configured(schemas, settings)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ioc-server",
            "version": "1.0.0",
            "summary": "Realtime GIS and telemetry for a city Intelligent Operations Center",
            "description": (
                "Every endpoint but /healthz and /readyz takes `Authorization: Bearer <token>` "
                "(the pages: their session cookie; `?token=` only on the websocket, tiles and /ogc, "
                "where a client cannot set headers). Roles: viewer (read), crew "
                "(read, its own alarms), operator (alarms, commands), integrator (devices, "
                "adapters, rules), admin (everything, tokens). Errors are "
                "application/problem+json (RFC 9457). Each token has a rate limit by role "
                "(429 with Retry-After); request bodies are bounded (413)."),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "tags": [{"name": t} for t in (
            "devices", "telemetry", "alarms", "rules", "commands", "schedules", "crews", "work orders",
            "audit", "tokens", "import and export", "map", "tiles", "meta")],
        "paths": paths(),
        "components": {
            "schemas": schemas,
            "responses": RESPONSES,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "ioc_session"},
                "query_token": {"type": "apiKey", "in": "query", "name": "token",
                                "description": "only /api/v1/ws, /tiles and /ogc (GET)"},
            },
        },
    }


routes = web.RouteTableDef()


@routes.get("/api/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(document(request.app[keys.SETTINGS]), headers={"Cache-Control": "no-cache"})
