"""Least privilege on every path: ONE table of who may do what, checked against every route
the app registers and every tile layer it serves, with a token of each role and none.

The table's verdicts:

- ``A``: allowed, and the same data an admin sees (reads are compared answer for answer);
- ``F``: forbidden (403 with a token, 401 without);
- ``OWN``: allowed, filtered to the crew's own alarms: a crew token's answer in the world
  with three alarms (its crew's, another crew's, nobody's) must equal an admin's answer in
  the same world after the other two alarms and the other crew are deleted. So any alarm
  field (an id, a message, a count, a worst severity) that is not the crew's shows up as a
  difference, whatever the route or layer calls it;
- ``SELF``: allowed, about the caller itself (``/api/v1/me``), or changing with every request
  (``/metrics``): not compared.

The websocket's alarm messages (deltas) to a crew are checked in test_ws.py
(test_crews_get_only_their_alarms_and_messages); its snapshot, live and replayed, is
compared here.

A route or a tile layer missing from the table fails the test: the next one added has to say
who may read it before it can ship.
"""

from __future__ import annotations

import re
from typing import Any

import mapbox_vector_tile
import orjson
import pytest

from server import keys
from server.api.alarms import ACTIONS
from tests.helpers import aexecute, aq, running

A, F, OWN, SELF = "allowed", "forbidden", "own crew only", "about the caller"
ROLES = ("admin", "operator", "integrator", "viewer", "crew", None)  # None: no token


def row(admin: str, operator: str, integrator: str, viewer: str, crew: str, anonymous: str):
    return dict(zip(ROLES, (admin, operator, integrator, viewer, crew, anonymous), strict=True))


PUBLIC = row(A, A, A, A, A, A)
TOKEN = row(A, A, A, A, A, F)  # any valid token
CREW_OWN = row(A, A, A, A, OWN, F)  # any token; a crew token sees its own crew's alarms only
ADMIN = row(A, F, F, F, F, F)
INTEGRATOR = row(A, F, A, F, F, F)
OPERATOR = row(A, A, F, F, F, F)
NOT_CREW = row(A, A, A, A, F, F)

