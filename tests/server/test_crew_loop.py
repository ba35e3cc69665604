"""The crew loop closed (issue 18 point 7): a crew starts and finishes an alarm with a note
and a photo (cleaned of metadata, served only to those who may see the alarm); the operator
closes and reopens it, with ISA-18.2 states that stay sane and an audit row."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from server.settings import ReportsSettings
from tests.helpers import aq, running


def jpeg_with_gps(colour=(30, 120, 60)) -> bytes:
    img = Image.new("RGB", (1200, 900), colour)
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {1: "N", 2: (21.0, 1.0, 30.0), 3: "E", 4: (105.0, 50.0, 10.0)}  # GPS IFD
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


def form(photo: bytes | None = None, **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for k, v in fields.items():
        data.add_field(k, v)
    if photo is not None:
        data.add_field("photo", photo, filename="after.jpg", content_type="image/jpeg")
    return data


@pytest.fixture
def settings(city_db_url, make_settings, tmp_path):
    return make_settings(city_db_url, mqtt_url=None,
                         reports=ReportsSettings(photo_dir=tmp_path / "report-photos"))


async def alarm(url: str, name: str, crew: str | None, active: bool = True, state: str = "active_unacked"):
    lamp = (await aq(url, "select id from devices where kind = 'streetlight' order by id offset %s limit 1",
                     abs(hash(name)) % 50))[0][0]
    return (await aq(
        url, "insert into alarms (rule, device, severity, message, dedup_key, assigned_crew, work_state, "
             "active, state, geom) values (%s, %s, 'major', 'lamp out', %s, %s, %s, %s, %s, "
             "(select geom from devices where id = %s)) returning id",
        f"rule-{name}", lamp, f"k-{name}", crew, "open" if crew else None, active, state, lamp))[0][0]


@pytest.fixture
async def people(city_db_url, token_for):
    await aq(city_db_url, "insert into crews (id, name) values ('north', 'North'), ('south', 'South') "
                          "returning id")
    out = {}
    for who, role, crew in (("op", "operator", None), ("viewer", "viewer", None),
                            ("north", "crew", "north"), ("south", "crew", "south")):
        out[who] = {"Authorization": f"Bearer {await token_for(city_db_url, role, crew)}"}
    return out


async def test_crew_starts_and_finishes_with_note_and_photo(settings, city_db_url, people, tmp_path):
    aid = await alarm(city_db_url, "a", "north")
    base = f"/api/v1/alarms/{aid}"
    async with running(settings) as client:
        resp = await client.post(f"{base}/work", json={"state": "in_progress", "note": "on our way"},
                                 headers=people["north"])
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["work_state"] == "in_progress"
        # another crew may not touch it, whatever it sends
        resp = await client.post(f"{base}/work", data=form(jpeg_with_gps(), state="done"),
                                 headers=people["south"])
        assert resp.status == 403
        resp = await client.post(f"{base}/work", data=form(jpeg_with_gps(), state="done",
                                                           note="lamp replaced, 2 h"),
                                 headers=people["north"])
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["work_state"] == "done"
        events = (await (await client.get(f"{base}/events", headers=people["op"])).json())["events"]
        work = [e for e in events if e["event"] == "work"]
        assert [e["details"]["to"] for e in work] == ["in_progress", "done"]
        assert work[0]["reason"] == "on our way" and work[1]["reason"] == "lamp replaced, 2 h"
        assert all(e["actor"] for e in work) and all(e["at"] for e in work)
        digest = work[1]["details"]["photo"]
        assert len(digest) == 64 and "photo" not in work[0]["details"]
        url = f"{base}/photos/{digest}.jpg"
        for who in ("north", "op", "viewer"):
            resp = await client.get(url, headers=people[who])
            assert resp.status == 200 and resp.content_type == "image/jpeg", who
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert "private" in resp.headers["Cache-Control"]
            img = Image.open(io.BytesIO(await resp.read()))
            assert not img.getexif() and "exif" not in img.info and img.format == "JPEG"
        assert (await client.get(url, headers=people["south"])).status == 403
        assert (await client.get(url)).status == 401
        # a photo of another alarm is not reachable through this one
        other = await alarm(city_db_url, "b", "north")
        assert (await client.get(f"/api/v1/alarms/{other}/photos/{digest}.jpg",
                                 headers=people["op"])).status == 404
        stored = list((tmp_path / "work-photos").glob("*.jpg"))
        assert [p.stem for p in stored] == [digest]


async def test_bad_photo_is_refused_and_changes_nothing(settings, city_db_url, people, tmp_path):
    aid = await alarm(city_db_url, "c", "north")
    async with running(settings) as client:
        for data, field in ((form(b"<svg onload=alert(1)>", state="done"), "photo"),
                            (form(state="finished"), "state"),
                            (form(jpeg_with_gps(), state="done", note="x" * 5000), "note")):
            resp = await client.post(f"/api/v1/alarms/{aid}/work", data=data, headers=people["north"])
            assert resp.status == 400, await resp.text()
            assert field in await resp.text()
        resp = await client.post(f"/api/v1/alarms/{aid}/work", json={"state": "done", "note": "<script>x"},
                                 headers=people["north"])
        assert resp.status == 400 and "note" in await resp.text()
    assert (await aq(city_db_url, "select work_state from alarms where id = %s", aid))[0][0] == "open"
    assert (await aq(city_db_url, "select count(*) from alarm_events where alarm_id = %s", aid))[0][0] == 0
    assert not list((tmp_path / "work-photos").glob("*.jpg"))


async def test_operator_closes_and_reopens(settings, city_db_url, people):
    live = await alarm(city_db_url, "d", "north")  # the condition still active
    over = await alarm(city_db_url, "e", "north", active=False, state="rtn_unacked")
    async with running(settings) as client:
        # still active and the crew not done: closing would hide a live condition
        resp = await client.post(f"/api/v1/alarms/{live}/close", headers=people["op"])
        assert resp.status == 409 and "still active" in (await resp.json())["detail"]
        assert (await client.post(f"/api/v1/alarms/{live}/close", headers=people["north"])).status == 403
        assert (await client.post(f"/api/v1/alarms/{live}/work", json={"state": "done"},
                                  headers=people["north"])).status == 200
        resp = await client.post(f"/api/v1/alarms/{live}/close", json={"reason": "crew fixed it"},
                                 headers=people["op"])
        assert resp.status == 200, await resp.text()
        closed = await resp.json()
        assert closed["state"] == "closed" and closed["closed_at"] and closed["acked_by"]
        assert (await client.post(f"/api/v1/alarms/{live}/close", headers=people["op"])).status == 409
        # reopened: unacknowledged again, in the state its condition was in, work open again
        resp = await client.post(f"/api/v1/alarms/{live}/reopen", json={"reason": "still dark"},
                                 headers=people["op"])
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
        assert (doc["state"], doc["closed_at"], doc["acked_at"], doc["work_state"]) == (
            "active_unacked", None, None, "open")
        # a condition that is over: closed, reopened as rtn_unacked, which an ack closes again
        assert (await (await client.post(f"/api/v1/alarms/{over}/close", headers=people["op"])).json()
                )["state"] == "closed"
        doc = await (await client.post(f"/api/v1/alarms/{over}/reopen", headers=people["op"])).json()
        assert doc["state"] == "rtn_unacked"
        assert (await (await client.post(f"/api/v1/alarms/{over}/ack", headers=people["op"])).json()
                )["state"] == "closed"
        assert (await client.post(f"/api/v1/alarms/{live}/reopen", headers=people["op"])).status == 409
        events = (await (await client.get(f"/api/v1/alarms/{live}/events", headers=people["op"])).json())
        names = [e["event"] for e in events["events"]]
        assert names[-2:] == ["closed", "reopened"]
        assert events["events"][-1]["reason"] == "still dark" and events["events"][-1]["actor"]
    audit = await aq(city_db_url, "select action, target from audit_log where action like 'alarm.%%' "
                                  "order by id")
    assert audit == [("alarm.close", str(live)), ("alarm.reopen", str(live)), ("alarm.close", str(over)),
                     ("alarm.reopen", str(over))]


async def test_reopen_refused_when_the_point_has_a_newer_alarm(settings, city_db_url, people):
    old = await alarm(city_db_url, "f", None, active=False, state="closed")
    lamp = (await aq(city_db_url, "select device from alarms where id = %s", old))[0][0]
    await aq(city_db_url, "insert into alarms (rule, device, severity, message, dedup_key) values "
                          "('rule-f', %s, 'major', 'again', 'k-f2') returning id", lamp)
    async with running(settings) as client:
        resp = await client.post(f"/api/v1/alarms/{old}/reopen", headers=people["op"])
        assert resp.status == 409 and "newer" in (await resp.json())["detail"]
    assert (await aq(city_db_url, "select state from alarms where id = %s", old))[0][0] == "closed"
