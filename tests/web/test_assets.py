"""Issue 18, assets, in a real browser in English and Vietnamese: the header's search
("/" focuses it, arrows and Enter pick), the device page (multi-metric chart with an enum
metric drawn as steps of its last value, connected devices of a cabinet), and moving a
device with the import's validation (the API's field error shown beside the field)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.helpers import running
from tests.web.helpers import artifact, base_url, map_ready, new_page

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
LANGS = {"en": ("en-GB", "Search", "Metrics over time", "Save", "Connected devices", "Move on map",
                "Add device", "Create"),
         "vi": ("vi-VN", "Tìm kiếm", "Chỉ số theo thời gian", "Lưu", "Thiết bị đấu nối",
                "Di chuyển trên bản đồ", "Thêm thiết bị", "Tạo")}


def seed(url: str) -> tuple[str, str]:
    """A traffic controller with 6 h of `mode` (7 by day, 8 after 3 h ago) and `volume_vph`;
    returns it and a cabinet that has lamps."""
    with psycopg.connect(url) as conn:
        tc, key = conn.execute("select id, key from devices where kind = 'traffic_controller' "
                               "order by id limit 1").fetchone()
        [cabinet] = conn.execute("select parent from devices where kind = 'streetlight' and parent "
                                 "is not null order by parent limit 1").fetchone()
        mid = dict(conn.execute("select name, id from metrics"))
        for d in (-1, 0, 1):
            conn.execute("select ioc_ensure_telemetry_partition(%s)", ((NOW + timedelta(days=d)).date(),))
        copy = "copy telemetry (device_key, metric_id, ts, value, quality) from stdin"
        with conn.cursor().copy(copy) as cp:
            for i in range(6 * 12):
                ts = NOW - timedelta(hours=6) + timedelta(minutes=5 * i)
                cp.write_row((key, mid["mode"], ts, 7.0 if ts < NOW - timedelta(hours=3) else 8.0, 0))
                cp.write_row((key, mid["volume_vph"], ts, 400.0 + 10 * (i % 12), 0))
        conn.execute("insert into device_state (device_key, values, times, status, last_seen) "
                     "values (%s, '{\"mode\": 8, \"volume_vph\": 450}', '{}', 'online', %s) "
                     "on conflict (device_key) do update set values = excluded.values",
                     (key, NOW - timedelta(minutes=1)))
    return tc, cabinet


@pytest.mark.parametrize("lang", ["en", "vi"])
async def test_search_device_page_and_move(browser, city_db_url, make_settings, token_for, lang):
    locale, search_name, chart_name, save_name, children_name, drag_name, add_name, create_name = LANGS[lang]
    tc, cabinet = seed(city_db_url)
    token = await token_for(city_db_url, "integrator")
    async with running(make_settings(city_db_url)) as client:
        page = await new_page(browser, locale=locale)
        aggs = []
        page.on("request", lambda r: aggs.append(r.url) if "/telemetry?" in r.url else None)
        await page.goto(f"{base_url(client)}/?token={token}")
        await map_ready(page)

        # "/" focuses the search; typing lists matches; ArrowDown then Enter opens the second
        await page.evaluate("() => document.activeElement?.blur()")
        await page.keyboard.press("/")
        box = page.get_by_role("combobox", name=search_name)
        assert await box.evaluate("(el) => el === document.activeElement")
        await page.keyboard.type(tc[:-1])  # e.g. TC-000 of TC-0001: several controllers
        options = page.get_by_role("option")
        await options.nth(1).wait_for()
        await page.screenshot(path=artifact(f"search-{lang}.png"))
        first = await options.nth(0).inner_text()
        assert tc in first, "the closest match first"
        await page.keyboard.press("ArrowDown")
        second_id = (await options.nth(1).inner_text()).split()[0]
        assert await options.nth(1).get_attribute("aria-selected") == "true"
        await page.keyboard.press("ArrowUp")
        await page.keyboard.press("Enter")
        panel = page.locator("#device-panel")
        await panel.locator(".dev-id", has_text=tc).wait_for()
        assert second_id != tc

        # the chart: two metrics; mode asked as the last value per bucket (steps), volume averaged
        section = panel.get_by_role("region", name=chart_name)
        await section.locator("canvas").wait_for()
        await page.wait_for_function("() => window.ioc.assets.plot?.series.length === 3")
        mode_urls = [u for u in aggs if "metric=mode" in u]
        assert mode_urls and all("agg=last" in u for u in mode_urls)
        assert any("metric=volume_vph" in u and "agg=avg" in u for u in aggs)
        stepped = await page.evaluate("() => { const p = window.ioc.assets.plot; "
                                      "return p.series.map(s => s.label); }")
        assert len(stepped) == 3
        await section.scroll_into_view_if_needed()
        await page.screenshot(path=artifact(f"device-page-{lang}.png"))

        # a cabinet lists its lamps; one click opens a lamp
        await page.evaluate("(id) => window.ioc.devicePanel.open(id)", cabinet)
        kids = panel.locator(".assets-children")
        await kids.get_by_role("heading", name=children_name).wait_for()
        lamp = (await kids.get_by_role("button").first.inner_text()).strip()
        await page.screenshot(path=artifact(f"device-page-cabinet-{lang}.png"))
        await kids.get_by_role("button", name=lamp).click()
        await panel.locator(".dev-id", has_text=lamp).wait_for()

        # move it out of the world: refused, the field named, nothing moved; then a real move
        before = await page.evaluate("() => window.ioc.devicePanel.device.geometry.coordinates")
        editor = panel.locator(".assets-editor")
        await editor.locator("summary").click()
        lon = editor.locator("input[name=lon]")
        await lon.fill("200")
        await editor.get_by_role("button", name=save_name).click()
        err = editor.locator(".field-error[data-field=lon]")
        await err.wait_for()
        assert "geometry" in await err.inner_text()
        await editor.scroll_into_view_if_needed()
        await page.screenshot(path=artifact(f"device-page-move-error-{lang}.png"))
        await lon.fill(str(before[0]))
        # drag the marker on the map 60 px to the left: the form follows, Save moves the lamp
        await editor.get_by_role("button", name=drag_name).click()
        marker = page.locator(".assets-move-marker")
        await marker.wait_for()
        await page.wait_for_function("() => !window.ioc.map.isMoving()")
        box = await marker.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        await page.mouse.move(x, y)
        await page.mouse.down()
        await page.mouse.move(x - 30, y, steps=5)
        await page.mouse.move(x - 60, y, steps=5)
        await page.mouse.up()
        await page.wait_for_function("(x) => Number(document.querySelector('input[name=lon]').value) < x",
                                     arg=before[0])
        dragged = float(await lon.input_value())
        await editor.get_by_role("button", name=save_name).click()
        await page.wait_for_function(
            "(x) => Math.abs(window.ioc.devicePanel.device?.geometry.coordinates[0] - x) < 1e-6",
            arg=dragged)
        assert await page.evaluate("() => window.ioc.devicePanel.device.properties.name"), "name kept"
        assert await marker.count() == 0, "the marker goes once saved"

        # add a device: a bad id is refused with the field named; a good one is created
        await page.get_by_role("button", name=add_name).click()
        dialog = page.get_by_role("dialog", name=add_name)
        await dialog.locator("input[name=id]").fill("bad id!")
        await dialog.locator("select[name=kind]").select_option("streetlight")
        await dialog.locator("input[name=name]").fill("Đèn mới")
        await dialog.get_by_role("button", name=create_name).click()
        await dialog.locator(".field-error[data-field=id]").wait_for()
        await page.screenshot(path=artifact(f"device-page-add-{lang}.png"))
        new_id = f"SL-NEW-{lang.upper()}"
        await dialog.locator("input[name=id]").fill(new_id)
        await dialog.get_by_role("button", name=create_name).click()
        await panel.locator(".dev-id", has_text=new_id).wait_for()
        assert await page.evaluate("() => window.ioc.devicePanel.device.properties.name") == "Đèn mới"
        assert page.errors == []
