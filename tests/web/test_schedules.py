"""Lighting schedules in a real browser: an operator makes a dimming profile with a Tết
exception for a cabinet's lamps, sees tonight's steps and the energy it saves, and edits it
in Vietnamese, where a step the server refuses is named beside the form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

from rules.sun import H0, elevation
from tests.helpers import aq, running, wait_for
from tests.web.helpers import artifact, base_url, map_ready, new_page

TOASTS_GONE = "() => !document.querySelector('#toasts .toast')"  # they cover the panel's foot


async def shoot(page, name: str) -> None:
    await page.wait_for_function(TOASTS_GONE, timeout=15_000)
    await page.screenshot(path=artifact(name))

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def seed_power(url: str) -> tuple[str, list[str]]:
    """The busiest cabinet's lamps drew 60 % of their rated power through the last two nights
    (a reading every 15 minutes): the energy the panel shows is measured, not made up."""
    with psycopg.connect(url) as conn:
        cab = conn.execute("select parent from devices where kind = 'streetlight' and parent is not null "
                           "group by parent order by count(*) desc, parent limit 1").fetchone()[0]
        lamps = conn.execute("select id, key, ST_X(geom), ST_Y(geom), (properties->>'rated_power_w')::float "
                             "from devices where parent = %s and kind = 'streetlight' order by id",
                             (cab,)).fetchall()
        metric = conn.execute("select id from metrics where name = 'power_w'").fetchone()[0]
        for d in range(-3, 2):
            conn.execute("select ioc_ensure_telemetry_partition(%s)", ((NOW + timedelta(days=d)).date(),))
        times = [NOW - timedelta(hours=48) + timedelta(minutes=15 * i) for i in range(4 * 48)]
        copy = "copy telemetry (device_key, metric_id, ts, value, quality) from stdin"
        with conn.cursor().copy(copy) as cp:
            for _, key, lon, lat, rated in lamps:
                sun = elevation(np.array([t.timestamp() for t in times]), lat, lon)
                for t, up in zip(times, sun > H0, strict=True):
                    cp.write_row((key, metric, t, 0.0 if up else 0.6 * rated, 0))
    return cab, [r[0] for r in lamps]


async def test_an_operator_makes_and_edits_a_schedule_in_english_and_vietnamese(
        browser, city_db_url, make_settings, token_for):
    url = city_db_url
    cab, lamps = seed_power(url)
    token = await token_for(url, "operator")
    async with running(make_settings(url)) as client:
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}")
        await page.evaluate("() => localStorage.setItem('ioc.lang', 'en')")
        await map_ready(page)

        opener = page.get_by_role("button", name="Schedules", exact=True)
        await opener.click()
        panel = page.get_by_role("region", name="Lighting schedules")
        await panel.get_by_text("No lighting schedule yet").wait_for()
        await panel.get_by_role("button", name="New schedule").click()

        await panel.get_by_label("Name", exact=True).fill("Night dimming, cabinet " + cab)
        await panel.get_by_label("Assign by").select_option("parent")
        await panel.get_by_label("Cabinet").select_option(cab)
        # the default night: dusk+10 → 100 %, 23:00 → 50 %, 05:00 → 100 %, dawn-10 → 0 %
        assert await panel.get_by_label("Step 1: Minutes after (−: before)").input_value() == "10"
        await panel.get_by_label("Step 2: Level %").fill("40")
        await panel.get_by_role("button", name="Add an exception").click()
        await panel.get_by_label("Exception 1: Name").fill("Tết")
        await panel.get_by_label("Exception 1: From night of").fill("2027-02-05")
        await panel.get_by_label("Exception 1: To night of").fill("2027-02-10")
        await panel.get_by_label("Exception 1: All night at %").fill("100")
        preview = panel.locator(".sched-preview")
        await preview.get_by_text("saves", exact=False).wait_for()
        await page.wait_for_function(
            "() => document.querySelector('.sched-preview svg .line')?.getAttribute('d')?.includes('L')")
        await shoot(page, "schedules-editor-en.png")

        await panel.get_by_role("button", name="Save schedule").click()
        card = panel.locator("article.sched-card")
        await card.wait_for()
        await card.get_by_text("Saved", exact=False).wait_for(timeout=20_000)
        rows = await aq(url, "select id, target, steps, exceptions, created_by from schedules")
        assert len(rows) == 1
        sid, target, steps, exceptions, by = rows[0]
        assert target == {"parent": cab} and "test-operator" in by
        assert steps == [{"at": "dusk+10m", "level": 100}, {"at": "23:00", "level": 40},
                         {"at": "05:00", "level": 100}, {"at": "dawn-10m", "level": 0}]
        assert exceptions == [{"name": "Tết", "from": "2027-02-05", "to": "2027-02-10",
                               "steps": [{"at": "dusk", "level": 100}, {"at": "dawn", "level": 0}]}]
        # the step in force goes out to every lamp of the cabinet
        await wait_for(lambda: aq(url, "select sum(total) from command_groups where requested_by = %s",
                                  f"schedule:{sid}"), what="the step in force sent")
        assert (await aq(url, "select sum(total) from command_groups where requested_by = %s",
                         f"schedule:{sid}"))[0][0] == len(lamps)
        await card.get_by_text("Last sent", exact=False).wait_for()  # the list looks again
        text = await card.inner_text()
        assert f"{len(lamps)} lamps" in text and "Tết" in text
        assert "Saved" in text and "against all night at 100 %" in text
        pct = float(text.split("kWh (")[1].split(" %")[0])
        assert 35 < pct < 45, text  # 60 % of rated power all night: 40 % saved
        await shoot(page, "schedules-list-en.png")

        # Vietnamese: the same panel, then an edit the server refuses and one it takes.
        await page.get_by_role("button", name="VI", exact=True).click()
        vi_panel = page.get_by_role("region", name="Lịch chiếu sáng")
        await vi_panel.locator(".sched-energy-text").get_by_text("Tiết kiệm", exact=False).wait_for()
        assert await page.get_by_role("button", name="Lịch chiếu sáng", exact=True).count() == 1
        await shoot(page, "schedules-list-vi.png")
        await vi_panel.get_by_role("button", name=f"Sửa Night dimming, cabinet {cab}").click()
        await vi_panel.get_by_label("Bước 4: Số phút sau (−: trước)").fill("-500")
        await vi_panel.get_by_role("button", name="Lưu lịch").click()
        problem = vi_panel.get_by_role("alert")
        await problem.wait_for()
        assert "Bước 4 · Thời điểm" in await problem.inner_text()
        dawn = vi_panel.get_by_label("Bước 4: Số phút sau (−: trước)")
        assert await dawn.get_attribute("aria-invalid") == "true"
        await shoot(page, "schedules-error-vi.png")
        await dawn.fill("-15")
        await vi_panel.get_by_label("Tên lịch").fill("Đêm tiết kiệm — tủ " + cab)
        await vi_panel.get_by_role("button", name="Lưu lịch").click()
        await vi_panel.get_by_text("Đêm tiết kiệm — tủ " + cab).wait_for()
        row = (await aq(url, "select name, version, steps->3->>'at' from schedules where id = %s", sid))[0]
        assert row == ("Đêm tiết kiệm — tủ " + cab, 2, "dawn-15m")
        await vi_panel.get_by_role("button", name=f"Sửa Đêm tiết kiệm — tủ {cab}").click()
        await vi_panel.locator(".sched-preview svg").wait_for()
        await vi_panel.get_by_text("tiết kiệm", exact=False).first.wait_for()
        await shoot(page, "schedules-editor-vi.png")
        assert page.errors == []


async def test_a_viewer_sees_schedules_but_cannot_change_them(browser, city_db_url, make_settings,
                                                              token_for):
    url = city_db_url
    cab = (await aq(url, "select parent from devices where parent is not null and kind = 'streetlight' "
                         "limit 1"))[0][0]
    operator, viewer = await token_for(url, "operator"), await token_for(url, "viewer")
    async with running(make_settings(url)) as client:
        resp = await client.post("/api/v1/schedules", headers={"Authorization": f"Bearer {operator}"},
                                 json={"name": "Cabinet", "target": {"parent": cab},
                                       "steps": [{"at": "dusk", "level": 80}, {"at": "dawn", "level": 0}]})
        assert resp.status == 201
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={viewer}")
        await page.evaluate("() => localStorage.setItem('ioc.lang', 'en')")
        await map_ready(page)
        await page.get_by_role("button", name="Schedules", exact=True).click()
        card = page.get_by_role("article", name="Cabinet")
        await card.wait_for()
        assert await page.get_by_role("button", name="New schedule").count() == 0
        assert await card.get_by_role("button").count() == 0
        assert page.errors == []
