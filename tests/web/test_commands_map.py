"""Commands from the map in a real browser: an operator draws a polygon around a cabinet's
lamps, previews, sends, and watches every lamp's result arrive on the websocket; then the
same panel in Vietnamese shows the group in the history with who sent it."""

from __future__ import annotations

import pytest

from tests.helpers import aexecute, aq, running, wait_connected
from tests.server.test_commands import device_client
from tests.web.helpers import artifact, base_url, map_idle, map_ready, new_page

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_a_polygon_group_from_the_map(browser, city_db_url, make_settings, mosquitto, token_for):
    url = city_db_url
    [(cab,)] = await aq(url, "select parent from devices where kind = 'streetlight' and parent is not null "
                             "group by parent order by count(*) desc, parent limit 1")
    lamps = [r[0] for r in await aq(url, "select id from devices where parent = %s "
                                         "and kind = 'streetlight'", cab)]
    [(x0, y0, x1, y1)] = await aq(url, "select ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) from "
                                       "(select ST_Extent(geom) e from devices where parent = %s "
                                       "and kind = 'streetlight') s", cab)
    token = await token_for(url, "operator")
    async with running(make_settings(url)) as client, device_client(mosquitto.url, None):
        await wait_connected(client)
        page = await new_page(browser)
        logs: list[str] = []
        page.on("console", lambda m: logs.append(m.text))
        page.on("pageerror", lambda e: logs.append(str(e)))
        await page.goto(f"{base_url(client)}/?token={token}")
        await page.evaluate("() => localStorage.setItem('ioc.lang', 'en')")
        await map_ready(page)
        pad = "{padding: {top: 120, bottom: 120, left: 80, right: 520}}"  # left of the panel
        await page.evaluate(f"() => window.ioc.live.fitTo([{x0}, {y0}, {x1}, {y1}], {pad})")
        await page.get_by_role("button", name="Commands", exact=True).click()
        await page.get_by_role("radio", name="Polygon").click()
        await page.get_by_role("button", name="Draw on the map").click()
        d = 0.0004
        corners = [(x0 - d, y0 - d), (x1 + d, y0 - d), (x1 + d, y1 + d), (x0 - d, y1 + d), (x0 - d, y0 - d)]
        box = await page.locator("#map").bounding_box()
        for lon, lat in corners:
            p = await page.evaluate(f"() => window.ioc.map.project([{lon}, {lat}])")
            await page.mouse.click(box["x"] + p["x"], box["y"] + p["y"])
            await page.wait_for_timeout(150)  # terra-draw tells a click from a double-click by time
        try:
            await page.get_by_text("Shape drawn").wait_for(timeout=10_000)
        except Exception:
            await page.screenshot(path=artifact("commands_map_draw_failed.png"))
            raise AssertionError("\n".join(logs[-20:])) from None
        await page.get_by_role("button", name="Preview", exact=True).click()
        # The polygon holds the cabinet's lamps and maybe a few of a neighbour's.
        count_text = await page.locator(".cmd-count").text_content(timeout=20_000)
        n = int(count_text.split()[0])
        assert n >= len(lamps), count_text
        await page.screenshot(path=artifact("commands_map_preview_en.png"))
        await page.get_by_role("button", name="Send", exact=True).click()
        await page.locator(".cmd-counts").filter(has_text=f"succeeded {n}").wait_for(timeout=30_000)
        await page.screenshot(path=artifact("commands_map_results_en.png"))

        # The same lamps offline: a second group parks; dimming 10 % needs the count typed;
        # then it is cancelled from the panel and its lamps end failed.
        await aexecute(url, """insert into device_state (device_key, status, status_changed_at)
                               select key, 'offline', now() from devices where kind = 'streetlight'
                               on conflict (device_key) do update set status = 'offline'""")
        await page.get_by_label("level").fill("10")
        await page.get_by_role("button", name="Preview", exact=True).click()
        await page.get_by_text(f"type {n} to confirm").wait_for()
        await page.get_by_role("button", name="Send", exact=True).click()  # not yet confirmed
        await page.get_by_role("alert").filter(has_text="to confirm").first.wait_for()
        await page.get_by_label("Confirmation").fill(str(n))
        await page.get_by_role("button", name="Send", exact=True).click()
        await page.locator(".cmd-results").get_by_role("button", name="Cancel group").click()
        await page.locator(".cmd-counts").filter(has_text=f"failed {n}").wait_for(timeout=30_000)
        await page.screenshot(path=artifact("commands_map_cancelled_en.png"))

        await page.get_by_role("button", name="VI", exact=True).click()
        await page.get_by_role("region", name="Lệnh điều khiển thiết bị").wait_for()
        await page.get_by_text("bởi test-operator").first.wait_for()
        await page.screenshot(path=artifact("commands_map_history_vi.png"))


