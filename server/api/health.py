"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (it can do its job)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server import keys
from server.http.jsonutil import json_response

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with request.app[keys.DB].acquire() as conn:
                await conn.fetchval("select 1")
        checks["database"] = "ok"
    except (TimeoutError, OSError, Exception) as err:  # any failure means "not ready"
        checks["database"] = f"unreachable: {type(err).__name__}: {err}"[:300]
    link = request.app.get(keys.MQTT)
    if link is not None:
        checks["mqtt"] = "ok" if link.is_connected else "not connected to the broker"
    else:
        checks["mqtt"] = "not configured"
    ingest = request.app.get(keys.INGEST)
    if ingest is not None:
        checks["ingest"] = ingest.health()
    ready = all(v in ("ok", "not configured") for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    if ready:
        return json_response(body)
    return json_response(
        {"type": "about:blank", "title": "Service unavailable", "status": 503,
         "detail": "; ".join(f"{k}: {v}" for k, v in checks.items() if v not in ("ok", "not configured")),
         **body},
        status=503, content_type="application/problem+json",
    )
