"""The devices API against a real PostGIS database holding the synthetic city."""

from __future__ import annotations

import pytest

from server.http.app import create_app
from tests.helpers import aexecute, aq

PROBLEM = "application/problem+json"


@pytest.fixture
async def api(aiohttp_client, city_db_url, make_settings, token_for):
    app = create_app(make_settings(city_db_url, mqtt_url=None))
    client = await aiohttp_client(app)
    client.tokens = {r: await token_for(city_db_url, r) for r in ("viewer", "operator", "integrator")}
    client.url = city_db_url
    return client


def auth(client, role="viewer"):
    return {"Authorization": f"Bearer {client.tokens[role]}"}


async def problem(resp, status):
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body = await resp.json()
    assert body["status"] == status and body["detail"]
    return body


LAMP = {
    "type": "Feature",
    "id": "SL-TEST-1",
    "geometry": {"type": "Point", "coordinates": [105.84, 21.59]},
    "properties": {"kind": "streetlight", "name": "test lamp", "road": "Đường Test",
                   "rated_power_w": 90},
}


async def test_bbox_returns_only_devices_inside(api):
    bbox = (105.83, 21.58, 105.85, 21.60)
    resp = await api.get("/api/v1/devices", params={"bbox": ",".join(map(str, bbox)),
                                                    "limit": "50000"}, headers=auth(api))
    assert resp.status == 200
    assert resp.content_type == "application/geo+json"
    fc = await resp.json()
    assert fc["type"] == "FeatureCollection"
    assert fc["features"], "the city centre holds devices"
    for f in fc["features"]:
        props = f["properties"]
        assert {"kind", "name", "status", "last_seen", "values", "alarm_severity"} <= set(props)
        assert props["status"] in ("online", "stale", "offline", "unknown")
        if f["geometry"]["type"] == "Point":
            lon, lat = f["geometry"]["coordinates"]
            assert bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3]
    # the whole city is bigger than the box
    everything = await (await api.get("/api/v1/devices", params={"limit": "50000"},
                                      headers=auth(api))).json()
    assert len(everything["features"]) > len(fc["features"])


async def test_kind_filter_and_limit_with_next_link(api):
    resp = await api.get("/api/v1/devices", params={"kind": "camera", "limit": "5"},
                         headers=auth(api))
    fc = await resp.json()
    assert len(fc["features"]) == 5
    assert {f["properties"]["kind"] for f in fc["features"]} == {"camera"}
    nxt = next(link for link in fc["links"] if link["rel"] == "next")["href"]
    page2 = await (await api.get(nxt, headers=auth(api))).json()
    assert page2["features"][0]["id"] > fc["features"][-1]["id"]


@pytest.mark.parametrize("bbox", ["1,2,3", "a,b,c,d", "10,10,5,5", "0,0,200,1", "nan,0,1,1"])
async def test_bad_bbox_is_400(api, bbox):
    resp = await api.get("/api/v1/devices", params={"bbox": bbox}, headers=auth(api))
    await problem(resp, 400)


async def test_unknown_kind_is_400_naming_known_kinds(api):
    body = await problem(await api.get("/api/v1/devices", params={"kind": "toaster"},
                                       headers=auth(api)), 400)
    assert "toaster" in body["detail"] and "streetlight" in body["detail"]


async def test_missing_and_bad_tokens_are_401(api):
    await problem(await api.get("/api/v1/devices"), 401)
    await problem(await api.get("/api/v1/devices", headers={"Authorization": "Bearer nope"}), 401)
    await problem(await api.get("/api/v1/devices", headers={"Authorization": "Basic abc"}), 401)


async def test_viewer_cannot_create_devices(api):
    resp = await api.post("/api/v1/devices", json=LAMP, headers=auth(api, "viewer"))
    body = await problem(resp, 403)
    assert "integrator" in body["detail"]
    resp = await api.post("/api/v1/devices", json=LAMP, headers=auth(api, "operator"))
    await problem(resp, 403)
    assert (await api.get("/api/v1/devices/SL-TEST-1", headers=auth(api))).status == 404


async def test_unknown_device_is_404(api):
    await problem(await api.get("/api/v1/devices/NOPE-1", headers=auth(api)), 404)