# The panel's words in each language (the keys of js/commands.js), so one walk runs in both.
WORDS = {
    "en": {"open": "Commands", "click": "Click", "line": "Street", "ward": "Ward", "cabinet": "Cabinet",
           "draw": "Draw on the map",
           "drawn": "Shape drawn", "preview": "Preview", "send": "Send", "cancel": "Cancel group",
           "confirm": "Confirmation", "to_confirm": "to confirm", "selected": "(2 selected)",
           "succeeded": "succeeded", "failed": "failed", "by": "by test-operator",
           "title": "Commands to devices"},
    "vi": {"open": "Lệnh", "click": "Nhấp chọn", "line": "Tuyến phố", "ward": "Phường", "cabinet": "Tủ điện",
           "draw": "Vẽ trên bản đồ", "drawn": "Đã vẽ", "preview": "Xem trước", "send": "Gửi",
           "cancel": "Hủy nhóm lệnh",
           "confirm": "Xác nhận", "to_confirm": "để xác nhận", "selected": "(2 đã chọn)",
           "succeeded": "thành công", "failed": "thất bại", "by": "bởi test-operator",
           "title": "Lệnh điều khiển thiết bị"},
}


async def _ringed(page, n: int) -> None:
    """The map rings n devices: the preview's and its exclusions, drawn above the device layers."""
    await page.wait_for_function(
        f"() => document.getElementById('commands-panel').dataset.ringed === '{n}'", timeout=15_000)
    await map_idle(page)  # the rings drawn, not only handed to the map


async def _preview_total(page) -> tuple[int, int]:
    count_text = await page.locator(".cmd-count").text_content(timeout=20_000)
    excluded = page.locator(".cmd-excluded li")
    return int(count_text.split()[0]), await excluded.count()


