"""Every control on every page has an accessible name in the page's language (issue 18, 9).

The names are Chromium's own, from its accessibility tree (CDP ``Accessibility.getFullAXTree``):
what a screen reader hears, computed by the browser, not by a re-implementation here. Each
visible interactive element (button, link, field, tab, switch, slider, anything focusable) is
marked in the page, matched to its accessibility node by backend DOM id, and must have a
non-empty name. The walk runs once in English and once in Vietnamese (one browser context
each, sharing one server): the operator's console as admin with every panel opened in turn and
the forms inside them (an alarm's shelve menu and comment, a device's editor, a camera's page, Add
device, a ward's typed confirmation, an alarm's timeline and the KPIs, a new schedule, a new
and an existing rule), the crew's phone page with its work form, and the citizens' pages
(with a report's popup on the public map). The translated controls must change their names
with the language, and the CONTRACT's English names must be found by role and name.
"""

from __future__ import annotations

import re

import aiohttp
from playwright.async_api import Error as PlaywrightError

from server.settings import ReportsSettings
from tests.helpers import aexecute, aq, running
from tests.web.helpers import base_url, map_idle, map_ready, new_page

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}

INTERACTIVE = ("button, a[href], input, select, textarea, [role=button], [role=tab], [role=switch], "
               "[role=slider], [tabindex]")

# Marks every visible interactive element (data-a11y) and returns a snippet of each.
MARK = """(sel) => {
  for (const el of document.querySelectorAll('[data-a11y]')) el.removeAttribute('data-a11y');
  const out = [];
  for (const el of document.querySelectorAll(sel)) {
    if (el.type === 'hidden') continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || !el.checkVisibility({visibilityProperty: true})) continue;
    // an inert or aria-hidden subtree is out of the tree on purpose (a closed dialog's copy)
    if (el.closest('[inert], [aria-hidden=true]')) continue;
    el.setAttribute('data-a11y', String(out.length));
    const path = [];
    for (let e = el; e && e !== document.body && path.length < 4; e = e.parentElement) {
      path.unshift(e.id ? '#' + e.id : e.tagName.toLowerCase() + (e.classList.length ? '.'
        + [...e.classList].slice(0, 2).join('.') : ''));
      if (e.id) break;
    }
    const html = el.outerHTML.replace(/\\s+/g, ' ');
    out.push({path: path.join(' > '), html: html.length > 160 ? html.slice(0, 160) + '…' : html});
  }
  return out;
}"""

# The CONTRACT's names for the console's main controls (role, English, Vietnamese).
CONTRACT = [("combobox", "Search"), ("button", "Commands"), ("button", "Preview"), ("button", "Send"),
            ("button", "Rules"), ("button", "Backtest"), ("button", "Replay")]


async def _ax_nodes(page) -> list | None:
    """Chromium's accessibility node of each marked element, in document order (as marked):
    the DOM and the accessibility tree read once each, joined on the backend node id."""
    cdp = await page.context.new_cdp_session(page)
    try:
        doc = (await cdp.send("DOM.getDocument", {"depth": -1}))["root"]
        ax = (await cdp.send("Accessibility.getFullAXTree"))["nodes"]
    except PlaywrightError:  # the page navigated meanwhile
        return None
    finally:
        await cdp.detach()
    marked: dict[int, int] = {}
    stack = [doc]
    while stack:
        node = stack.pop()
        attrs = node.get("attributes") or []
        for key, value in zip(attrs[::2], attrs[1::2], strict=True):
            if key == "data-a11y":
                marked[int(value)] = node["backendNodeId"]
        stack.extend(node.get("children") or [])
    by_backend = {n["backendDOMNodeId"]: n for n in ax if "backendDOMNodeId" in n}
    return [by_backend.get(marked[i]) for i in sorted(marked)]


async def names(page, where: str) -> dict[str, str]:
    """{path: computed name} of the visible controls; records the unnamed in page.unnamed."""
    for _attempt in range(5):  # a panel that re-renders meanwhile drops the marks: mark again
        marked = await page.evaluate(MARK, INTERACTIVE)
        nodes = await _ax_nodes(page)
        if nodes is not None and len(nodes) == len(marked):
            break
    else:
        raise AssertionError(f"[{where}] the page kept changing while its controls were read")
    found: dict[str, str] = {}
    for i, info in enumerate(marked):
        node = nodes[i]
        name = ((node or {}).get("name") or {}).get("value", "").strip()
        if not name:
            why = "not in the accessibility tree" if node is None else (
                "ignored" if node.get("ignored") else node.get("role", {}).get("value", "?"))
            page.unnamed.append(f"[{where}] {info['path']} ({why}): {info['html']}")
        key = info["path"]
        while key in found:
            key += "+"
        found[key] = name
    page.seen.setdefault(where, {}).update(found)
    for role, name in CONTRACT:
        if (role, name) not in page.contract and await page.get_by_role(role, name=name, exact=True).count():
            page.contract.add((role, name))
    return found


