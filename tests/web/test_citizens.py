"""A citizen on a phone, end to end, in Vietnamese and in English: files a report with a photo
that carries EXIF GPS (the upload fails once and is retried), gets a tracking code, follows
it; an operator verifies and assigns it and the crew resolves it (through the API); the
tracking page shows it resolved and takes a rating, once; the public page's statistics
count it; the public photo has no metadata. Screenshots: artifacts/web/report-*.png,
tracking-*.png, public-*.png."""

from __future__ import annotations

import io

from PIL import Image

from server.settings import ReportsSettings
from tests.helpers import aq, running
from tests.web.helpers import artifact, base_url, new_page

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}


def gps_photo() -> bytes:
    """A 3000x2000 camera-like JPEG with EXIF GPS and a camera serial number."""
    img = Image.new("RGB", (3000, 2000), (90, 90, 95))
    for x in range(0, 3000, 150):  # some structure, so the JPEG is not trivially small
        img.paste((200, 180, 40), (x, 900, x + 80, 1100))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0xA431] = "SERIAL-0042"  # BodySerialNumber
    exif[0x8825] = {1: "N", 2: (21.0, 35.0, 40.0), 3: "E", 4: (105.0, 50.0, 10.0)}
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif, quality=90)
    return out.getvalue()


async def _file_report(page, base: str, category_label: str, description: str, *, fail_once: bool):
    await page.goto(f"{base}/report")
    await page.wait_for_function("() => window.iocReport && window.iocReport.ready")
    await page.get_by_label(category_label, exact=True).check()
    await page.set_input_files("#photo-input", files=[
        {"name": "street.jpg", "mimeType": "image/jpeg", "buffer": gps_photo()}])
    await page.locator("#photos .thumb img").wait_for()
    await page.click("#use-gps")
    await page.locator("#where.set").wait_for()
    await page.fill("#description", description)
    await page.fill("#contact", "0912 000 111")
    shrunk = await page.evaluate("() => window.iocReport.state.photos.map(p => [p.blob.size, p.original])")
    assert shrunk[0][0] < shrunk[0][1], f"the photo was not made smaller on the phone: {shrunk}"

    if fail_once:  # the network drops the first upload: the page keeps everything and retries
        async def drop(route):
            await route.abort("connectionreset")
        await page.route("**/api/v1/public/reports", drop)
        await page.click("#send")
        await page.wait_for_function("() => document.querySelector('#form-error').textContent.length > 0")
        assert await page.inner_text("#send") in ("Gửi lại", "Try again")
        await page.screenshot(path=artifact("report-retry-vi.png"), full_page=True)
        await page.unroute("**/api/v1/public/reports")
    await page.click("#send")
    await page.locator("#done").wait_for()
    return (await page.inner_text("#done-code")).strip()