@pytest.mark.parametrize("lang", ["en", "vi"])
async def test_click_street_ward_cancel_and_history(browser, city_db_url, make_settings, mosquitto, token_for,
                                                   lang):
    """A lamp and a device that takes no dimming clicked, previewed (both ringed on the map, the
    other marked as excluded) and sent; a street drawn with its buffer shaded; a ward picked
    from the list and switched off, refused until its code is typed, parked (its lamps offline)
    and cancelled; the past groups name who sent them."""
    w = WORDS[lang]
    url = city_db_url
    [lamp] = await aq(url, """
        select l.id, ST_X(l.geom), ST_Y(l.geom) from devices l where l.kind = 'streetlight'
          and not exists (select 1 from devices o where o.kind <> 'streetlight'
                          and GeometryType(o.geom) = 'POINT'
                          and ST_DWithin(l.geom::geography, o.geom::geography, 20))
        order by l.id limit 1""")
    # A device that takes no dimming, the nearest of those 20 m or more from every lamp (so the
    # click lands on it): the preview excludes it, with its reason.
    [other] = await aq(url, """
        select o.id, ST_X(o.geom), ST_Y(o.geom) from devices o where o.kind not in ('streetlight',
          'lighting_cabinet', 'road_segment') and GeometryType(o.geom) = 'POINT'
          and not exists (select 1 from devices l where l.id <> o.id and ST_DWithin(l.geom::geography,
                          o.geom::geography, 20))
        order by o.geom <-> ST_SetSRID(ST_MakePoint(%s, %s), 4326) limit 1""", lamp[1], lamp[2])
    two = [lamp, other]
    [(line,)] = await aq(url, """
        select ST_AsGeoJSON(r.geom)::json from devices r where r.kind = 'road_segment' order by
          (select count(*) from devices l where l.kind = 'streetlight' and ST_DWithin(l.geom::geography,
             ST_MakeLine(ST_StartPoint(r.geom), ST_EndPoint(r.geom))::geography, 30)) desc, r.id limit 1""")
    [(ward,)] = await aq(url, "select ward from devices where kind = 'streetlight' and ward is not null "
                              "group by ward order by count(*), ward limit 1")
    coords = line["coordinates"]
    a, end = coords[0], coords[-1]
    b = [a[0] + (end[0] - a[0]) * 0.3, a[1] + (end[1] - a[1]) * 0.3]  # a block: close enough to see each lamp
    token = await token_for(url, "operator")
    async with running(make_settings(url)) as client, device_client(mosquitto.url, None):
        await wait_connected(client)
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}")
        await map_ready(page)
        if lang == "vi":
            await page.get_by_role("button", name="VI", exact=True).click()
        await page.get_by_role("button", name=w["open"], exact=True).click()
        panel = page.get_by_role("region", name=w["title"])
        await panel.wait_for()
        box = await page.locator("#map").bounding_box()

        async def at(lon: float, lat: float) -> tuple[float, float]:
            p = await page.evaluate(f"() => window.ioc.map.project([{lon}, {lat}])")
            return box["x"] + p["x"], box["y"] + p["y"]

        # 1. Two lamps by clicking them.
        xs, ys = [r[1] for r in two], [r[2] for r in two]
        pad = "{padding: {top: 200, bottom: 200, left: 200, right: 620}, maxZoom: 18}"
        await page.evaluate(f"() => window.ioc.live.fitTo([{min(xs)}, {min(ys)}, {max(xs)}, {max(ys)}], "
                            f"{pad})")
        await map_idle(page)
        await panel.get_by_role("radio", name=w["click"]).click()
        for _, lon, lat in two:
            await page.mouse.click(*await at(lon, lat))
        await panel.get_by_text(w["selected"]).wait_for()
        await panel.get_by_role("button", name=w["preview"], exact=True).click()
        n, x = await _preview_total(page)
        assert (n, x) == (1, 1), await panel.locator(".cmd-preview").text_content()
        await _ringed(page, 2)
        assert other[0] in await panel.locator(".cmd-excluded").text_content()
        await page.screenshot(path=artifact(f"cmd-click-{lang}.png"))
        await panel.get_by_role("button", name=w["send"], exact=True).click()
        await panel.locator(".cmd-counts").filter(has_text=f"{w['succeeded']} 1").wait_for(timeout=30_000)

        # 2. A street: a line drawn along a road segment, 30 m either side, shaded on the map.
        pad = "{padding: {top: 150, bottom: 150, left: 150, right: 560}, maxZoom: 18}"
        await page.evaluate(f"() => window.ioc.live.fitTo([{min(a[0], b[0])}, {min(a[1], b[1])}, "
                            f"{max(a[0], b[0])}, {max(a[1], b[1])}], {pad})")
        await map_idle(page)
        await panel.get_by_role("radio", name=w["line"]).click()
        assert await page.locator("#commands-panel").get_attribute("data-ringed") == "0"  # cleared
        await panel.get_by_role("button", name=w["draw"]).click()
        for lon, lat in (a, b, b):  # the last point clicked again ends the line
            await page.mouse.click(*await at(lon, lat))
            await page.wait_for_timeout(150)  # terra-draw tells a click from a double-click by time
        await panel.get_by_text(w["drawn"]).wait_for(timeout=10_000)
        assert await page.locator("#commands-panel").get_attribute("data-area") == "Polygon"  # the buffer
        await panel.get_by_role("button", name=w["preview"], exact=True).click()
        n, x = await _preview_total(page)
        assert n >= 1
        await _ringed(page, n + x)
        await page.screenshot(path=artifact(f"cmd-line-{lang}.png"))

        # 3. A ward, picked from the list with the keyboard, switched off: dangerous, so refused
        # until the ward's code is typed. Its lamps are offline: the group parks and is cancelled.
        # Cabinets come from a list too, grouped by ward.
        await panel.get_by_role("radio", name=w["cabinet"]).click()
        await panel.locator("#cmd-parent optgroup option").first.wait_for(state="attached")
        assert await panel.get_by_label(w["cabinet"], exact=True).evaluate("e => e.tagName") == "SELECT"
        await panel.get_by_role("radio", name=w["ward"]).click()
        ward_select = panel.locator("#cmd-ward")
        await ward_select.locator("option").nth(1).wait_for(state="attached")
        await ward_select.focus()
        for _ in range(await ward_select.locator("option").count()):
            await page.keyboard.press("ArrowDown")
            if await ward_select.input_value() == ward:
                break
        assert await ward_select.input_value() == ward
        assert await ward_select.evaluate("e => e === document.activeElement")  # still there to go on
        await panel.locator("#cmd-name").select_option("switch")
        assert not await panel.locator('[data-arg="on"]').is_checked()
        await aexecute(url, """insert into device_state (device_key, status, status_changed_at)
                               select key, 'offline', now() from devices where ward = %s
                               on conflict (device_key) do update set status = 'offline'""", ward)
        await panel.get_by_role("button", name=w["preview"], exact=True).click()
        n, x = await _preview_total(page)
        assert n >= 1
        await _ringed(page, n + x)
        await panel.get_by_text(f"{ward} {w['to_confirm']}").wait_for()
        await page.screenshot(path=artifact(f"cmd-ward-{lang}.png"))
        await panel.get_by_role("button", name=w["send"], exact=True).click()  # not confirmed
        await page.get_by_role("alert").filter(has_text=w["to_confirm"]).first.wait_for()
        assert await panel.locator(".cmd-counts").count() == 0
        await panel.get_by_label(w["confirm"]).fill(ward)
        await panel.get_by_role("button", name=w["send"], exact=True).click()
        await panel.locator(".cmd-results").get_by_role("button", name=w["cancel"]).click()
        await panel.locator(".cmd-counts").filter(has_text=f"{w['failed']} {n}").wait_for(timeout=30_000)

        # 4. The past groups: both, with who sent them.
        history = panel.locator(".cmd-history li")
        await page.wait_for_function("() => document.querySelectorAll('.cmd-history li').length >= 2")
        assert await history.filter(has_text=w["by"]).count() >= 2
        await map_idle(page)
        await page.screenshot(path=artifact(f"cmd-cancelled-{lang}.png"))
        await panel.locator(".cmd-history").scroll_into_view_if_needed()
        await page.screenshot(path=artifact(f"cmd-history-{lang}.png"))
        assert not page.errors, page.errors