# ---------------------------------------------------------------- THE table
ROUTES: dict[str, dict[str | None, str]] = {
    "GET /healthz": PUBLIC,
    "GET /readyz": PUBLIC,
    "GET /": PUBLIC,
    "GET /crew": PUBLIC,
    "GET /api/docs": PUBLIC,
    "GET /favicon.ico": PUBLIC,
    "GET /static": PUBLIC,
    "GET /metrics": row(SELF, SELF, SELF, SELF, SELF, F),
    "GET /api/v1/me": row(SELF, SELF, SELF, SELF, SELF, F),
    "GET /api/v1/openapi.json": TOKEN,
    "GET /api/v1/devices": CREW_OWN,  # alarm_severity
    "GET /api/v1/devices/{id}": CREW_OWN,
    "POST /api/v1/devices": INTEGRATOR,
    "PATCH /api/v1/devices/{id}": INTEGRATOR,
    "DELETE /api/v1/devices/{id}": INTEGRATOR,
    "POST /api/v1/telemetry": INTEGRATOR,
    "GET /api/v1/devices/{id}/telemetry": TOKEN,
    "GET /api/v1/alarms": CREW_OWN,
    "GET /api/v1/alarms/{id}": CREW_OWN,
    "GET /api/v1/alarms/{id}/events": CREW_OWN,
    "POST /api/v1/alarms/{id}/ack": OPERATOR,
    "POST /api/v1/alarms/{id}/shelve": OPERATOR,
    "POST /api/v1/alarms/{id}/unshelve": OPERATOR,
    "POST /api/v1/alarms/{id}/assign": OPERATOR,
    "POST /api/v1/alarms/{id}/out_of_service": OPERATOR,
    "POST /api/v1/alarms/{id}/comment": row(A, A, F, F, OWN, F),
    "POST /api/v1/alarms/{id}/work": row(A, A, F, F, OWN, F),
    "POST /api/v1/alarms/{id}/close": OPERATOR,
    "POST /api/v1/alarms/{id}/reopen": OPERATOR,
    "GET /api/v1/alarms/{id}/photos/{name}": CREW_OWN,  # a crew's photo: whoever may read the alarm
    # work orders (trees' inspections, pruning, removal): a crew token sees and does its own only
    "GET /api/v1/work-orders": CREW_OWN,
    "POST /api/v1/work-orders": OPERATOR,
    "GET /api/v1/work-orders/{id}": CREW_OWN,
    "POST /api/v1/work-orders/{id}/start": row(A, A, F, F, OWN, F),
    "POST /api/v1/work-orders/{id}/done": row(A, A, F, F, OWN, F),
    "GET /api/v1/work-orders/{id}/photos/{name}": CREW_OWN,
    "GET /api/v1/alarms/kpis": NOT_CREW,  # counts every alarm
    "GET /api/v1/rules": TOKEN,
    "GET /api/v1/rules/{id}": TOKEN,
    "POST /api/v1/rules": INTEGRATOR,
    "PUT /api/v1/rules/{id}": INTEGRATOR,
    "PATCH /api/v1/rules/{id}": INTEGRATOR,
    "DELETE /api/v1/rules/{id}": INTEGRATOR,
    "GET /api/v1/rules/{id}/history": row(A, A, A, F, F, F),  # names who changed what
    "POST /api/v1/rules/backtest": row(A, A, A, F, F, F),
    "POST /api/v1/devices/{id}/commands": OPERATOR,
    "GET /api/v1/commands/{id}": TOKEN,
    "GET /api/v1/devices/{id}/commands": TOKEN,
    "POST /api/v1/commands/preview": OPERATOR,
    "POST /api/v1/commands": OPERATOR,
    "GET /api/v1/command-groups/{id}": TOKEN,
    "GET /api/v1/schedules": TOKEN,  # lighting schedules: no one's personal data
    "POST /api/v1/schedules": OPERATOR,  # they send commands
    "GET /api/v1/schedules/{id}": TOKEN,
    "PUT /api/v1/schedules/{id}": OPERATOR,
    "DELETE /api/v1/schedules/{id}": OPERATOR,
    "POST /api/v1/schedules/preview": OPERATOR,
    "GET /api/v1/schedules/{id}/energy": TOKEN,
    "GET /api/v1/command-groups": TOKEN,
    "GET /api/v1/command-catalog": TOKEN,
    "POST /api/v1/command-groups/{id}/cancel": OPERATOR,
    "GET /api/v1/audit": ADMIN,
    "GET /api/v1/wards/summary": CREW_OWN,  # open alarms by ward and severity
    "GET /api/v1/search": CREW_OWN,  # devices and wards by id, name, address: no alarm data
    # a camera's picture: the console's roles, not the crews' phones
    "GET /api/v1/devices/{id}/media": NOT_CREW,
    "GET /api/v1/devices/{id}/media/{path}": NOT_CREW,
    "GET /api/v1/crews": CREW_OWN,  # a crew token: its own crew (contacts, open alarms)
    "GET /api/v1/crews/{id}": CREW_OWN,
    "POST /api/v1/crews": OPERATOR,
    "PATCH /api/v1/crews/{id}": row(A, A, F, F, OWN, F),
    "DELETE /api/v1/crews/{id}": OPERATOR,
    "GET /api/v1/tokens": ADMIN,
    "POST /api/v1/tokens": ADMIN,
    "DELETE /api/v1/tokens/{id}": ADMIN,
    "POST /api/v1/session": TOKEN,  # any token may start a page's session (the probe's body: 400)
    "DELETE /api/v1/session": TOKEN,
    "GET /api/v1/ws": CREW_OWN,  # the snapshot's alarm_severity, and alarm messages; reports:
    # WS_REPORT_MESSAGES below
    "POST /api/v1/import": INTEGRATOR,
    "GET /api/v1/export": TOKEN,
    "GET /tiles": TOKEN,
    "GET /tiles/{layer}.json": TOKEN,
    "GET /tiles/{layer}/{z}/{x}/{y}.mvt": CREW_OWN,  # per layer: TILE_LAYERS
    "GET /api/v1/state": CREW_OWN,
    # citizens' reports: the public side needs no token and shows nothing personal
    "POST /api/v1/public/reports": PUBLIC,
    "GET /api/v1/public/reports/stats": PUBLIC,
    "GET /api/v1/public/reports/photos/{name}": PUBLIC,
    "GET /api/v1/public/reports/{code}": PUBLIC,
    "POST /api/v1/public/reports/{code}/rating": PUBLIC,
    "GET /api/v1/public/reports.geojson": PUBLIC,  # open data: public fields, no contact or code
    "GET /api/v1/public/reports.csv": PUBLIC,
    "GET /api/v1/public/reports/stats/breakdown": PUBLIC,
    "GET /api/v1/public/basemap.json": PUBLIC,  # wards and roads only: public geography
    "GET /api/v1/public/basemap/{z}/{x}/{y}.mvt": PUBLIC,
    "GET /report": PUBLIC,  # the citizens' pages
    "GET /reports/{code}": PUBLIC,
    "GET /public": PUBLIC,
    "GET /open311/v2/services.json": PUBLIC,  # GeoReport v2: public by design, no contact
    "GET /open311/v2/services/{code}.json": PUBLIC,
    "GET /open311/v2/requests.json": PUBLIC,
    "POST /open311/v2/requests.json": PUBLIC,
    "GET /open311/v2/requests/{id}.json": PUBLIC,
    "GET /open311/v2/services.xml": PUBLIC,  # the same in XML
    "GET /open311/v2/services/{code}.xml": PUBLIC,
    "GET /open311/v2/requests.xml": PUBLIC,
    "POST /open311/v2/requests.xml": PUBLIC,
    "GET /open311/v2/requests/{id}.xml": PUBLIC,
    "GET /api/v1/reports": CREW_OWN,  # a crew token: the reports assigned to its crew
    "GET /api/v1/reports/{id}": CREW_OWN,
    "GET /api/v1/reports/kpis": NOT_CREW,  # counts every report
    "POST /api/v1/reports/{id}/verify": OPERATOR,
    "POST /api/v1/reports/{id}/start": row(A, A, F, F, OWN, F),  # the crew's own reports
    "POST /api/v1/reports/{id}/merge": OPERATOR,
    "POST /api/v1/reports/{id}/assign": OPERATOR,
    "POST /api/v1/reports/{id}/reject": OPERATOR,
    "POST /api/v1/reports/{id}/resolve": row(A, A, F, F, OWN, F),
    "POST /api/v1/reports/{id}/comment": row(A, A, F, F, OWN, F),  # each device's worst alarm at an instant
    # OGC API - Features and Tiles: devices without alarm fields; tiles are the XYZ route's
    "GET /ogc": TOKEN,
    "GET /ogc/": TOKEN,
    "GET /ogc/conformance": TOKEN,
    "GET /ogc/api": TOKEN,
    "GET /ogc/collections": TOKEN,
    "GET /ogc/collections/{collectionId}": TOKEN,
    "GET /ogc/collections/{collectionId}/items": TOKEN,
    "GET /ogc/collections/{collectionId}/items/{featureId}": TOKEN,
    "GET /ogc/tileMatrixSets": TOKEN,
    "GET /ogc/tileMatrixSets/{tileMatrixSetId}": TOKEN,
    "GET /ogc/collections/{collectionId}/tiles": TOKEN,
    "GET /ogc/collections/{collectionId}/tiles/{tileMatrixSetId}": TOKEN,
    "GET /ogc/tiles": TOKEN,
    "GET /ogc/tiles/{tileMatrixSetId}": TOKEN,
    "GET /ogc/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}":
        CREW_OWN,  # aggregate tiles count alarms
    "GET /ogc/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}": CREW_OWN,
    # SensorThings: devices, metrics and telemetry, as /api/v1 shows them to any token; no alarms
    "GET /sta/v1.1": TOKEN,
    "GET /sta/v1.1/{path}": TOKEN,
}
# Tile layers by id; every device kind's layer is "<kind>" (aggregate tiles count alarms).
TILE_LAYERS: dict[str, dict[str | None, str]] = {
    "wards": TOKEN,
    "roads": TOKEN,
    "ward_stats": CREW_OWN,  # open alarms and the worst severity per ward
    "alarms": CREW_OWN,  # one feature per device with an alarm: id, rule, message, crew...
    "reports": TOKEN,  # open citizens' reports: public fields only (no contact, no description)
    "<kind>": CREW_OWN,  # below detail zoom: alarm counts and worst severity per cell
}

