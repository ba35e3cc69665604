"""Commands from the map in a real browser: an operator draws a polygon around a cabinet's
lamps, previews, sends, and watches every lamp's result arrive on the websocket; then the
same panel in Vietnamese shows the group in the history with who sent it."""

from __future__ import annotations

import pytest

from tests.helpers import aexecute, aq, running, wait_connected
from tests.server.test_commands import device_client
from tests.web.helpers import artifact, base_url, map_ready, new_page

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
