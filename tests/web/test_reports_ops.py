"""Issue 14's "How it is checked", end to end in a browser, in Vietnamese and in English: a
citizen on a phone files a report with a photo that carries EXIF GPS; the operator's console
(open before the report existed) sees it appear live on the map and in the reports panel,
verifies and assigns it; the crew, on its phone's /crew page, starts it and resolves it with
an after-photo; the citizen's tracking page shows it resolved with the after-photo and takes
a rating; the public statistics count it; every public photo comes without metadata.
Screenshots: artifacts/web/reports-ops-*-{vi,en}.png."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from server.settings import ReportsSettings
from tests.helpers import aq, running
from tests.web.helpers import artifact, base_url, map_idle, map_ready, new_page
from tests.web.test_citizens import PHONE, _file_report, gps_photo

WORDS = {
    "vi": {"category": "Ổ gà", "received": "Đã tiếp nhận", "verified": "Đã xác minh",
           "assigned": "Đã giao xử lý", "resolved": "Đã xử lý xong", "rated": "Cảm ơn bạn đã đánh giá.",
           "reports_tab": "Phản ánh", "note": "Đã vá ổ gà, lu lèn phẳng", "confirmed": "Người dân"},
    "en": {"category": "Pothole", "received": "Received", "verified": "Verified",
           "assigned": "Assigned to a team", "resolved": "Resolved", "rated": "Thank you for your rating.",
           "reports_tab": "Reports", "note": "Hole filled and rolled flat", "confirmed": "Citizens"},
}


@pytest.mark.parametrize("lang", ["vi", "en"])
async def test_report_handled_end_to_end_by_citizen_operator_and_crew(
        browser, city_db_url, make_settings, tmp_path, token_for, lang):
    w = WORDS[lang]
    lon, lat = (await aq(city_db_url, "select ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) "
                                      "from wards order by code limit 1"))[0]
    crew = (await aq(city_db_url, "select id from crews order by id limit 1"))[0][0]
    settings = make_settings(city_db_url, mqtt_url=None,
                             reports=ReportsSettings(photo_dir=tmp_path, rate_per_min=6000))
    async with running(settings) as client:
        base = base_url(client)
        before = await (await client.get("/api/v1/public/reports/stats?category=pothole")).json()

        # a dark lamp with an open alarm, which a citizen's lamp-out report will join
        lamp, lamp_lon, lamp_lat = (await aq(
            city_db_url, "select id, ST_X(geom), ST_Y(geom) from devices "
                         "where kind = 'streetlight' order by id limit 1"))[0]
        alarm = (await aq(
            city_db_url, "insert into alarms (rule, device, severity, message, dedup_key, geom) "
                         "values ('lamp-dark', %s, 'major', 'lamp dark', 'k-web', "
                         "(select geom from devices where id = %s)) returning id", lamp, lamp))[0][0]

        # ------------------------------------------------ the operator's console, open already
        console = await new_page(browser, locale="vi-VN" if lang == "vi" else "en-GB")
        token = await token_for(city_db_url, "operator")
        await console.goto(f"{base}/?token={token}#map=16/{lat}/{lon}")
        await map_ready(console)
        await console.click(f".top-right [data-lang={lang}]")
        assert await console.evaluate("() => window.ioc.map.getLayer('live-reports').type") == "symbol"
        await console.wait_for_function("() => window.ioc.socket.ws && window.ioc.socket.ws.readyState === 1")
        await console.locator(f'.alarm[data-alarm-id="{alarm}"]').wait_for()
        form = aiohttp.FormData()
        for k, v in {"category": "streetlight_out", "lat": f"{lamp_lat:.6f}", "lon": f"{lamp_lon:.6f}",
                     "description": "dark for two nights"}.items():
            form.add_field(k, v)
        assert (await client.post("/api/v1/public/reports", data=form)).status == 201
        badge = console.locator(f'.alarm[data-alarm-id="{alarm}"] .citizens-confirmed')
        await badge.wait_for()  # live: the report's message names the alarm it joined
        assert (await badge.inner_text()).startswith(w["confirmed"])
        await console.locator(f'.alarm[data-alarm-id="{alarm}"]').screenshot(
            path=artifact(f"reports-ops-confirmed-{lang}.png"))
        await console.get_by_role("tab", name=w["reports_tab"]).click()

        # ------------------------------------------------ the citizen files it from a phone
        phone = await new_page(browser, locale="vi-VN", geolocation={"latitude": lat, "longitude": lon},
                               permissions=["geolocation"], **PHONE)
        if lang == "en":
            await phone.goto(f"{base}/report")
            await phone.wait_for_function("() => window.iocReport && window.iocReport.ready")
            await phone.click(".cz-lang [data-lang=en]")
        code = await _file_report(phone, base, w["category"], f"{w['category']} > 20 cm, số 17",
                                  fail_once=False)
        rid = (await aq(city_db_url, "select report_id from report_codes where code = %s", code))[0][0]

        # ------------------------------------------------ it appears live: panel and map
        item = console.locator(f'.report[data-report-id="{rid}"]')
        await item.wait_for(timeout=10_000)  # no reload: the websocket's "report" message
        assert await item.get_attribute("data-status") == "received"
        await map_idle(console)
        on_map = await console.evaluate(
            f"() => window.ioc.map.queryRenderedFeatures({{layers: ['live-reports']}})"
            f".filter(f => f.properties.id === {rid}).length")
        assert on_map == 1
        # the operator sees the contact (never shown publicly) and acts
        await item.locator(".report-head").click()
        await item.locator(".rp-timeline li").first.wait_for()
        assert "0912 000 111" in await item.inner_text()
        await item.locator("[data-action=verify]").click()
        sel = f'.report[data-report-id="{rid}"]'
        await console.locator(f"{sel}[data-status=verified]").wait_for()
        await console.locator(f"{sel} select[data-action=assign]").select_option(crew)
        await console.locator(f"{sel}[data-status=assigned]").wait_for()
        item = console.locator(sel)
        comment = "Crew on the way" if lang == "en" else "Tổ đang đến"
        await item.locator(".rp-comment input").fill(comment)
        await item.locator(".rp-comment [type=submit]").click()
        await item.locator(".rp-ev-note", has_text=comment).wait_for()
        timeline = await item.locator(".rp-timeline").inner_text()
        assert w["verified"] in timeline and w["assigned"] in timeline and "test-operator" in timeline
        if lang == "en":  # merge and reject through the panel (once: the browser test's time is counted)
            # the same hole reported again 120 m away (beyond intake's 50 m): the operator merges it
            form = aiohttp.FormData()
            for k, v in {"category": "pothole", "lat": f"{lat + 0.0011:.6f}", "lon": f"{lon:.6f}",
                         "description": "hole again"}.items():
                form.add_field(k, v)
            twin = await (await client.post("/api/v1/public/reports", data=form)).json()
            twin_id = (await aq(city_db_url, "select report_id from report_codes where code = %s",
                                twin["code"]))[0][0]
            twin_item = console.locator(f'.report[data-report-id="{twin_id}"]')
            await twin_item.locator(".report-head").click()
            await twin_item.locator(".rp-timeline li").first.wait_for()
            await twin_item.locator("select[data-action=merge]").select_option(str(rid))
            await twin_item.wait_for(state="detached")
            await console.locator(f"{sel} .rp-reporters").wait_for()  # 2 citizens now
            # the lamp-out report is rejected with a reason its citizen reads
            lamp_report = (await aq(city_db_url, "select id from reports "
                                                 "where category = 'streetlight_out'"))[0][0]
            lamp_item = console.locator(f'.report[data-report-id="{lamp_report}"]')
            await lamp_item.locator(".report-head").click()
            await lamp_item.locator("[data-action=reject]").click()
            reason = "Already being repaired" if lang == "en" else "Đang được sửa chữa"
            await lamp_item.locator(".rp-reject input").fill(reason)
            await lamp_item.locator("[data-action=reject-send]").click()
            await lamp_item.wait_for(state="detached")  # the "open" filter: rejected ones leave the list
            status = await aq(city_db_url, "select status from reports where id = %s", lamp_report)
            assert status == [("rejected",)]
            await item.locator(".report-head").click()  # back to the pothole, for the screenshot
            await item.locator(".rp-timeline li").first.wait_for()
        kpi_open = console.locator(".reports-kpis [data-kpi=open] .kpi-num")
        await console.wait_for_function("() => document.querySelector('.reports-kpis [data-kpi=open] "
                                        ".kpi-num').textContent !== '–'")
        assert int(await kpi_open.inner_text()) >= 1
        await map_idle(console)
        await console.screenshot(path=artifact(f"reports-ops-console-{lang}.png"))

        # ------------------------------------------------ the crew starts and resolves it
        crew_page = await new_page(browser, locale="vi-VN" if lang == "vi" else "en-GB", **PHONE)
        crew_token = await token_for(city_db_url, "crew", crew)
        await crew_page.goto(f"{base}/crew?token={crew_token}")
        await crew_page.click(f".crew-tools [data-lang={lang}]")
        card = crew_page.locator(f'.crew-report[data-report-id="{rid}"]')
        await card.wait_for(timeout=15_000)
        await card.locator("[data-report-action=start]").click()
        await crew_page.locator(f'.crew-report[data-report-id="{rid}"][data-status=in_progress]').wait_for()
        # the console follows the crew's step live
        await console.locator(f'.report[data-report-id="{rid}"][data-status=in_progress]').wait_for()
        card = crew_page.locator(f'.crew-report[data-report-id="{rid}"]')
        await card.locator("[data-report-action=resolve]").click()
        await card.locator("textarea").fill(w["note"])
        await card.locator("input[type=file]").set_input_files(files=[
            {"name": "after.jpg", "mimeType": "image/jpeg", "buffer": gps_photo()}])
        await crew_page.screenshot(path=artifact(f"reports-ops-crew-resolve-{lang}.png"), full_page=True)
        await card.locator("[data-report-action=resolve-send]").click()
        done = crew_page.locator(f'.crew-report[data-report-id="{rid}"][data-status=resolved]')
        await done.wait_for(timeout=15_000)
        await done.locator(".rp-photos img").last.wait_for()
        await crew_page.screenshot(path=artifact(f"reports-ops-crew-done-{lang}.png"), full_page=True)
        await console.select_option("[data-filter=status]", "all")  # resolved ones are not "open"
        await console.locator(f'.report[data-report-id="{rid}"][data-status=resolved]').wait_for()

        # ------------------------------------------------ the citizen follows and rates it
        await phone.goto(f"{base}/reports/{code}")
        await phone.wait_for_function("() => window.iocTracking && window.iocTracking.ready")
        assert await phone.inner_text("#status") == w["resolved"]
        assert w["note"] in await phone.inner_text("#timeline")
        assert await phone.locator(".gallery img").count() == 2  # before and after
        await phone.locator(".gallery img").last.evaluate(
            "img => img.complete || new Promise(r => img.addEventListener('load', r))")
        await phone.locator("#stars label").nth(4).click()
        await phone.screenshot(path=artifact(f"reports-ops-tracking-{lang}.png"), full_page=True)
        await phone.click("#rate-send")
        await phone.get_by_text(w["rated"]).wait_for()

        # ------------------------------------------------ public: statistics, photos clean
        after = await (await client.get("/api/v1/public/reports/stats?category=pothole")).json()
        # the twin merged into it is one report, received and resolved
        assert after["received"] == before["received"] + 1 and after["resolved"] == before["resolved"] + 1
        doc = await (await client.get(f"/api/v1/public/reports/{code}")).json()
        assert "0912" not in str(doc) and len(doc["before"]) == 1 and len(doc["after"]) == 1
        if lang == "en":
            assert doc["reporters"] == 2  # the merged twin's citizen follows it too
            twin_doc = await (await client.get(f"/api/v1/public/reports/{twin['code']}")).json()
            assert twin_doc["code"] == twin["code"] and twin_doc["status"] == "resolved"
        for url in doc["before"] + doc["after"]:
            raw = await (await client.get(url)).read()
            with Image.open(io.BytesIO(raw)) as img:
                assert len(img.getexif()) == 0 and "exif" not in img.info and max(img.size) <= 1600
            assert b"SERIAL-0042" not in raw and b"PhoneMaker" not in raw
        for page in (console, phone, crew_page):
            assert page.errors == []