async def test_create_get_patch_delete(api):
    resp = await api.post("/api/v1/devices", json=LAMP, headers=auth(api, "integrator"))
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == "/api/v1/devices/SL-TEST-1"
    f = await resp.json()
    assert f["id"] == "SL-TEST-1"
    assert f["properties"]["road"] == "Đường Test"
    assert f["properties"]["ward"], "the ward trigger placed the lamp in a ward"

    patch = {"properties": {"name": "renamed", "road": None, "pole": "P-7"},
             "geometry": {"type": "Point", "coordinates": [105.841, 21.591]}}
    resp = await api.patch("/api/v1/devices/SL-TEST-1", json=patch, headers=auth(api, "integrator"))
    assert resp.status == 200, await resp.text()
    f = await resp.json()
    assert f["properties"]["name"] == "renamed"
    assert "road" not in f["properties"] and f["properties"]["pole"] == "P-7"
    assert f["geometry"]["coordinates"] == [105.841, 21.591]

    resp = await api.delete("/api/v1/devices/SL-TEST-1", headers=auth(api, "integrator"))
    assert resp.status == 204
    await problem(await api.get("/api/v1/devices/SL-TEST-1", headers=auth(api)), 404)
    await problem(await api.delete("/api/v1/devices/SL-TEST-1", headers=auth(api, "integrator")), 404)


async def test_feature_collection_with_parent_in_same_batch(api):
    fc = {"type": "FeatureCollection", "features": [
        {**LAMP, "id": "SL-TEST-2", "properties": {**LAMP["properties"], "parent": "LC-TEST-1"}},
        {"type": "Feature", "id": "LC-TEST-1",
         "geometry": {"type": "Point", "coordinates": [105.8401, 21.5901]},
         "properties": {"kind": "lighting_cabinet", "name": "cab"}},
        {"type": "Feature", "id": "WP-TEST-1",
         "geometry": {"type": "LineString", "coordinates": [[105.84, 21.59], [105.85, 21.6]]},
         "properties": {"kind": "water_pipe", "name": "main"}},
    ]}
    resp = await api.post("/api/v1/devices", json=fc, headers=auth(api, "integrator"))
    assert resp.status == 201, await resp.text()
    got = await resp.json()
    assert {f["id"] for f in got["features"]} == {"SL-TEST-2", "LC-TEST-1", "WP-TEST-1"}
    lamp = await (await api.get("/api/v1/devices/SL-TEST-2", headers=auth(api))).json()
    assert lamp["properties"]["parent"] == "LC-TEST-1"


BAD_FEATURES = [
    ({**LAMP, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}},
     "geometry"),
    ({**LAMP, "geometry": {"type": "Point", "coordinates": [200, 21]}}, "geometry"),
    ({**LAMP, "geometry": {"type": "Pointy", "coordinates": [1, 2]}}, "geometry"),
    ({**LAMP, "geometry": None}, "geometry"),
    ({**LAMP, "properties": {**LAMP["properties"], "kind": "toaster"}}, "properties.kind"),
    ({**LAMP, "id": "bad id with spaces"}, "id"),
]


@pytest.mark.parametrize(("feature", "field"), BAD_FEATURES)
async def test_invalid_feature_is_400_and_changes_nothing(api, feature, field):
    good = {**LAMP, "id": "SL-GOOD-1"}
    resp = await api.post("/api/v1/devices", json={"type": "FeatureCollection",
                                                   "features": [good, feature]},
                          headers=auth(api, "integrator"))
    body = await problem(resp, 400)
    assert any(e["field"] == field and e["index"] == 1 for e in body["errors"]), body
    await problem(await api.get("/api/v1/devices/SL-GOOD-1", headers=auth(api)), 404)


async def test_malformed_json_and_wrong_shapes(api):
    h = {**auth(api, "integrator"), "Content-Type": "application/json"}
    await problem(await api.post("/api/v1/devices", data=b"{not json", headers=h), 400)
    await problem(await api.post("/api/v1/devices", json=[1, 2], headers=h), 400)
    await problem(await api.post("/api/v1/devices", json={"type": "Nope"}, headers=h), 400)


async def test_duplicate_id_is_409_and_unknown_parent_is_400(api):
    h = auth(api, "integrator")
    assert (await api.post("/api/v1/devices", json=LAMP, headers=h)).status == 201
    await problem(await api.post("/api/v1/devices", json=LAMP, headers=h), 409)
    orphan = {**LAMP, "id": "SL-ORPHAN", "properties": {**LAMP["properties"], "parent": "LC-NONE"}}
    await problem(await api.post("/api/v1/devices", json=orphan, headers=h), 400)


