"""Citizens' reports on the operators' and crews' side: live report messages on the websocket
as each role may see them, merging, a crew starting and resolving with an after-photo, the
KPIs, the assigned crew notified, and the service-level escalation."""

from __future__ import annotations

import io

import aiohttp
import orjson
import pytest
from PIL import Image

from server import keys
from server.reports import ops
from server.settings import ReportsSettings
from tests.helpers import aexecute, aq, running, wait_for
from tests.server.test_permissions import (
    NOTHING,
    WITH_CONTACT,
    WITHOUT_CONTACT,
    WS_REPORT_MESSAGES,
)

CONTACT = "0912 345 678"


def _jpeg_with_gps() -> bytes:
    img = Image.new("RGB", (1200, 900), (30, 160, 60))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"
    exif[0x8825] = {1: "N", 2: (21.0, 1.0, 30.0), 3: "E", 4: (105.0, 50.0, 10.0)}
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


def _form(category="pothole", lat="21.0285", lon="105.8542", description="deep hole",
          contact=CONTACT) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for k, v in {"category": category, "lat": lat, "lon": lon, "description": description,
                 "contact": contact}.items():
        form.add_field(k, v)
    return form


@pytest.fixture
def settings(city_db_url, make_settings, tmp_path):
    return make_settings(city_db_url, mqtt_url=None,
                         reports=ReportsSettings(photo_dir=tmp_path, rate_per_min=6000))


@pytest.fixture
async def crews(city_db_url):
    await aexecute(city_db_url, "insert into crews (id, name, contacts) values "
                                "('rc1', 'Crew 1', '{}'), ('rc2', 'Crew 2', '{}')")
    return "rc1", "rc2"


async def _file(client, url, **kw) -> tuple[str, int]:
    resp = await client.post("/api/v1/public/reports", data=_form(**kw))
    assert resp.status == 201, await resp.text()
    code = (await resp.json())["code"]
    rid = (await aq(url, "select report_id from report_codes where code = %s", code))[0][0]
    return code, rid


async def _act(client, rid, action, headers, body=None) -> int:
    return (await client.post(f"/api/v1/reports/{rid}/{action}", json=body, headers=headers)).status


async def _socket(client, token):
    ws = await client.ws_connect("/api/v1/ws", headers={"Authorization": f"Bearer {token}"})
    await ws.send_str(orjson.dumps({"op": "subscribe", "reports": True}).decode())
    while (orjson.loads((await ws.receive(timeout=10)).data)).get("type") != "snapshot":
        pass
    return ws


async def _reports(ws, within=0.3) -> list[dict]:
    """The report messages that arrived (waiting up to ``within`` s for the first; aiohttp
    takes a timeout of 0 for none at all)."""
    out = []
    while True:
        try:
            msg = await ws.receive(timeout=max(within, 0.3) if not out else 0.3)
        except TimeoutError:
            return out
        doc = orjson.loads(msg.data)
        if doc.get("type") == "report":
            out.append(doc["report"])


def _verdict(report: dict | None) -> str:
    if report is None:
        return NOTHING
    return WITH_CONTACT if report.get("contact") == CONTACT else WITHOUT_CONTACT


async def test_report_messages_reach_each_role_as_the_table_says(settings, city_db_url, token_for, crews):
    roles = ("admin", "operator", "integrator", "viewer")
    tokens = {r: await token_for(city_db_url, r) for r in roles}
    op = {"Authorization": f"Bearer {tokens['operator']}"}
    async with running(settings) as client:
        sockets = {r: await _socket(client, tokens[r]) for r in roles}
        sockets["crew"] = await _socket(client, await token_for(city_db_url, "crew", "rc1"))
        sockets["other"] = await _socket(client, await token_for(city_db_url, "crew", "rc2"))
        plain = await client.ws_connect("/api/v1/ws", headers={"Authorization": f"Bearer {tokens['admin']}"})
        await plain.send_str('{"op": "subscribe", "alarms": true}')  # did not ask for reports

        code, rid = await _file(client, city_db_url)
        for role in roles:  # a new report reaches the consoles at once
            got = await _reports(sockets[role], within=5)
            assert [r["id"] for r in got] == [rid]
            assert _verdict(got[0]) == WS_REPORT_MESSAGES[role]["any report"]
            assert code == got[0]["code"]
        assert await _reports(sockets["crew"]) == [] and await _reports(sockets["other"]) == []

        assert await _act(client, rid, "assign", op, {"crew": "rc1"}) == 200
        mine = await _reports(sockets["crew"], within=5)
        assert mine[-1]["status"] == "assigned"
        assert _verdict(mine[-1]) == WS_REPORT_MESSAGES["crew"]["its crew's"]
        assert _verdict((await _reports(sockets["other"], within=0.5) or [None])[-1]) == \
            WS_REPORT_MESSAGES["crew"]["another crew's"]
        assert (await _reports(sockets["viewer"], within=5))[-1]["status"] == "assigned"

        # reassigned: the first crew learns only that it is no longer theirs
        assert await _act(client, rid, "assign", op, {"crew": "rc2"}) == 200
        gone = (await _reports(sockets["crew"], within=5))[-1]
        assert gone == {"id": rid, "crew": "rc2", "status": "assigned", "yours": False}
        assert _verdict((await _reports(sockets["other"], within=5))[-1]) == WITH_CONTACT
        assert await _reports(plain, within=0.3) == []
        # filed through Open311: as live as through the form
        await _reports(sockets["operator"])  # the assignments' messages, seen above by the others
        resp = await client.post("/open311/v2/requests.json", data={
            "service_code": "water_leak", "lat": "21.05", "long": "105.81", "description": "pipe burst"})
        assert resp.status == 201, await resp.text()
        assert [r["category"] for r in await _reports(sockets["operator"], within=5)] == ["water_leak"]

        bad = await client.ws_connect("/api/v1/ws", headers={"Authorization": f"Bearer {tokens['viewer']}"})
        await bad.send_str('{"op": "subscribe", "reports": "yes"}')
        err = orjson.loads((await bad.receive(timeout=5)).data)
        assert err["type"] == "error" and err["field"] == "reports"
        for ws in (*sockets.values(), plain, bad):
            await ws.close()


