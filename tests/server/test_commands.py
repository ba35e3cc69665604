"""Device commands end to end: real PostGIS, real mosquitto, an in-process pymodbus gateway.

Devices are played by test clients: an aiomqtt subscriber that answers on the result topic
(or stays silent), a pymodbus server built from the DALI gateway profile.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import orjson
import psycopg
import pytest

from adapters.modbus.simulator import SimulatedGateway
from server.mqtt.link import parse_mqtt_url
from server.settings import ModbusGateway, ModbusUnit
from server.simulate.modbus_fleet import CABINET_IO_PROFILE
from tests.helpers import acount, aq, auth, command_status, q, running, until_status, wait_connected, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@asynccontextmanager
async def device_client(broker_url: str, devices: list[str] | None = None,
                        answer: Callable[[str, dict], dict | None] = lambda dev, cmd: {"ok": True}):
    """Devices answering their commands; ``answer`` returning None means stay silent."""
    received: list[tuple[str, dict]] = []
    async with aiomqtt.Client(**parse_mqtt_url(broker_url),
                              identifier="dev-" + uuid.uuid4().hex[:8]) as client:
        for topic in ([f"ioc/v1/{d}/commands" for d in devices] if devices
                      else ["ioc/v1/+/commands"]):
            await client.subscribe(topic, qos=1)

        async def serve() -> None:
            async for msg in client.messages:
                dev = msg.topic.value.split("/")[2]
                cmd = orjson.loads(msg.payload)
                received.append((dev, cmd))
                reply = answer(dev, cmd)
                if reply is not None:
                    await client.publish(f"ioc/v1/{dev}/commands/{cmd['id']}/result",
                                         orjson.dumps(reply), qos=1)

        task = asyncio.create_task(serve())
        try:
            yield received
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def lamps(url: str, n: int = 3) -> list[str]:
    return [r[0] for r in q(url, "select id from devices where kind = 'streetlight' order by id limit %s", n)]


def set_status(url: str, device: str, status: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("""insert into device_state (device_key, status, status_changed_at)
                        select key, %s, now() from devices where id = %s
                        on conflict (device_key) do update set status = excluded.status""",
                     (status, device))


def audit_rows(url: str, action: str, device: str | None = None) -> list[tuple]:
    sql = "select actor, action, device, target, details from audit_log where action = %s"
    args: list[Any] = [action]
    if device:
        sql += " and device = %s"
        args.append(device)
    return q(url, sql + " order by id", *args)


# ---------------------------------------------------------------------- Modbus

async def test_dim_reaches_a_dali_gateway_and_is_read_back(city_db_url, make_settings, token_for):
    lamp = (await asyncio.to_thread(lamps, city_db_url, 1))[0]
    gw = SimulatedGateway()
    gw.add_unit(1, "dali_gateway", {"dim_level_pct": 100.0}, params={"short_address": 3})
    async with gw:
        gateway = ModbusGateway(name="dali-gw", host=gw.host, port=gw.port, timeout_s=0.5, units=[
            ModbusUnit(device=lamp, unit=1, profile="dali_gateway", params={"short_address": 3},
                       interval_s=0.5)])
        settings = make_settings(city_db_url, mqtt_url=None, modbus={"gateways": [gateway]})
        token = await token_for(city_db_url, "operator")
        async with running(settings) as client:
            resp = await client.post(f"/api/v1/devices/{lamp}/commands", headers=auth(token),
                                     json={"name": "set_dim", "args": {"level": 35}})
            assert resp.status == 202, await resp.text()
            body = await resp.json()
            assert body["status"] == "pending" and resp.headers["Location"].endswith(body["id"])
            done = await until_status(client, token, body["id"], "succeeded", "failed")
            assert done["status"] == "succeeded", done
            assert done["result"] == {"dim_level_pct": 35.0}
            assert done["sent_at"] and done["finished_at"]
            # the arc power register of short address 3: 7000*0 + 100*3 + 15
            assert await gw.read_registers(1, 3, 315, 1) == [35]

            gw.exceptions[1] = 0x04  # the ballast refuses: server device failure
            resp = await client.post(f"/api/v1/devices/{lamp}/commands", headers=auth(token),
                                     json={"name": "set_dim", "args": {"level": 80}})
            failed = await until_status(client, token, (await resp.json())["id"], "succeeded", "failed")
            assert failed["status"] == "failed" and "exception 04" in failed["error"]
            assert await gw.read_registers(1, 3, 315, 1) == [35]

            # switch is in the catalogue but not in the DALI profile: refused before any I/O
            resp = await client.post(f"/api/v1/devices/{lamp}/commands", headers=auth(token),
                                     json={"name": "switch", "args": {"on": False}})
            assert resp.status == 400
            assert "dali_gateway" in (await resp.json())["detail"]
    await wait_for(lambda: len(audit_rows(city_db_url, "command.failed", lamp)) == 1, blocking=True)
    ok = await asyncio.to_thread(audit_rows, city_db_url, "command.succeeded", lamp)
    assert len(ok) == 1 and ok[0][0] == "test-operator (operator)"
    assert ok[0][4]["result"] == {"dim_level_pct": 35.0}


async def test_cabinet_switch_goes_to_the_unit_whose_profile_has_it(city_db_url, make_settings, token_for):
    cabinet = (await aq(city_db_url, "select min(id) from devices where kind = 'lighting_cabinet'"))[0][0]
    gw = SimulatedGateway()
    gw.add_unit(1, "eastron_sdm630", {"voltage_l1_v": 230.0})
    gw.add_unit(101, CABINET_IO_PROFILE)
    async with gw:
        gateway = ModbusGateway(name="cab-gw", host=gw.host, port=gw.port, timeout_s=0.5, units=[
            ModbusUnit(device=cabinet, unit=1, profile="eastron_sdm630", interval_s=0.5),
            ModbusUnit(device=cabinet, unit=101, profile=CABINET_IO_PROFILE, interval_s=0.5)])
        settings = make_settings(city_db_url, mqtt_url=None, modbus={"gateways": [gateway]})
        token = await token_for(city_db_url, "operator")
        async with running(settings) as client:
            for on, level in ((True, 1), (False, 0)):
                resp = await client.post(f"/api/v1/devices/{cabinet}/commands", headers=auth(token),
                                         json={"name": "switch", "args": {"on": on}})
                assert resp.status == 202, await resp.text()
                done = await until_status(client, token, (await resp.json())["id"], "succeeded", "failed")
                assert done["status"] == "succeeded" and done["result"] == {"contactor_on": level}
                assert await gw.read_registers(101, 3, 1, 1) == [level]
            resp = await client.post(f"/api/v1/devices/{cabinet}/commands", headers=auth(token),
                                     json={"name": "set_dim", "args": {"level": 50}})
            assert resp.status == 400 and "eastron_sdm630" in (await resp.json())["detail"]


# ---------------------------------------------------------------------- MQTT

async def test_mqtt_command_answered_by_the_device(city_db_url, make_settings, mosquitto, token_for):
    lamp, other = await asyncio.to_thread(lamps, city_db_url, 2)
    token = await token_for(city_db_url, "operator")
    settings = make_settings(city_db_url)

    def answer(dev: str, cmd: dict) -> dict:
        if cmd["args"]["level"] > 90:
            return {"ok": False, "error": "driver limits the level to 90 %"}
        return {"ok": True, "level": cmd["args"]["level"]}

    async with running(settings) as client, device_client(mosquitto.url, [lamp], answer) as got:
        await wait_connected(client)
        resp = await client.post(f"/api/v1/devices/{lamp}/commands", headers=auth(token),
                                 json={"name": "set_dim", "args": {"level": 42}})
        assert resp.status == 202
        cmd_id = (await resp.json())["id"]
        done = await until_status(client, token, cmd_id, "succeeded", "failed")
        assert done["status"] == "succeeded", done
        assert done["result"] == {"ok": True, "level": 42}
        assert got == [(lamp, {"id": cmd_id, "name": "set_dim", "args": {"level": 42}})]

        resp = await client.post(f"/api/v1/devices/{lamp}/commands", headers=auth(token),
                                 json={"name": "set_dim", "args": {"level": 95}})
        refused = await until_status(client, token, (await resp.json())["id"], "succeeded", "failed")
        assert refused["status"] == "failed" and refused["error"] == "driver limits the level to 90 %"

        # a device answering for another's command is ignored
        resp = await client.post(f"/api/v1/devices/{other}/commands", headers=auth(token),
                                 json={"name": "switch", "args": {"on": True}, "ttl_s": 60})
        sneaky = (await resp.json())["id"]
        await until_status(client, token, sneaky, "sent")
        async with aiomqtt.Client(**parse_mqtt_url(mosquitto.url)) as c:
            await c.publish(f"ioc/v1/{lamp}/commands/{sneaky}/result", b'{"ok": true}', qos=1)
            await c.publish(f"ioc/v1/{other}/commands/{sneaky}/result", b'{"ok": false}', qos=1)
        done = await until_status(client, token, sneaky, "succeeded", "failed")
        assert done["status"] == "failed" and "without a reason" in done["error"]

        history = await (await client.get(f"/api/v1/devices/{lamp}/commands?limit=1",
                                          headers=auth(token))).json()
        assert history["numberReturned"] == 1 and history["commands"][0]["args"] == {"level": 95}
        nxt = await (await client.get(history["links"][0]["href"], headers=auth(token))).json()
        assert [c["id"] for c in nxt["commands"]] == [cmd_id]


async def test_a_device_that_never_answers_fails_after_the_timeout(
        city_db_url, make_settings, mosquitto, token_for):
    lamp = (await asyncio.to_thread(lamps, city_db_url, 1))[0]
    token = await token_for(city_db_url, "operator")
    settings = make_settings(city_db_url, commands={"timeout_s": 1.0})
    async with running(settings) as client, \
            device_client(mosquitto.url, [lamp], lambda d, c: None) as got:
        await wait_connected(client)
        resp = await client.post(f"/api/v1/devices/{lamp}/commands", headers=auth(token),
                                 json={"name": "set_dim", "args": {"level": 10}})
        cmd_id = (await resp.json())["id"]
        done = await until_status(client, token, cmd_id, "succeeded", "failed", "expired")
        assert done["status"] == "failed"
        assert f"no result from device {lamp} within 1 s" in done["error"]
        assert got and got[0][1]["id"] == cmd_id  # it was delivered, just never answered
        # a late answer changes nothing
        async with aiomqtt.Client(**parse_mqtt_url(mosquitto.url)) as c:
            await c.publish(f"ioc/v1/{lamp}/commands/{cmd_id}/result", b'{"ok": true}', qos=1)
        from server.keys import COMMANDS

        await wait_for(lambda: client.app[COMMANDS].late_results >= 1)
        assert (await command_status(client, token, cmd_id))["status"] == "failed"


async def test_offline_device_queues_until_online_or_expiry(
        city_db_url, make_settings, mosquitto, token_for):
    sleepy, lost = await asyncio.to_thread(lamps, city_db_url, 2)
    await asyncio.to_thread(set_status, city_db_url, sleepy, "offline")
    await asyncio.to_thread(set_status, city_db_url, lost, "offline")
    token = await token_for(city_db_url, "operator")
    settings = make_settings(city_db_url)
    async with running(settings) as client, device_client(mosquitto.url, [sleepy, lost]) as got:
        await wait_connected(client)
        resp = await client.post(f"/api/v1/devices/{lost}/commands", headers=auth(token),
                                 json={"name": "set_dim", "args": {"level": 20}, "ttl_s": 1.5})
        expiring = (await resp.json())["id"]
        resp = await client.post(f"/api/v1/devices/{sleepy}/commands", headers=auth(token),
                                 json={"name": "set_dim", "args": {"level": 30}, "ttl_s": 600})
        queued = (await resp.json())["id"]
        done = await until_status(client, token, expiring, "succeeded", "failed", "expired")
        assert done["status"] == "expired" and "stayed offline" in done["error"]
        assert done["sent_at"] is None
        still = await command_status(client, token, queued)
        assert still["status"] == "pending" and still["sent_at"] is None
        assert got == []  # nothing was published to an offline device
        # the lamp comes back: its last will is replaced by "online"
        async with aiomqtt.Client(**parse_mqtt_url(mosquitto.url)) as c:
            await c.publish(f"ioc/v1/{sleepy}/status", b"online", qos=1)
        done = await until_status(client, token, queued, "succeeded", "failed", "expired")
        assert done["status"] == "succeeded"
        assert [d for d, _ in got] == [sleepy]
    assert len(await asyncio.to_thread(audit_rows, city_db_url, "command.expired", lost)) == 1


async def test_open_commands_survive_a_restart(city_db_url, make_settings, mosquitto, token_for):
    lamp, sleepy = await asyncio.to_thread(lamps, city_db_url, 2)
    await asyncio.to_thread(set_status, city_db_url, sleepy, "offline")
    token = await token_for(city_db_url, "operator")
    settings = make_settings(city_db_url, commands={"timeout_s": 60})  # one client id for both runs
    async with device_client(mosquitto.url, [lamp], lambda d, c: None) as got:
        async with running(settings) as client:
            await wait_connected(client)
            resp = await client.post(f"/api/v1/devices/{lamp}/commands", headers=auth(token),
                                     json={"name": "set_dim", "args": {"level": 60}})
            sent = (await resp.json())["id"]
            resp = await client.post(f"/api/v1/devices/{sleepy}/commands", headers=auth(token),
                                     json={"name": "set_dim", "args": {"level": 70}})
            queued = (await resp.json())["id"]
            await until_status(client, token, sent, "sent")
            await wait_for(lambda: got)
        # the server is down; the device answers now and the broker keeps it for the session
        async with aiomqtt.Client(**parse_mqtt_url(mosquitto.url)) as c:
            await c.publish(f"ioc/v1/{lamp}/commands/{sent}/result", b'{"ok": true}', qos=1)
        assert (await aq(city_db_url, "select status from commands where id = %s", sent))[0][0] == "sent"
        async with running(settings) as client:
            done = await until_status(client, token, sent, "succeeded", "failed")
            assert done["status"] == "succeeded"
            assert (await command_status(client, token, queued))["status"] == "pending"


# ---------------------------------------------------------------------- groups

async def test_group_command_over_a_cabinet(city_db_url, make_settings, mosquitto, token_for):
    [(cabinet, n)] = await aq(city_db_url, """select parent, count(*) from devices where kind = 'streetlight'
                                       and parent is not null group by parent order by 2 desc, 1 limit 1""")
    children = [r[0] for r in await aq(city_db_url, "select id from devices where parent = %s and "
                                                    "kind = 'streetlight' order by id", cabinet)]
    assert len(children) == n >= 3
    faulty, offline = children[0], children[1]
    await asyncio.to_thread(set_status, city_db_url, offline, "offline")
    token = await token_for(city_db_url, "operator")
    body = {"target": {"parent": cabinet}, "name": "set_dim", "args": {"level": 40}, "ttl_s": 2}

    def answer(dev: str, cmd: dict) -> dict:
        return {"ok": False, "error": "lamp fault"} if dev == faulty else {"ok": True}

    async with running(make_settings(city_db_url)) as client, \
            device_client(mosquitto.url, children, answer):
        await wait_connected(client)
        resp = await client.post("/api/v1/commands/preview", headers=auth(token), json=body)
        assert resp.status == 200, await resp.text()
        preview = await resp.json()
        assert preview["count"] == n and preview["queued"] == 1
        assert preview["devices"] == children == [d["id"] for d in preview["details"]]
        assert preview["by_kind"] == {"streetlight": n} and preview["by_route"] == {"mqtt": n}
        assert await acount(city_db_url, "select count(*) from commands") == 0  # a preview changes nothing

        resp = await client.post("/api/v1/commands", headers=auth(token), json=body)
        assert resp.status == 202, await resp.text()
        group = await resp.json()
        assert group["total"] == n and group["status"] == "pending"
        href = resp.headers["Location"]

        async def finished() -> dict:
            g = await (await client.get(href, headers=auth(token))).json()
            return g if g["done"] else {}

        deadline = asyncio.get_running_loop().time() + 30
        while not (g := await finished()):
            assert asyncio.get_running_loop().time() < deadline, "group not done in 30 s"
            await asyncio.sleep(0.2)
    assert g["counts"] == {"pending": 0, "sent": 0, "succeeded": n - 2, "failed": 1, "expired": 1}
    by_device = {r["device"]: r for r in g["results"]}
    assert set(by_device) == set(children)
    assert by_device[faulty]["error"] == "lamp fault"
    assert by_device[offline]["status"] == "expired"
    assert all(by_device[c]["status"] == "succeeded" for c in children[2:])
    assert g["target"] == {"parent": cabinet} and g["requested_by"] == "test-operator (operator)"
    created = await asyncio.to_thread(audit_rows, city_db_url, "command_group.create")
    assert len(created) == 1 and created[0][4]["count"] == n
    await wait_for(lambda: len(q(city_db_url, "select 1 from audit_log where action in "
                                 "('command.succeeded', 'command.failed', 'command.expired') "
                                 "and details->>'group' = %s", group["id"])) == n, blocking=True)


async def test_group_targets_select_by_ward_kind_bbox_and_ids(city_db_url, make_settings, token_for):
    token = await token_for(city_db_url, "operator")
    ward = (await aq(city_db_url, "select ward from devices where kind = 'streetlight' and ward is not null "
                                  "group by ward order by count(*) desc limit 1"))[0][0]
    in_ward = (await aq(city_db_url, "select count(*) from devices where ward = %s and kind = 'streetlight'",
                        ward))[0][0]
    async with running(make_settings(city_db_url)) as client:
        async def preview(target: dict, name: str = "set_dim", args: dict | None = None):
            resp = await client.post("/api/v1/commands/preview", headers=auth(token),
                                     json={"target": target, "name": name, "args": args or {"level": 5}})
            return resp.status, await resp.json()

        status, p = await preview({"ward": ward})
        assert status == 200 and p["count"] == in_ward and p["by_kind"] == {"streetlight": in_ward}
        status, p = await preview({"ward": ward, "kind": "lighting_cabinet"})
        assert status == 200 and set(p["by_kind"]) <= {"lighting_cabinet"}
        [(lon, lat)] = await aq(city_db_url, "select ST_X(geom), ST_Y(geom) from devices "
                                             "where kind = 'streetlight' order by id limit 1")
        status, p = await preview({"bbox": [lon - 0.0001, lat - 0.0001, lon + 0.0001, lat + 0.0001]})
        assert status == 200 and p["count"] >= 1
        meter = (await aq(city_db_url, "select id from devices where kind = 'water_meter' limit 1"))[0][0]
        lamp = (await asyncio.to_thread(lamps, city_db_url, 1))[0]
        status, p = await preview({"devices": [lamp, meter]})
        assert status == 200 and p["devices"] == [lamp]
        assert p["excluded"] == p["skipped"]
        assert p["skipped"] == [{"id": meter, "reason": "a water_meter does not take set_dim"}]
        for target, words in [({}, "at least one"), ({"street": "x"}, "unknown target key"),
                              ({"ward": "NOPE"}, "unknown ward"), ({"kind": "water_meter"}, "water_meter"),
                              ({"bbox": [1, 2, 3]}, "bbox"), ({"devices": ["SL-NOPE"]}, "SL-NOPE"),
                              ({"parent": 5}, "target.parent")]:
            status, p = await preview(target)
            assert status == 400 and words in p["detail"], (target, p)
        status, p = await preview({"ward": ward}, "set_dim", {"level": 101})
        assert status == 400 and "level" in p["detail"]
        resp = await client.post("/api/v1/commands", headers=auth(token),
                                 json={"target": {"devices": [meter]}, "name": "set_dim",
                                       "args": {"level": 5}})
        assert resp.status == 400 and "no device" in (await resp.json())["detail"]
    assert (await aq(city_db_url, "select count(*) from commands"))[0][0] == 0


# ---------------------------------------------------------------------- validation and roles

async def test_bad_commands_are_refused_and_change_nothing(city_db_url, make_settings, token_for):
    lamp = (await asyncio.to_thread(lamps, city_db_url, 1))[0]
    meter = (await aq(city_db_url, "select id from devices where kind = 'water_meter' limit 1"))[0][0]
    token = await token_for(city_db_url, "operator")
    cases = [
        (lamp, {"name": "explode"}, 400, "unknown command"),
        (lamp, {"name": "set_dim"}, 400, "args.level is required"),
        (lamp, {"name": "set_dim", "args": {"level": 150}}, 400, "from 0 to 100"),
        (lamp, {"name": "set_dim", "args": {"level": "50"}}, 400, "must be a number"),
        (lamp, {"name": "set_dim", "args": {"level": 5, "fade": 2}}, 400, "unexpected argument"),
        (lamp, {"name": "switch", "args": {"on": 1}}, 400, "true or false"),
        (lamp, {"name": "set_dim", "args": {"level": 5}, "ttl_s": -1}, 400, "ttl_s"),
        (lamp, {"name": "set_dim", "args": {"level": 5}, "when": "now"}, 400, "unexpected member"),
        (lamp, ["set_dim"], 400, "JSON object"),
        (meter, {"name": "set_dim", "args": {"level": 5}}, 400, "a water_meter does not take"),
        ("SL-NOPE-1", {"name": "set_dim", "args": {"level": 5}}, 404, "no device"),
    ]
    async with running(make_settings(city_db_url)) as client:
        for device, body, status, words in cases:
            resp = await client.post(f"/api/v1/devices/{device}/commands", headers=auth(token), json=body)
            assert resp.status == status, (body, await resp.text())
            assert resp.content_type == "application/problem+json"
            assert words in (await resp.json())["detail"], body
        for bad in ("not-a-uuid", str(uuid.uuid4())):
            resp = await client.get(f"/api/v1/commands/{bad}", headers=auth(token))
            assert resp.status == 404
    assert (await aq(city_db_url, "select count(*) from commands"))[0][0] == 0
    assert await asyncio.to_thread(audit_rows, city_db_url, "command.create") == []


async def test_only_operators_and_admins_command(city_db_url, make_settings, token_for, mosquitto):
    lamp = (await asyncio.to_thread(lamps, city_db_url, 1))[0]
    tokens = {role: await token_for(city_db_url, role) for role in ("viewer", "crew", "integrator",
                                                              "operator", "admin")}
    body = {"name": "set_dim", "args": {"level": 50}}
    group = {"target": {"devices": [lamp]}, **body}
    async with running(make_settings(city_db_url)) as client:
        for role in ("viewer", "crew", "integrator"):
            for path, doc in ((f"/api/v1/devices/{lamp}/commands", body), ("/api/v1/commands", group),
                              ("/api/v1/commands/preview", group)):
                resp = await client.post(path, headers=auth(tokens[role]), json=doc)
                assert resp.status == 403, (role, path)
                assert "operator" in (await resp.json())["detail"]
        ids = []
        for role in ("operator", "admin"):
            resp = await client.post(f"/api/v1/devices/{lamp}/commands", headers=auth(tokens[role]),
                                     json=body)
            assert resp.status == 202
            ids.append((await resp.json())["id"])
        # reading a command's status needs only a token
        assert (await command_status(client, tokens["viewer"], ids[0]))["device"] == lamp
        assert (await client.get(f"/api/v1/commands/{ids[0]}")).status == 401
    denied = await asyncio.to_thread(audit_rows, city_db_url, "command.denied")
    assert len(denied) == 9 and {r[0] for r in denied} == {
        "test-viewer (viewer)", "test-crew (crew)", "test-integrator (integrator)"}
    assert {r[0] for r in await asyncio.to_thread(audit_rows, city_db_url, "command.create")} == {
        "test-operator (operator)", "test-admin (admin)"}


async def test_the_demo_simulator_answers_commands(city_db_url, make_settings, token_for):
    """``ioc demo``'s simulated lamps (MQTT) carry out a group dim; its cabinets take a switch."""
    [(cabinet,)] = await aq(city_db_url, "select parent from devices where kind = 'streetlight' "
                                         "and parent is not null order by parent limit 1")
    token = await token_for(city_db_url, "operator")
    async with running(make_settings(city_db_url, simulate=True)) as client:
        await wait_connected(client)
        resp = await client.post("/api/v1/commands", headers=auth(token), json={
            "target": {"parent": cabinet}, "name": "set_dim", "args": {"level": 55}})
        assert resp.status == 202, await resp.text()
        group = await resp.json()
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            g = await (await client.get(resp.headers["Location"], headers=auth(token))).json()
            if g["done"]:
                break
            assert asyncio.get_running_loop().time() < deadline, g["counts"]
            await asyncio.sleep(0.2)
        assert g["counts"]["succeeded"] == group["total"] > 0, g["results"]
        resp = await client.post(f"/api/v1/devices/{cabinet}/commands", headers=auth(token),
                                 json={"name": "switch", "args": {"on": True}})
        assert resp.status == 202, await resp.text()
        cmd = await resp.json()
        done = await until_status(client, token, cmd["id"], "succeeded", "failed")
        assert done["status"] == "succeeded" and done["result"] == {"contactor_on": 1}, done



def test_device_library_errors_stop_at_the_transports() -> None:
    """The Modbus driver's and the adapter SDK's errors are translated into outcomes in
    server/commands/transports.py; the rest of server/commands never sees them."""
    from tests.test_layers import graph

    g = graph()
    leaks = sorted(f"{name} imports {target}" for name, targets in g.items()
                   if name.startswith("server.commands.") and name != "server.commands.transports"
                   for target in targets if target.startswith("adapters"))
    assert not leaks, leaks
    assert {"adapters.modbus.connection", "adapters.sdk"} <= g["server.commands.transports"]
