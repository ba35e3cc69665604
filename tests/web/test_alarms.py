"""Alarms in a real browser: raised over MQTT, on screen within 2 s, acknowledged from the
map; a crew's assigned alarm on the phone page, worked from there."""

from __future__ import annotations

import time

import orjson

from tests.helpers import aq, publisher, q, running, wait_connected, wait_for
from tests.web.helpers import artifact, base_url, map_ready, new_page

# The alarm is in the panel, drawn on the live alarm layer, and colours the device.
ON_SCREEN = """(device) => {
  const row = document.querySelector(`#alarm-list .alarm[data-device="${device}"]`);
  const m = window.ioc.map;
  const onMap = m.queryRenderedFeatures({layers: ['live-alarms']}).some(f => f.properties.device === device);
  const state = m.getFeatureState({source: 'ioc', sourceLayer: 'pressure_sensor', id: device});
  return row !== null && onMap && state.sev >= 1;
}"""


def first_sensor(url: str) -> tuple[str, float, float]:
    return q(url, "select id, ST_X(geom), ST_Y(geom) from devices "
                  "where kind = 'pressure_sensor' order by id limit 1")[0]


def open_alarm(url: str, device: str) -> int | None:
    rows = q(url, "select id from alarms where device = %s and state <> 'closed'", device)
    return rows[0][0] if rows else None


async def test_alarm_appears_within_2s_and_ack_reaches_the_database(
        browser, city_db_url, make_settings, token_for, mosquitto, rules_file):
    token = await token_for(city_db_url, "operator")
    sensor, lon, lat = first_sensor(city_db_url)
    settings = make_settings(city_db_url, rules={"paths": [str(rules_file)]})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}#map=16/{lat}/{lon}")
        await map_ready(page)
        topic = f"ioc/v1/{sensor}/telemetry"
        # A normal reading first: the page follows the sensor live (snapshot, then deltas).
        await pub.publish(topic, orjson.dumps({"values": {"pressure_bar": 3.0}}), qos=1)
        await page.wait_for_function("(id) => window.ioc.live.state.get(id)?.values?.pressure_bar === 3.0",
                                     arg=sensor, timeout=15_000)

        started = time.monotonic()
        await pub.publish(topic, orjson.dumps({"values": {"pressure_bar": 0.8}}), qos=1)
        # The requirement: in the alarm panel and on the map within 2 s of the reading.
        await page.wait_for_function(ON_SCREEN, arg=sensor, timeout=2_000)
        elapsed = time.monotonic() - started
        await page.screenshot(path=artifact("map-alarm.png"))
        row = page.locator(f"#alarm-list .alarm[data-device='{sensor}']")
        assert await row.get_attribute("data-severity") == "major"
        assert await row.get_attribute("data-state") == "active_unacked"
        assert await page.inner_text("#kpi-unacked") == "1"

        alarm_id = int(await row.get_attribute("data-alarm-id"))
        assert alarm_id == open_alarm(city_db_url, sensor)
        await row.locator("button[data-action=ack]").click()
        await wait_for(lambda: q(city_db_url, "select state from alarms where id = %s",
                                 alarm_id)[0][0] == "active_acked", blocking=True)
        acked_by = (await aq(city_db_url, "select acked_by from alarms where id = %s", alarm_id))[0][0]
        assert "test-operator" in acked_by
        row = page.locator(f"#alarm-list .alarm[data-alarm-id='{alarm_id}'][data-state=active_acked]")
        await row.wait_for()

        # A comment for the shift log, in Vietnamese.
        await row.locator("button[data-action=comment]").click()
        await row.locator(".comment-form input").fill("Đã gọi đội cấp nước kiểm tra van")
        await row.locator(".comment-form button[type=submit]").click()
        await wait_for(lambda: q(city_db_url, "select reason from alarm_events where alarm_id = %s "
                                              "and event = 'comment'", alarm_id), blocking=True)
        assert (await aq(city_db_url, "select reason from alarm_events where alarm_id = %s "
                                      "and event = 'comment'", alarm_id))[0][0] \
            == "Đã gọi đội cấp nước kiểm tra van"
        assert page.errors == []
    print(f"alarm on screen {elapsed * 1000:.0f} ms after the reading was published")


async def test_a_viewer_cannot_acknowledge(browser, city_db_url, make_settings, token_for, mosquitto,
                                           rules_file):
    token = await token_for(city_db_url, "viewer")
    sensor, lon, lat = first_sensor(city_db_url)
    settings = make_settings(city_db_url, rules={"paths": [str(rules_file)]})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await pub.publish(f"ioc/v1/{sensor}/telemetry", orjson.dumps({"values": {"pressure_bar": 0.5}}),
                          qos=1)
        await wait_for(lambda: open_alarm(city_db_url, sensor))
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}#map=16/{lat}/{lon}")
        await map_ready(page)
        row = page.locator(f"#alarm-list .alarm[data-device='{sensor}']")
        await row.wait_for()
        assert await row.locator("button[data-action=ack]").is_disabled()
        assert page.errors == []


async def test_crew_page_shows_its_assigned_alarm_live(browser, city_db_url, make_settings, token_for,
                                                       mosquitto, rules_file):
    operator = await token_for(city_db_url, "operator")
    sensor, _, _ = first_sensor(city_db_url)
    crew = (await aq(city_db_url, "select id from crews order by id limit 1"))[0][0]
    crew_token = await token_for(city_db_url, "crew", crew)
    settings = make_settings(city_db_url, rules={"paths": [str(rules_file)]})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        page = await new_page(browser, viewport={"width": 390, "height": 844}, is_mobile=True,
                              has_touch=True, device_scale_factor=2)
        await page.goto(f"{base_url(client)}/crew?token={crew_token}")
        await page.wait_for_function("() => window.iocCrew && window.iocCrew.ready", timeout=30_000)
        await page.locator("#crew-list .empty").wait_for()

        await pub.publish(f"ioc/v1/{sensor}/telemetry", orjson.dumps({"values": {"pressure_bar": 0.7}}),
                          qos=1)
        alarm_id = await wait_for(lambda: open_alarm(city_db_url, sensor))
        resp = await client.post(f"/api/v1/alarms/{alarm_id}/assign", json={"crew": crew},
                                 headers={"Authorization": f"Bearer {operator}"})
        assert resp.status == 200, await resp.text()

        # Live: well before the page's 60 s fallback poll.
        job = page.locator(f"article.job[data-alarm-id='{alarm_id}']")
        await job.wait_for(timeout=15_000)
        assert sensor in await job.inner_text()
        geo = await job.locator("a[data-link=geo]").get_attribute("href")
        assert geo.startswith("geo:")
        assert f"device={sensor}" in await job.locator("a[data-link=map]").get_attribute("href")
        await page.screenshot(path=artifact("crew.png"))

        # each step opens the note-and-photo form (tests/web/test_crew_loop.py fills it)
        await job.locator("button[data-work=in_progress]").click()
        await job.locator(".work-form button[type=submit]").click()
        await wait_for(lambda: q(city_db_url, "select work_state from alarms where id = %s",
                                 alarm_id)[0][0] == "in_progress", blocking=True)
        await job.locator("button[data-work=done]").click()
        await job.locator(".work-form button[type=submit]").click()
        await wait_for(lambda: q(city_db_url, "select work_state from alarms where id = %s",
                                 alarm_id)[0][0] == "done", blocking=True)
        await page.locator(f"article.job[data-alarm-id='{alarm_id}'][data-work=done]").wait_for()
        assert page.errors == []
