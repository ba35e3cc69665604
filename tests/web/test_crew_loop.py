"""The crew loop in a real browser, in English and Vietnamese (issue 18 point 7, issue 14
point 7): a crew on a phone starts and finishes an alarm with a note and a photo, and a
tree's work order likewise; the operator sees "done", views the photo, closes the alarm,
reopens another, and sees the tree's work order with its history and photo."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from server.settings import ReportsSettings
from tests.helpers import aq, q, running, wait_for
from tests.web.helpers import artifact, base_url, map_idle, map_ready, new_page

TREE = "TREE-WEB-1"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}
LABELS = {  # what a person reads on the buttons, per language
    "en": {"start": "Start work", "done": "Work done", "close": "Close alarm", "reopen": "Reopen",
           "badge": "Done", "wo_done": "Work done", "closed": "Closed", "order": "Order work"},
    "vi": {"start": "Bắt đầu xử lý", "done": "Đã xong", "close": "Đóng cảnh báo", "reopen": "Mở lại",
           "badge": "Hoàn thành", "wo_done": "Đã xong", "closed": "Đã đóng", "order": "Giao việc"},
}


def photo_file(path, colour) -> str:
    img = Image.new("RGB", (1600, 1200), colour)
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"
    exif[0x8825] = {1: "N", 2: (21.0, 1.0, 30.0), 3: "E", 4: (105.0, 50.0, 10.0)}  # GPS
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    path.write_bytes(buf.getvalue())
    return str(path)


async def world(url: str) -> dict:
    await aq(url, "insert into crews (id, name) values ('north', 'North crew') returning id")
    lamp, lon, lat = (await aq(url, "select id, ST_X(geom), ST_Y(geom) from devices "
                                    "where kind = 'streetlight' order by id limit 1"))[0]
    ids = {}
    for name, state, active in (("live", "active_acked", True), ("old", "closed", False)):
        ids[name] = (await aq(
            url, "insert into alarms (rule, device, severity, message, dedup_key, assigned_crew, work_state, "
                 "state, active, acked_at, acked_by, closed_at, geom) values (%s, %s, 'major', %s, %s, "
                 "'north', 'open', %s, %s, now(), 'op', case when %s = 'closed' then now() end, "
                 "(select geom from devices where id = %s)) returning id",
            f"web-{name}", lamp, f"lamp out ({name})", f"k-{name}", state, active, state, lamp))[0][0]
    await aq(url, "insert into devices (id, kind, name, geom, properties) values (%s, 'tree', 'Sao đen', "
                  "ST_SetSRID(ST_MakePoint(%s, %s), 4326), '{\"species\": \"Hopea odorata\", "
                  "\"height_m\": 14, \"trunk_diameter_cm\": 42, \"planted\": \"1998\", "
                  "\"condition\": \"fair\"}') returning id", TREE, lon - 0.0004, lat - 0.0001)
    ids["order"] = (await aq(url, "insert into work_orders (device, type, crew, note, created_by) values "
                                  "(%s, 'pruning', 'north', 'branches over the road', 'op') returning id",
                             TREE))[0][0]
    await aq(url, "insert into work_order_events (work_order_id, status, note, by) values "
                  "(%s, 'open', 'branches over the road', 'op') returning id", ids["order"])
    return {**ids, "lamp": lamp, "lon": lon, "lat": lat}


def value(url: str, sql: str, *args):
    return q(url, sql, *args)[0][0]


@pytest.mark.parametrize("lang", ["en", "vi"])
async def test_crew_finishes_and_operator_closes(browser, city_db_url, make_settings, token_for, tmp_path,
                                                 lang):
    w = await world(city_db_url)
    words = LABELS[lang]
    crew_token = await token_for(city_db_url, "crew", "north")
    op_token = await token_for(city_db_url, "operator")
    settings = make_settings(city_db_url, mqtt_url=None,
                             reports=ReportsSettings(photo_dir=tmp_path / "report-photos"))
    async with running(settings) as client:
        # ---- the crew, on a phone
        phone = await new_page(browser, **PHONE)
        await phone.goto(f"{base_url(client)}/crew?token={crew_token}")
        await phone.wait_for_function("() => window.iocCrew && window.iocCrew.ready", timeout=30_000)
        await phone.locator(f"header [data-lang={lang}]").click()
        job = phone.locator(f"article.job[data-alarm-id='{w['live']}']")
        await job.get_by_role("button", name=words["start"]).click()
        await job.get_by_role("textbox").fill("Đang thay bóng" if lang == "vi" else "Replacing the lamp")
        await job.locator(".work-form button[type=submit]").click()
        await wait_for(lambda: value(city_db_url, "select work_state from alarms where id = %s",
                                     w["live"]) == "in_progress", blocking=True)
        await job.get_by_role("button", name=words["done"]).click()
        note = "Đã thay bóng LED 60 W" if lang == "vi" else "Replaced with a 60 W LED"
        await job.get_by_role("textbox").fill(note)
        await job.locator(".work-form input[type=file]").set_input_files(
            photo_file(tmp_path / "after.jpg", (40, 140, 70)))
        await phone.screenshot(path=artifact(f"crew-loop-form-{lang}.png"))
        await job.locator(".work-form button[type=submit]").click()
        await wait_for(lambda: value(city_db_url, "select work_state from alarms where id = %s",
                                     w["live"]) == "done", blocking=True)
        await phone.locator(f"article.job[data-alarm-id='{w['live']}'][data-work=done]").wait_for()
        # the tree's work order, done the same way
        order = phone.locator(f"article.work-order[data-work-order-id='{w['order']}']")
        await order.scroll_into_view_if_needed()
        await order.get_by_role("button", name=words["wo_done"]).click()
        await order.get_by_role("textbox").fill("Đã cắt 3 cành" if lang == "vi" else "Cut 3 branches")
        await order.locator(".work-form input[type=file]").set_input_files(
            photo_file(tmp_path / "tree.jpg", (30, 90, 160)))
        await order.locator(".work-form button[type=submit]").click()
        await wait_for(lambda: value(city_db_url, "select status from work_orders where id = %s",
                                     w["order"]) == "done", blocking=True)
        await phone.locator(f"article.work-order[data-work-order-id='{w['order']}'][data-status=done]"
                            ).wait_for()
        await phone.screenshot(path=artifact(f"crew-loop-phone-{lang}.png"), full_page=True)
        assert phone.errors == []

        # ---- the operator, on the map
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={op_token}#map=18/{w['lat']}/{w['lon']}&device={TREE}")
        await map_ready(page)
        await page.locator(f"header [data-lang={lang}]").click()
        card = page.locator(f"#alarm-list .alarm[data-alarm-id='{w['live']}']")
        await card.locator(".work-chip[data-work=done]").wait_for()
        assert (await card.locator(".work-chip").inner_text()).strip() == words["badge"]
        assert note in await card.locator(".alarm-crew").inner_text()
        thumb = card.locator(".alarm-crew img")
        await page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                                     arg=await thumb.element_handle())
        # the tree's panel: its attributes and the work order with the crew's photo
        tree = page.locator("#device-panel .tree-section")
        await tree.locator(f".wo-item[data-work-order-id='{w['order']}'][data-status=done]").wait_for()
        assert "Hopea odorata" in await tree.inner_text()
        await page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                                     arg=await tree.locator(".wo-item img").element_handle())
        await map_idle(page)
        await page.screenshot(path=artifact(f"crew-loop-operator-{lang}.png"))
        # the photo, large
        await card.locator("button.photo-thumb").click()
        big = page.locator("dialog.photo-view img")
        await page.wait_for_function("(img) => img.complete && img.naturalWidth >= 1000",
                                     arg=await big.element_handle())
        await page.screenshot(path=artifact(f"crew-loop-photo-{lang}.png"))
        await page.locator("dialog.photo-view button").click()
        # close it
        await card.get_by_role("button", name=words["close"]).click()
        await wait_for(lambda: value(city_db_url, "select state from alarms where id = %s",
                                     w["live"]) == "closed", blocking=True)
        await card.wait_for(state="detached")
        # reopen the one closed before: unacknowledged again
        await page.get_by_role("button", name=words["closed"], exact=True).click()
        old = page.locator(f"#alarm-list .alarm[data-alarm-id='{w['old']}']")
        await page.screenshot(path=artifact(f"crew-loop-closed-{lang}.png"))
        await old.get_by_role("button", name=words["reopen"]).click()
        await wait_for(lambda: value(city_db_url, "select state from alarms where id = %s",
                                     w["old"]) == "rtn_unacked", blocking=True)
        # and order more work on the tree from its panel
        await tree.get_by_role("combobox").first.select_option("inspection")
        await tree.get_by_role("button", name=words["order"]).click()
        await wait_for(lambda: value(city_db_url, "select count(*) from work_orders where device = %s",
                                     TREE) == 2, blocking=True)
        assert page.errors == []
    events = q(city_db_url, "select event, actor from alarm_events where alarm_id = %s order by id",
               w["live"])
    assert [e for e, _ in events] == ["work", "work", "closed"] and all(a for _, a in events)
