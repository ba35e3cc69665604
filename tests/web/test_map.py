"""The IOC map in a real browser: it draws the city from our tiles and shows a device."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers import aexecute, aq, iso, publisher, q, running, wait_connected, wait_for
from tests.web.helpers import artifact, base_url, map_idle, map_ready, new_page

# Rendered features per source (aggregate cells counted apart), from MapLibre itself.
RENDERED = """() => {
  const counts = {};
  for (const f of window.ioc.map.queryRenderedFeatures()) {
    const src = f.sourceLayer || f.source;  // one composite source: the vector layer names the kind
    const key = f.properties && f.properties.agg ? src + ':agg' : src;
    counts[key] = (counts[key] || 0) + 1;
  }
  return counts;
}"""


async def test_map_draws_the_city_from_our_tiles(browser, city_db_url, make_settings, token_for):
    token = await token_for(city_db_url, "viewer")
    wards = (await aq(city_db_url, "select count(*) from wards"))[0][0]
    async with running(make_settings(city_db_url)) as client:
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}")
        await map_ready(page)
        assert "token=" not in page.url, "the token must leave the address bar"
        city = await page.evaluate(RENDERED)
        await page.screenshot(path=artifact("map-city.png"))
        # The whole city at first load: every ward drawn, roads, and devices (lamps as
        # aggregate cells at this zoom).
        drawn_wards = await page.evaluate(
            "() => new Set(window.ioc.map.queryRenderedFeatures({layers: ['wards:wards:fill']})"
            ".map(f => f.properties.id)).size")
        assert drawn_wards == wards, city
        assert city.get("roads", 0) > 50, city
        assert city.get("streetlight:agg", 0) + city.get("streetlight", 0) > 0, city
        assert sum(v for k, v in city.items() if k.startswith(("camera", "traffic_controller"))) > 0, city
        assert await page.locator(".ward-label").count() == wards

        # A street: individual lamps (no aggregates) along drawn roads.
        lamp = (await aq(city_db_url, "select ST_X(geom), ST_Y(geom) from devices where kind = 'streetlight' "
                                      "order by id limit 1"))[0]
        await page.evaluate(f"() => window.ioc.map.jumpTo({{center: [{lamp[0]}, {lamp[1]}], zoom: 16.5}})")
        await map_idle(page)
        street = await page.evaluate(RENDERED)
        await page.screenshot(path=artifact("map-street.png"))
        assert street.get("streetlight", 0) > 3, street
        assert "streetlight:agg" not in street, street
        assert street.get("roads", 0) > 0, street

        # Vietnamese labels on demand.
        await page.click("[data-lang=vi]")
        assert await page.inner_text(".brand-title") == "Trung tâm Điều hành"
        assert "Đèn đường" in await page.inner_text("#layer-list")
        assert page.errors == []


LABELS = "() => window.ioc.live.aggMarkers.map((m) => m.getLngLat().toArray())"


async def test_aggregate_counts_follow_the_view_while_unacknowledged_alarms_pulse(
        browser, city_db_url, make_settings, token_for):
    """The alarm halo's pulse repaints the map five times a second, so MapLibre's "idle" never
    fires while an alarm is unacknowledged: the counts on the aggregate bubbles must follow
    the view all the same."""
    token = await token_for(city_db_url, "viewer")
    lamp, lon, lat = (await aq(city_db_url, "select id, ST_X(geom), ST_Y(geom) from devices"
                                            " where kind = 'streetlight' order by id limit 1"))[0]
    await aexecute(city_db_url, "insert into alarms (rule, device, severity, state, dedup_key)"
                                " values ('r', %s, 'minor', 'active_unacked', %s)", lamp, f"r:{lamp}")
    async with running(make_settings(city_db_url)) as client:
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}")
        await map_ready(page)
        await page.wait_for_function("() => window.ioc.live.unackedShown === true")
        await page.wait_for_function("() => document.querySelectorAll('.agg-label').length > 0")
        before = await page.evaluate(LABELS)
        await page.evaluate(f"() => window.ioc.map.jumpTo({{center: [{lon}, {lat}], zoom: 13}})")
        await map_idle(page)
        await page.wait_for_function(f"(old) => JSON.stringify(({LABELS})()) !== JSON.stringify(old)"
                                     " && document.querySelectorAll('.agg-label').length > 0",
                                     arg=before, timeout=10_000)
        bounds = await page.evaluate("() => window.ioc.map.getBounds().toArray()")
        (w, s), (e, n) = bounds
        after = await page.evaluate(LABELS)
        assert after and all(w <= x <= e and s <= y <= n for x, y in after), (bounds, after)
        assert page.errors == []


async def test_a_wide_view_gets_live_cell_counts_over_the_websocket(browser, city_db_url, make_settings,
                                                                     token_for):
    """Above [hub] max_snapshot_devices the hub sends the lamps as cells; the map puts their live
    counts on the tile's own cell features, and they follow status changes."""
    token = await token_for(city_db_url, "viewer")
    settings = make_settings(city_db_url, hub={"max_snapshot_devices": 50, "cells_refresh_s": 0.3})
    async with running(settings) as client:
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}")
        await map_ready(page)
        await page.wait_for_function("() => (window.ioc.live.cellsMsg?.cells || []).length > 0",
                                     timeout=15_000)
        on_tiles = """() => window.ioc.map.queryRenderedFeatures()
            .filter((f) => f.properties.agg === 'cell' && f.sourceLayer === 'streetlight')
            .map((f) => [f.properties.id, f.state.count, f.state.online])"""
        await map_idle(page)
        drawn = await page.evaluate(on_tiles)
        cells = {c["cell"]: c for c in await page.evaluate("() => window.ioc.live.cellsMsg.cells")
                 if c["kind"] == "streetlight"}
        assert drawn and all(cells[cid]["count"] == n for cid, n, _ in drawn), (drawn, cells)
        assert all(online == 0 for _, _, online in drawn), "no lamp has reported yet"
        await aexecute(city_db_url, "insert into device_state (device_key, status) select key, 'online'"
                                    " from devices where kind = 'streetlight'")
        await page.wait_for_function(f"() => ({on_tiles})().every(([, n, online]) => online === n)",
                                     timeout=15_000)
        await page.screenshot(path=artifact("map-live-cells.png"))
        assert page.errors == []