# The websocket's citizens' report messages ({"op": "subscribe", "reports": true}), checked in
# tests/server/test_report_ops.py: what each role gets of a report (the reporter's contact is
# the only personal field).
WITH_CONTACT, WITHOUT_CONTACT, NOTHING = "the report with its contact", "the report, no contact", "nothing"
WS_REPORT_MESSAGES: dict[str | None, dict[str, str]] = {
    "admin": {"any report": WITH_CONTACT},
    "operator": {"any report": WITH_CONTACT},
    "integrator": {"any report": WITHOUT_CONTACT},
    "viewer": {"any report": WITHOUT_CONTACT},
    # its crew's: it calls the citizen back; once reassigned, only {"id", "crew", "status",
    # "yours": false}
    "crew": {"its crew's": WITH_CONTACT, "another crew's": NOTHING, "nobody's": NOTHING},
}

# ---------------------------------------------------------------- the world
NORTH, SOUTH = "north", "south"
SPAN = "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"  # answers that do not move with now


async def _world(url: str) -> dict[str, Any]:
    lamps = [r[0] for r in await aq(url, "select id from devices where kind = 'streetlight' "
                                         "order by id limit 3")]
    ward = (await aq(url, "select code from wards order by code limit 1"))[0][0]
    await aexecute(url, "insert into crews (id, name, ward, contacts) values "
                        "(%s, 'North crew', %s, '{\"phone\": \"+84 1\"}'), "
                        "(%s, 'South crew', %s, '{\"phone\": \"+84 2\"}')", NORTH, ward, SOUTH, ward)
    ids = {}
    for (name, crew, severity), lamp in zip(
            [("own", NORTH, "minor"), ("other", SOUTH, "critical"), ("nobody", None, "major")],
            lamps, strict=True):
        ids[name] = (await aq(
            url, "insert into alarms (rule, device, severity, message, dedup_key, assigned_crew,"
                 " geom) values (%s, %s, %s, %s, %s, %s, (select geom from devices where id = %s))"
                 " returning id",
            f"rule-{name}", lamp, severity, f"{name} secret message", f"k-{name}", crew, lamp))[0][0]
    orders = {}
    for name, crew, lamp in (("own", NORTH, lamps[0]), ("other", SOUTH, lamps[1])):
        orders[name] = (await aq(url, "insert into work_orders (device, type, crew, note) values "
                                      "(%s, 'inspection', %s, %s) returning id",
                                 lamp, crew, f"{name} work order note"))[0][0]
    # raised as the engine records it (replay and state?at= read the events)
    await aexecute(url, "insert into alarm_events (alarm_id, at, event, actor) "
                        "select id, raised_at, 'raised', 'rule engine' from alarms")
    # an instant after they were raised, the same in both worlds (GET /api/v1/state?at=)
    at = (await aq(url, "select to_char(now() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"))
    return {"lamps": lamps, "alarms": ids, "at": at[0][0], "work_orders": orders}


