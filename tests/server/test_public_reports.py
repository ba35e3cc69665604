"""The citizens' open data and pages: GeoJSON and CSV with public fields only, the statistics
per ward and category, the public base map, and the three pages served under the CSP."""

from __future__ import annotations

import csv
import io

import aiohttp
import mapbox_vector_tile
import pytest

from server.settings import ReportsSettings
from tests.helpers import aq, running

SECRET_CONTACT = "0912 345 678"
SECRET_TEXT = "behind the blue gate of number 17"


def _form(category: str, lat: float, lon: float, description: str = SECRET_TEXT) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for k, v in {"category": category, "lat": str(lat), "lon": str(lon), "description": description,
                 "contact": SECRET_CONTACT}.items():
        form.add_field(k, v)
    return form


@pytest.fixture
def settings(city_db_url, make_settings, tmp_path):
    return make_settings(city_db_url, mqtt_url=None,
                         reports=ReportsSettings(photo_dir=tmp_path, rate_per_min=6000))


async def _ward_point(url: str) -> tuple[str, float, float]:
    return (await aq(url, "select code, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) "
                          "from wards order by code limit 1"))[0]


async def _rid(url: str, code: str) -> int:
    return (await aq(url, "select report_id from report_codes where code = %s", code))[0][0]


async def test_open_data_has_public_fields_only_and_filters(settings, city_db_url):
    ward, lon, lat = await _ward_point(city_db_url)
    async with running(settings) as client:
        made = await (await client.post("/api/v1/public/reports", data=_form("pothole", lat, lon))).json()
        rid = await _rid(city_db_url, made["code"])
        resp = await client.get("/api/v1/public/reports.geojson?category=pothole&status=open")
        assert resp.status == 200 and resp.content_type == "application/geo+json"
        text = await resp.text()
        doc = await resp.json(content_type=None)
        (mine,) = [f for f in doc["features"] if f["id"] == rid]
        assert mine["properties"]["category"] == "pothole" and mine["properties"]["ward"] == ward
        assert mine["geometry"]["type"] == "Point"
        for secret in (SECRET_CONTACT, SECRET_TEXT, made["code"]):
            assert secret not in text
        closed = await (await client.get("/api/v1/public/reports.geojson?status=closed")).json(
            content_type=None)
        assert rid not in {f["id"] for f in closed["features"]}

        resp = await client.get("/api/v1/public/reports.csv?category=pothole")
        assert resp.status == 200 and resp.content_type == "text/csv"
        text = await resp.text()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert str(rid) in {r["id"] for r in rows}
        assert list(rows[0]) == ["id", "category", "status", "ward", "reporters", "created_at", "resolved_at",
                                 "lon", "lat"]
        for secret in (SECRET_CONTACT, SECRET_TEXT, made["code"]):
            assert secret not in text

        for bad, field in (("category=ufo", "category"), ("status=lost", "status"),
                           ("from=yesterday", "from"), ("to=2026-12-01", "to"), ("category=", "category")):
            resp = await client.get(f"/api/v1/public/reports.geojson?{bad}")
            assert resp.status == 400 and (await resp.json())["errors"][0]["field"] == field


async def test_stats_breakdown_per_ward_and_category(settings, city_db_url, token_for):
    _, lon, lat = await _ward_point(city_db_url)
    op = {"Authorization": f"Bearer {await token_for(city_db_url, 'operator')}"}
    async with running(settings) as client:
        before = await (await client.get("/api/v1/public/reports/stats/breakdown?by=category")).json()
        was = {r["category"]: r for r in before["rows"]}.get("flooding", {"received": 0, "resolved": 0})
        made = await (await client.post("/api/v1/public/reports",
                                        data=_form("flooding", lat + 0.3, lon + 0.3))).json()
        rid = await _rid(city_db_url, made["code"])
        assert (await client.post(f"/api/v1/reports/{rid}/resolve", json={"note": "pumped"},
                                  headers=op)).status == 200
        assert (await client.post(f"/api/v1/public/reports/{made['code']}/rating",
                                  json={"stars": 5})).status == 201
        after = await (await client.get("/api/v1/public/reports/stats/breakdown?by=category")).json()
        now = {r["category"]: r for r in after["rows"]}["flooding"]
        assert now["received"] == was["received"] + 1 and now["resolved"] == was["resolved"] + 1
        assert now["name"] == "Flooding" and now["name_vi"] == "Ngập lụt"
        assert now["satisfaction_pct"] is not None and now["median_hours_to_resolve"] is not None
        assert after["total"]["received"] == before["total"]["received"] + 1
        wards = await (await client.get("/api/v1/public/reports/stats/breakdown?by=ward")).json()
        assert all("name" in r for r in wards["rows"])
        future = await (await client.get("/api/v1/public/reports/stats/breakdown"
                                         "?from=2999-01-01T00:00:00Z")).json()
        assert future["rows"] == [] and future["total"]["received"] == 0
        resp = await client.get("/api/v1/public/reports/stats/breakdown?by=crew")
        assert resp.status == 400 and (await resp.json())["errors"][0]["field"] == "by"


async def test_public_base_map_is_wards_and_roads_without_a_token(settings):
    async with running(settings) as client:
        tj = await (await client.get("/api/v1/public/basemap.json")).json()
        assert {v["id"] for v in tj["vector_layers"]} == {"wards", "roads"}
        w, s, e, n = tj["bounds"]
        from morecantile import tms
        t = tms.get("WebMercatorQuad").tile((w + e) / 2, (s + n) / 2, 13)
        resp = await client.get(f"/api/v1/public/basemap/{t.z}/{t.x}/{t.y}.mvt")
        assert resp.status == 200
        layers = mapbox_vector_tile.decode(await resp.read())
        assert set(layers) <= {"wards", "roads"} and "roads" in layers
        again = await client.get(f"/api/v1/public/basemap/{t.z}/{t.x}/{t.y}.mvt",
                                 headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304
        assert (await client.get("/api/v1/public/basemap/30/0/0.mvt")).status == 400


@pytest.mark.parametrize("path,script", [("/report", "report.js"), ("/reports/abc", "tracking.js"),
                                         ("/public", "public.js")])
async def test_citizen_pages_are_served_under_the_csp(settings, path, script):
    async with running(settings) as client:
        resp = await client.get(path)
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert f"/static/js/{script}" in await resp.text()
