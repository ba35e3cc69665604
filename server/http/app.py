"""The aiohttp application factory: resources in cleanup contexts, routes, middlewares."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from server import keys
from server.alarms.engine import alarms_ctx
from server.api import alarms as alarm_api
from server.api import assets as asset_api
from server.api import audit as audit_api
from server.api import commands as command_api
from server.api import crews as crew_api
from server.api import devices, health, open311, public_reports, state, telemetry
from server.api import io as io_api
from server.api import reports as report_api
from server.api import rules as rule_api
from server.api import schedules as schedule_api
from server.api import tokens as token_api
from server.api import wards as ward_api
from server.api import work_orders as work_order_api
from server.api.ogc import routes as ogc_routes
from server.api.sta import routes as sta_routes
from server.api.tiles import routes as tile_routes
from server.api.tiles import tiles_ctx
from server.commands.service import commands_ctx
from server.http import citizen, openapi, pages
from server.http.auth import TokenStore, auth_middleware
from server.http.problems import problem_middleware
from server.http.proxy import forwarded_middleware
from server.http.ratelimit import body_limit_middleware, rate_limit_middleware
from server.http.ratelimit import install as install_rate_limits
from server.http.validate import input_middleware
from server.ingest.contexts import directory_ctx, ingest_ctx, mqtt_ctx
from server.ingest.downtime import downtime_ctx
from server.live import ws as ws_api
from server.live.hub import hub_ctx
from server.mqtt.dynsec import dynsec_ctx
from server.notify import notify_ctx
from server.polling.adapters import adapters_ctx
from server.polling.modbus import modbus_ctx
from server.reports.ops import sla_ctx as report_sla_ctx
from server.runtime.memory import memory_ctx
from server.runtime.metrics import Registry, metrics_handler
from server.schedules import schedules_ctx
from server.settings import Settings
from server.simulate import simulator_ctx
from server.store.db import db_pool

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent.parent / "static"


async def token_store(app: web.Application) -> AsyncIterator[None]:
    app[keys.TOKENS] = TokenStore(app[keys.DB])
    yield


@web.middleware
async def count_requests(request: web.Request, handler):
    resp = await handler(request)
    request.app[keys.METRICS].http_requests.labels(request.method, str(resp.status)).inc()
    return resp


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[forwarded_middleware(settings.http_trusted_proxies),  # first: all see it
                     problem_middleware, open311.open311_errors,  # Open311's own error shape
                     count_requests, body_limit_middleware(settings.api),
                     auth_middleware(keys.TOKENS), rate_limit_middleware, input_middleware],
        # Ordinary endpoints; the import reads its own, larger body (server/http/ratelimit.py).
        client_max_size=settings.api.max_body_bytes,
    )
    install_rate_limits(app, settings.api)
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = Registry()
    # Started in this order, stopped in reverse: whoever consumes a thing outlives it.
    app.cleanup_ctx.extend(
        [
            memory_ctx,  # returns freed heap pages to the OS (glibc)
            db_pool,
            downtime_ctx,  # measured before ingest stores anything (server/ingest/downtime.py)
            token_store,
            directory_ctx,
            dynsec_ctx,  # the broker's device accounts, when the server administers them
            tiles_ctx,  # layer catalogue, versions and the tile cache
            hub_ctx,  # websocket fan-out: alarms, notifications and ingest publish to it
            notify_ctx,  # the notifier: handed to the alarm engine, next, for its transitions
            alarms_ctx,  # the rule engine: an ingest listener
            report_sla_ctx,  # citizens' reports past their service level: escalated
            ingest_ctx,
            simulator_ctx,
            modbus_ctx,
            adapters_ctx,  # third-party polling adapters ([adapters.<kind>])
            mqtt_ctx,
            commands_ctx,  # routes commands through the MQTT link and the Modbus poller
            schedules_ctx,  # lighting schedules: steps sent as commands, lamps for the rule
        ]
    )
    app.add_routes(health.routes)
    app.add_routes(devices.routes)
    app.add_routes(telemetry.routes)
    app.add_routes(state.routes)  # the map at a past instant (GET /api/v1/state?at=)
    app.add_routes(alarm_api.routes)  # alarms: lifecycle actions, history, KPIs
    app.add_routes(rule_api.routes)  # alarm rules and their backtest
    app.add_routes(command_api.routes)  # device and group commands
    app.add_routes(schedule_api.routes)  # lighting schedules (dimming profiles)
    app.add_routes(audit_api.routes)
    app.add_routes(ward_api.routes)
    app.add_routes(asset_api.routes)  # search, camera media proxy (issue 18)
    app.add_routes(crew_api.routes)  # crews: routing and escalation targets
    app.add_routes(token_api.routes)
    app.add_routes(report_api.routes)  # citizens' reports: public and operators'
    app.add_routes(work_order_api.routes)  # inspections and work on trees (issue 14)
    app.add_routes(open311.routes)  # /open311/v2: GeoReport v2 over the same reports
    app.add_routes(public_reports.routes)  # open data: GeoJSON, CSV, stats per ward, base map
    ws_api.setup(app)  # /api/v1/ws, and closing websockets at shutdown
    app.add_routes(io_api.routes)  # bulk import and export
    app.add_routes(openapi.routes)  # GET /api/v1/openapi.json
    app.add_routes(tile_routes)  # /tiles: layer list, TileJSON, MVT
    app.add_routes(ogc_routes)  # /ogc: OGC API - Features and Tiles (server/api/ogc/)
    app.add_routes(sta_routes)  # /sta/v1.1: SensorThings API 1.1, read side (server/api/sta/)
    app.add_routes(pages.routes)  # / , /crew and /api/docs
    app.add_routes(citizen.routes)  # /report, /reports/{code}, /public: no account
    pages.install(app)  # CSP, nosniff, Referrer-Policy, no framing: on every response
    app.router.add_get("/metrics", metrics_handler)
    static = settings.static_dir or STATIC_DIR
    if static.exists():
        app.router.add_static("/static/", static, name="static")
    return app