async def console_walk(page, base: str, token: str, lang: str, device: str, camera: str) -> None:
    await page.goto(f"{base}/?token={token}")
    await map_ready(page)
    await page.locator(f".top-right [data-lang={lang}]").click()
    await page.locator(".alarm").first.wait_for()
    await names(page, "console")
    card = page.locator("#alarm-list .alarm").first
    await card.locator("button[data-action=shelve]").click()  # the shelve menu's durations
    await card.locator(".menu.open button").first.wait_for()
    await names(page, "alarm: shelve menu")
    await card.locator("button[data-action=shelve]").click()
    await card.locator("button[data-action=comment]").click()
    await card.locator(".comment-form input").wait_for()
    await names(page, "alarm: comment")
    await card.locator("button[data-action=comment]").click()
    w = WORDS[lang]
    await page.locator("label[for=tab-wards]").click()
    await page.locator("#ward-table button, #ward-table tr").first.wait_for()
    await names(page, "wards")
    await page.locator("label[for=tab-layers]").click()
    # search: the box, its options, Enter opens the device page
    box = page.get_by_role("combobox", name=w["search"])
    await box.fill(device)
    await page.get_by_role("option").first.wait_for()
    await names(page, "search")
    await box.press("Enter")
    await page.locator("#device-panel .dev-id", has_text=device).wait_for()
    await page.wait_for_function("() => !document.querySelector('#device-panel').textContent.includes('…')")
    await names(page, "device page")
    await page.locator("#device-panel details.assets-editor summary").click()
    await page.locator("#device-panel form.assets-edit").wait_for()
    await names(page, "device page: edit")
    await page.locator("#device-panel").get_by_role("button", name=w["close"], exact=True).first.click()
    await box.fill(camera)  # a camera's page, with its player
    await page.get_by_role("option").first.wait_for()
    await box.press("Enter")
    await page.locator("#device-panel .dev-id", has_text=camera).wait_for()
    await page.locator("#device-panel .camera, #device-panel .cam, #device-panel video, "
                       "#device-panel img").first.wait_for()
    await names(page, "camera page")
    await page.locator("#device-panel").get_by_role("button", name=w["close"], exact=True).first.click()
    await page.get_by_role("button", name=w["add_device"], exact=True).click()
    await page.locator("dialog.assets-dialog[open]").wait_for()
    await names(page, "add device")
    await page.keyboard.press("Escape")
    await page.locator("dialog.assets-dialog[open]").wait_for(state="detached")
    for key, (opener, region) in zip(PANELS, w["panels"], strict=True):  # keys alike in both languages
        await page.get_by_role("button", name=opener, exact=True).click()
        await page.get_by_role("region", name=region).first.wait_for()
        await names(page, key)
        if key == "commands":  # a device picked on the map, previewed: the Send button
            await page.evaluate("(id) => window.ioc.commands.onDeviceClick(id)", device)
            await page.get_by_role("button", name=w["preview"], exact=True).click()
            await page.locator(".cmd-preview button.primary").wait_for()  # Send
            await names(page, f"{key}: preview")
            # then a ward switched off: the typed confirmation
            panel = page.locator("#commands-panel")
            await panel.get_by_role("radio", name=w["ward"]).click()
            await panel.locator("#cmd-ward option").nth(1).wait_for(state="attached")
            await panel.locator("#cmd-ward").select_option(index=1)
            await panel.locator("#cmd-name").select_option("switch")
            await page.get_by_role("button", name=w["preview"], exact=True).click()
            await panel.locator("#cmd-confirm").wait_for()
            await names(page, f"{key}: typed confirmation")
        if key == "alarm history":  # an alarm's timeline, then the KPI charts
            ah = page.get_by_role("region", name=region).first
            await ah.locator("tr.ah-row").first.click()
            await ah.locator(".ah-timeline-head").wait_for()  # (the SQL-made alarm has no events)
            await names(page, f"{key}: timeline")
            await ah.get_by_role("tab", name=w["kpis"]).click()
            await ah.locator(".ah-kpi-card").first.wait_for()
            await names(page, f"{key}: KPIs")
        if key == "schedules":
            await page.get_by_role("button", name=w["new_schedule"]).click()
            await page.locator(".sched-preview").wait_for()
            await names(page, f"{key}: new schedule")
        if key == "rules":
            await page.get_by_role("button", name=w["new_rule"]).click()
            await page.get_by_role("button", name=w["backtest"]).wait_for()
            await names(page, f"{key}: new rule")
            await page.get_by_role("button", name=opener, exact=True).click()  # closed, reopened:
            await page.get_by_role("button", name=opener, exact=True).click()  # the list again
            edit = page.locator("article.rules-card").first.get_by_role(
                "button", name=re.compile(f"^({w['edit']}) "))  # a rule from a file is only viewed
            await edit.click()
            await page.get_by_role("button", name=w["backtest"]).wait_for()
            await names(page, f"{key}: edit rule")
        await page.get_by_role("button", name=opener, exact=True).click()  # and closed again
    await page.get_by_role("tab", name=w["reports_tab"]).click()
    await page.locator(".report-item, .rp-empty, .reports-panel").first.wait_for()
    await names(page, "reports")
    await page.get_by_role("button", name=w["replay"], exact=True).click()
    await page.get_by_role("slider").first.wait_for()
    await names(page, "replay")
    await map_idle(page)


