"""Issue 18 (assets, cameras): the header's search, the camera media proxy (which obeys the
outbound guard: a camera on 127.0.0.1 is reached only when allow-listed), and moving a device
with the import's validation."""

from __future__ import annotations

import pytest

from server.http.app import create_app
from server.settings import SecuritySettings
from tests.media import camera_app, make_media


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("cam"))


@pytest.fixture
async def city(aiohttp_client, city_db_url, make_settings, token_for):
    async def make(role="operator", **security):
        settings = make_settings(city_db_url, mqtt_url=None, security=SecuritySettings(**security))
        client = await aiohttp_client(create_app(settings))
        client.headers = {"Authorization": f"Bearer {await token_for(city_db_url, role)}"}
        return client

    return make


async def test_search_finds_devices_by_id_name_ward_and_address(city):
    client = await city("viewer")
    h = client.headers
    exact = await (await client.get("/api/v1/search?q=SL-000012", headers=h)).json()
    assert exact["devices"][0]["id"] == "SL-000012", "an exact id first"
    assert {"id", "kind", "name", "ward", "ward_name", "address", "center"} <= set(exact["devices"][0])

    cams = await (await client.get("/api/v1/search?q=cam-00&limit=5", headers=h)).json()
    assert len(cams["devices"]) == 5 and all(d["id"].startswith("CAM-00") for d in cams["devices"])

    ward = exact["devices"][0]["ward"]
    ward_name = exact["devices"][0]["ward_name"]
    by_ward = await (await client.get("/api/v1/search", params={"q": ward_name}, headers=h)).json()
    assert any(w["code"] == ward for w in by_ward["wards"]) and by_ward["devices"]
    road = (await (await client.get("/api/v1/search?q=CAM-0001", headers=h)).json())["devices"][0]["address"]
    assert road, "a camera's road is its address"
    by_road = await (await client.get("/api/v1/search", params={"q": road, "limit": 50}, headers=h)).json()
    assert "CAM-0001" in {d["id"] for d in by_road["devices"]}

    literal = await (await client.get("/api/v1/search?q=%25%25", headers=h)).json()
    assert literal["devices"] == [], "% is a character, not a wildcard"


@pytest.mark.parametrize("query", ["q=x", "q=" + "x" * 101, "q=SL&limit=0", "q=SL&limit=x", ""])
async def test_search_refuses_bad_queries_naming_the_field(city, query):
    client = await city("viewer")
    resp = await client.get(f"/api/v1/search?{query}", headers=client.headers)
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["field"] in ("q", "limit")


async def _camera(client, admin_h, url: str, field="stream_url") -> None:
    resp = await client.patch("/api/v1/devices/CAM-0001", headers=admin_h,
                              json={"properties": {field: url}})
    assert resp.status == 200, await resp.text()


async def test_media_proxy_refuses_a_private_camera_unless_allow_listed(
        city, aiohttp_server, media_dir, city_db_url, token_for):
    cam = await aiohttp_server(camera_app(media_dir))
    stream = f"http://127.0.0.1:{cam.port}/cam/index.m3u8"
    closed = await city("operator")
    admin = {"Authorization": f"Bearer {await token_for(city_db_url, 'admin')}"}
    await _camera(closed, admin, stream)

    resp = await closed.get("/api/v1/devices/CAM-0001/media", headers=closed.headers)
    assert resp.status == 400, await resp.text()
    [err] = (await resp.json())["errors"]
    assert err["field"] == "properties.stream_url" and "loopback" in err["reason"]
    assert "allow_outbound" in err["reason"]

    opened = await city("viewer", allow_outbound=["127.0.0.0/8"])
    resp = await opened.get("/api/v1/devices/CAM-0001/media", headers=opened.headers)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/vnd.apple.mpegurl"
    playlist = await resp.text()
    segments = [line for line in playlist.splitlines() if line.endswith(".ts")]
    assert len(segments) >= 2, playlist
    seg = await opened.get(f"/api/v1/devices/CAM-0001/media/{segments[0]}", headers=opened.headers)
    assert seg.status == 200 and seg.content_type == "video/mp2t"
    body = await seg.read()
    assert body[0] == 0x47 and len(body) > 1000, "an MPEG-TS segment (sync byte 0x47)"

    # the browser asks for the playlist by its file name, so its segments resolve the same way
    named = await opened.get("/api/v1/devices/CAM-0001/media/index.m3u8", headers=opened.headers)
    assert named.status == 200 and await named.text() == playlist

    for bad in ("..%2Fx", "%2Fetc%2Fpasswd", "..%5Cx"):
        resp = await opened.get(f"/api/v1/devices/CAM-0001/media/{bad}", headers=opened.headers)
        assert resp.status in (400, 404), (bad, resp.status)

    # a snapshot, and the crew role is refused pictures
    await _camera(opened, admin, f"http://127.0.0.1:{cam.port}/cam/snap.jpg", "snapshot_url")
    snap = await opened.get("/api/v1/devices/CAM-0001/media?src=snapshot", headers=opened.headers)
    assert snap.status == 200 and snap.content_type == "image/jpeg"
    assert (await snap.read())[:2] == b"\xff\xd8"
    crew = {"Authorization": f"Bearer {await token_for(city_db_url, 'crew')}"}
    assert (await opened.get("/api/v1/devices/CAM-0001/media", headers=crew)).status == 403