async def _only_the_crews_own(url: str, world: dict[str, Any]) -> None:
    """The world as the north crew may see it: the other alarms and the other crew gone."""
    others = [world["alarms"]["other"], world["alarms"]["nobody"]]
    for table in ("alarm_events", "notification_outbox"):
        await aexecute(url, f"delete from {table} where alarm_id = any(%s)", others)
    await aexecute(url, "delete from alarms where id = any(%s)", others)
    await aexecute(url, "delete from work_orders where crew is distinct from %s", NORTH)
    await aexecute(url, "delete from crews where id <> %s", NORTH)


# ---------------------------------------------------------------- requests per route
def _requests(key: str, world: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body) to probe one route. Reads name real objects (the three
    alarms and their devices) so their data can be compared; writes are sent with bodies
    that are refused and ids that do not exist (but for the crews' own writes, which name a
    real object of each crew), so they change nothing: whose object it is is checked first."""
    method, template = key.split(" ", 1)
    lamps, alarms = world["lamps"], world["alarms"]
    fill = {"id": "NOPE-404", "layer": "wards", "z": "0", "x": "0", "y": "0",
            "collectionId": "streetlight", "featureId": lamps[0],
            "code": "NOPE-404", "name": "nope.jpg", "tileMatrixSetId": "WebMercatorQuad",
            "tileMatrix": "0", "tileRow": "0", "tileCol": "0", "path": "index.m3u8"}
    refused = {"probe": "refused"} if method in ("POST", "PUT", "PATCH") else None
    if template.startswith("/api/v1/alarms/{id}"):
        if method == "GET" or template.endswith(("/comment", "/work")):
            return [(method, template.replace("{id}", str(a)).replace("{name}", "nope.jpg"), refused)
                    for a in alarms.values()]
        fill["id"] = "999999999"
    if template in ("/api/v1/work-orders/{id}", "/api/v1/work-orders/{id}/photos/{name}") \
            and method == "GET":
        return [("GET", template.replace("{id}", str(w)).replace("{name}", "nope.jpg"), None)
                for w in world["work_orders"].values()]
    if template in ("/api/v1/devices/{id}",) and method == "GET":
        return [("GET", f"/api/v1/devices/{lamp}", None) for lamp in lamps]
    if template == "/api/v1/crews/{id}":
        ids = [NORTH, SOUTH] if method in ("GET", "PATCH") else ["nope"]
        return [(method, f"/api/v1/crews/{c}", refused) for c in ids]
    if template == "/static":
        return [("GET", "/static/app.css", None)]
    if template == "/sta/v1.1/{path}":
        return [("GET", "/sta/v1.1/" + p, None) for p in (
            f"Things('{lamps[0]}')?$expand=Datastreams,Locations", "Things?$top=20&$count=true",
            f"Datastreams('{lamps[0]}~power_w')/Observations?$filter=phenomenonTime ge "
            "2026-01-01T00:00:00Z and phenomenonTime lt 2026-01-02T00:00:00Z", "Sensors")]
    if template in ("/api/v1/commands/{id}", "/api/v1/command-groups/{id}",
                    "/api/v1/command-groups/{id}/cancel"):
        fill["id"] = "00000000-0000-0000-0000-000000000000"
    if template == "/api/v1/tokens/{id}":
        fill["id"] = "999999999"
    path = re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)], template)
    if template == "/api/v1/devices/{id}/telemetry":
        path = f"/api/v1/devices/{lamps[0]}/telemetry?metric=power_w&{SPAN}"
    if template == "/api/v1/search":
        path += "?q=SL"
    if template == "/api/v1/alarms/kpis":
        path += "?" + SPAN
    if template == "/api/v1/devices":
        path += "?kind=streetlight"
    if template == "/api/v1/alarms":
        path += "?state=all"
    if template == "/api/v1/state":
        path += "?at=" + world["at"]
    return [(method, path, refused)]


async def _answer(client, method: str, path: str, body: Any, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = orjson.dumps(body) if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    resp = await client.request(method, path, data=data, headers=headers)
    raw = await resp.read()
    if method != "GET" or resp.status >= 300:
        return resp.status, None
    ctype = resp.content_type
    if ctype == "application/vnd.mapbox-vector-tile":
        return resp.status, mapbox_vector_tile.decode(raw)
    if "json" in ctype:
        return resp.status, _stable(orjson.loads(raw))
    return resp.status, raw


def _stable(doc: Any) -> Any:
    """Drop what differs between two requests by itself: the request's own URL, and when
    it was answered (OGC's timeStamp)."""
    if isinstance(doc, dict):
        return {k: _stable(v) for k, v in doc.items() if k not in ("instance", "timeStamp")}
    if isinstance(doc, list):
        return [_stable(v) for v in doc]
    return doc


def _kind(status: int) -> str:
    if status in (401, 403):
        return "refused"
    if status == 404:
        return "absent"
    return "answered"


async def _snapshot(client, token: str, at: str | None = None) -> Any:
    """The websocket's snapshot: live, or (``at``) the replay's of that instant."""
    ws = await client.ws_connect("/api/v1/ws", headers={"Authorization": f"Bearer {token}"})
    op = {"op": "subscribe"} if at is None else {"op": "replay", "from": at}
    try:
        await ws.send_str(orjson.dumps({**op, "bbox": [-180, -90, 180, 90],
                                        "alarms": True}).decode())
        while True:
            msg = orjson.loads((await ws.receive(timeout=20)).data)
            if msg.get("type") == "snapshot":
                return msg
    finally:
        await ws.close()


def _route_keys(app) -> list[str]:
    """Every route the app registers, as "METHOD /template"; HEAD mirrors GET (no body)."""
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        info = route.resource.get_info()
        template = info.get("formatter") or info.get("path") or info.get("prefix")
        if template.endswith("/{action}"):  # one route, an action each: the table has each
            for action in ACTIONS:
                out.add(f"{route.method} {template.replace('{action}', action)}")
        else:
            out.add(f"{route.method} {template}")
    return sorted(out)


def _layer_key(layer) -> str:
    return "<kind>" if layer.source == "kind" else layer.id


@pytest.fixture
async def world(city_db_url):
    return await _world(city_db_url)


@pytest.fixture
async def tokens(city_db_url, token_for, world):
    out = {}
    for role in ROLES:
        if role is not None:
            out[role] = await token_for(city_db_url, role, NORTH if role == "crew" else None)
    out[None] = None
    return out


async def test_every_route_and_layer_answers_each_role_as_the_table_says(
        city_db_url, make_settings, world, tokens):
    url = city_db_url
    settings = make_settings(url, mqtt_url=None)
    seen: dict[tuple[str, Any], Any] = {}  # (what, role) -> answer, in the full world
    problems: list[str] = []

    async with running(settings) as client:
        keys_ = _route_keys(client.app)
        missing = [k for k in keys_ if k not in ROUTES]
        assert not missing, f"routes missing from the permission table: {missing}"
        assert not [k for k in ROUTES if k not in keys_], "table rows for routes that do not exist"
        service = client.app[keys.TILES]
        layers = sorted(service.layers.values(), key=lambda lyr: lyr.id)
        missing = sorted({_layer_key(lyr) for lyr in layers} - set(TILE_LAYERS))
        assert not missing, f"tile layers missing from the permission table: {missing}"
        assert {"alarms", "ward_stats", "<kind>"} <= {_layer_key(lyr) for lyr in layers}

        # Tiles: z0 (the whole city, aggregates), a detail tile around the crew's own alarm,
        # and all the layers combined in one tile.
        lon, lat = (await aq(url, "select ST_X(geom), ST_Y(geom) from devices where id = %s",
                             world["lamps"][0]))[0]
        from morecantile import tms
        detail = tms.get("WebMercatorQuad").tile(lon, lat, 15)
        tile_probes = []
        for layer in layers:
            for z, x, y in ((0, 0, 0), (detail.z, detail.x, detail.y)):
                if z <= layer.maxzoom:
                    tile_probes.append((_layer_key(layer), f"/tiles/{layer.id}/{z}/{x}/{y}.mvt"))
        combined = ",".join(lyr.id for lyr in layers)
        tile_probes.append(("<kind>", f"/tiles/{combined}/0/0/0.mvt"))

        async def probe_routes(roles) -> None:
            for key in keys_:
                if key == "GET /api/v1/ws":
                    continue
                for method, path, body in _requests(key, world):
                    # writes last, below: the reads see the world untouched
                    if method == "GET":
                        for role in roles:
                            seen[(f"{key} {path}", role)] = await _answer(
                                client, method, path, body, tokens[role])
            for what, path in tile_probes:
                for role in roles:
                    seen[(f"tile {what} {path}", role)] = await _answer(
                        client, "GET", path, None, tokens[role])
            for role in roles:
                if role is not None:
                    seen[("ws snapshot", role)] = (200, await _snapshot(client, tokens[role]))
                    seen[("ws replay", role)] = (200, await _snapshot(client, tokens[role],
                                                                      world["at"]))
            for key in keys_:
                for method, path, body in _requests(key, world):
                    if method != "GET":
                        for role in roles:
                            seen[(f"{key} {path}", role)] = await _answer(
                                client, method, path, body, tokens[role])

        await probe_routes(ROLES)

    # The world as the crew may see it, and an admin's view of it (a fresh server: no cache).
    await _only_the_crews_own(url, world)
    own: dict[str, Any] = {}
    async with running(make_settings(url, mqtt_url=None)) as client:
        for (what, role), _ in list(seen.items()):
            if role != "admin":
                continue
            if what == "ws snapshot":
                own[what] = (200, await _snapshot(client, tokens["admin"]))
            elif what == "ws replay":
                own[what] = (200, await _snapshot(client, tokens["admin"], world["at"]))
            elif what.startswith("tile "):
                own[what] = await _answer(client, "GET", what.split(" ")[-1], None, tokens["admin"])
            else:
                method, _tmpl, path = what.split(" ", 2)
                body = next(b for m, p, b in _requests(f"{method} {_tmpl}", world) if p == path)
                if method == "GET":
                    own[what] = await _answer(client, method, path, body, tokens["admin"])

    def verdicts(what: str) -> dict[str | None, str]:
        if what in ("ws snapshot", "ws replay"):
            return ROUTES["GET /api/v1/ws"]
        if what.startswith("tile "):
            return TILE_LAYERS[what.split(" ")[1]]
        method, template = what.split(" ")[:2]
        return ROUTES[f"{method} {template}"]

    # The probes see the alarms at all (else equal answers would prove nothing).
    listed = seen[("GET /api/v1/alarms /api/v1/alarms?state=all", "admin")][1]["alarms"]
    assert {a["id"] for a in listed} == set(world["alarms"].values())
    assert len(seen[("ws replay", "admin")][1]["alarms"]) == 3
    assert len(seen[("ws replay", "crew")][1]["alarms"]) == 1
    severities = {d["alarm_severity"] for d in seen[("ws snapshot", "admin")][1]["devices"]}
    assert {"minor", "major", "critical"} <= severities
    past = seen[(f"GET /api/v1/state /api/v1/state?at={world['at']}", "admin")][1]
    assert {"minor", "major", "critical"} <= {f["properties"]["alarm_severity"] for f in past["features"]}

    sta = [status for (what, role), (status, _) in seen.items() if what.startswith("GET /sta/")
           and role == "admin"]
    assert len(sta) == 5 and set(sta) == {200}, sta

    checked = 0
    for (what, role), (status, data) in seen.items():
        verdict = verdicts(what)[role]
        admin_status, admin_data = seen[(what, "admin")]
        label = f"{what} as {role or 'no token'} ({verdict}): {status}"
        checked += 1
        if status >= 500:
            problems.append(label)
        elif verdict == F:
            if status != (401 if role is None else 403):
                problems.append(label)
        elif verdict == SELF:
            if status != 200:
                problems.append(label)
        elif verdict == A:
            if _kind(status) != _kind(admin_status) or data != admin_data:
                problems.append(label + " differs from the admin's answer")
        elif verdict == OWN:
            expected = own.get(what)
            if expected is None:  # a write: allowed on the crew's own objects, refused on others
                mine = what.endswith((f"/crews/{NORTH}", f"/alarms/{world['alarms']['own']}/comment",
                                      f"/alarms/{world['alarms']['own']}/work"))
                if mine and _kind(status) == "refused":
                    problems.append(label + ": refused on the crew's own object")
                elif not mine and status != 403:
                    problems.append(label + ": not refused on another crew's object")
                continue
            exp_status, exp_data = expected
            if {_kind(status), _kind(exp_status)} <= {"refused", "absent"}:
                continue  # not the crew's: hidden either way
            if _kind(status) != _kind(exp_status) or data != exp_data:
                problems.append(label + " is not the admin's answer limited to the crew's alarms"
                                f"\n    {str(data)[:600]}\n    {str(exp_data)[:600]}")
    assert checked > 300
    assert not problems, "\n".join(problems)
