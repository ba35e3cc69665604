"""Bad input is a 4xx problem naming the field, never a 500: NUL characters, unpaired
surrogates (invalid UTF-8), over-long text and over-deep nesting, in every route's path and
query parameters, in JSON bodies, in the import (its dry run included) and in telemetry
(where a bad entry is a dead letter and the good ones beside it are kept)."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import pytest

from server.http.app import create_app
from server.http.openapi import document
from tests.helpers import aq, count, q, running, wait_for

PROBLEM = "application/problem+json"
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
BAD_VALUES = {"NUL": "X%00Y", "surrogate": "X%ED%A0%80", "too long": "X" * 5000}


@pytest.fixture
async def api(aiohttp_client, city_db_url, make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    client.admin = {"Authorization": f"Bearer {await token_for(city_db_url, 'admin')}"}
    client.url = city_db_url
    return client


def _routes(app) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        if route.method in METHODS and ("formatter" in info or "path" in info):
            out.append((route.method, info.get("formatter") or info["path"]))
    return sorted(set(out))


async def _problem(resp, what: str) -> dict:
    assert 400 <= resp.status < 500, f"{what}: {resp.status} {await resp.text()}"
    if resp.url.path.startswith("/open311/"):
        # GeoReport v2 has its own error shape, which its clients parse:
        # [{"code": 400, "description": "..."}], or <errors><error>... for .xml;
        # seen as a problem for the checks below
        if resp.url.path.endswith(".xml"):
            assert resp.content_type == "text/xml", what
            root = ElementTree.fromstring(await resp.read())
            code, description = root.findtext("error/code"), root.findtext("error/description")
        else:
            assert resp.content_type == "application/json", what
            code, description = (await resp.json())[0].values()
        assert int(code) == resp.status and description, what
        return {"errors": [{"field": "(path)"}], "detail": description}
    assert resp.content_type == PROBLEM, what
    return await resp.json()


async def test_every_path_parameter_refuses_nul_surrogates_and_long_text(api):
    checked = 0
    for method, template in _routes(api.app):
        names = re.findall(r"\{(\w+)\}", template)
        for name in names:
            for label, bad in BAD_VALUES.items():
                path = template
                for other in names:
                    path = path.replace("{" + other + "}", bad if other == name else "1")
                resp = await api.request(method, path, headers=api.admin,
                                         data=b"{}" if method in ("POST", "PUT", "PATCH") else None)
                what = f"{method} {template} with {label} in {name}"
                problem = await _problem(resp, what)
                if resp.status == 400:  # the value was refused: named, or the whole path when
                    # it matches no route (an {id:\\d+} cannot hold it)
                    assert problem["errors"][0]["field"] in (name, "(path)"), what
                checked += 1
    assert checked > 40


async def test_every_documented_query_parameter_refuses_nul_surrogates_and_long_text(api):
    checked = 0
    for path, item in document()["paths"].items():
        for method, op in item.items():
            if method.upper() not in METHODS or method == "parameters":
                continue
            # (not ?token=, the auth middleware's: hashed to look up, never stored)
            params = [p["name"] for p in op.get("parameters", []) + item.get("parameters", [])
                      if p["in"] == "query" and p["name"] != "token"]
            concrete = re.sub(r"\{[^}]+\}", "SL-000001", path).replace(
                "/tiles/SL-000001/SL-000001/SL-000001/SL-000001.mvt", "/tiles/wards/0/0/0.mvt")
            for name in params:
                for label, bad in BAD_VALUES.items():
                    resp = await api.request(method.upper(), f"{concrete}?{name}={bad}",
                                             headers=api.admin,
                                             data=b"{}" if method in ("post", "put", "patch") else None)
                    what = f"{method.upper()} {path}?{name}= with {label}"
                    problem = await _problem(resp, what)
                    assert resp.status == 400, what
                    assert problem.get("errors", [{}])[0].get("field") == name, (what, problem)
                    checked += 1
    # and what the document does not list either: alarms' rule and device were 500s
    for name in ("rule", "device", "ward", "crew", "metric", "anything"):
        resp = await api.get(f"/api/v1/alarms?{name}=a%00b", headers=api.admin)
        assert (await _problem(resp, name))["errors"][0]["field"] == name
    assert checked > 60


async def test_json_bodies_refuse_nul_long_text_and_deep_nesting_naming_the_member(api):
    deep: dict = {"x": 1}
    for _ in range(300):
        deep = {"a": deep}
    cases = [
        ("POST", "/api/v1/crews", {"id": "c1", "name": "a\u0000b"}, "name", "NUL"),
        ("POST", "/api/v1/crews", {"id": "c1", "name": "n" * 20_000}, "name", "too long"),
        ("POST", "/api/v1/crews", {"id": "c1", "name": "a\ud800"}, "name", "surrogate"),
        ("POST", "/api/v1/devices", {"type": "Feature", "id": "SL-NEW-1",
                                     "geometry": {"type": "Point", "coordinates": [105.8, 21.5]},
                                     "properties": {"kind": "streetlight", "note": deep}},
         "properties.note", "nested deeper"),
        ("POST", "/api/v1/devices", {"type": "Feature", "id": "SL-NEW-1",
                                     "geometry": {"type": "Point", "coordinates": [105.8, 21.5]},
                                     "properties": {"kind": "streetlight", "a\u0000": 1}},
         "properties.a\u0000", "NUL"),
        ("POST", "/api/v1/rules", {"id": "r1", "description": "x\u0000"}, "description", "NUL"),
    ]
    for method, path, body, field, words in cases:
        resp = await api.request(method, path, json=body, headers=api.admin)
        problem = await _problem(resp, f"{path} {field}")
        assert resp.status == 400 and problem["errors"][0]["field"].startswith(field), problem
        assert words in problem["errors"][0]["reason"] or words in problem["detail"], problem
    assert await aq(api.url, "select count(*) from devices where id = 'SL-NEW-1'") == [(0,)]


async def test_telemetry_keeps_good_readings_and_dead_letters_unstorable_ones(api):
    deep: dict = {"x": 1}
    for _ in range(300):
        deep = {"a": deep}
    body = [{"device_id": "SL-000001", "values": {"power_w": 40.0}},
            {"device_id": "SL-000002", "values": {"power_w": deep}},
            {"device_id": "SL-0\u00000003", "values": {"power_w": 1.0}},
            {"device_id": "SL-000004", "values": {"power_w": 1.0}, "note": "a\u0000b"}]
    resp = await api.post("/api/v1/telemetry", json=body, headers=api.admin)
    assert resp.status == 202, await resp.text()
    doc = await resp.json()
    assert doc["accepted"] == 1 and len(doc["rejected"]) == 3, doc
    text = str(doc["rejected"])
    assert "nested deeper" in text and "NUL" in text
    # stored: the good reading, and a dead letter with its reason for each of the others
    reasons = await wait_for(lambda: [r[0] for r in q(api.url, "select reason from dead_letters")]
                             if count(api.url) == 1 else None, blocking=True)
    assert len(reasons) == 3 and sum("NUL" in r for r in reasons) == 2, reasons


async def test_import_dry_run_finds_what_the_import_would_refuse(api):
    admin = api.admin
    deep: dict = {"x": 1}
    for _ in range(300):
        deep = {"a": deep}

    def fc(**props):
        return {"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": "SL-IMP-9", "geometry": {"type": "Point",
                                                                "coordinates": [105.84, 21.59]},
             "properties": {"kind": "streetlight", **props}}]}

    files = [(fc(name="lamp\u0000"), "properties.name"), (fc(note="x" * 20_000), "properties.note"),
             (fc(note=deep), "properties.note"), (fc(external_id="e" * 20_000), "properties.external_id")]
    for doc, field in files:
        for dry in ("true", "false"):
            resp = await api.post(f"/api/v1/import?dry_run={dry}", json=doc, headers=admin)
            problem = await _problem(resp, f"{field} dry_run={dry}")
            assert resp.status == 422, problem
            assert len(problem["errors"]) == 1, problem
            assert problem["errors"][0]["field"].startswith(field), problem
    csv = "id,kind,lon,lat,name\nSL-IMP-8,streetlight,105.84,21.59,la\x00mp\n"
    for dry in ("true", "false"):
        resp = await api.post(f"/api/v1/import?dry_run={dry}", data=csv.encode(), headers={
            **admin, "Content-Type": "text/csv"})
        problem = await _problem(resp, f"csv dry_run={dry}")
        assert resp.status == 422 and problem["errors"][0]["field"] == "name", problem
    assert await aq(api.url, "select count(*) from devices where id like 'SL-IMP-%%'") == [(0,)]


async def test_websocket_answers_an_over_deep_message_with_an_error_and_stays_open(
        city_db_url, make_settings, token_for):
    token = await token_for(city_db_url, "viewer")
    async with running(make_settings(city_db_url, mqtt_url=None)) as client:
        ws = await client.ws_connect("/api/v1/ws", headers={"Authorization": f"Bearer {token}"})
        deep = "1"
        for _ in range(300):
            deep = "[" + deep + "]"
        await ws.send_str('{"op": "ping", "id": ' + deep + "}")
        msg = await ws.receive_json(timeout=10)  # was: the handler failed, the socket broke
        assert msg["type"] == "error" and "nested deeper" in msg["message"], msg
        await ws.send_str('{"op": "ping", "id": 7}')
        assert await ws.receive_json(timeout=10) == {"type": "pong", "id": 7}
        await ws.close()