async def test_audit_log_records_device_changes(api):

    await api.post("/api/v1/devices", json=LAMP, headers=auth(api, "integrator"))
    rows = await aq(api.url, "select actor, action from audit_log where action = 'device.create'")
    row = rows[0] if rows else None
    assert row is not None and "integrator" in row[0]


async def test_registry_changes_reach_ingest_validation(api):
    """Created, re-kinded and deleted devices are known to ingest at once."""
    from server import keys

    directory = api.app[keys.DIRECTORY]
    h = auth(api, "integrator")
    ext = {**LAMP, "properties": {**LAMP["properties"], "external_id": "AB-01"}}
    assert (await api.post("/api/v1/devices", json=ext, headers=h)).status == 201
    assert directory.get("SL-TEST-1").kind == "streetlight"
    assert directory.resolve_external("ab-01") == "SL-TEST-1"
    patch = {"properties": {"kind": "camera", "external_id": "AB-02"}}
    assert (await api.patch("/api/v1/devices/SL-TEST-1", json=patch, headers=h)).status == 200
    assert directory.get("SL-TEST-1").kind == "camera"
    assert directory.resolve_external("AB-01") is None
    assert directory.resolve_external("AB-02") == "SL-TEST-1"
    assert (await api.delete("/api/v1/devices/SL-TEST-1", headers=h)).status == 204
    assert directory.get("SL-TEST-1") is None and directory.resolve_external("AB-02") is None


async def test_directory_reloads_when_another_process_changed_devices(api):

    from server import keys

    directory = api.app[keys.DIRECTORY]
    async with api.app[keys.DB].acquire() as conn:
        assert await directory.refresh_if_changed(conn) is False
        victim = next(iter(directory.devices))
        await aexecute(api.url, "delete from devices where id = %s", victim)
        assert await directory.refresh_if_changed(conn) is True
    assert directory.get(victim) is None


@pytest.mark.parametrize(("patch", "field"), [
    ({"geometry": {"type": "Point", "coordinates": [200, 21]}}, "geometry"),
    ({"geometry": None}, "geometry"),
    ({"properties": {"kind": "toaster"}}, "properties.kind"),
    ({"properties": {"name": None}}, "properties.name"),
    ({"properties": {"parent": "bad id"}}, "properties.parent"),
    ({"properties": {"adapter_config": [1]}}, "properties.adapter_config"),
    ({"propertys": {"name": "typo"}}, "propertys"),
])
async def test_bad_patch_is_400_naming_the_field_and_changes_nothing(api, patch, field):
    h = auth(api, "integrator")
    assert (await api.post("/api/v1/devices", json=LAMP, headers=h)).status == 201
    body = await problem(await api.patch("/api/v1/devices/SL-TEST-1", json=patch, headers=h), 400)
    assert [e["field"] for e in body["errors"]] == [field], body
    lamp = await (await api.get("/api/v1/devices/SL-TEST-1", headers=auth(api))).json()
    assert lamp["geometry"] == LAMP["geometry"] and lamp["properties"]["name"] == "test lamp"


async def test_feature_problems_keep_their_messages_index_and_id(api):
    bad = {**LAMP, "id": "SL-BAD-1", "properties": {"kind": "toaster", "parent": "SL-BAD-1"},
           "geometry": {"type": "Point", "coordinates": [200, 21]}}
    body = await problem(await api.post("/api/v1/devices", json={
        "type": "FeatureCollection", "features": [LAMP, bad, 7]}, headers=auth(api, "integrator")), 400)
    got = {(e["index"], e["id"], e["field"]): e["reason"] for e in body["errors"]}
    assert "toaster" in got[(1, "SL-BAD-1", "properties.kind")]
    assert "streetlight" in got[(1, "SL-BAD-1", "properties.kind")]
    assert "outside WGS 84" in got[(1, "SL-BAD-1", "geometry")]
    assert got[(1, "SL-BAD-1", "properties.parent")] == "a device cannot be its own parent"
    assert got[(2, None, "type")] == "each item must be a GeoJSON Feature"
    assert len(got) == 4 and body["detail"].startswith("4 problem(s)")