async def test_merge_moves_codes_reporters_and_history(settings, city_db_url, token_for, crews):
    op = {"Authorization": f"Bearer {await token_for(city_db_url, 'operator')}"}
    viewer = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}
    async with running(settings) as client:
        code_a, a = await _file(client, city_db_url, lat="21.0100", description="hole by the school")
        code_b, b = await _file(client, city_db_url, lat="21.0200", description="same hole, seen later")
        _, c = await _file(client, city_db_url, lat="21.0300", description="a third one")
        for body, field in (({"into": a}, "into"), ({"into": 99999999}, "into"), ({"into": "2"}, "into"),
                            ({}, "into"), ({"into": b, "why": 1}, "why")):
            resp = await client.post(f"/api/v1/reports/{a}/merge", json=body, headers=op)
            assert resp.status == 400 and (await resp.json())["errors"][0]["field"] == field
        assert await _act(client, a, "merge", viewer, {"into": b}) == 403
        assert await _act(client, c, "reject", op, {"note": "not ours"}) == 200
        assert await _act(client, a, "merge", op, {"into": c}) == 409
        assert (await aq(city_db_url, "select count(*) from reports where id = %s", a))[0][0] == 1

        resp = await client.post(f"/api/v1/reports/{a}/merge", json={"into": b}, headers=op)
        assert resp.status == 200, await resp.text()
        kept = await resp.json()
        assert kept["id"] == b and kept["reporters"] == 2
        assert (await client.get(f"/api/v1/reports/{a}", headers=op)).status == 404
        doc = await (await client.get(f"/api/v1/reports/{b}", headers=op)).json()
        merged = [e for e in doc["events"] if "merged into this one" in (e["note"] or "")]
        assert merged and merged[0]["by"].startswith("test-operator")
        assert any((e["note"] or "").startswith(f"[#{a}]") for e in doc["events"])
        # the first citizen's code now follows the kept report
        public = await (await client.get(f"/api/v1/public/reports/{code_a}")).json()
        assert public["reporters"] == 2 and public["category"] == "pothole"
        assert code_b != code_a


async def test_crew_starts_and_resolves_with_an_after_photo(settings, city_db_url, token_for, crews,
                                                            tmp_path):
    op = {"Authorization": f"Bearer {await token_for(city_db_url, 'operator')}"}
    c1 = {"Authorization": f"Bearer {await token_for(city_db_url, 'crew', 'rc1')}"}
    c2 = {"Authorization": f"Bearer {await token_for(city_db_url, 'crew', 'rc2')}"}
    async with running(settings) as client:
        code, rid = await _file(client, city_db_url)
        base = f"/api/v1/reports/{rid}"
        assert (await client.post(f"{base}/start", headers=op)).status == 409  # not assigned yet
        assert (await client.post(f"{base}/assign", json={"crew": "rc1"}, headers=op)).status == 200
        assert (await client.post(f"{base}/start", headers=c2)).status == 403
        resp = await client.post(f"{base}/start", headers=c1)
        assert resp.status == 200 and (await resp.json())["status"] == "in_progress"

        def form(photo: bytes, note="filled and rolled") -> aiohttp.FormData:
            f = aiohttp.FormData()
            f.add_field("note", note)
            f.add_field("photo", photo, filename="after.jpg", content_type="image/jpeg")
            return f

        before = sorted(p.name for p in tmp_path.iterdir())
        lying = await client.post(f"{base}/resolve", data=form(b"<script>alert(1)</script>"), headers=c1)
        assert lying.status == 400 and (await lying.json())["errors"][0]["field"] == "photo"
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        assert (await (await client.get(base, headers=op)).json())["status"] == "in_progress"

        resp = await client.post(f"{base}/resolve", data=form(_jpeg_with_gps()), headers=c1)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"] == "resolved"
        public = await (await client.get(f"/api/v1/public/reports/{code}")).json()
        assert public["status"] == "resolved" and len(public["after"]) == 1
        assert public["events"][-1]["note"] == "filled and rolled"
        photo = await client.get(public["after"][0])
        data = await photo.read()
        with Image.open(io.BytesIO(data)) as img:
            assert not img.getexif() and "exif" not in img.info
        assert b"SpyCam" not in data
        doc = await (await client.get(base, headers=op)).json()
        assert doc["after"] == public["after"]
        assert [e["status"] for e in doc["events"]] == ["received", "assigned", "in_progress", "resolved"]


