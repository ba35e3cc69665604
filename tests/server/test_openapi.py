"""The OpenAPI document: complete (every route), well-formed, and true of the live app.

Schemathesis (v4) generates requests from the document and sends them to the whole app,
served by a real HTTP server on its own event loop in a thread (schemathesis calls are
blocking), against the synthetic city and the session's mosquitto. Every answer must be
no server error and match the document: status code, content type, headers and body.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.cli.embedded import free_port
from server.http.app import create_app
from server.http.auth import create_token_sync
from server.http.openapi import document
from server.settings import Settings

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
# Documented besides /api/v1: probes, metrics and tiles. Pages and static files are not API.
OTHER_DOCUMENTED = ("/healthz", "/readyz", "/metrics", "/tiles")


def _template_regex(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$")


def registered_routes() -> set[tuple[str, str]]:
    app = create_app(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    out = set()
    for route in app.router.routes():
        if route.method not in METHODS or route.resource is None:
            continue
        path = route.resource.canonical
        if path.startswith("/api/v1/") or path.startswith(OTHER_DOCUMENTED):
            out.add((route.method, path))
    return out


def test_every_route_is_documented():
    routes = registered_routes()
    assert ("POST", "/api/v1/import") in routes and len(routes) > 30
    doc_paths = document()["paths"]
    missing = []
    for method, path in sorted(routes):
        documented = [p for p, item in doc_paths.items() if method.lower() in item
                      and (p == path or _template_regex(path).match(p))]
        if not documented:
            missing.append(f"{method} {path}")
    assert not missing, "routes missing from server/http/openapi/paths.py: " + ", ".join(missing)


def test_every_documented_operation_exists():
    routes = registered_routes()
    regexes = [(m, _template_regex(p)) for m, p in routes]
    for path, item in document()["paths"].items():
        for method in item:
            if method.upper() in METHODS:
                assert any(m == method.upper() and (rx.match(path)) for m, rx in regexes) or \
                    (method.upper(), path) in routes, f"{method.upper()} {path} is not a route"


def test_references_resolve_and_operations_say_their_errors():
    doc = document()
    text = orjson.dumps(doc).decode()
    for name in set(re.findall(r'"#/components/(?:schemas|responses)/([^"]+)"', text)):
        assert name in doc["components"]["schemas"] or name in doc["components"]["responses"], name
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert operation["summary"] and operation["responses"], (method, path)
            if path not in ("/healthz", "/readyz") and not path.startswith("/api/v1/public/"):
                assert "401" in operation["responses"], f"{method} {path} needs a token"


async def test_served_with_a_token(aiohttp_client, db_url, make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(db_url, mqtt_url=None)))
    assert (await client.get("/api/v1/openapi.json")).status == 401
    resp = await client.get("/api/v1/openapi.json",
                            headers={"Authorization": f"Bearer {await token_for(db_url, 'viewer')}"})
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"] == "3.1.0" and "/api/v1/tokens/{id}" in doc["paths"]


# ---------------------------------------------------------------- schemathesis


class LiveServer:
    """The app on a real port, on its own loop in a thread (schemathesis blocks)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="live-server")

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(create_app(self.settings), access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        except BaseException as err:
            self._error = err
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def __enter__(self) -> LiveServer:
        self._thread.start()
        self._ready.wait(120)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(60)


@pytest.fixture
def live_server(city_db_url, mosquitto):
    settings = Settings(database_url=city_db_url, mqtt_url=mosquitto.url,
                        mqtt_client_id="ioc-schemathesis")
    token = create_token_sync(city_db_url, "admin", "schemathesis")
    with LiveServer(settings) as server:
        server.headers = {"Authorization": f"Bearer {token}"}
        yield server


@pytest.fixture
def live_schema(live_server):
    server, headers = live_server, live_server.headers
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json",
                                           headers=headers, timeout=30)
    schema.config.update(base_url=server.url, headers=headers, request_timeout=60)
    return schema


