"""Export (API and ``ioc export``): filters, both formats, and a round trip through import."""

from __future__ import annotations

import csv
import io
import json

import psycopg
import pytest
import shapely
from shapely.geometry import shape

from server.cli.main import main
from server.http.app import create_app
from tests.helpers import acount

PROBLEM = "application/problem+json"


@pytest.fixture
async def api(aiohttp_client, city_db_url, make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    client.viewer = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}
    client.url = city_db_url
    return client


def registry(url: str) -> dict[str, tuple]:
    """id → (kind, name, parent, external_id, properties, geometry as WKB hex)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("select id, kind, name, parent, external_id, properties, "
                            "ST_AsText(geom) from devices").fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4], r[5], shapely.from_wkt(r[6])) for r in rows}


async def test_geojson_export_filters_by_bbox_and_kind(api):
    bbox = (105.82, 21.57, 105.86, 21.61)
    resp = await api.get("/api/v1/export", params={"bbox": ",".join(map(str, bbox)),
                                                   "kind": "streetlight,camera"},
                         headers=api.viewer)
    assert resp.status == 200
    assert resp.content_type == "application/geo+json"
    assert "attachment" in resp.headers["Content-Disposition"]
    fc = json.loads(await resp.read())
    assert fc["type"] == "FeatureCollection" and fc["features"]
    box = shapely.box(*bbox)
    for f in fc["features"]:
        assert f["properties"]["kind"] in ("streetlight", "camera")
        assert shape(f["geometry"]).intersects(box)
        assert "status" not in f["properties"], "the inventory, not live state"
    expected = await acount(
        api.url, "select count(*) from devices where kind in ('streetlight', 'camera') and "
                 "ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))", *bbox)
    assert len(fc["features"]) == expected


@pytest.mark.parametrize("params", [{"format": "xml"}, {"bbox": "1,2,3"}, {"kind": "toaster"}])
async def test_bad_filters_are_400(api, params):
    resp = await api.get("/api/v1/export", params=params, headers=api.viewer)
    assert resp.status == 400 and resp.content_type == PROBLEM


@pytest.mark.parametrize("fmt", ["geojson", "csv"])
async def test_export_then_import_into_an_empty_database_round_trips(
        api, fmt, aiohttp_client, db_url, make_settings, token_for):
    resp = await api.get("/api/v1/export", params={"format": fmt}, headers=api.viewer)
    assert resp.status == 200
    data = await resp.read()
    if fmt == "csv":
        assert resp.content_type == "text/csv"
        header = next(csv.reader(io.StringIO(data.decode())))
        assert header[:3] == ["id", "kind", "name"] and "wkt" in header and "lon" in header

    empty = await aiohttp_client(create_app(make_settings(db_url, mqtt_url=None)))
    headers = {"Authorization": f"Bearer {await token_for(db_url, 'integrator')}",
               "Content-Type": "text/csv" if fmt == "csv" else "application/geo+json"}
    resp = await empty.post("/api/v1/import", data=data, headers=headers)
    assert resp.status == 200, (await resp.text())[:2000]
    source, copy = registry(api.url), registry(db_url)
    assert (await resp.json())["created"] == len(source)
    assert source.keys() == copy.keys()
    for dev_id, (kind, name, parent, ext, props, geom) in source.items():
        c = copy[dev_id]
        assert (kind, name, parent, ext, props) == c[:5], dev_id
        assert geom.equals_exact(c[5], 1e-6), dev_id


def test_cli_export_writes_a_file(city_db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("IOC_DATABASE_URL", city_db_url)
    monkeypatch.delenv("IOC_CONFIG", raising=False)
    out = tmp_path / "cams.csv"
    assert main(["export", "--format", "csv", "--kind", "camera", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open(newline="")))
    with psycopg.connect(city_db_url) as conn:
        cams = conn.execute("select count(*) from devices where kind = 'camera'").fetchone()[0]
    assert len(rows) == cams > 0
    assert all(r["kind"] == "camera" and r["lon"] and r["lat"] and not r["wkt"] for r in rows)
