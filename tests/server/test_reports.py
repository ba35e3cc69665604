"""Citizens' reports: the public side with a real DB, photos cleaned, lying images refused,
merging, the lamp-alarm join, the lifecycle, ratings and stats."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from server.reports import CATEGORIES
from server.settings import ReportsSettings
from tests.helpers import aq, running


def _jpeg_with_gps() -> bytes:
    img = Image.new("RGB", (2400, 1200), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {1: "N", 2: (21.0, 1.0, 30.0), 3: "E", 4: (105.0, 50.0, 10.0)}  # GPS IFD
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


def _form(category="pothole", lat="21.0285", lon="105.8542", description="hole < 1 m from the kerb",
          photos=(), **extra) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for k, v in {"category": category, "lat": lat, "lon": lon, "description": description, **extra}.items():
        form.add_field(k, v)
    for name, data in photos:
        form.add_field("photo", data, filename=name, content_type="image/jpeg")
    return form


@pytest.fixture
def settings(city_db_url, make_settings, tmp_path):
    return make_settings(city_db_url, mqtt_url=None,
                         reports=ReportsSettings(photo_dir=tmp_path, rate_per_min=6000))


async def test_report_with_gps_photo_is_stored_and_served_without_metadata(settings, tmp_path):
    raw = _jpeg_with_gps()
    assert Image.open(io.BytesIO(raw)).getexif().get_ifd(0x8825)  # the input does carry GPS
    async with running(settings) as client:
        resp = await client.post("/api/v1/public/reports", data=_form(photos=[("a.jpg", raw)],
                                                                       contact="me@example.org"))
        assert resp.status == 201, await resp.text()
        made = await resp.json()
        assert made["status"] == "received" and len(made["code"]) >= 16
        resp = await client.get(made["url"])
        doc = await resp.json()
        assert "contact" not in doc and "me@example.org" not in await resp.text()
        assert doc["category"] == "pothole" and doc["events"][0]["status"] == "received"
        (url,) = doc["photos"]
        resp = await client.get(url)
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        img = Image.open(io.BytesIO(await resp.read()))
        assert img.format == "JPEG" and max(img.size) == 1600
        assert len(img.getexif()) == 0 and not img.getexif().get_ifd(0x8825)
        assert "icc_profile" not in img.info and "exif" not in img.info


@pytest.mark.parametrize("name,data,reason", [
    ("png.jpg", b"\x89PNG\r\n\x1a\n" + b"garbage" * 100, "photo"),
    ("text.jpg", b"hello, I am a text file\n" * 10, "photo"),
])
async def test_lying_images_are_refused_and_nothing_stored(settings, tmp_path, city_db_url, name, data,
                                                           reason):
    before = (await aq(city_db_url, "select count(*) from reports"))[0][0]
    async with running(settings) as client:
        resp = await client.post("/api/v1/public/reports", data=_form(photos=[(name, data)]))
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["field"] == reason
    assert (await aq(city_db_url, "select count(*) from reports"))[0][0] == before
    assert not list(tmp_path.glob("*"))


async def test_decompression_bomb_is_refused(settings, tmp_path):
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, "PNG")  # 400 megapixels, a few kB compressed
    async with running(settings) as client:
        resp = await client.post("/api/v1/public/reports", data=_form(photos=[("bomb.png", out.getvalue())]))
        assert resp.status == 400, await resp.text()
        assert "too large" in (await resp.json())["detail"]
    assert not list(tmp_path.glob("*"))


@pytest.mark.parametrize("fields,field", [
    ({"lat": "91"}, "lat"), ({"lon": "abc"}, "lon"), ({"category": "ufo"}, "category"),
    ({"description": "a\x00b"}, "description"), ({"website": "http://spam"}, "website"),
])
async def test_bad_input_names_the_field(settings, city_db_url, fields, field):
    before = (await aq(city_db_url, "select count(*) from reports"))[0][0]
    async with running(settings) as client:
        resp = await client.post("/api/v1/public/reports", data=_form(**fields))
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["field"] == field
    assert (await aq(city_db_url, "select count(*) from reports"))[0][0] == before


async def test_merge_lamp_alarm_join_rating_and_stats(settings, city_db_url):
    lamp, lon, lat = (await aq(city_db_url, "select id, ST_X(geom), ST_Y(geom) from devices "
                                            "where kind = 'streetlight' order by id limit 1"))[0]
    alarm = (await aq(city_db_url, "insert into alarms (rule, device, severity, message, dedup_key, geom) "
                                   "values ('r', %s, 'major', 'lamp out', 'k-rep', "
                                   "(select geom from devices where id = %s)) returning id",
                      lamp, lamp))[0][0]
    async with running(settings) as client:
        first = await (await client.post("/api/v1/public/reports", data=_form(
            "streetlight_out", str(lat + 0.0001), str(lon), "dark"))).json()
        second = await (await client.post("/api/v1/public/reports", data=_form(
            "streetlight_out", str(lat - 0.0002), str(lon), "still dark"))).json()
        assert first["code"] != second["code"]
        a = await (await client.get(first["url"])).json()
        b = await (await client.get(second["url"])).json()
        assert a["reporters"] == b["reporters"] == 2 and a["events"] == b["events"]
        rid, device, linked = (await aq(city_db_url, "select r.id, device, alarm_id from report_codes c "
                                                     "join reports r on r.id = c.report_id where c.code = %s",
                                        first["code"]))[0]
        assert device == lamp and linked == alarm
        notes = await aq(city_db_url, "select reason from alarm_events where alarm_id = %s", alarm)
        assert any("citizens confirmed" in (n[0] or "") for n in notes)
        # rating before resolution: 409
        resp = await client.post(f"{first['url']}/rating", json={"stars": 5})
        assert resp.status == 409
        await aq(city_db_url, "update reports set status = 'resolved', resolved_at = now() where id = %s "
                              "returning id", rid)
        assert (await client.post(f"{first['url']}/rating", json={"stars": 5, "comment": "ok"})).status == 201
        assert (await client.post(f"{second['url']}/rating", json={"stars": 1})).status == 409
        assert (await client.post(f"{first['url']}/rating", json={"stars": 9})).status == 400
        stats = await (await client.get("/api/v1/public/reports/stats?category=streetlight_out")).json()
        assert stats["received"] >= 1 and stats["resolved"] >= 1
        assert stats["within_sla_pct"] == 100.0 and stats["satisfaction_pct"] == 100.0


def test_categories_have_both_languages():
    assert {"streetlight_out", "water_leak", "fallen_tree", "pothole", "flooding", "traffic_signal",
            "other"} <= set(CATEGORIES)


async def test_open311_client_round_trip(settings, city_db_url):
    """GeoReport v2 as published: services list, a form-encoded POST, the request read back."""
    async with running(settings) as client:
        services = await (await client.get("/open311/v2/services.json")).json()
        assert {"service_code", "service_name", "description", "metadata", "type", "keywords",
                "group"} <= set(services[0])
        assert {s["service_code"] for s in services} >= {"water_leak", "pothole"}
        resp = await client.post("/open311/v2/requests.json", data={
            "service_code": "water_leak", "lat": "21.03", "long": "105.85",
            "description": "pipe burst", "email": "a@b.vn", "first_name": "An"})
        assert resp.status == 201, await resp.text()
        (made,) = await resp.json()
        assert set(made) >= {"service_request_id", "service_notice", "account_id"}
        rid = made["service_request_id"]
        (req,) = await (await client.get(f"/open311/v2/requests/{rid}.json")).json()
        assert req["status"] == "open" and req["service_code"] == "water_leak"
        assert {"status_notes", "service_name", "agency_responsible", "requested_datetime",
                "updated_datetime", "expected_datetime", "address", "lat", "long", "media_url"} <= set(req)
        assert "a@b.vn" not in str(req)
        listed = await (await client.get("/open311/v2/requests.json?status=open&service_code=water_leak"))\
            .json()
        assert rid in {r["service_request_id"] for r in listed}
        resp = await client.post("/open311/v2/requests.json", json={"service_code": "nope", "lat": 1,
                                                                     "long": 2, "description": "x"})
        assert resp.status == 400
        (err,) = await resp.json()
        assert err["code"] == 400 and "service_code" in err["description"]
        assert (await client.get("/open311/v2/requests/nope.json")).status == 404


async def test_lifecycle_with_events_and_crew_scope(settings, city_db_url, token_for):
    await aq(city_db_url, "insert into crews (id, name) values ('c1', 'Crew 1'), ('c2', 'Crew 2') "
                          "on conflict do nothing returning id")
    op = {"Authorization": f"Bearer {await token_for(city_db_url, 'operator')}"}
    c1 = {"Authorization": f"Bearer {await token_for(city_db_url, 'crew', 'c1')}"}
    c2 = {"Authorization": f"Bearer {await token_for(city_db_url, 'crew', 'c2')}"}
    async with running(settings) as client:
        made = await (await client.post("/api/v1/public/reports", data=_form(
            "flooding", "21.01", "105.80", "street under water"))).json()
        rid = (await aq(city_db_url, "select report_id from report_codes where code = %s",
                        made["code"]))[0][0]
        base = f"/api/v1/reports/{rid}"
        assert (await client.post(f"{base}/verify", headers=op)).status == 200
        assert (await client.post(f"{base}/verify", headers=op)).status == 409
        assert (await client.post(f"{base}/assign", json={"crew": "nope"}, headers=op)).status == 400
        assert (await client.post(f"{base}/assign", json={"crew": "c1"}, headers=op)).status == 200
        assert (await client.get(base, headers=c2)).status == 403
        assert (await client.post(f"{base}/resolve", json={"note": "x"}, headers=c2)).status == 403
        assert rid not in {r["id"] for r in (await (await client.get("/api/v1/reports", headers=c2)).json())
                           ["reports"]}
        resp = await client.post(f"{base}/resolve", json={"note": "pumped out"}, headers=c1)
        assert resp.status == 200 and (await resp.json())["status"] == "resolved"
        doc = await (await client.get(base, headers=op)).json()
        assert [e["status"] for e in doc["events"]] == ["received", "verified", "assigned", "resolved"]
        assert all(e["by"] for e in doc["events"][1:]) and doc["contact"] is None
        public = await (await client.get(made["url"])).json()
        assert public["status"] == "resolved" and public["events"][-1]["note"] == "pumped out"


async def test_reports_tile_layer_carries_public_fields_only(settings, city_db_url, token_for):
    import mapbox_vector_tile
    from morecantile import tms

    headers = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}
    async with running(settings) as client:
        made = await (await client.post("/api/v1/public/reports", data=_form(
            "pothole", "21.0201", "105.8101", "deep hole", contact="0900 000 000"))).json()
        t = tms.get("WebMercatorQuad").tile(105.8101, 21.0201, 16)
        resp = await client.get(f"/tiles/reports/{t.z}/{t.x}/{t.y}.mvt", headers=headers)
        assert resp.status == 200
        feats = mapbox_vector_tile.decode(await resp.read())["reports"]["features"]
        props = [f["properties"] for f in feats]
        assert any(p["category"] == "pothole" and p["status"] == "received" for p in props)
        text = str(props)
        assert "0900" not in text and "deep hole" not in text and made["code"] not in text


async def test_fallen_tree_links_to_a_tree_within_30_m(settings, city_db_url):
    await aq(city_db_url, "insert into devices (id, kind, name, geom) values ('tree-1', 'tree', 'Sao đen', "
                          "ST_SetSRID(ST_MakePoint(105.8301, 21.0301), 4326)) returning id")
    async with running(settings) as client:
        near = await (await client.post("/api/v1/public/reports", data=_form(
            "fallen_tree", "21.0302", "105.8301", "tree down"))).json()
        far = await (await client.post("/api/v1/public/reports", data=_form(
            "fallen_tree", "21.0401", "105.8301", "another tree down"))).json()
    linked = dict(await aq(city_db_url, "select c.code, r.device from report_codes c join reports r "
                                        "on r.id = c.report_id where c.code = any(%s)",
                           [near["code"], far["code"]]))
    assert linked == {near["code"]: "tree-1", far["code"]: None}


async def test_full_photo_store_answers_503_and_keeps_nothing(city_db_url, make_settings, tmp_path):
    settings = make_settings(city_db_url, mqtt_url=None,
                             reports=ReportsSettings(photo_dir=tmp_path, photo_quota_bytes=1000))
    before = (await aq(city_db_url, "select count(*) from reports"))[0][0]
    async with running(settings) as client:
        resp = await client.post("/api/v1/public/reports", data=_form(photos=[("a.jpg", _jpeg_with_gps())]))
        assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
    assert (await aq(city_db_url, "select count(*) from reports"))[0][0] == before
    assert not list(tmp_path.glob("*.jpg"))


async def test_a_resend_with_the_same_key_gets_the_first_report_not_a_second(settings, city_db_url):
    """A phone on a slow line loses the answer and sends again (report.js does it by itself):
    the Idempotency-Key makes that the same report, even when both arrive at once."""
    import asyncio
    import uuid

    count = "select count(*) from reports where starts_with(description, 'resend ')"
    key = str(uuid.uuid4())
    photo = [("a.jpg", _jpeg_with_gps())]
    fields = {"description": "resend test", "lat": "21.5012", "lon": "105.7013"}
    async with running(settings) as client:
        first, second = await asyncio.gather(*(
            client.post("/api/v1/public/reports", data=_form(photos=photo, **fields),
                        headers={"Idempotency-Key": key}) for _ in range(2)))
        assert first.status == second.status == 201, await second.text()
        made = [await r.json() for r in (first, second)]
        assert made[0]["code"] == made[1]["code"]
        assert {r.headers.get("Idempotent-Replayed") for r in (first, second)} == {None, "true"}
        assert (await aq(city_db_url, count))[0][0] == 1
        again = await client.post("/api/v1/public/reports", data=_form(photos=photo, **fields),
                                  headers={"Idempotency-Key": key})
        assert again.status == 201 and (await again.json())["code"] == made[0]["code"]
        # the key with another report: refused, naming the header; nothing stored
        other = await client.post("/api/v1/public/reports",
                                  data=_form(**{**fields, "description": "resend other"}),
                                  headers={"Idempotency-Key": key})
        assert other.status == 422 and (await other.json())["errors"][0]["field"] == "Idempotency-Key"
        bad = await client.post("/api/v1/public/reports", data=_form(**fields),
                                headers={"Idempotency-Key": "short"})
        assert bad.status == 400 and (await bad.json())["errors"][0]["field"] == "Idempotency-Key"
        # a new key is a new report (here merged into the first: same place and category)
        fresh = await client.post("/api/v1/public/reports", data=_form(photos=photo, **fields),
                                  headers={"Idempotency-Key": str(uuid.uuid4())})
        assert fresh.status == 201 and (await fresh.json())["code"] != made[0]["code"]
        assert (await aq(city_db_url, "select reporters from reports where description = 'resend test'")
                )[0][0] == 2
