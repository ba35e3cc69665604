"""Alarm history in a real browser (issue 18.4): an operator filters the history down to a
closed alarm, opens its timeline (raised, comment, shelving with its reason, the crew's
finished work with note and photo, an event type the console does not know, closed), takes
an open alarm out of service from the console (it stops counting as open on the badge), and
reads the ISA-18.2 KPI charts; then the same in Vietnamese, where a pressure alarm reads
"Áp suất 1.98 bar dưới ngưỡng 2.0"."""

from __future__ import annotations

import orjson

from server.keys import ALARMS
from tests.helpers import aexecute, aq, publisher, running, wait_connected, wait_for
from tests.web.helpers import artifact, base_url, map_ready, new_page

RULES = """\
rules:
  - id: web-hist-low
    kind: threshold
    select: {kind: pressure_sensor}
    metric: pressure_bar
    below: 2.0
    severity: minor
"""


# The console's own modules (the same instances as the page's): each message in vi, then en.
WORDED = """async () => {
  const { localMessage, alarmMessage } = await import('/static/js/alarmtext.js');
  const { setLang } = await import('/static/js/i18n.js');
  const alarms = [
    {context: {rule_kind: 'threshold', metric: 'noise_dba', unit: 'dB(A)', value: 81.5, limit: 75,
               direction: 'above', event: 'raise'}},
    {context: {rule_kind: 'rate_of_change', metric: 'pressure_bar', unit: 'bar', value: -0.6,
               rate_per_min: -0.6, window_s: 300, direction: 'below', event: 'raise'}},
    {context: {rule_kind: 'stale', value: 2700, expected_interval_s: 600, event: 'raise'}},
    {context: {rule_kind: 'fault', offline: true, event: 'raise'}},
    {context: {rule_kind: 'lighting_schedule', metric: 'lamp_on', check: 'day_burner', level: 1,
               event: 'raise'}},
    {context: {rule_kind: 'topology', value: 3, children_total: 12, member_rule: 'lamp-dark',
               event: 'raise'}},
    {message: 'pump alarm text', context: null},
  ];
  const out = {};
  for (const lang of ['vi', 'en']) {
    setLang(lang);
    out[lang] = alarms.map((a) => alarmMessage(a));
  }
  return out;
}"""


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def alarm_state(url: str, device: str) -> str | None:
    rows = await aq(url, "select state from alarms where rule = 'web-hist-low' and device = %s "
                         "order by id desc limit 1", device)
    return rows[0][0] if rows else None