async def test_assign_notifies_the_crew_and_kpis_count(settings, city_db_url, token_for, crews):
    op = {"Authorization": f"Bearer {await token_for(city_db_url, 'operator')}"}
    viewer = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}
    crew = {"Authorization": f"Bearer {await token_for(city_db_url, 'crew', 'rc1')}"}
    async with running(settings) as client:
        _, rid = await _file(client, city_db_url)
        _, late = await _file(client, city_db_url, lat="21.0400")
        await aexecute(city_db_url, "update reports set sla_due = now() - interval '1 hour' "
                                    "where id = %s", late)
        # a crew's phone connected: the crew feed delivers at once
        ws = await client.ws_connect("/api/v1/ws", headers=crew)
        assert await _act(client, rid, "assign", op, {"crew": "rc1"}) == 200
        rows = await aq(city_db_url, "select channel, target, event, payload->'body'->>'type' "
                                     "from notification_outbox where alarm_id is null")
        assert ("crew", "rc1", "assigned", "report.assigned") in rows
        while True:
            msg = orjson.loads((await ws.receive(timeout=10)).data)
            if msg.get("type") == "notification":
                break
        assert msg["event"] == "assigned" and msg["report"]["id"] == rid
        await ws.close()

        kpis = await (await client.get("/api/v1/reports/kpis", headers=viewer)).json()
        assert kpis["open"] == 2 and kpis["overdue"] == 1 and kpis["resolved"] == 0
        assert kpis["within_sla_pct"] is None
        assert (await client.get("/api/v1/reports/kpis", headers=crew)).status == 403
        assert (await client.post(f"/api/v1/reports/{rid}/resolve", json={"note": "done"},
                                  headers=op)).status == 200
        kpis = await (await client.get("/api/v1/reports/kpis", headers=viewer)).json()
        assert kpis["open"] == 1 and kpis["resolved"] == 1 and kpis["within_sla_pct"] == 100.0
        assert kpis["median_hours_to_resolve"] is not None


async def test_a_missed_service_level_escalates_once(city_db_url, make_settings, tmp_path, token_for, crews):
    from server.settings import EscalationContact, EscalationSettings, NotifySettings
    notify = NotifySettings(escalation=EscalationSettings(
        check_interval_s=0.2, contacts=[EscalationContact(name="duty", level=2, webhook="https://example.org/h")]))
    settings = make_settings(city_db_url, mqtt_url=None, notify=notify,
                             reports=ReportsSettings(photo_dir=tmp_path, rate_per_min=6000))
    op = {"Authorization": f"Bearer {await token_for(city_db_url, 'operator')}"}
    async with running(settings) as client:
        ws = await _socket(client, await token_for(city_db_url, "operator"))
        _, rid = await _file(client, city_db_url)
        assert await _act(client, rid, "assign", op, {"crew": "rc1"}) == 200
        assert [r["status"] for r in await _reports(ws, within=5)] == ["received", "assigned"]
        await aexecute(city_db_url, "update reports set sla_due = now() - interval '2 hours' "
                                    "where id = %s", rid)

        async def escalated():
            return (await aq(city_db_url, "select count(*) from report_events where report_id = %s "
                                          "and by = 'notifier'", rid))[0][0]

        await wait_for(escalated, within=15, what="the SLA escalation")
        rows = await aq(city_db_url, "select channel, target from notification_outbox "
                                     "where event = 'escalated' and alarm_id is null")
        assert sorted(rows) == [("crew", "rc1"), ("webhook", "https://example.org/h")]
        assert [r["id"] for r in await _reports(ws, within=5)] == [rid]  # the consoles hear of it
        # another scan finds nothing left to escalate
        assert await ops.escalate_overdue(client.app[keys.DB], settings.notify) == []
        assert await escalated() == 1
        await ws.close()