# `--checks all`: every check schemathesis registers (conformance of status, content type,
# headers and body; unsupported methods answer 405 with Allow; a request without its token is
# refused; missing required headers; and the stateful ones), the data ones per operation below.
DATA_CHECKS = (positive_data_acceptance, negative_data_rejection)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
CHECKS += [c for c in REGISTERED_CHECKS.get_all() if c not in CHECKS and c not in DATA_CHECKS]
# What the document allows the server accepts (positive data), and what it forbids the server
# refuses (negative data): the models in server/api/models.py are both. Except where a rule
# cannot be put in a schema, and then the operation says which rule:
POSITIVE_GAPS = {
    "GET /api/v1/alarms": "bbox min <= max; assigned=me needs a crew token",
    "GET /api/v1/alarms/kpis": "from before to",
    "GET /api/v1/audit": "from before to",
    "GET /api/v1/devices": "bbox min <= max",
    "GET /api/v1/state": "bbox min <= max; at not in the future",
    "GET /api/v1/wards/summary": "at not in the future",
    "GET /api/v1/export": "bbox min <= max",
    "GET /api/v1/devices/{id}/telemetry": "from before to, at most 100,000 buckets",
    "POST /api/v1/alarms/{id}/assign": "the crew exists",
    "POST /api/v1/tokens": "the crew exists",
    "POST /api/v1/crews": "the ward exists",
    "PATCH /api/v1/crews/{id}": "the ward exists",
    "POST /api/v1/commands": "the target selects devices of a kind that takes the command",
    "POST /api/v1/commands/preview": "the target selects devices of a kind that takes the command",
    "POST /api/v1/devices/{id}/commands": "the device's kind takes the command",
    "GET /api/v1/ws": "a websocket handshake",
    "GET /tiles/{layer}/{z}/{x}/{y}.mvt": "z within the layer's own maxzoom (TileJSON), x and y < 2^z",
    # Bodies whose validators check more than a schema can say: a GeoJSON geometry's rings
    # and coordinates, the import file (GeoJSON or CSV), and rules/models.py (a threshold
    # needs a limit, a member must exist).
    "POST /api/v1/devices": "GeoJSON geometry", "PATCH /api/v1/devices/{id}": "GeoJSON geometry",
    "POST /api/v1/import": "a GeoJSON or CSV file", "POST /api/v1/rules": "rule validators",
    "PUT /api/v1/rules/{id}": "rule validators", "POST /api/v1/rules/backtest": "rule validators",
    # citizens' reports: photos are checked by content (Pillow), reports are rate-limited per
    # address, a rating needs a resolved report, a step needs a status it can follow
    "POST /api/v1/public/reports": "photos by content; rate limit per address",
    "POST /api/v1/public/reports/{code}/rating": "the report exists and is resolved",
    "GET /api/v1/reports": "bbox min <= max",
    "GET /api/v1/public/basemap/{z}/{x}/{y}.mvt": "x and y below 2^z",
    # lighting schedules: the target must select lamps, steps come in the order of a night
    "POST /api/v1/schedules": "the target selects lamps; steps in the order of a night",
    "PUT /api/v1/schedules/{id}": "the target selects lamps; steps in the order of a night",
    "POST /api/v1/schedules/preview": "the target exists; steps in the order of a night",
    "GET /api/v1/schedules/{id}/energy": "to within the years a datetime holds",
    **{f"POST /api/v1/reports/{{id}}/{a}": "the report exists and its status allows the step"
       for a in ("verify", "assign", "reject", "resolve", "comment")},
    # the crew loop and work orders: a crew's photo is checked by content (Pillow)
    "POST /api/v1/alarms/{id}/work": "photos by content; the alarm's work state allows it",
    "POST /api/v1/work-orders": "the device and the crew exist",
    "POST /api/v1/work-orders/{id}/start": "the work order exists and its status allows the step",
    "POST /api/v1/work-orders/{id}/done": "photos by content; the work order exists and its status "
                                          "allows the step",
}
NEGATIVE_GAPS = {
    "POST /api/v1/telemetry": "a bad reading is accepted as a dead letter, by design",
}
# Per operation and mode: enough to find a crash or a mismatch, few enough for `make test`.
EXAMPLES = 8


