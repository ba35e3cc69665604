"""Lighting schedules against the real stack: PostGIS, mosquitto, the command service.

Time is a :class:`~server.schedules.clock.ManualClock` handed to the app before it starts,
so a night of steps runs in seconds: each step's commands must reach the lamps' MQTT topics
at the step's time (not a minute before), a restart must not send a step again, and a step
missed while the server was down must be sent once when it is back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import aiomqtt
import orjson
from aiohttp.test_utils import TestClient, TestServer

from server import keys
from server.http.app import create_app
from server.mqtt.link import parse_mqtt_url
from server.schedules.clock import ManualClock
from tests.helpers import acount, aq, auth, wait_connected, wait_for

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
NIGHT = [{"at": "dusk+10m", "level": 100}, {"at": "23:00", "level": 50},
         {"at": "05:00", "level": 100}, {"at": "dawn-10m", "level": 0}]


@asynccontextmanager
async def serving(settings, clock: ManualClock):
    """The whole app on a real port, its scheduler on ``clock``."""
    app = create_app(settings)
    app[keys.SCHEDULE_CLOCK] = clock
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await wait_connected(client)
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def lamps_listening(broker_url: str):
    """Every command published to a device, as (device, args), answered with ok."""
    got: list[tuple[str, dict]] = []
    async with aiomqtt.Client(**parse_mqtt_url(broker_url),
                              identifier="lamps-" + uuid.uuid4().hex[:6]) as c:
        await c.subscribe("ioc/v1/+/commands", qos=1)

        async def serve() -> None:
            async for msg in c.messages:
                dev = msg.topic.value.split("/")[2]
                cmd = orjson.loads(msg.payload)
                got.append((dev, cmd["args"]))
                await c.publish(f"ioc/v1/{dev}/commands/{cmd['id']}/result", b'{"ok": true}', qos=1)

        task = asyncio.create_task(serve())
        try:
            yield got
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def a_cabinet(url: str) -> tuple[str, list[str]]:
    cab = (await aq(url, "select parent from devices where kind = 'streetlight' and parent is not null "
                         "group by parent order by count(*) desc, parent limit 1"))[0][0]
    lamps = [r[0] for r in await aq(url, "select id from devices where parent = %s and kind = 'streetlight' "
                                         "order by id", cab)]
    return cab, lamps


def local(y, mo, d, h, mi=0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=HCM)


async def step_to(client, clock: ManualClock, when: datetime) -> list[dict]:
    clock.set(when)
    return await client.app[keys.SCHEDULES].tick()


async def groups(url: str, sid: str) -> list[tuple]:
    return await aq(url, "select (args->>'level')::float, total from command_groups "
                         "where requested_by = %s order by created_at", f"schedule:{sid}")


async def all_sent(url: str) -> None:
    await wait_for(lambda: aq(url, "select count(*) = 0 from commands where status = 'pending'"),
                   within=30, what="every command sent")


async def test_steps_go_out_at_their_time_once_across_restarts(city_db_url, make_settings, mosquitto,
                                                               token_for):
    url = city_db_url
    cab, lamps = await a_cabinet(url)
    n = len(lamps)
    assert n >= 3
    token = await token_for(url, "operator")
    settings = make_settings(url)  # one client id: the same server, restarted
    clock = ManualClock(local(2026, 12, 5, 15))
    async with lamps_listening(mosquitto.url) as got:
        async with serving(settings, clock) as client:
            resp = await client.post("/api/v1/schedules", headers=auth(token), json={
                "name": "Tủ điện đêm", "target": {"parent": cab}, "steps": NIGHT})
            assert resp.status == 201, await resp.text()
            sched = await resp.json()
            sid = sched["id"]
            assert resp.headers["Location"] == f"/api/v1/schedules/{sid}"
            assert sched["status"]["lamps"] == n
            # New: the step in force (off since this morning's dawn-10m) is sent at once.
            await client.app[keys.SCHEDULES].tick()
            assert await groups(url, sid) == [(0.0, n)]
            await wait_for(lambda: len(got) == n, what="the first step at every lamp")
            assert {d for d, _ in got} == set(lamps) and {a["level"] for _, a in got} == {0}

            # Nothing before dusk+10m, everything at it (lamps a few hundred metres apart may
            # fall either side of a minute: the second tick takes the rest).
            body = await (await client.get(f"/api/v1/schedules/{sid}", headers=auth(token))).json()
            dusk = datetime.fromisoformat(body["status"]["next"]["at"])
            assert body["status"]["next"]["level"] == 100
            assert body["tonight"]["steps"][0]["at"] == "dusk+10m"
            assert await step_to(client, clock, dusk - timedelta(seconds=1)) == []
            first = await step_to(client, clock, dusk)
            assert first and first[0]["step"] == "dusk+10m" and first[0]["level"] == 100
            await step_to(client, clock, dusk + timedelta(minutes=3))
            assert sum(t for lv, t in await groups(url, sid) if lv == 100) == n

            assert await step_to(client, clock, local(2026, 12, 5, 22, 59)) == []
            half = await step_to(client, clock, local(2026, 12, 5, 23))
            assert [(s["step"], s["level"], s["devices"]) for s in half] == [("23:00", 50, n)]
            await wait_for(lambda: len(got) == 3 * n, what="three steps at every lamp")
            await all_sent(url)

        # A restart within the 23:00 step sends nothing again.
        clock = ManualClock(local(2026, 12, 5, 23, 30))
        async with serving(settings, clock) as client:
            assert await client.app[keys.SCHEDULES].tick() == []
            assert len(await groups(url, sid)) in (3, 4)  # dusk may have taken two ticks
        # Down from 23:30 to 05:20: the 05:00 step (100 %) is sent once, on the way back.
        clock = ManualClock(local(2026, 12, 6, 5, 20))
        async with serving(settings, clock) as client:
            await wait_for(lambda: client.app[keys.SCHEDULES].schedules[sid].applied_until == clock.now(),
                           what="the missed step caught up")
            assert await client.app[keys.SCHEDULES].tick() == []
            await wait_for(lambda: len(got) == 4 * n, what="the missed step at every lamp")
            await all_sent(url)
            body = await (await client.get(f"/api/v1/schedules/{sid}", headers=auth(token))).json()
            assert body["last_step"]["step"] == "05:00" and body["last_step"]["level"] == 100
            assert body["status"]["level_now"] == 100
    per_lamp = Counter(d for d, _ in got)
    assert set(per_lamp.values()) == {4}, per_lamp  # no lamp switched twice by one step
    assert [a["level"] for d, a in got if d == lamps[0]] == [0, 100, 50, 100]
    actors = await aq(url, "select distinct actor from audit_log where action = 'command_group.create'")
    assert actors == [(f"schedule:{sid}",)]


async def test_schedules_api_validates_and_names_fields(city_db_url, make_settings, token_for):
    url = city_db_url
    cab, lamps = await a_cabinet(url)
    ward = (await aq(url, "select ward from devices where id = %s", lamps[0]))[0][0]
    op, viewer = await token_for(url, "operator"), await token_for(url, "viewer")
    clock = ManualClock(local(2026, 12, 5, 12))
    async with serving(make_settings(url), clock) as client:
        async def post(body, token=op, path="/api/v1/schedules", method="POST"):
            resp = await client.request(method, path, headers=auth(token), json=body)
            return resp.status, await resp.json() if resp.status != 204 else None

        good = {"name": "Ward", "target": {"ward": ward}, "steps": NIGHT}
        bad = [
            ({**good, "steps": [{"at": "noon", "level": 50}]}, ["steps[0].at"]),
            ({**good, "steps": [{"at": "dusk", "level": 150}, {"at": "dawn", "level": "x"}]},
             ["steps[0].level", "steps[1].level"]),
            ({**good, "steps": [{"at": "dawn", "level": 0}, {"at": "dusk", "level": 100}]}, ["steps"]),
            ({**good, "target": {"ward": "NO-SUCH-WARD"}}, ["target"]),
            ({**good, "target": {"kind": "water_meter"}}, ["target"]),
            ({**good, "exceptions": [{"name": "Tết", "steps": NIGHT}]}, ["exceptions[0]"]),
            ({**good, "exceptions": [{"date": "2027-13-01", "steps": NIGHT}]}, ["exceptions[0].date"]),
            ({**good, "colour": "red"}, ["colour"]),
            ({k: v for k, v in good.items() if k != "name"}, ["name"]),
        ]
        for body, fields in bad:
            status, problem = await post(body)
            assert status == 400, (body, problem)
            assert [e["field"] for e in problem["errors"]] == fields, problem
        assert await acount(url, "select count(*) from schedules") == 0
        assert (await post(good, viewer))[0] == 403

        status, made = await post({**good, "id": "ward-night", "exceptions": [
            {"name": "Tết", "from": "2027-02-05", "to": "2027-02-10",
             "steps": [{"at": "dusk", "level": 100}, {"at": "dawn", "level": 0}]}]})
        assert status == 201 and made["id"] == "ward-night"
        assert made["exceptions"][0] == {"name": "Tết", "from": "2027-02-05", "to": "2027-02-10",
                                         "steps": [{"at": "dusk", "level": 100}, {"at": "dawn", "level": 0}]}
        assert (await post({**good, "id": "ward-night"}))[0] == 409
        # a cabinet's schedule (a smaller target) takes its lamps from the ward's
        status, cabinet = await post({"name": "Cabinet", "target": {"parent": cab},
                                      "steps": [{"at": "dusk", "level": 70}, {"at": "dawn", "level": 0}]},
                                     path="/api/v1/schedules/cab", method="PUT")
        assert status == 201 and cabinet["status"]["lamps"] == len(lamps)
        listed = (await post(None, op, "/api/v1/schedules", "GET"))[1]["schedules"]
        by_id = {s["id"]: s for s in listed}
        assert by_id["ward-night"]["status"]["overridden"] == len(lamps)
        status, problem = await post({**good, "id": "other"}, path="/api/v1/schedules/cab", method="PUT")
        assert status == 400 and problem["errors"][0]["field"] == "id"
        status, moved = await post({**good, "priority": 5}, path="/api/v1/schedules/ward-night",
                                   method="PUT")
        assert status == 200 and moved["version"] == 2 and moved["applied_until"] is None
        assert moved["status"]["overridden"] == 0  # a higher priority wins the cabinet's lamps back

        # the preview: a night's steps at the target and the energy the profile saves
        status, night = await post({"steps": NIGHT, "target": {"parent": cab}, "night": "2026-12-05"},
                                   path="/api/v1/schedules/preview")
        assert status == 200 and night["lamps"] == len(lamps)
        assert [s["at"] for s in night["steps"]] == ["dusk+10m", "23:00", "05:00", "dawn-10m"]
        assert 20 < night["saved_pct"] < 40
        status, problem = await post({"steps": NIGHT, "night": "2026-02-30"},
                                     path="/api/v1/schedules/preview")
        assert status == 400 and problem["field"] == "night"

        assert (await post(None, op, "/api/v1/schedules/nope", "DELETE"))[0] == 404
        assert (await post(None, viewer, "/api/v1/schedules/cab", "DELETE"))[0] == 403
        assert (await post(None, op, "/api/v1/schedules/cab", "DELETE"))[0] == 204
        assert [r[0] for r in await aq(url, "select action from audit_log where action like 'schedule.%%' "
                                            "order by id")] == \
            ["schedule.create", "schedule.create", "schedule.update", "schedule.delete"]
        status, problem = await post(None, viewer, "/api/v1/schedules/ward-night/energy?days=99", "GET")
        assert status == 400 and problem["errors"][0]["field"] == "days"


async def test_energy_saved_against_all_night_at_full_power(city_db_url, make_settings, token_for):
    """Two lamps of a half-power schedule report power_w through a night: the answer is what
    they drew beside their rated power over the night."""
    url = city_db_url
    lamps = (await a_cabinet(url))[1][:2]
    op, integrator = await token_for(url, "operator"), await token_for(url, "integrator")
    rated = {d: float(r) for d, r in await aq(url, "select id, properties->>'rated_power_w' from devices "
                                                   "where id = any(%s)", lamps)}
    night = local(2026, 12, 3, 12)  # a past night, all of it in the row store
    async with serving(make_settings(url), ManualClock(night)) as client:
        resp = await client.post("/api/v1/schedules", headers=auth(op), json={
            "id": "half", "name": "Half", "target": {"devices": lamps},
            "steps": [{"at": "dusk", "level": 50}, {"at": "dawn", "level": 0}]})
        assert resp.status == 201, await resp.text()
        body = await (await client.get("/api/v1/schedules/half", headers=auth(op))).json()
        sunset = datetime.fromisoformat(body["tonight"]["sunset"])
        sunrise = datetime.fromisoformat(body["tonight"]["sunrise"])
        readings = []
        t = night
        while t < night + timedelta(hours=24):
            dark = sunset <= t < sunrise
            for d in lamps:
                readings.append({"device_id": d, "ts": t.isoformat(),
                                 "values": {"power_w": rated[d] * 0.5 if dark else 0.0}})
            t += timedelta(minutes=10)
        resp = await client.post("/api/v1/telemetry", headers=auth(integrator), json=readings)
        assert resp.status == 202, await resp.text()
        await wait_for(lambda: acount(url, "select count(*) from telemetry"), what="stored")
        await wait_for(lambda: acount(url, "select count(*) = %s from telemetry", len(readings)),
                       what="every reading stored")
        to = (night + timedelta(hours=24)).isoformat().replace("+07:00", "%2B07:00")
        resp = await client.get(f"/api/v1/schedules/half/energy?days=1&to={to}", headers=auth(op))
        assert resp.status == 200, await resp.text()
        e = await resp.json()
    assert e["lamps"] == 2 and e["measured_lamps"] == 2 and e["source"] == "power_w"
    hours = (sunrise - sunset).total_seconds() / 3600
    full = sum(rated.values()) * hours / 1000
    # ten-minute readings: the hours at dusk and dawn are averaged, hence the tolerance
    assert abs(e["full_kwh"] - full) < 0.02 * full, (e, full)
    assert 45 < e["saved_pct"] < 55, e
    assert e["nights"][0]["night"] == "2026-12-03"
    assert 45 < e["planned_saved_pct"] < 55


RULES = """\
rules:
  - id: lamp-schedule
    kind: lighting_schedule
    select: {kind: streetlight}
    severity: warning
