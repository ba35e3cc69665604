"""The alarm engine end to end: readings published over MQTT into the real mosquitto and
database raise and clear alarms of every rule kind; restart rebuilds without firing twice."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from rules.sun import sun_times
from server.keys import ALARMS
from tests.helpers import aq, publisher, q, running, wait_connected, wait_for
from tests.server.helpers import first, send, state_of, write_rules


def alarms(url: str, rule: str) -> list[tuple]:
    """(device, state, active, severity, suppressed, incident) of a rule's alarms, by id."""
    return q(url, "select device, state, active, severity, suppressed, incident from alarms "
                  "where rule = %s order by id", rule)


def raised_events(url: str, rule: str) -> int:
    return q(url, "select count(*) from alarm_events e join alarms a on a.id = e.alarm_id "
                  "where a.rule = %s and e.event = 'raised'", rule)[0][0]


def last_noon_and_midnight(lon: float, lat: float) -> tuple[datetime, datetime]:
    now = time.time()
    rise, set_ = sun_times(now, lat, lon)
    noon = float((rise + set_) / 2)
    while noon > now - 13 * 3600:  # its midnight after it, and both in the past
        noon -= 86400
    midnight = noon + 12 * 3600
    return datetime.fromtimestamp(noon, UTC), datetime.fromtimestamp(midnight, UTC)


async def test_each_rule_kind_raises_and_clears_over_mqtt(city_db_url, make_settings, mosquitto,
                                                          tmp_path):
    url = city_db_url
    ps1, ps2 = await asyncio.to_thread(first, url, "pressure_sensor", 2)
    lamp1, lamp2 = await asyncio.to_thread(first, url, "streetlight", 2)
    meter = (await asyncio.to_thread(first, url, "water_meter"))[0]
    tc = (await asyncio.to_thread(first, url, "traffic_controller"))[0]
    cam = (await asyncio.to_thread(first, url, "camera"))[0]
    path = write_rules(
        tmp_path / "rules.yaml",
        {"id": "p-low", "kind": "threshold", "select": {"devices": [ps1]},
         "metric": "pressure_bar", "below": 1.5, "deadband": 0.1, "severity": "major"},
        {"id": "p-drop", "kind": "rate_of_change", "select": {"devices": [ps2]},
         "metric": "pressure_bar", "window": "1m", "below": -0.5, "severity": "major"},
        {"id": "meter-silent", "kind": "stale", "select": {"devices": [meter]},
         "interval": "1s", "missed_intervals": 2, "severity": "minor"},
        {"id": "lamp-fault", "kind": "fault", "select": {"devices": [lamp1]},
         "metric": "lamp_fault", "severity": "minor"},
        {"id": "cam-offline", "kind": "fault", "select": {"devices": [cam]}, "offline": True,
         "severity": "minor"},
        {"id": "tc-flash", "kind": "state", "select": {"devices": [tc]}, "metric": "mode",
         "in": [1, 3, 4], "severity": "major"},
        {"id": "lamp-sched", "kind": "lighting_schedule", "select": {"devices": [lamp2]},
         "severity": "warning"},
    )
    lon, lat = (await aq(url, "select ST_X(geom), ST_Y(geom) from devices where id = %s", lamp2))[0]
    noon, midnight = last_noon_and_midnight(lon, lat)
    now = datetime.now(UTC).replace(microsecond=0)
    settings = make_settings(url, rules={"paths": [path]})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await send(pub, ps1, {"pressure_bar": 1.2})
        for i, v in enumerate((3.0, 3.0, 3.0, 2.0)):
            await send(pub, ps2, {"pressure_bar": v}, now - timedelta(seconds=60 - 20 * i))
        await send(pub, meter, {"volume_m3": 10.0})
        await send(pub, lamp1, {"lamp_fault": True})
        await pub.publish(f"ioc/v1/{cam}/status", b"offline", qos=1)
        await send(pub, tc, {"mode": 3})
        await send(pub, lamp2, {"lamp_on": True}, noon)
        for rule, dev in (("p-low", ps1), ("p-drop", ps2), ("lamp-fault", lamp1),
                          ("cam-offline", cam), ("tc-flash", tc), ("lamp-sched", lamp2),
                          ("meter-silent", meter)):
            await wait_for(lambda r=rule, d=dev: state_of(url, r, d) == "active_unacked",
                           within=20, blocking=True)
        # The stale alarm fired from the timer, with no reading after the deadline.
        assert (await aq(url, "select value from alarms where rule = 'meter-silent'"))[0][0] >= 2.0

        await send(pub, ps1, {"pressure_bar": 1.55})  # inside the deadband: still low
        for i in range(1, 4):
            await send(pub, ps2, {"pressure_bar": 2.0}, now + timedelta(seconds=20 * i))
        await send(pub, meter, {"volume_m3": 10.1})
        await send(pub, lamp1, {"lamp_fault": False})
        await send(pub, cam, {"online": True, "recording": True})
        await send(pub, tc, {"mode": 7})
        await send(pub, lamp2, {"lamp_on": False}, noon + timedelta(minutes=1))
        for rule, dev in (("p-drop", ps2), ("lamp-fault", lamp1), ("cam-offline", cam),
                          ("tc-flash", tc), ("lamp-sched", lamp2), ("meter-silent", meter)):
            await wait_for(lambda r=rule, d=dev: state_of(url, r, d) == "rtn_unacked", within=20,
                           blocking=True)
        assert await asyncio.to_thread(state_of, url, "p-low", ps1) == "active_unacked"
        await send(pub, ps1, {"pressure_bar": 1.7})
        await wait_for(lambda: state_of(url, "p-low", ps1) == "rtn_unacked", blocking=True)
        # Night outage: the same rule, the other way round, from the sun at the lamp.
        await send(pub, lamp2, {"lamp_on": False}, midnight)
        await wait_for(lambda: len(alarms(url, "lamp-sched")) == 1 and
                       state_of(url, "lamp-sched", lamp2) == "active_unacked", blocking=True)
        await client.app[ALARMS].drained()
    sched = (await aq(url, "select message from alarms where rule = 'lamp-sched'"))[0][0]
    assert "off at night" in sched
    events = await aq(url, "select e.event from alarm_events e join alarms a on a.id = e.alarm_id "
                           "where a.rule = 'p-low' and e.actor = 'rules' order by e.id")
    assert events == [("raised",), ("cleared",)]
    assert await asyncio.to_thread(raised_events, url, "meter-silent") == 1