async def test_history_timeline_out_of_service_and_kpis_in_english_and_vietnamese(
        browser, city_db_url, make_settings, token_for, mosquitto, tmp_path):
    url = city_db_url
    (a, ward_a), (b, _) = [tuple(r) for r in await aq(
        url, "select distinct on (ward) id, ward from devices where kind = 'pressure_sensor' "
             "and ward is not null order by ward, id limit 2")]
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    token = await token_for(url, "operator")
    op = auth(token)
    settings = make_settings(url, rules={"paths": [str(path)]})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)

        async def send(device: str, value: float) -> None:
            await pub.publish(f"ioc/v1/{device}/telemetry",
                              orjson.dumps({"values": {"pressure_bar": value}}), qos=1)

        # a: raised, commented, shelved with a reason, worked by a crew, cleared, closed.
        await send(a, 1.98)
        await send(b, 1.98)
        for dev in (a, b):
            await wait_for(lambda d=dev: alarm_state(url, d), what=f"alarm on {dev}")
        await client.app[ALARMS].drained()
        aid = (await aq(url, "select id from alarms where rule = 'web-hist-low' and device = %s "
                             "and state <> 'closed'", a))[0][0]
        bid = (await aq(url, "select id from alarms where rule = 'web-hist-low' and device = %s "
                             "and state <> 'closed'", b))[0][0]
        # b acknowledged: an unacknowledged alarm's halo keeps the map repainting, which only
        # slows the browser down here
        assert (await client.post(f"/api/v1/alarms/{bid}/ack", headers=op)).status == 200
        for action, body in (("comment", {"text": "Đã gọi đội cấp nước"}),
                             ("shelve", {"minutes": 30, "reason": "pump swap in progress"}),
                             ("unshelve", {})):
            r = await client.post(f"/api/v1/alarms/{aid}/{action}", json=body, headers=op)
            assert r.status == 200, await r.text()
        # The crew's finish (the crew loop writes it so: a work event with note and photo) and
        # an event type this console has never heard of.
        await aexecute(url, "insert into alarm_events (alarm_id, event, actor, reason, details) values "
                      "(%s, 'work', 'crew:north', 'valve replaced', %s::jsonb), "
                      "(%s, 'escalated_to_supervisor', 'rules', null, %s::jsonb), "
                      "(%s, 'escalated', 'notifier', 'not acknowledged within 15 min', %s::jsonb)",
                 aid, orjson.dumps({"from": "in_progress", "to": "done", "note": "valve replaced",
                                    "photo": "ab" * 32}).decode(),
                 aid, orjson.dumps({"level": 2}).decode(),
                 aid, orjson.dumps({"level": 3, "from_level": 2, "ack_minutes": 15}).decode())
        await send(a, 2.6)
        await wait_for(lambda: _is(alarm_state(url, a), "rtn_unacked"), what="a rtn_unacked")
        await client.app[ALARMS].drained()
        assert (await client.post(f"/api/v1/alarms/{aid}/ack", headers=op)).status == 200
        await wait_for(lambda: _is(alarm_state(url, a), "closed"), what="a closed")

        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/?token={token}")
        await map_ready(page)
        await page.evaluate("() => localStorage.setItem('ioc.lang', 'en')")
        await page.locator("[data-lang=en]").first.click()

        # ---- History: filter down to the closed alarm
        await page.get_by_role("button", name="Alarm history").click()
        panel = page.get_by_role("region", name="Alarm history")
        await panel.get_by_label("State").select_option("closed")
        await panel.get_by_label("Ward").select_option(ward_a)
        await panel.get_by_label("Device kind").select_option("pressure_sensor")
        await panel.get_by_label("Text").fill(a)
        await panel.get_by_role("button", name="Search").click()
        row = panel.locator(f"tr.ah-row[data-alarm-id='{aid}']")
        await row.wait_for()
        # the unfiltered list may still be on screen for a moment: wait for the search's answer
        await page.wait_for_function("() => document.querySelectorAll('tr.ah-row').length === 1")
        assert await row.get_attribute("data-state") == "closed"
        assert "Pressure 2.6 bar back within limit 2.0" in await row.inner_text()
        await page.screenshot(path=artifact("alarm-history-en.png"))

        # ---- its timeline from /events
        await row.click()
        timeline = panel.locator("ol.ah-timeline")
        await timeline.wait_for()
        text = await timeline.inner_text()
        for expected in ("Raised", "Comment by", "Đã gọi đội cấp nước", "Shelved for 30 min by",
                         "Reason: pump swap in progress", "Unshelved", "Crew finished work",
                         "Note: valve replaced", "escalated to supervisor", "level: 2",
                         "Escalated to level 3", "Not acknowledged within 15 min",
                         "Returned to normal", "Acknowledged by"):
            assert expected in text, (expected, text)
        photo = timeline.get_by_role("link", name="Photo")
        assert await photo.get_attribute("href") == f"/api/v1/alarms/{aid}/photos/{'ab' * 32}.jpg"
        await page.screenshot(path=artifact("alarm-timeline-en.png"))

        # ---- out of service from the console: b stops counting as open on the badge
        before = int(await page.inner_text("#kpi-alarms"))
        await panel.get_by_role("button", name="Back to the list").click()
        await panel.get_by_label("State").select_option("open")
        await panel.get_by_label("Ward").select_option("")
        await panel.get_by_label("Text").fill(b)
        await panel.get_by_role("button", name="Search").click()
        await panel.locator(f"tr.ah-row[data-alarm-id='{bid}']").click()
        oos = panel.get_by_role("button", name="Take out of service")
        await oos.click()  # no reason: refused here, nothing sent
        assert (await aq(url, "select out_of_service from alarms where id = %s", bid))[0][0] is False
        await panel.get_by_label("Reason (required)").fill("sensor being recalibrated")
        await oos.click()
        await panel.get_by_role("button", name="Return to service").wait_for()
        assert (await aq(url, "select out_of_service from alarms where id = %s", bid))[0][0] is True
        reason = await aq(url, "select reason from alarm_events where alarm_id = %s "
                               "and event = 'out_of_service'", bid)
        assert reason == [("sensor being recalibrated",)]
        await page.wait_for_function("(n) => Number(document.querySelector('#kpi-alarms').textContent) === n",
                                     arg=before - 1, timeout=10_000)

        # ---- KPIs against the ISA-18.2 targets, as charts
        await panel.get_by_role("tab", name="KPIs").click()
        await panel.locator(".ah-chart canvas").wait_for()
        assert await panel.locator(".ah-kpi-card").count() >= 7
        assert await panel.get_by_role("img", name="Chart of alarms per operator", exact=False).count() == 1
        await page.screenshot(path=artifact("alarm-kpis-en.png"))

        # ---- Vietnamese
        await page.locator("[data-lang=vi]").first.click()
        vi = page.get_by_role("region", name="Lịch sử cảnh báo")
        await vi.locator(".ah-kpi-card").first.wait_for()
        await vi.get_by_text("Cảnh báo / điều hành viên / giờ").wait_for()
        await vi.locator(".ah-chart canvas").wait_for()
        await page.screenshot(path=artifact("alarm-kpis-vi.png"))
        card = page.locator(f"#alarm-list .alarm[data-alarm-id='{bid}'] .alarm-msg")
        assert await card.inner_text() == "Áp suất 1.98 bar dưới ngưỡng 2.0"
        await vi.get_by_role("tab", name="Lịch sử").click()
        await vi.get_by_label("Trạng thái").select_option("closed")
        await vi.get_by_label("Tìm chữ").fill(a)
        await vi.get_by_role("button", name="Tìm", exact=True).click()
        vi_row = vi.locator(f"tr.ah-row[data-alarm-id='{aid}']")
        await vi_row.wait_for()
        assert "Áp suất 2.6 bar trở lại trong ngưỡng 2.0" in await vi_row.inner_text()
        await vi_row.click()
        vi_text = await vi.locator("ol.ah-timeline").inner_text()
        for expected in ("Phát sinh", "tạm ẩn 30 phút", "Lý do: pump swap in progress",
                         "Đội đã xử lý xong", "Ghi chú: valve replaced", "đã xác nhận",
                         # the notifier's English reasons, worded from their details
                         "Đã báo lên cấp 3", "Chưa được xác nhận sau 15 phút", "Giao theo phường"):
            assert expected in vi_text, (expected, vi_text)
        await page.screenshot(path=artifact("alarm-timeline-vi.png"))

        # Other rule kinds, worded from their context in both languages.
        worded = await page.evaluate(WORDED)
        assert worded["vi"] == [
            "Tiếng ồn 81.5 dB(A) vượt ngưỡng 75.0", "Áp suất giảm 0.6 bar/phút trong 5 phút",
            "Không có dữ liệu 45 phút (dự kiến mỗi 10 phút)",
            "Thiết bị mất kết nối (đường truyền không trả lời)",
            "Đèn sáng ban ngày", "3/12 thiết bị phía dưới đang cảnh báo (lamp-dark)", "pump alarm text"]
        assert worded["en"] == [
            "Noise 81.5 dB(A) above limit 75.0", "Pressure falling 0.6 bar/min over 5 min",
            "No data for 45 min (expected every 10 min)", "Device offline (its link reports no answer)",
            "Lamp on in daylight (day-burner)", "3 of 12 devices under it in alarm (lamp-dark)",
            "pump alarm text"]
        assert page.errors == []


async def _is(state, expected: str) -> bool:
    return (await state) == expected