async def test_layer_switcher_hides_a_kind(browser, city_db_url, make_settings, token_for):
    token = await token_for(city_db_url, "viewer")
    async with running(make_settings(city_db_url)) as client:
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}")
        await map_ready(page)
        assert (await page.evaluate(RENDERED)).get("camera", 0) > 0
        await page.uncheck("#layer-list input[data-layer=camera]")
        await map_idle(page)
        assert (await page.evaluate(RENDERED)).get("camera", 0) == 0
        assert page.errors == []


async def test_device_panel_shows_latest_values_and_history(browser, city_db_url, make_settings,
                                                            token_for, mosquitto):
    token = await token_for(city_db_url, "viewer")
    sensor, lon, lat = (await aq(city_db_url, "select id, ST_X(geom), ST_Y(geom) from devices "
                                              "where kind = 'pressure_sensor' order by id limit 1"))[0]
    async with running(make_settings(city_db_url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await pub.publish(f"ioc/v1/{sensor}/telemetry", orjson.dumps(
            {"ts": iso(datetime.now(UTC)), "values": {"pressure_bar": 3.25, "temperature_c": 21.5}}), qos=1)
        await wait_for(lambda: q(city_db_url, "select count(*) from telemetry")[0][0] == 2, blocking=True)
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}#map=17/{lat}/{lon}")
        await map_ready(page)
        # Click the sensor where MapLibre drew it.
        xy = await page.evaluate(f"""() => {{
            const p = window.ioc.map.project([{lon}, {lat}]);
            const r = window.ioc.map.getCanvas().getBoundingClientRect();
            return [r.left + p.x, r.top + p.y];
        }}""")
        await page.mouse.click(*xy)
        panel = page.locator("#device-panel")
        await panel.locator(".dev-id", has_text=sensor).wait_for()
        await panel.locator("[data-metric=pressure_bar]", has_text="3.25").wait_for()
        # the history: the asset sections' chart (js/assets.js), with the stored point
        await panel.locator(".assets-chart canvas").wait_for()
        await page.wait_for_function("() => window.ioc.assets.plot?.data[0].length >= 1")
        await page.screenshot(path=artifact("device-panel.png"))
        assert page.errors == []


async def test_sign_in_form_and_vietnamese_from_the_browser(browser, city_db_url, make_settings,
                                                            token_for):
    token = await token_for(city_db_url, "operator")
    async with running(make_settings(city_db_url)) as client:
        page = await new_page(browser, locale="vi-VN")
        await page.goto(f"{base_url(client)}/")
        await page.locator("#login-form").wait_for()
        assert await page.inner_text("#login-form h1") == "Đăng nhập Trung tâm Điều hành"
        await page.fill("#login-token", "ioc_not-a-real-token")
        await page.click("#login-form button[type=submit]")
        await page.locator("#login-error", has_text="không tồn tại").wait_for()
        await page.fill("#login-token", token)
        await page.click("#login-form button[type=submit]")
        await map_ready(page)
        assert await page.is_hidden("#login")
        assert await page.inner_text(".brand-title") == "Trung tâm Điều hành"
        assert "test-operator" in await page.inner_text("#user")
        await page.screenshot(path=artifact("map-vi.png"))
        # The token lives in this tab's session: a reload stays signed in.
        await page.reload()
        await map_ready(page)
        assert await page.is_hidden("#login")
        assert page.errors == []


async def test_the_live_subscription_follows_the_map(browser, city_db_url, make_settings, token_for,
                                                     mosquitto):
    token = await token_for(city_db_url, "viewer")
    west, east = await aq(city_db_url, """
               (select id from devices where kind = 'camera' order by ST_X(geom) limit 1)
               union all
               (select id from devices where kind = 'camera' order by ST_X(geom) desc limit 1)""")
    west, east = west[0], east[0]
    coords = {d: (await aq(city_db_url, "select ST_X(geom), ST_Y(geom) from devices where id = %s", d))[0]
              for d in (west, east)}
    async with running(make_settings(city_db_url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        page = await new_page(browser)
        lon, lat = coords[west]
        await page.goto(f"{base_url(client)}/?token={token}#map=17/{lat}/{lon}")
        await map_ready(page)
        has = "(id) => window.ioc.live.state.get(id)?.values?.recording === true"
        await pub.publish(f"ioc/v1/{west}/telemetry", orjson.dumps({"values": {"recording": True}}), qos=1)
        await page.wait_for_function(has, arg=west, timeout=15_000)
        # The east camera is outside this view: its update is not sent to the page...
        await pub.publish(f"ioc/v1/{east}/telemetry", orjson.dumps({"values": {"recording": True}}), qos=1)
        await wait_for(lambda: q(city_db_url, "select count(*) from telemetry")[0][0] == 2, blocking=True)
        await page.wait_for_timeout(1000)
        assert not await page.evaluate(has, east)
        # ...until the map moves there: the new viewport's snapshot brings it.
        lon, lat = coords[east]
        await page.evaluate(f"() => window.ioc.map.jumpTo({{center: [{lon}, {lat}], zoom: 17}})")
        await page.wait_for_function(has, arg=east, timeout=15_000)
        assert page.errors == []


async def test_an_external_base_style_goes_under_our_layers(browser, city_db_url, make_settings,
                                                            token_for):
    """settings.web_style_url: a city with its own base map keeps it, our layers on top."""
    style = {"version": 8, "sources": {}, "layers": [
        {"id": "city-basemap", "type": "background", "paint": {"background-color": "#1b3a2a"}}]}

    async def serve_style(_request: web.Request) -> web.Response:
        return web.json_response(style, headers={"Access-Control-Allow-Origin": "*"})

    basemap = web.Application()
    basemap.router.add_get("/style.json", serve_style)
    async with TestServer(basemap) as styles:
        settings = make_settings(city_db_url, web_style_url=str(styles.make_url("/style.json")))
        token = await token_for(city_db_url, "viewer")
        async with running(settings) as client:
            page = await new_page(browser)
            await page.goto(f"{base_url(client)}/?token={token}")
            await map_ready(page)
            layers = await page.evaluate("() => window.ioc.map.getStyle().layers.map(l => l.id)")
            assert layers[0] == "city-basemap"
            assert "wards:wards:fill" in layers and "live-alarms" in layers
            assert await page.evaluate(
                "() => window.ioc.map.getPaintProperty('wards:wards:fill', 'fill-opacity')") < 0.5
            assert (await page.evaluate(RENDERED)).get("roads", 0) > 0
            assert page.errors == []
