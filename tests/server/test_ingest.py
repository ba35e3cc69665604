"""Ingest end to end: MQTT and HTTP into the real database, nothing lost, nothing doubled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from server.keys import INGEST
from tests.helpers import acount, aexecute, aq, count, iso, publisher, q, running, wait_connected, wait_for


@pytest.fixture
def lamp_ids(city_db_url):
    return [r[0] for r in q(city_db_url, "select id from devices where kind = 'streetlight' "
                                         "order by id limit 5")]


async def test_mqtt_readings_reach_telemetry_state_and_api(city_db_url, make_settings, mosquitto,
                                                          lamp_ids, token_for):
    settings = make_settings(city_db_url)
    now = datetime.now(UTC).replace(microsecond=0)
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        for i, dev in enumerate(lamp_ids):
            payload = {"ts": iso(now), "values": {"power_w": 40.0 + i, "lamp_on": True,
                                                  "dim_level_pct": 70}}
            await pub.publish(f"ioc/v1/{dev}/telemetry", orjson.dumps(payload), qos=1)
        await wait_for(lambda: count(city_db_url) == 15, blocking=True)
        token = await token_for(city_db_url, "viewer")
        resp = await client.get(f"/api/v1/devices/{lamp_ids[2]}",
                                headers={"Authorization": f"Bearer {token}"})
        props = (await resp.json())["properties"]
        assert props["status"] == "online"
        assert props["values"] == {"power_w": 42.0, "lamp_on": True, "dim_level_pct": 70.0}
        metrics = await (await client.get("/metrics", headers={
            "Authorization": f"Bearer {token}"})).text()
        assert "ioc_readings_stored_total 15.0" in metrics
        assert "ioc_ingest_queue_depth" in metrics
        rss = next(line for line in metrics.splitlines()
                   if line.startswith("process_resident_memory_bytes "))
        assert float(rss.split()[1]) > 10 * 2**20  # the server's own memory, for leak watching


async def test_duplicates_and_out_of_order(city_db_url, make_settings, mosquitto, lamp_ids):
    dev = lamp_ids[0]
    t0 = datetime.now(UTC).replace(microsecond=0)
    newer = {"ts": iso(t0), "values": {"power_w": 50.0}}
    older = {"ts": iso(t0 - timedelta(minutes=5)), "values": {"power_w": 10.0}}
    async with running(make_settings(city_db_url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        topic = f"ioc/v1/{dev}/telemetry"
        await pub.publish(topic, orjson.dumps(newer), qos=1)
        await pub.publish(topic, orjson.dumps(newer), qos=1)  # a redelivery
        await pub.publish(topic, orjson.dumps(older), qos=1)  # late, out of order
        await pub.publish(topic, orjson.dumps([newer, older]), qos=1)  # both again, batched
        await wait_for(lambda: client.app[INGEST].metrics.readings_duplicate._value.get() >= 3)
    assert await acount(city_db_url) == 2
    state = (await aq(city_db_url, "select s.values from device_state s join devices d "
                                   "on d.key = s.device_key where d.id = %s", dev))[0][0]
    assert state["power_w"] == 50.0, "a late reading must not move the state backwards"


async def test_bad_input_goes_to_dead_letters_and_good_values_are_kept(
        city_db_url, make_settings, mosquitto, lamp_ids):
    dev = lamp_ids[0]
    now = datetime.now(UTC)
    async with running(make_settings(city_db_url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await pub.publish(f"ioc/v1/{dev}/telemetry", b"{not json", qos=1)
        await pub.publish("ioc/v1/NOPE-1/telemetry",
                          orjson.dumps({"values": {"power_w": 1}}), qos=1)
        mixed = {"ts": iso(now), "values": {"power_w": 33.0, "pressure_bar": 2.0,
                                            "dim_level_pct": "high", "lamp_on": 7, "energy_kwh": 1e300}}
        await pub.publish(f"ioc/v1/{dev}/telemetry", orjson.dumps(mixed), qos=1)
        future = {"ts": iso(now + timedelta(hours=1)), "values": {"power_w": 1.0}}
        await pub.publish(f"ioc/v1/{dev}/telemetry", orjson.dumps(future), qos=1)
        await wait_for(lambda: count(city_db_url, "select count(*) from dead_letters") >= 7, blocking=True)
        await wait_for(lambda: count(city_db_url) == 1, blocking=True)
    reasons = [r[0] for r in await aq(city_db_url, "select reason from dead_letters order by id")]
    text = "\n".join(reasons)
    assert "unknown device 'NOPE-1'" in text
    assert "not one a streetlight reports" in text  # pressure_bar on a lamp
    assert "boolean" in text  # lamp_on = 7
    assert "future" in text
    assert "1e+300 is beyond" in text  # finite, but it overflowed the rollups' sums
    assert any("JSON" in r for r in reasons)
    raw = (await aq(city_db_url, "select payload from dead_letters where reason like '%%future%%'"))[0][0]
    assert b'"power_w"' in bytes(raw), "the raw payload is kept for replay"
    assert (await aq(city_db_url, "select value from telemetry"))[0][0] == 33.0


async def test_http_push(city_db_url, make_settings, lamp_ids, token_for):
    token = await token_for(city_db_url, "integrator")
    h = {"Authorization": f"Bearer {token}"}
    body = [{"device_id": lamp_ids[0], "ts": int(datetime.now(UTC).timestamp() * 1000),
             "values": {"power_w": 12.5}},
            {"device_id": "NOPE-2", "values": {"power_w": 1}}]
    async with running(make_settings(city_db_url, mqtt_url=None)) as client:
        resp = await client.post("/api/v1/telemetry", json=body, headers=h)
        assert resp.status == 202, await resp.text()
        got = await resp.json()
        assert got["accepted"] == 1 and "NOPE-2" in got["rejected"][0]
        await wait_for(lambda: count(city_db_url) == 1, blocking=True)
        resp = await client.post("/api/v1/telemetry", data=b"[{", headers=h)
        assert resp.status == 400
        assert (await resp.json())["detail"].startswith("the body is not valid JSON")
        viewer = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}
        assert (await client.post("/api/v1/telemetry", json=body, headers=viewer)).status == 403


async def test_http_push_envelope_is_checked_and_bad_values_are_dead_letters(
        city_db_url, make_settings, lamp_ids, token_for):
    """Only an entry that names no device refuses the request; a bad value, time or device
    id beside good readings is a dead letter and the good ones are stored."""
    h = {"Authorization": f"Bearer {await token_for(city_db_url, 'integrator')}"}
    async with running(make_settings(city_db_url, mqtt_url=None)) as client:
        for body, detail in [([{"values": {"power_w": 1}}], "entry 0: device_id is missing"),
                             ({"device_id": "", "values": {}}, "device_id is missing"),
                             ([{"device_id": 7}], "entry 0: device_id is missing"),
                             ([{"device_id": lamp_ids[0]}, 3], "entry 1: expected an object"),
                             ([], "the array is empty")]:
            resp = await client.post("/api/v1/telemetry", json=body, headers=h)
            assert resp.status == 400, body
            assert (await resp.json())["detail"].startswith(detail), body
        mixed = [{"device_id": lamp_ids[0], "values": {"power_w": 5, "voltage_v": "high"}},
                 {"device_id": lamp_ids[1], "ts": "yesterday", "values": {"power_w": 6}},
                 {"device_id": "not a device id", "values": {"power_w": 7}}]
        resp = await client.post("/api/v1/telemetry", json=mixed, headers=h)
        assert resp.status == 202, await resp.text()
        got = await resp.json()
        assert got["accepted"] == 1 and len(got["rejected"]) == 3, got
        await wait_for(lambda: count(city_db_url) == 1, blocking=True)
    assert (await aq(city_db_url, "select value from telemetry"))[0][0] == 5.0


async def test_nul_in_a_device_id_is_a_dead_letter_not_a_stuck_writer(city_db_url, make_settings,
                                                                      lamp_ids, token_for):
    """PostgreSQL text cannot hold NUL; the dead letter keeps it escaped and the good reading
    of the same request, and every later one, is still stored."""
    h = {"Authorization": f"Bearer {await token_for(city_db_url, 'integrator')}"}
    body = [{"device_id": "SL-\u0000", "values": {"power_w": 1}},
            {"device_id": lamp_ids[0], "values": {"power_w": 2}}]
    async with running(make_settings(city_db_url, mqtt_url=None)) as client:
        resp = await client.post("/api/v1/telemetry", json=body, headers=h)
        assert resp.status == 202, await resp.text()
        await wait_for(lambda: count(city_db_url) == 1, blocking=True)
        await wait_for(lambda: count(city_db_url, "select count(*) from dead_letters") == 1, blocking=True)
        later = [{"device_id": lamp_ids[1], "values": {"power_w": 3}}]
        assert (await client.post("/api/v1/telemetry", json=later, headers=h)).status == 202
        await wait_for(lambda: count(city_db_url) == 2, blocking=True)
    assert (await aq(city_db_url, "select device_id from dead_letters"))[0][0] == "SL-\\x00"


async def test_messages_are_acknowledged_only_after_commit(city_db_url, make_settings,
                                                           mosquitto, lamp_ids):
    """Readings held when the server dies uncommitted are redelivered and stored once.

    The database refuses writes (telemetry renamed away), messages arrive and wait in the
    pipeline unacknowledged; the server stops without committing; a new server with the
    same MQTT client id gets them again from the persistent session.
    """
    settings = make_settings(city_db_url)
    dev = lamp_ids[0]
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    n = 50
    async with running(settings) as client:
        await wait_connected(client)
        ingest = client.app[INGEST]
        await aexecute(city_db_url, "alter table telemetry rename to telemetry_away")
        async with publisher(mosquitto.url) as pub:
            for i in range(n):
                msg = {"ts": iso(base + timedelta(seconds=i)), "values": {"power_w": float(i)}}
                await pub.publish(f"ioc/v1/{dev}/telemetry", orjson.dumps(msg), qos=1)
        await wait_for(lambda: ingest.pending >= n and ingest.last_error)
        ingest.stop_drain_timeout = 0.5
    await aexecute(city_db_url, "alter table telemetry_away rename to telemetry")
    assert await acount(city_db_url) == 0
    async with running(settings) as client:
        await wait_for(lambda: count(city_db_url) == n, within=20, blocking=True)
    assert await acount(city_db_url) == n


async def test_status_topic_marks_device_offline(city_db_url, make_settings, mosquitto, lamp_ids):
    dev = lamp_ids[1]
    async with running(make_settings(city_db_url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await pub.publish(f"ioc/v1/{dev}/status", b"offline", qos=1, retain=True)
        sql = ("select s.status from device_state s join devices d on d.key = s.device_key "
               "where d.id = %s")
        await wait_for(lambda: (q(city_db_url, sql, dev) or [[None]])[0][0] == "offline", blocking=True)
        await pub.publish(f"ioc/v1/{dev}/status", b"", qos=1, retain=True)  # clear retained


async def test_chirpstack_uplink_finds_the_meter_by_deveui(city_db_url, make_settings, mosquitto):
    from pathlib import Path

    dev, eui = (await aq(city_db_url, "select id, external_id from devices where kind = 'water_meter' "
                                      "and external_id is not null order by id limit 1"))[0]
    fixture = Path(__file__).parent.parent / "adapters/fixtures/chirpstack/up_water_meter.json"
    doc = orjson.loads(fixture.read_bytes())
    doc["deviceInfo"]["devEui"] = eui.lower()
    doc["time"] = iso(datetime.now(UTC))
    topic = f"application/app-1/device/{eui.lower()}/event/up"
    async with running(make_settings(city_db_url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await pub.publish(topic, orjson.dumps(doc), qos=1)
        await pub.publish("application/app-1/device/00000000deadbeef/event/up",
                          orjson.dumps({**doc, "deviceInfo": {"devEui": "00000000deadbeef"}}),
                          qos=1)
        sql = ("select count(*) from telemetry t join devices d on d.key = t.device_key "
               "where d.id = %s")
        await wait_for(lambda: count(city_db_url, sql, dev) > 0
                       and count(city_db_url, "select count(*) from dead_letters") >= 2, blocking=True)
    reasons = " | ".join(r[0] for r in await aq(city_db_url, "select reason from dead_letters"))
    assert "00000000deadbeef" in reasons  # no meter with that DevEUI
    assert "unknown metric 'leak'" in reasons  # a codec key the catalogue does not know
    assert await acount(city_db_url, sql, dev) >= 2  # volume_m3, flow_m3h, battery_pct... stored


async def test_a_device_deleted_elsewhere_does_not_stall_ingest(city_db_url, make_settings,
                                                                mosquitto, lamp_ids):
    """Another process deletes a device this server still knows; its readings must not
    block the batch they share with everyone else's."""
    gone, kept = lamp_ids[0], lamp_ids[1]
    now = iso(datetime.now(UTC))
    async with running(make_settings(city_db_url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await aexecute(city_db_url, "delete from devices where id = %s", gone)
        for dev in (gone, kept):
            await pub.publish(f"ioc/v1/{dev}/telemetry",
                              orjson.dumps({"ts": now, "values": {"power_w": 5.0}}), qos=1)
            await pub.publish(f"ioc/v1/{dev}/status", b"online", qos=1)
        sql = ("select count(*) from telemetry t join devices d on d.key = t.device_key "
               "where d.id = %s")
        await wait_for(lambda: count(city_db_url, sql, kept) == 1, within=10, blocking=True)
        assert client.app[INGEST].last_error is None
    assert await acount(city_db_url, "select count(*) from device_state s join devices d "
                                     "on d.key = s.device_key where d.id = %s", kept) == 1
