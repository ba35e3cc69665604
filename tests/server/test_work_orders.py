"""Work orders on trees (issue 14 point 7): created by an operator for a tree and a crew,
started and finished by that crew with a note and a photo, listed by device, crew and
status; other crews see none of it; a "tree needs pruning" report links to the tree."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from server.settings import ReportsSettings
from tests.helpers import aq, running
from tests.server.test_crew_loop import form, jpeg_with_gps

TREE = "TREE-0001"


@pytest.fixture
def settings(city_db_url, make_settings, tmp_path):
    return make_settings(city_db_url, mqtt_url=None,
                         reports=ReportsSettings(photo_dir=tmp_path / "report-photos", rate_per_min=6000))


@pytest.fixture
async def people(city_db_url, token_for):
    await aq(city_db_url, "insert into crews (id, name) values ('parks', 'Parks'), ('water', 'Water') "
                          "returning id")
    await aq(city_db_url, "insert into devices (id, kind, name, geom, properties) values (%s, 'tree', "
                          "'Sao đen', ST_SetSRID(ST_MakePoint(105.8301, 21.0301), 4326), "
                          "'{\"species\": \"Hopea odorata\", \"height_m\": 14, \"condition\": \"fair\"}') "
                          "returning id", TREE)
    out = {}
    for who, role, crew in (("op", "operator", None), ("viewer", "viewer", None),
                            ("parks", "crew", "parks"), ("water", "crew", "water")):
        out[who] = {"Authorization": f"Bearer {await token_for(city_db_url, role, crew)}"}
    return out


async def test_pruning_order_from_creation_to_done(settings, city_db_url, people):
    async with running(settings) as client:
        body = {"device": TREE, "type": "pruning", "crew": "parks", "note": "branches over the road"}
        assert (await client.post("/api/v1/work-orders", json=body, headers=people["parks"])).status == 403
        resp = await client.post("/api/v1/work-orders", json=body, headers=people["op"])
        assert resp.status == 201, await resp.text()
        wo = await resp.json()
        assert wo["status"] == "open" and wo["device_kind"] == "tree" and wo["crew"] == "parks"
        assert resp.headers["Location"] == f"/api/v1/work-orders/{wo['id']}"
        base = f"/api/v1/work-orders/{wo['id']}"
        # the other crew sees nothing of it
        assert (await client.get(base, headers=people["water"])).status == 403
        assert (await client.post(f"{base}/start", headers=people["water"])).status == 403
        assert (await (await client.get("/api/v1/work-orders", headers=people["water"])).json()
                )["work_orders"] == []
        assert (await client.get("/api/v1/work-orders?crew=parks", headers=people["water"])).status == 403
        mine = (await (await client.get("/api/v1/work-orders", headers=people["parks"])).json()
                )["work_orders"]
        assert [w["id"] for w in mine] == [wo["id"]]
        # done before start is fine; start after done is not
        resp = await client.post(f"{base}/start", json={"note": "ladder truck here"}, headers=people["parks"])
        assert resp.status == 200 and (await resp.json())["status"] == "in_progress"
        resp = await client.post(f"{base}/done", data=form(jpeg_with_gps(), note="pruned 3 branches"),
                                 headers=people["parks"])
        assert resp.status == 200, await resp.text()
        done = await resp.json()
        assert done["status"] == "done" and done["done_at"]
        assert [e["status"] for e in done["events"]] == ["open", "in_progress", "done"]
        assert all(e["by"] for e in done["events"]) and done["events"][2]["note"] == "pruned 3 branches"
        photo = done["events"][2]["photo"]
        assert photo.startswith(f"{base}/photos/")
        assert (await client.post(f"{base}/start", headers=people["parks"])).status == 409
        for who in ("parks", "op", "viewer"):
            resp = await client.get(photo, headers=people[who])
            assert resp.status == 200 and resp.content_type == "image/jpeg", who
            assert not Image.open(io.BytesIO(await resp.read())).getexif()
        assert (await client.get(photo, headers=people["water"])).status == 403
        # lists by device, status and type
        for query, expected in ((f"device={TREE}", [wo["id"]]), ("status=done", [wo["id"]]),
                                ("status=active", []), ("type=removal", []),
                                ("device=NOPE", [])):
            got = (await (await client.get(f"/api/v1/work-orders?{query}", headers=people["op"])).json())
            assert [w["id"] for w in got["work_orders"]] == expected, query
    # a finished pruning is the tree's last_pruned
    props = (await aq(city_db_url, "select properties from devices where id = %s", TREE))[0][0]
    assert props["last_pruned"] and props["species"] == "Hopea odorata"
    audit = await aq(city_db_url, "select action, device from audit_log where action like 'work_order.%%'")
    assert audit == [("work_order.create", TREE)]


@pytest.mark.parametrize("body, field", [
    ({"device": TREE, "type": "felling"}, "type"),
    ({"device": "NOPE-1", "type": "inspection"}, "device"),
    ({"device": TREE, "type": "inspection", "crew": "nobody"}, "crew"),
    ({"device": TREE, "type": "inspection", "note": "<script>x</script>"}, "note"),
    ({"device": TREE, "type": "inspection", "colour": "red"}, "colour"),
    ({"type": "inspection"}, "device"),
])
async def test_bad_orders_name_the_field_and_store_nothing(settings, city_db_url, people, body, field):
    async with running(settings) as client:
        resp = await client.post("/api/v1/work-orders", json=body, headers=people["op"])
        assert resp.status == 400, await resp.text()
        assert field in await resp.text()
    assert (await aq(city_db_url, "select count(*) from work_orders"))[0][0] == 0


async def test_bad_photo_on_done_changes_nothing(settings, city_db_url, people, tmp_path):
    async with running(settings) as client:
        wo = await (await client.post("/api/v1/work-orders", json={
            "device": TREE, "type": "inspection", "crew": "parks"}, headers=people["op"])).json()
        data = aiohttp.FormData()
        data.add_field("note", "looked at it")
        data.add_field("photo", b"GIF89a not really", filename="x.jpg", content_type="image/jpeg")
        resp = await client.post(f"/api/v1/work-orders/{wo['id']}/done", data=data, headers=people["parks"])
        assert resp.status == 400 and "photo" in await resp.text()
    assert (await aq(city_db_url, "select status from work_orders"))[0][0] == "open"
    assert not list((tmp_path / "work-photos").glob("*.jpg"))


async def test_tree_pruning_report_links_to_the_nearest_tree(settings, city_db_url, people):
    async with running(settings) as client:
        data = aiohttp.FormData()
        for k, v in {"category": "tree_pruning", "lat": "21.03012", "lon": "105.83012",
                     "description": "branches touch the wires"}.items():
            data.add_field(k, v)
        resp = await client.post("/api/v1/public/reports", data=data)
        assert resp.status == 201, await resp.text()
        code = (await resp.json())["code"]
    linked = await aq(city_db_url, "select r.device from report_codes c join reports r on r.id = c.report_id "
                                   "where c.code = %s", code)
    assert linked == [(TREE,)]