async def citizen_page(phone, url: str, ready: str, lang: str, where: str, wait_ms: int = 30_000) -> None:
    """A citizens' page, ready (``window[ready].ready``), in ``lang``: its names read."""
    await phone.goto(url)
    await phone.wait_for_function(f"() => window.{ready} && window.{ready}.ready", timeout=wait_ms)
    await phone.click(f".cz-lang [data-lang={lang}]")
    await names(phone, where)


PANELS = ["alarm history", "commands", "schedules", "rules"]
WORDS = {
    "en": {"search": "Search", "close": "Close", "preview": "Preview", "new_rule": "New rule",
           "backtest": "Backtest", "replay": "Replay",
           "reports_tab": "Reports", "add_device": "Add device", "ward": "Ward", "kpis": "KPIs",
           "new_schedule": "New schedule",
           "edit": "Edit|View",
           "panels": [("Alarm history", "Alarm history"), ("Commands", "Commands to devices"),
                      ("Schedules", "Lighting schedules"), ("Rules", "Alarm rules")]},
    "vi": {"search": "Tìm kiếm", "close": "Đóng", "preview": "Xem trước", "new_rule": "Tạo quy tắc",
           "backtest": "Chạy thử", "replay": "Phát lại",
           "reports_tab": "Phản ánh", "add_device": "Thêm thiết bị", "ward": "Phường", "kpis": "Chỉ số KPI",
           "new_schedule": "Tạo lịch mới", "edit": "Sửa|Xem",
           "panels": [("Lịch sử cảnh báo", "Lịch sử cảnh báo"), ("Lệnh", "Lệnh điều khiển thiết bị"),
                      ("Lịch chiếu sáng", "Lịch chiếu sáng"), ("Quy tắc", "Quy tắc cảnh báo")]},
}

# Names that are data, the same in every language: ids, codes, numbers, the language buttons.
# The alarm this test makes by SQL has no rule to word it: its heading is its stored message.
DATA = re.compile(r"^(VI|EN|English|Tiếng Việt|[\w.:/+-]*\d[\w.:/ +-]*|\W*|#\d+ · lamp dark)$")


