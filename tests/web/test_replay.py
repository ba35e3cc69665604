"""The time slider in a real browser: the map and the alarm list as they were, played back,
and back to live; in English and in Vietnamese."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import psycopg

from tests.helpers import running
from tests.server.test_state import alarm, change
from tests.web.helpers import artifact, base_url, map_idle, map_ready, new_page

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
RAISED = NOW - timedelta(hours=3)
CLEARED = NOW - timedelta(hours=2)


def seed(url: str) -> tuple[str, float, float]:
    """A lamp on until 3 h ago, then off (a fault: a major alarm, closed 2 h ago), then on
    again from 2 h ago: live shows it on with no alarm."""
    with psycopg.connect(url) as conn:
        lamp, lon, lat, key = conn.execute(
            "select id, ST_X(geom), ST_Y(geom), key from devices where kind = 'streetlight' "
            "order by id limit 1").fetchone()
        mid = dict(conn.execute("select name, id from metrics"))
        for d in (-1, 0, 1):
            conn.execute("select ioc_ensure_telemetry_partition(%s)", ((NOW + timedelta(days=d)).date(),))
        with conn.cursor().copy("copy telemetry (device_key, metric_id, ts, value, quality) "
                                "from stdin") as cp:
            for i in range(4 * 12):  # every 5 min for the last 4 h
                ts = NOW - timedelta(hours=4) + timedelta(minutes=5 * i)
                on = not (RAISED <= ts < CLEARED)
                cp.write_row((key, mid["lamp_on"], ts, 1.0 if on else 0.0, 0))
                cp.write_row((key, mid["power_w"], ts, 60.0 if on else 0.0, 0))
        conn.execute("insert into device_state (device_key, values, times, status, last_seen) "
                     "values (%s, '{\"lamp_on\": true, \"power_w\": 60.0}', '{}', 'online', %s)",
                     (key, NOW - timedelta(minutes=5)))
        aid = alarm(conn, lamp, "major", RAISED)
        change(conn, aid, CLEARED, "cleared", state="closed", active=False, cleared_at=CLEARED,
               closed_at=CLEARED)
    return lamp, lon, lat


SEVERITY = "(id) => window.ioc.store.severityOf(id)"
LAMP_ON = "(id) => window.ioc.live.state.get(id)?.values?.lamp_on"
# The top bar's "Lamps out" KPI (the ward roll-up's total: live, or of the replayed instant)
LAMPS_OUT = "(want) => document.querySelector('#kpi-lamps-out')?.textContent === want"


async def test_replay_shows_the_past_and_returns_to_live(browser, city_db_url, make_settings,
                                                          token_for):
    lamp, lon, lat = seed(city_db_url)
    token = await token_for(city_db_url, "operator")
    async with running(make_settings(city_db_url)) as client:
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}#map=16.5/{lat}/{lon}")
        await map_ready(page)
        assert await page.evaluate(SEVERITY, lamp) is None
        await page.wait_for_function(f"(id) => ({LAMP_ON})(id) === true", arg=lamp)
        await page.wait_for_function(LAMPS_OUT, arg="0")  # live: the lamp is fine

        replay = page.get_by_role("button", name="Replay", exact=True)
        pressed = datetime.now(UTC)
        await replay.click()
        assert await replay.get_attribute("aria-pressed") == "true"
        badge = page.locator("#replay-badge")
        await badge.wait_for()
        # The default range: the last 24 h, to the minute the button was pressed (NOW is the
        # module's import time, minutes earlier in a full run, so the press is measured here).
        start = datetime.fromtimestamp(await page.evaluate(
            "() => (window.ioc.replay.end - window.ioc.replay.spanMin * 60000) / 1000"), UTC)
        day = timedelta(hours=24)
        assert pressed - day - timedelta(minutes=1) <= start <= datetime.now(UTC) - day
        assert re.fullmatch(r"Replaying — \d\d:\d\d", await badge.inner_text())

        # Seek to 2.5 h ago: the lamp was off, its alarm open; the list shows it.
        slider = page.get_by_role("slider", name="Time")
        minutes = int((NOW - timedelta(hours=2, minutes=30) - start).total_seconds() // 60)
        await slider.fill(str(minutes))
        await page.wait_for_function(f"(id) => ({SEVERITY})(id) === 'major'", arg=lamp)
        await page.wait_for_function(f"(id) => ({LAMP_ON})(id) === false", arg=lamp)
        await page.locator("#alarm-list .alarm", has_text=lamp).wait_for()
        shown = (start + timedelta(minutes=minutes)).astimezone().strftime("%H:%M")
        await page.locator("#replay-badge", has_text=f"Replaying — {shown}").wait_for()
        # The KPIs and the ward roll-up are those of then: the lamp was out (its alarm open).
        await page.wait_for_function(LAMPS_OUT, arg="1")
        await page.click("label[for=tab-wards]")
        assert await page.locator("#kpi-alarms").inner_text() == "1"
        await page.locator("#ward-table .wards-as-of", has_text=f"As at {shown}").wait_for()
        out = page.locator("#ward-table tfoot td").nth(1)
        assert (await out.inner_text()).startswith("1")
        # Historical alarms are not acted on.
        assert await page.locator("#alarm-list button[data-action=ack]").is_disabled()
        await map_idle(page)
        await page.screenshot(path=artifact("replay-en.png"))

        # Play at 3600x: within a second the alarm closes and the lamp comes back on.
        await page.get_by_role("combobox", name="Speed").select_option("3600")
        await page.get_by_role("button", name="Play", exact=True).click()
        await page.wait_for_function(f"(id) => ({SEVERITY})(id) === null", arg=lamp, timeout=15_000)
        await page.wait_for_function(f"(id) => ({LAMP_ON})(id) === true", arg=lamp)
        await page.get_by_role("button", name="Pause", exact=True).click()
        await page.get_by_role("button", name="Play", exact=True).wait_for()

        # Back to live: today's figures again.
        await page.get_by_role("button", name="Back to live").click()
        await badge.wait_for(state="hidden")
        assert await replay.get_attribute("aria-pressed") == "false"
        await page.locator("#link.live").wait_for()
        await page.wait_for_function(f"(id) => ({SEVERITY})(id) === null", arg=lamp)
        await page.wait_for_function(LAMPS_OUT, arg="0")
        await page.locator("#ward-table .wards-as-of").wait_for(state="detached")

        # Vietnamese, and a narrower window.
        await page.click("[data-lang=vi]")
        await page.get_by_role("button", name="Phát lại", exact=True).click()
        await page.locator("#replay-badge", has_text="Đang phát lại —").wait_for()
        await page.get_by_role("button", name="Về trực tiếp").wait_for()
        # the range ends at this press: a minute later than the first one in a slow run
        start = datetime.fromtimestamp(await page.evaluate(
            "() => (window.ioc.replay.end - window.ioc.replay.spanMin * 60000) / 1000"), UTC)
        minutes = int((NOW - timedelta(hours=2, minutes=30) - start).total_seconds() // 60)
        shown = (start + timedelta(minutes=minutes)).astimezone().strftime("%H:%M")
        await page.get_by_role("slider", name="Thời điểm").fill(str(minutes))
        await page.wait_for_function(f"(id) => ({SEVERITY})(id) === 'major'", arg=lamp)
        await page.wait_for_function(LAMPS_OUT, arg="1")
        await page.locator("#ward-table .wards-as-of", has_text=f"Vào lúc {shown}").wait_for()
        await map_idle(page)
        await page.screenshot(path=artifact("replay-vi.png"))
        await page.set_viewport_size({"width": 1000, "height": 760})
        await map_idle(page)
        await page.screenshot(path=artifact("replay-narrow.png"))
        bar = await page.locator("#replay-bar").bounding_box()
        wrap = await page.locator(".map-wrap").bounding_box()
        pill = await page.locator("#replay-badge").bounding_box()
        assert wrap["x"] <= bar["x"] and bar["x"] + bar["width"] <= wrap["x"] + wrap["width"]
        assert bar["y"] + bar["height"] <= wrap["y"] + wrap["height"]
        assert pill["y"] + pill["height"] < bar["y"]
        # A phone: the map on top, the bar inside it, nothing past the screen's edge.
        await page.set_viewport_size({"width": 390, "height": 844})
        await map_idle(page)
        await page.screenshot(path=artifact("replay-phone.png"))
        bar = await page.locator("#replay-bar").bounding_box()
        wrap = await page.locator(".map-wrap").bounding_box()
        assert wrap["width"] >= 380 and wrap["height"] >= 400, wrap
        assert 0 <= bar["x"] and bar["x"] + bar["width"] <= wrap["x"] + wrap["width"]
        assert bar["y"] + bar["height"] <= wrap["y"] + wrap["height"]
        assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
        await page.get_by_role("button", name="Về trực tiếp").click()
        await page.locator("#replay-badge").wait_for(state="hidden")
        assert page.errors == []
