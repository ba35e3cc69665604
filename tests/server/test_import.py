"""Bulk import (API and ``ioc import``) against the real PostGIS database."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

from server.cli.main import main
from server.http.app import create_app
from tests.helpers import aq

PROBLEM = "application/problem+json"


@pytest.fixture
async def api(aiohttp_client, city_db_url, make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    client.tokens = {r: await token_for(city_db_url, r) for r in ("viewer", "operator", "integrator")}
    client.url = city_db_url
    return client


def auth(client, role="integrator"):
    return {"Authorization": f"Bearer {client.tokens[role]}"}


def count(url: str, sql: str = "select count(*) from devices", *args) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchone()[0]


def some_cabinet(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select id from devices where kind = 'lighting_cabinet' "
                            "order by id limit 1").fetchone()[0]


def feature(dev_id, kind="streetlight", lon=105.84, lat=21.59, **props):
    return {"type": "Feature", "id": dev_id,
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"kind": kind, **props}}


async def test_geojson_creates_then_updates_by_id(api):
    cabinet = some_cabinet(api.url)
    before = await asyncio.to_thread(count, api.url)
    fc = {"type": "FeatureCollection", "features": [
        feature("LC-IMP-1", "lighting_cabinet", name="new cabinet"),
        feature("SL-IMP-1", parent="LC-IMP-1", name="lamp 1", road="Đường A"),  # parent in file
        feature("SL-IMP-2", parent=cabinet, name="lamp 2", lon=105.85),         # parent in db
        {"type": "Feature", "id": "WP-IMP-1", "properties": {"kind": "water_pipe"},
         "geometry": {"type": "LineString", "coordinates": [[105.8, 21.5], [105.81, 21.51]]}},
    ]}
    resp = await api.post("/api/v1/import", json=fc, headers=auth(api))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"dry_run": False, "format": "geojson", "devices": 4,
                                 "created": 4, "updated": 0}
    assert await asyncio.to_thread(count, api.url) == before + 4
    lamp = await (await api.get("/api/v1/devices/SL-IMP-1", headers=auth(api, "viewer"))).json()
    assert lamp["properties"]["parent"] == "LC-IMP-1"
    assert lamp["properties"]["road"] == "Đường A"
    assert lamp["properties"]["ward"], "the ward trigger ran for imported rows"

    # the same ids again: updated in place; a Feature is the whole device
    fc2 = {"type": "FeatureCollection", "features": [
        feature("SL-IMP-1", name="lamp one", lon=105.86, lat=21.6),
        feature("SL-IMP-3", name="lamp 3"),
    ]}
    resp = await api.post("/api/v1/import", json=fc2, headers=auth(api))
    assert await resp.json() == {"dry_run": False, "format": "geojson", "devices": 2,
                                 "created": 1, "updated": 1}
    lamp = await (await api.get("/api/v1/devices/SL-IMP-1", headers=auth(api, "viewer"))).json()
    assert lamp["properties"]["name"] == "lamp one"
    assert lamp["geometry"]["coordinates"] == [105.86, 21.6]
    assert lamp["properties"]["parent"] is None and "road" not in lamp["properties"]
    row = (await aq(api.url, "select actor, details from audit_log where action = 'device.import' "
                             "order by id desc limit 1"))[0]
    assert row[0] == "test-integrator (integrator)"
    assert row[1]["created"] == 1 and row[1]["updated"] == 1


async def test_geojson_with_errors_is_rejected_whole_with_a_report(api):
    before = await asyncio.to_thread(count, api.url)
    fc = {"type": "FeatureCollection", "features": [
        feature("SL-OK-1"),
        feature("SL-BAD-KIND", kind="lamp_post"),
        feature("SL-FAR", lon=205.0),
        feature("SL-OK-1"),
        feature("SL-ORPHAN", parent="LC-NOWHERE"),
        {"type": "Feature", "id": "bad id!", "geometry": None, "properties": {"kind": "camera"}},
    ]}
    resp = await api.post("/api/v1/import", json=fc, headers=auth(api))
    assert resp.status == 422 and resp.content_type == PROBLEM
    body = await resp.json()
    assert "nothing was imported" in body["detail"]
    got = {(e["index"], e["field"]) for e in body["errors"]}
    assert {(1, "properties.kind"), (2, "geometry"), (3, "id"), (4, "parent"),
            (5, "id"), (5, "geometry")} <= got
    assert body["error_count"] == len(body["errors"])
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert "lamp_post" in reasons[1] and "streetlight" in reasons[1]
    assert "LC-NOWHERE" in reasons[4]
    assert "feature 0" in next(e["reason"] for e in body["errors"] if e["index"] == 3)
    assert await asyncio.to_thread(count, api.url) == before
    assert await asyncio.to_thread(count, api.url, "select count(*) from devices where id = 'SL-OK-1'") == 0


CSV_GOOD = """id,kind,name,lon,lat,wkt,road,parent
SL-CSV-1,streetlight,Lamp one,105.84,21.59,,Hoàng Văn Thụ,
SL-CSV-2,streetlight,"Lamp, two",105.841,21.591,,,SL-CSV-1
WP-CSV-1,water_pipe,Main,,,"LINESTRING (105.8 21.5, 105.81 21.51)",,
"""


async def test_csv_lonlat_and_wkt_columns(api):
    resp = await api.post("/api/v1/import", data=CSV_GOOD.encode(),
                          headers={**auth(api), "Content-Type": "text/csv"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["created"] == 3
    f = await (await api.get("/api/v1/devices/SL-CSV-2", headers=auth(api))).json()
    assert f["properties"]["name"] == "Lamp, two" and f["properties"]["parent"] == "SL-CSV-1"
    assert f["geometry"] == {"type": "Point", "coordinates": [105.841, 21.591]}
    one = await (await api.get("/api/v1/devices/SL-CSV-1", headers=auth(api))).json()
    assert one["properties"]["road"] == "Hoàng Văn Thụ"
    pipe = await (await api.get("/api/v1/devices/WP-CSV-1", headers=auth(api))).json()
    assert pipe["geometry"]["type"] == "LineString"

    # a CSV updates only its columns: names, parents and other properties are kept
    moved = "id;kind;lon;lat;colour\nSL-CSV-1;streetlight;105.9;21.7;grey\n"
    resp = await api.post("/api/v1/import", data=moved.encode(),
                          headers={**auth(api), "Content-Type": "text/csv"})
    assert (await resp.json())["updated"] == 1
    one = await (await api.get("/api/v1/devices/SL-CSV-1", headers=auth(api))).json()
    assert one["geometry"]["coordinates"] == [105.9, 21.7]
    assert one["properties"]["name"] == "Lamp one"
    assert one["properties"]["road"] == "Hoàng Văn Thụ" and one["properties"]["colour"] == "grey"


CSV_BAD = """id,kind,name,lon,lat
SL-E-1,streetlight,ok,105.8,21.5
SL-E-2,lamp,bad kind,105.8,21.5
SL-E-3,streetlight,bad lon,east,21.5
SL-E-1,streetlight,dup,105.8,21.5
SL-E-5,streetlight,no geometry,,
SL-E-6,streetlight,out of range,105.8,95
"""


async def test_csv_errors_name_row_field_and_reason(api):
    before = await asyncio.to_thread(count, api.url)
    resp = await api.post("/api/v1/import", data=CSV_BAD.encode(),
                          headers={**auth(api), "Content-Type": "text/csv"})
    assert resp.status == 422 and resp.content_type == PROBLEM
    body = await resp.json()
    got = {(e["row"], e["field"]) for e in body["errors"]}
    assert got == {(3, "kind"), (4, "lon"), (5, "id"), (6, "geometry"), (7, "lon/lat")}, got
    assert body["detail"].startswith("5 problem(s) in the file, the first at row 3: kind:")
    assert all(e["reason"] for e in body["errors"])
    assert await asyncio.to_thread(count, api.url) == before


async def test_dry_run_reports_and_writes_nothing(api):
    before = await asyncio.to_thread(count, api.url)
    existing = some_cabinet(api.url)
    fc = {"type": "FeatureCollection",
          "features": [feature(existing, "lighting_cabinet"), feature("SL-DRY-1")]}
    resp = await api.post("/api/v1/import?dry_run=true", json=fc, headers=auth(api))
    assert resp.status == 200
    assert await resp.json() == {"dry_run": True, "format": "geojson", "devices": 2,
                                 "created": 1, "updated": 1}
    assert await asyncio.to_thread(count, api.url) == before


@pytest.mark.parametrize("role", ["viewer", "operator"])
async def test_only_integrators_import(api, role):
    resp = await api.post("/api/v1/import", json={"type": "FeatureCollection",
                                                  "features": [feature("SL-X")]},
                          headers=auth(api, role))
    assert resp.status == 403


@pytest.mark.parametrize("body, ctype, fragment", [
    (b"{not json", "application/geo+json", "not valid JSON"),
    (b'{"type": "Feature"}', "application/json", "geometry"),
    (b"id,name\nSL-1,x\n", "text/csv", "no kind column"),
    (b"id,kind\nSL-1,streetlight\n", "text/csv", "no geometry"),
    (b"\xff\xfeid,kind", "text/csv", "not UTF-8"),
])
async def test_unreadable_files_are_400_or_422(api, body, ctype, fragment):
    resp = await api.post("/api/v1/import", data=body,
                          headers={**auth(api), "Content-Type": ctype})
    assert resp.status in (400, 422) and resp.content_type == PROBLEM
    assert fragment in json.dumps(await resp.json())


async def test_import_body_may_exceed_the_ordinary_limit(aiohttp_client, db_url, make_settings,
                                                         token_for):
    settings = make_settings(db_url, mqtt_url=None,
                             api={"max_body_bytes": 2048, "max_import_bytes": 1 << 20})
    client = await aiohttp_client(create_app(settings))
    headers = {"Authorization": f"Bearer {await token_for(db_url, 'integrator')}"}
    fc = {"type": "FeatureCollection",
          "features": [feature(f"SL-{i:04d}", lon=105 + i / 1e4) for i in range(100)]}
    assert len(json.dumps(fc)) > 2048
    resp = await client.post("/api/v1/import", json=fc, headers=headers)
    assert resp.status == 200 and (await resp.json())["created"] == 100
    big = {"type": "FeatureCollection",
           "features": [feature(f"SL-{i:05d}", note="x" * 100) for i in range(10_000)]}
    resp = await client.post("/api/v1/import", json=big, headers=headers)
    assert resp.status == 413 and resp.content_type == PROBLEM


def test_cli_imports_and_prints_a_table_of_problems(db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IOC_DATABASE_URL", db_url)
    monkeypatch.delenv("IOC_CONFIG", raising=False)
    good = tmp_path / "lamps.csv"
    rows = ["id,kind,name,lon,lat"] + [f"SL-{i:05d},streetlight,lamp {i},{105 + i / 1e5},21.5"
                                       for i in range(3000)]
    good.write_text("\n".join(rows) + "\n")
    assert main(["import", str(good)]) == 0
    assert "3000 device(s) in lamps.csv (csv): created 3000, updated 0" in capsys.readouterr().out
    assert count(db_url) == 3000
    assert main(["import", str(good), "--dry-run"]) == 0
    assert "would update 3000" in capsys.readouterr().out

    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [
        feature("SL-NEW"), feature("SL-00001", kind="toaster")]}))
    report = tmp_path / "report.json"
    assert main(["import", str(bad), "--report", str(report)]) == 1
    err = capsys.readouterr().err
    assert "1 problem(s); nothing was imported" in err
    assert "properties.kind" in err and "toaster" in err
    assert json.loads(report.read_text())["errors"][0]["index"] == 1
    assert count(db_url, "select count(*) from devices where id = 'SL-NEW'") == 0