async def test_every_control_has_a_name_in_english_and_vietnamese(
        browser, city_db_url, make_settings, token_for, tmp_path):
    device = (await aq(city_db_url, "select id from devices where kind = 'streetlight' "
                                               "order by id limit 1"))[0][0]
    await aexecute(city_db_url, "insert into alarms (rule, device, severity, message, dedup_key, geom) "
                                "values ('a11y', %s, 'major', 'lamp dark', 'k-a11y', "
                                "(select geom from devices where id = %s)) on conflict do nothing",
                   device, device)
    camera = (await aq(city_db_url, "select id from devices where kind = 'camera' order by id limit 1"))[0][0]
    crew = (await aq(city_db_url, "select id from crews order by id limit 1"))[0][0]
    # the alarm is the crew's job, so the crew's phone shows its buttons and its work form
    await aexecute(city_db_url, "update alarms set assigned_crew = %s where dedup_key = 'k-a11y'", crew)
    admin = await token_for(city_db_url, "admin")
    crew_token = await token_for(city_db_url, "crew", crew)
    settings = make_settings(city_db_url, mqtt_url=None,
                             reports=ReportsSettings(photo_dir=tmp_path, rate_per_min=6000))
    seen: dict[str, dict] = {}
    unnamed: list[str] = []
    async with running(settings) as client:
        base = base_url(client)
        form = aiohttp.FormData()
        lon, lat = (await aq(city_db_url, "select ST_X(geom), ST_Y(geom) from devices where id = %s",
                             device))[0]
        for k, v in {"category": "pothole", "lat": f"{lat:.6f}", "lon": f"{lon:.6f}",
                     "description": "a hole"}.items():
            form.add_field(k, v)
        resp = await client.post("/api/v1/public/reports", data=form)
        assert resp.status == 201, await resp.text()
        code = (await resp.json())["code"]
        rule = {"id": "a11y-low-pressure", "kind": "threshold", "select": {"kind": "pressure_sensor"},
                "metric": "pressure_bar", "below": 1.5, "severity": "major"}  # a rule to edit
        resp = await client.post("/api/v1/rules", json=rule, headers={"Authorization": f"Bearer {admin}"})
        assert resp.status in (200, 201), await resp.text()
        for lang in ("en", "vi"):
            page = await new_page(browser, locale="en-GB" if lang == "en" else "vi-VN")
            page.unnamed, page.seen, page.contract = [], {}, set()
            await console_walk(page, base, admin, lang, device, camera)
            if lang == "en":  # the CONTRACT's names, exactly, each seen at some step of the walk
                missing = [f"{role} {name!r}" for role, name in CONTRACT if (role, name) not in page.contract]
                assert missing == [], f"the CONTRACT's controls are not found by role and name: {missing}"
            else:
                assert not page.contract, f"English names in Vietnamese: {page.contract}"
            await page.context.close()

            phone = await new_page(browser, locale="en-GB" if lang == "en" else "vi-VN", **PHONE)
            phone.unnamed, phone.seen, phone.contract = page.unnamed, page.seen, set()
            await phone.goto(f"{base}/crew?token={crew_token}")
            await phone.locator(f"header [data-lang={lang}]").click()
            await phone.locator(".job, .crew-empty, .empty").first.wait_for()
            await names(phone, "crew")
            await phone.locator("button[data-work=in_progress]").first.click()
            await phone.locator("#crew-list .work-form").wait_for()
            await names(phone, "crew: work form")
            await citizen_page(phone, f"{base}/report", "iocReport", lang, "report")
            await phone.click("#pick-map")
            await phone.locator("#pick-map-box canvas").wait_for()
            await names(phone, "report: map")
            await citizen_page(phone, f"{base}/reports/{code}", "iocTracking", lang, "tracking")
            await citizen_page(phone, f"{base}/public", "iocPublic", lang, "public", wait_ms=60_000)
            # a report's popup on the public map, with its close button
            await phone.wait_for_function("() => window.iocPublic.map && window.iocPublic.features?.length")
            await phone.evaluate("() => window.iocPublic.map.jumpTo({zoom: 16, center:"
                                 " window.iocPublic.features[0].geometry.coordinates})")
            await phone.wait_for_function("() => window.iocPublic.map.queryRenderedFeatures("
                                          "{layers: ['reports']}).length > 0", timeout=30_000)
            x, y = await phone.evaluate("""() => {
              const m = window.iocPublic.map, r = m.getCanvas().getBoundingClientRect();
              const p = m.project(m.queryRenderedFeatures({layers: ['reports']})[0].geometry.coordinates);
              return [r.left + p.x, r.top + p.y];
            }""")
            await phone.mouse.click(x, y)
            await phone.locator(".maplibregl-popup .maplibregl-popup-close-button").wait_for()
            await names(phone, "public: report popup")
            assert phone.errors == [] and page.errors == [], (page.errors, phone.errors)
            await phone.context.close()
            seen[lang] = page.seen
            unnamed += [f"{lang}: {u}" for u in page.unnamed]

    per_page: dict[str, int] = {}
    for u in unnamed:
        where = u.split("]")[0].split("[")[1]
        per_page[where] = per_page.get(where, 0) + 1
    assert unnamed == [], f"{len(unnamed)} controls without a name {per_page}:\n" + "\n".join(unnamed)

    # The names follow the language: a control whose name is words has another name in Vietnamese.
    same = []
    for where, en in seen["en"].items():
        vi = seen["vi"].get(where, {})
        same += [f"[{where}] {path}: {name!r}" for path, name in en.items()
                 if vi.get(path) == name and not DATA.match(name)]
    assert same == [], "these names stay English in Vietnamese:\n" + "\n".join(same)