"""


async def test_the_rule_checks_lamps_against_their_schedule(city_db_url, make_settings, token_for,
                                                           tmp_path):
    """A lamp on at 02:00 is fine by the sun, but not under a schedule that switched it off at
    01:00; a lamp off at 02:00 is an outage by the sun, but not under that schedule."""
    url = city_db_url
    cab, lamps = await a_cabinet(url)
    other = (await aq(url, "select id from devices where kind = 'streetlight' and parent <> %s "
                           "order by id limit 1", cab))[0][0]
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    op, integrator = await token_for(url, "operator"), await token_for(url, "integrator")
    now = datetime.now(HCM)
    two_am = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if two_am > now - timedelta(minutes=30):
        two_am -= timedelta(days=1)
    async with serving(make_settings(url, rules={"paths": [str(rules)]}), ManualClock(now)) as client:
        resp = await client.post("/api/v1/schedules", headers=auth(op), json={
            "id": "early-off", "name": "Off at one", "target": {"parent": cab},
            "steps": [{"at": "dusk", "level": 100}, {"at": "01:00", "level": 0}]})
        assert resp.status == 201, await resp.text()
        readings = [{"device_id": lamps[0], "ts": two_am.isoformat(), "values": {"lamp_on": True}},
                    {"device_id": lamps[1], "ts": two_am.isoformat(), "values": {"lamp_on": False}},
                    {"device_id": other, "ts": two_am.isoformat(), "values": {"lamp_on": False}}]
        resp = await client.post("/api/v1/telemetry", headers=auth(integrator), json=readings)
        assert resp.status == 202
        await wait_for(lambda: acount(url, "select count(*) = 2 from alarms"), what="two alarms")
        await client.app[keys.ALARMS].drained()
    rows = await aq(url, "select device, message from alarms order by device")
    assert sorted(rows) == sorted([
        (lamps[0], "lamp on while its lighting schedule early-off has it off"),
        (other, "lamp off at night (outage)")]), rows