async def test_a_citizen_reports_follows_and_rates_on_a_phone(browser, city_db_url, make_settings,
                                                                tmp_path, token_for):
    lon, lat = (await aq(city_db_url, "select ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) "
                                      "from wards order by code limit 1"))[0]
    crew = (await aq(city_db_url, "select id from crews order by id limit 1"))[0][0]
    op = {"Authorization": f"Bearer {await token_for(city_db_url, 'operator')}"}
    crew_h = {"Authorization": f"Bearer {await token_for(city_db_url, 'crew', crew)}"}
    settings = make_settings(city_db_url, mqtt_url=None,
                             reports=ReportsSettings(photo_dir=tmp_path, rate_per_min=6000))
    async with running(settings) as client:
        base = base_url(client)
        before = await (await client.get("/api/v1/public/reports/stats?category=pothole")).json()

        # ------------------------------------------------ Vietnamese (the default)
        page = await new_page(browser, locale="vi-VN", geolocation={"latitude": lat, "longitude": lon},
                              permissions=["geolocation"], **PHONE)
        await page.goto(f"{base}/report")
        await page.wait_for_function("() => window.iocReport && window.iocReport.ready")
        assert await page.inner_text("#send") == "Gửi phản ánh"
        code = await _file_report(page, base, "Ổ gà", "Ổ gà sâu > 20 cm trước số 17",
                                  fail_once=True)
        assert len(code) >= 16
        await page.screenshot(path=artifact("report-done-vi.png"), full_page=True)

        await page.click("#done-link")
        await page.wait_for_function("() => window.iocTracking && window.iocTracking.ready")
        assert await page.inner_text("#status") == "Đã tiếp nhận"
        await page.locator(".gallery img").first.wait_for()
        await page.screenshot(path=artifact("tracking-received-vi.png"), full_page=True)

        # The operator verifies and assigns, the crew resolves (the operators' UI is elsewhere).
        rid = (await aq(city_db_url, "select report_id from report_codes where code = %s", code))[0][0]
        assert (await client.post(f"/api/v1/reports/{rid}/verify", headers=op)).status == 200
        resp = await client.post(f"/api/v1/reports/{rid}/assign", json={"crew": crew}, headers=op)
        assert resp.status == 200
        resp = await client.post(f"/api/v1/reports/{rid}/resolve", json={"note": "Đã vá ổ gà"},
                                 headers=crew_h)
        assert resp.status == 200, await resp.text()

        await page.reload()
        await page.wait_for_function("() => window.iocTracking && window.iocTracking.ready")
        assert await page.inner_text("#status") == "Đã xử lý xong"
        steps = await page.locator("#timeline li strong").all_inner_texts()
        assert steps == ["Đã tiếp nhận", "Đã xác minh", "Đã giao xử lý", "Đã xử lý xong"]
        assert "Đã vá ổ gà" in await page.inner_text("#timeline")
        await page.locator("#stars label").nth(3).click()
        await page.fill("#rate-comment", "Nhanh, cảm ơn")
        await page.screenshot(path=artifact("tracking-rating-vi.png"), full_page=True)
        await page.click("#rate-send")
        await page.get_by_text("Cảm ơn bạn đã đánh giá.").wait_for()
        assert await aq(city_db_url, "select stars, comment from report_ratings where report_id = %s", rid) \
            == [(4, "Nhanh, cảm ơn")]
        await page.screenshot(path=artifact("tracking-resolved-vi.png"), full_page=True)
        await page.reload()  # rated once: the page says so instead of asking again
        await page.wait_for_function("() => window.iocTracking && window.iocTracking.ready")
        assert await page.is_visible("#rated-stars") and not await page.is_visible("#rate-send")
        assert page.errors == []

        # The public photo is the phone's re-encoding, cleaned again: no EXIF, no GPS, no serial.
        doc = await (await client.get(f"/api/v1/public/reports/{code}")).json()
        assert "0912" not in str(doc)
        (url,) = doc["photos"]
        raw = await (await client.get(url)).read()
        img = Image.open(io.BytesIO(raw))
        assert max(img.size) <= 1600 and len(img.getexif()) == 0 and "exif" not in img.info
        assert b"SERIAL-0042" not in raw and b"PhoneMaker" not in raw

        # ------------------------------------------------ the statistics count it
        after = await (await client.get("/api/v1/public/reports/stats?category=pothole")).json()
        assert after["received"] == before["received"] + 1 and after["resolved"] == before["resolved"] + 1

        # ------------------------------------------------ English, the public page
        pub = await new_page(browser, locale="en-GB", **PHONE)
        await pub.goto(f"{base}/public")
        await pub.wait_for_function("() => window.iocPublic && window.iocPublic.ready", timeout=60_000)
        await pub.click(".cz-lang [data-lang=en]")
        await pub.select_option("#f-by", "category")
        await pub.locator("#stats-table td", has_text="Pothole").wait_for()
        row = pub.locator("#stats-table tbody tr", has_text="Pothole")
        cells = await row.locator("td").all_inner_texts()
        assert int(cells[1]) == after["received"] and int(cells[2]) == after["resolved"]
        await pub.select_option("#f-category", "pothole")
        await pub.wait_for_function("() => window.iocPublic.features.length > 0 && window.iocPublic.features"
                                    ".every(f => f.properties.category === 'pothole')")
        assert "0912" not in await pub.content()
        await pub.wait_for_function("() => window.iocPublic.map.areTilesLoaded()")
        await pub.screenshot(path=artifact("public-en.png"), full_page=True)
        assert pub.errors == []

        # ------------------------------------------------ English, a report placed on the map
        en = await new_page(browser, locale="en-GB", **PHONE)
        await en.goto(f"{base}/report")
        await en.wait_for_function("() => window.iocReport && window.iocReport.ready")
        await en.click(".cz-lang [data-lang=en]")
        assert await en.inner_text("#send") == "Send report"
        await en.get_by_label("Streetlight out", exact=True).check()
        await en.click("#pick-map")
        await en.wait_for_function("() => window.iocReport.map && window.iocReport.map.loaded()",
                                   timeout=60_000)
        await en.locator("#pick-map-box canvas").click()  # scrolled into view, then its centre
        await en.locator("#where.set").wait_for()
        assert (await en.inner_text("#where")).startswith("Location:")
        await en.fill("#description", "The lamp at the corner has been dark for two nights")
        await en.wait_for_function("() => window.iocReport.map.areTilesLoaded()")
        await en.screenshot(path=artifact("report-map-en.png"), full_page=True)
        await en.click("#send")
        await en.locator("#done").wait_for()
        en_code = (await en.inner_text("#done-code")).strip()
        await en.click("#done-link")
        await en.wait_for_function("() => window.iocTracking && window.iocTracking.ready")
        assert await en.inner_text("#status") == "Received"
        assert await en.inner_text("#category") == "Streetlight out"
        await en.screenshot(path=artifact("tracking-received-en.png"), full_page=True)
        assert en_code != code and en.errors == []