def _describe(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return "\n  ".join(lines[:14])


def _property_test(strategy, checks):
    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def check(case):
        case.call_and_validate(checks=checks)

    return check


def test_live_api_answers_as_documented(live_schema):
    # Driven directly rather than through schemathesis' pytest plugin, whose lazy fixture
    # loader does not run under pytest 9 (request.node._nodeid is gone).
    failures: list[str] = []
    operations = 0
    for result in live_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            # /readyz answers 503 by design when a dependency is down: documented, not a bug
            checks = CHECKS[1:] if operation.path == "/readyz" else list(CHECKS)
            if mode is GenerationMode.POSITIVE and operation.label not in POSITIVE_GAPS:
                checks.append(positive_data_acceptance)
            if mode is GenerationMode.NEGATIVE and operation.label not in NEGATIVE_GAPS:
                checks.append(negative_data_rejection)

            try:
                _property_test(operation.as_strategy(generation_mode=mode), checks)()
            except Unsatisfiable:
                pass  # nothing to make invalid (no parameters, no body)
            except (Exception, BaseExceptionGroup) as err:  # schemathesis raises groups
                failures.append(f"{operation.label} ({mode.value}): {_describe(err)}")
    assert operations > 40
    assert not failures, "\n\n".join(failures)


async def test_routes_are_unambiguous_and_bad_queries_name_the_field(aiohttp_client, db_url,
                                                                      make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(db_url, mqtt_url=None)))
    admin = {"Authorization": f"Bearer {await token_for(db_url, 'admin')}"}
    for method, path, allow in [("GET", "/api/v1/rules/backtest", "POST"),
                                ("OPTIONS", "/api/v1/rules/backtest", "POST"),
                                ("GET", "/api/v1/commands/preview", "POST"),
                                ("POST", "/api/v1/alarms/1/events", "GET,HEAD")]:
        resp = await client.request(method, path, headers=admin)
        assert resp.status == 405 and resp.headers["Allow"] == allow, (method, path)
    for path, field in [("/api/v1/alarms/kpis?consoles=0", "consoles"),
                        ("/api/v1/devices?bbox=", "bbox"),
                        ("/api/v1/devices?limit=0", "limit"),
                        ("/api/v1/crews?ward=W%0001", "ward"),
                        ("/api/v1/command-groups/00000000-0000-0000-0000-000000000000?status=x",
                         "status")]:
        resp = await client.get(path, headers=admin)
        assert resp.status == 400 and resp.content_type == "application/problem+json", path
        problem = await resp.json()
        assert [e["field"] for e in problem["errors"]] == [field] and field in problem["detail"]
    resp = await client.post("/api/v1/tokens", headers=admin, json={"role": "viewer", "name": "a\0b"})
    assert resp.status == 400 and "NUL" in (await resp.json())["detail"]


def _cli_config(path) -> str:
    """schemathesis.toml for the CLI: every check on (what `--checks all` selects, which on
    the command line would also override the exceptions), and the same exceptions, with the
    same reasons."""
    lines = [f"checks.{check.__name__}.enabled = true" for check in REGISTERED_CHECKS.get_all()]
    lines.append("")
    for gaps, check in ((POSITIVE_GAPS, "positive_data_acceptance"),
                        (NEGATIVE_GAPS, "negative_data_rejection")):
        for label, reason in gaps.items():
            lines += [f"# {reason}", "[[operations]]", f"include-name = {orjson.dumps(label).decode()}",
                      f"checks.{check}.enabled = false", ""]
    lines += ["# 503 by design when a dependency is down", "[[operations]]",
              'include-name = "GET /readyz"', "checks.not_a_server_error.enabled = false", ""]
    path.write_text("\n".join(lines))
    return str(path)


def test_schemathesis_cli_checks_all(live_server, tmp_path):
    """The command line as an outside tester runs it: `schemathesis run --checks all`, its
    examples and coverage phases (boundary values: NUL, empty, huge, wrong types, missing
    members...), against the live app. No server error, no answer the document does not
    describe; the only exceptions are the rules a schema cannot state, each with its reason.
    (`make schemathesis` runs every phase, fuzzing and stateful included: minutes.)"""
    cli = Path(sys.executable).with_name("schemathesis")
    header = "Authorization: " + live_server.headers["Authorization"]
    run = subprocess.run(
        [str(cli), "--config-file", _cli_config(tmp_path / "schemathesis.toml"), "run",
         f"{live_server.url}/api/v1/openapi.json", "--url", live_server.url, "-H", header,
         "--phases", os.environ.get("IOC_SCHEMATHESIS_PHASES", "examples,coverage"),
         "--generation-deterministic",
         "--request-timeout", "30", "--workers", "1", "--continue-on-failure",
         "--output-truncate", "false"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, f"schemathesis found problems:\n{run.stdout[-20000:]}\n{run.stderr}"
    assert re.search(r"Tested: [1-9][0-9]", run.stdout), run.stdout[-3000:]
