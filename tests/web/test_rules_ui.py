"""Alarm rules in a real browser: an integrator makes a threshold rule with the form built
from the rule schema (a bad limit is named beside its field), backtests it over the last
days (the alarms it would have raised on a timeline and as rings on the map), saves it,
disables it and reads its history, in English and then in Vietnamese."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from tests.helpers import aq, running, wait_for
from tests.web.helpers import artifact, base_url, map_idle, map_ready, new_page

TOASTS_GONE = "() => !document.querySelector('#toasts .toast')"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
RULE_ID = "web-low-pressure"
MARKERS = ("() => { const m = window.ioc.map; return m.getLayer('rules-backtest') && "
           "m.queryRenderedFeatures({layers: ['rules-backtest']}).length; }")


async def shoot(page, name: str) -> None:
    await page.wait_for_function(TOASTS_GONE, timeout=15_000)
    await page.screenshot(path=artifact(name))


def seed_pressure(url: str) -> list[str]:
    """Three pressure sensors read every 10 minutes for three days; the first dips below
    1.5 bar for half an hour twice a day, the second once, the third never."""
    with psycopg.connect(url) as conn:
        sensors = conn.execute("select id, key from devices where kind = 'pressure_sensor' "
                               "order by id limit 3").fetchall()
        metric = conn.execute("select id from metrics where name = 'pressure_bar'").fetchone()[0]
        for d in range(-4, 2):
            conn.execute("select ioc_ensure_telemetry_partition(%s)", ((NOW + timedelta(days=d)).date(),))
        start = NOW - timedelta(days=3)
        copy = "copy telemetry (device_key, metric_id, ts, value, quality) from stdin"
        with conn.cursor().copy(copy) as cp:
            for i in range(6 * 24 * 3):
                t = start + timedelta(minutes=10 * i)
                hour = i / 6 % 24
                for n, (_, key) in enumerate(sensors):
                    dip = (n == 0 and (6 <= hour < 6.5 or 18 <= hour < 18.5)) or \
                          (n == 1 and i // 6 == 30)
                    cp.write_row((key, metric, t, 1.1 if dip else 3.2, 0))
    return [s[0] for s in sensors]


async def test_an_integrator_makes_backtests_saves_and_disables_a_rule(
        browser, city_db_url, make_settings, token_for):
    url = city_db_url
    s1, s2, _ = seed_pressure(url)
    token = await token_for(url, "integrator")
    async with running(make_settings(url)) as client:
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}")
        await page.evaluate("() => localStorage.setItem('ioc.lang', 'en')")
        await map_ready(page)

        await page.get_by_role("button", name="Rules", exact=True).click()
        panel = page.get_by_role("region", name="Alarm rules")
        await panel.get_by_text("No rules yet.").wait_for()
        await panel.get_by_role("button", name="New rule").click()
        form = page.get_by_role("region", name="New rule")
        assert await form.get_by_label("Rule kind").input_value() == "threshold"
        # every kind has its form, from the schema, each field with its help
        kinds = {"rate_of_change": "Window", "stale": "Missed intervals", "fault": "Bad readings",
                 "state": "Alarm values", "lighting_schedule": "Margin", "topology": "Member rule",
                 "neighbourhood": "Radius (m)", "threshold": "Deadband"}
        for kind, field in kinds.items():
            await form.get_by_label("Rule kind").select_option(kind)
            await form.get_by_label(field, exact=True).wait_for()
            helps = await form.locator(".rules-field .rules-help").all_inner_texts()
            assert helps and all(h.strip() for h in helps), (kind, helps)
        # every field explains itself (help from the form's strings or the schema)
        deadband = form.get_by_label("Deadband")
        assert "chattering" in await deadband.evaluate(
            "el => document.getElementById(el.getAttribute('aria-describedby').split(' ')[0]).textContent")
        await form.get_by_label("Rule id").fill(RULE_ID)
        await form.get_by_label("Device kind").fill("pressure_sensor")
        await form.get_by_label("Metric").select_option("pressure_bar")
        await form.get_by_label("Below", exact=True).fill("low")
        await form.get_by_label("Severity", exact=True).select_option("major")
        await form.get_by_label("On delay").fill("5m")

        # A limit that is not a number: the server's reason, beside the field.
        await form.get_by_role("button", name="Backtest").click()
        below = form.get_by_label("Below", exact=True)
        await page.wait_for_function(
            "() => document.getElementById('rules-f-below').getAttribute('aria-invalid') === 'true'")
        assert "valid number" in await form.locator("#rules-f-below-err").inner_text()
        await shoot(page, "rules-error-en.png")

        await below.fill("1.5")
        await form.get_by_label("Days").select_option("3")
        await form.get_by_role("button", name="Backtest").click()
        summary = form.locator(".rules-bt-summary")
        await summary.wait_for()
        text = await summary.inner_text()
        # s1: two 30-minute dips a day for three days (the first may straddle the start);
        # s2: one; the 5-minute on-delay keeps each.
        assert "Would have raised" in text and "on 2 devices" in text, text
        assert await form.get_by_label("Below", exact=True).get_attribute("aria-invalid") is None
        assert await form.locator(".rules-bt-chart canvas").count() >= 1  # the uPlot timeline
        assert "Alarms active" in await form.locator(".rules-bt-chart .u-legend").inner_text()
        await map_idle(page)
        await page.wait_for_function(MARKERS, timeout=20_000)
        marked = await page.evaluate(
            "() => window.ioc.map.queryRenderedFeatures({layers: ['rules-backtest']})"
            ".map(f => f.properties.device)")
        assert set(marked) == {s1, s2}, marked
        await shoot(page, "rules-backtest-en.png")
        assert (await aq(url, "select count(*) from rules"))[0][0] == 0  # nothing saved yet

        await form.get_by_role("button", name="Save rule").click()
        card = panel.locator(f"article.rules-card[data-rule='{RULE_ID}']")
        await card.wait_for()
        stored = await aq(url, "select document, enabled from rules where id = %s", RULE_ID)
        assert stored[0][0]["below"] == 1.5 and stored[0][0]["on_delay"] == 300.0 and stored[0][1]
        assert stored[0][0]["select"]["kind"] == ["pressure_sensor"]
        assert await page.evaluate(MARKERS) in (None, 0, False)  # the list clears the markers

        # Disable from the list: the switch is a checkbox named after the rule.
        switch = panel.get_by_role("checkbox", name=f"Enabled: {RULE_ID}")
        assert await switch.is_checked()
        await switch.uncheck()
        await wait_for(lambda: aq(url, "select 1 from rules where id = %s and not enabled", RULE_ID),
                       what="the rule disabled")
        assert (await aq(url, "select enabled from rules where id = %s", RULE_ID))[0][0] is False
        await shoot(page, "rules-list-en.png")

        await panel.get_by_role("button", name=f"History of {RULE_ID}").click()
        history = page.get_by_role("region", name=f"History of {RULE_ID}")
        changes = history.locator("li.rules-change")
        await changes.first.wait_for()
        assert await changes.count() == 2
        newest = await changes.nth(0).inner_text()
        assert "disabled" in newest and "test-integrator (integrator)" in newest
        assert "Enabled" in newest and "yes" in newest and "no" in newest
        assert "created" in await changes.nth(1).inner_text()
        await shoot(page, "rules-history-en.png")

        # Vietnamese: the history, then the form and a backtest, then enable again.
        await page.get_by_role("button", name="VI", exact=True).click()
        vi_history = page.get_by_role("region", name=f"Lịch sử {RULE_ID}")
        await vi_history.get_by_text("tắt", exact=True).wait_for()
        assert "Đang bật" in await vi_history.locator("li.rules-change").first.inner_text()
        await shoot(page, "rules-history-vi.png")
        await vi_history.get_by_role("button", name="Về danh sách").click()
        vi_panel = page.get_by_role("region", name="Quy tắc cảnh báo")
        await vi_panel.get_by_role("button", name=f"Sửa {RULE_ID}").click()
        vi_form = page.get_by_role("region", name=f"Sửa quy tắc {RULE_ID}")
        assert await vi_form.get_by_label("Dưới ngưỡng").input_value() == "1.5"
        assert await vi_form.get_by_label("Trễ bật").input_value() == "5m"
        await vi_form.get_by_label("Dưới ngưỡng").fill("1.2")
        await vi_form.get_by_role("button", name="Chạy thử").click()
        await vi_form.locator(".rules-bt-summary").get_by_text("Sẽ phát", exact=False).wait_for()
        assert "Cảnh báo đang mở" in await vi_form.locator(".rules-bt-chart .u-legend").inner_text()
        await page.wait_for_function(MARKERS, timeout=20_000)
        await shoot(page, "rules-backtest-vi.png")
        await vi_form.get_by_role("button", name="Lưu quy tắc").click()
        await vi_panel.get_by_role("checkbox", name=f"Bật: {RULE_ID}").check()
        await wait_for(lambda: aq(url, "select enabled from rules where id = %s and "
                                       "(document->>'below')::float = 1.2", RULE_ID),
                       what="the edit saved and the rule enabled")
        await vi_panel.get_by_role("button", name=f"Lịch sử {RULE_ID}").click()
        vi_history = page.get_by_role("region", name=f"Lịch sử {RULE_ID}")
        await vi_history.locator("li.rules-change").nth(3).wait_for()
        actions = await vi_history.locator("li.rules-change .chip").all_inner_texts()
        assert actions == ["bật", "sửa", "tắt", "tạo mới"], actions
        await shoot(page, "rules-history-vi-2.png")
        assert page.errors == []