async def test_media_proxy_explains_what_it_cannot_play(city, city_db_url, token_for):
    client = await city("viewer")
    # the synthetic city's cameras stream RTSP
    resp = await client.get("/api/v1/devices/CAM-0002/media", headers=client.headers)
    assert resp.status == 400 and "rtsp" in (await resp.json())["detail"]
    resp = await client.get("/api/v1/devices/CAM-0002/media?src=snapshot", headers=client.headers)
    assert resp.status == 404
    resp = await client.get("/api/v1/devices/NOPE/media", headers=client.headers)
    assert resp.status == 404
    resp = await client.get("/api/v1/devices/CAM-0002/media?src=x", headers=client.headers)
    assert resp.status == 400 and (await resp.json())["errors"][0]["field"] == "src"


async def test_moving_a_device_is_validated_like_the_import(city, city_db_url, token_for):
    client = await city("integrator")
    h = client.headers
    before = await (await client.get("/api/v1/devices/SL-000012", headers=h)).json()
    for geometry in ({"type": "Point", "coordinates": [200, 10]},
                     {"type": "Point", "coordinates": ["a", 10]},
                     {"type": "Pointy", "coordinates": [106.7, 10.8]}):
        resp = await client.patch("/api/v1/devices/SL-000012", headers=h, json={"geometry": geometry})
        assert resp.status == 400, geometry
        problem = await resp.json()
        assert any(e["field"].startswith("geometry") for e in problem["errors"]), problem
    after = await (await client.get("/api/v1/devices/SL-000012", headers=h)).json()
    assert after["geometry"] == before["geometry"], "a refused move changes nothing"

    lon, lat = before["geometry"]["coordinates"]
    moved = {"type": "Point", "coordinates": [lon + 0.0001, lat + 0.0001]}
    resp = await client.patch("/api/v1/devices/SL-000012", headers=h, json={"geometry": moved})
    assert resp.status == 200, await resp.text()
    got = (await resp.json())["geometry"]["coordinates"]
    assert got == pytest.approx(moved["coordinates"])
    viewer = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}
    assert (await client.patch("/api/v1/devices/SL-000012", headers=viewer,
                               json={"geometry": moved})).status == 403


async def test_the_ward_roll_up_counts_cameras_and_their_health(city, city_db_url):
    from tests.helpers import aexecute, aq

    [(cams,)] = await aq(city_db_url,
                         "select count(*) from devices where kind = 'camera' and ward is not null")
    [(ward,)] = await aq(city_db_url, "select ward from devices where id = 'CAM-0001'")
    # CAM-0001 online and recording, CAM-0001's ward-mates unknown: only it counts as up
    await aexecute(city_db_url, """
        insert into device_state (device_key, values, status, last_seen)
        select key, '{"online": true, "recording": true}', 'online', now() from devices where id = 'CAM-0001'
        on conflict (device_key) do update set values = excluded.values, status = 'online'""")
    client = await city("viewer")
    body = await (await client.get("/api/v1/wards/summary", headers=client.headers)).json()
    assert cams > 0 and body["totals"]["cameras"] == cams
    assert body["totals"]["cameras_down"] == cams - 1
    mine = next(w for w in body["wards"] if w["code"] == ward)
    assert mine["cameras"]["online"] == 1 and mine["cameras"]["recording"] == 1
    assert mine["cameras"]["down"] == mine["cameras"]["total"] - 1