async def test_a_restart_after_downtime_does_not_blame_the_devices_for_it(
        city_db_url, make_settings, mosquitto, tmp_path):
    """Silence while the server was down is not the devices': no stale alarm flood at start."""
    url = city_db_url
    meters = await asyncio.to_thread(first, url, "water_meter", 2)
    path = write_rules(tmp_path / "rules.yaml",
                       {"id": "meter-quiet", "kind": "stale", "select": {"devices": meters},
                        "interval": "2s", "missed_intervals": 3, "severity": "minor"})
    settings = make_settings(url, rules={"paths": [path]})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        for m in meters:
            await send(pub, m, {"volume_m3": 1.0})
        await wait_for(lambda: q(url, "select count(*) from device_state where last_seen is not null")
                       [0][0] == 2, blocking=True)
    await asyncio.sleep(7)  # down for longer than the rule's 6 s
    restarted = time.time()
    async with running(settings) as client:
        await wait_connected(client)
        await wait_for(lambda: len(alarms(url, "meter-quiet")) == 2, within=30, blocking=True)
        await client.app[ALARMS].drained()
    rows = await aq(url, "select device, extract(epoch from raised_at), value from alarms"
                         " where rule = 'meter-quiet'")
    for device, raised_at, silent_for in rows:
        # Without the downtime's grace both were overdue the moment the server started.
        assert float(raised_at) >= restarted + 6 - 0.5, (device, float(raised_at) - restarted)
        assert silent_for >= 13 - 0.5, "the alarm still tells the whole silence, downtime included"
    assert await asyncio.to_thread(raised_events, url, "meter-quiet") == 2


@pytest.fixture
def threshold_file(tmp_path, city_db_url):
    ps = first(city_db_url, "pressure_sensor", 3)
    return ps, write_rules(
        tmp_path / "rules.yaml",
        {"id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
         "metric": "pressure_bar", "below": 1.5, "severity": "major"},
        {"id": "p-low-delayed", "kind": "threshold", "select": {"devices": [ps[2]]},
         "metric": "pressure_bar", "below": 1.0, "on_delay": "3s", "severity": "critical"},
        {"id": "cam-offline", "kind": "fault", "select": {"kind": "camera"}, "offline": True,
         "severity": "minor"},
    )


async def test_restart_rebuilds_without_firing_twice(city_db_url, make_settings, mosquitto,
                                                     threshold_file):
    url = city_db_url
    (ps1, _, ps3), path = threshold_file
    cam = (await asyncio.to_thread(first, url, "camera"))[0]
    settings = make_settings(url, rules={"paths": [path]})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await send(pub, ps1, {"pressure_bar": 1.2})
        # The broker keeps this "offline" and replays it to the next session.
        await pub.publish(f"ioc/v1/{cam}/status", b"offline", qos=1, retain=True)
        await wait_for(lambda: state_of(url, "p-low", ps1) == "active_unacked", blocking=True)
        await wait_for(lambda: state_of(url, "cam-offline", cam) == "active_unacked", blocking=True)
        await send(pub, cam, {"online": True})  # reporting again: the offline alarm clears
        await wait_for(lambda: state_of(url, "cam-offline", cam) == "rtn_unacked", blocking=True)
        # Below the delayed rule's limit; the server stops before its 3 s on-delay is over.
        await send(pub, ps3, {"pressure_bar": 0.5})
        await wait_for(lambda: state_of(url, "p-low", ps3) == "active_unacked", blocking=True)
        assert await asyncio.to_thread(state_of, url, "p-low-delayed", ps3) is None
    assert await asyncio.to_thread(state_of, url, "p-low-delayed", ps3) is None
    async with running(settings) as client:
        await wait_connected(client)
        # The pending on-delay is rebuilt from device_state and fires once, after restart.
        await wait_for(lambda: state_of(url, "p-low-delayed", ps3) == "active_unacked", within=20,
                       blocking=True)
        # Give a wrongly repeated raise (e.g. of the replayed retained status) time to show.
        await asyncio.sleep(1.0)
        await client.app[ALARMS].drained()
    assert await asyncio.to_thread(raised_events, url, "p-low") == 2  # ps1 and ps3, each once
    assert await asyncio.to_thread(raised_events, url, "p-low-delayed") == 1
    assert await asyncio.to_thread(raised_events, url, "cam-offline") == 1, \
        "a retained 'offline' replay raised again"
    assert await asyncio.to_thread(state_of, url, "cam-offline", cam) == "rtn_unacked"
    assert len(await asyncio.to_thread(alarms, url, "p-low")) == 2
