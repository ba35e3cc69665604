"""Legibility of the operator's map (issue 18 point 8): alarms as rings that keep the device's
colour, street names at street zooms (Vietnamese diacritics from our own font file), ward
names above the count bubbles, and nothing cut in the Wards tab or the alarm cards, in English
and Vietnamese, on a desktop and on a phone."""

from __future__ import annotations

import orjson

from tests.helpers import aq, publisher, running, wait_connected
from tests.web.helpers import artifact, base_url, map_idle, map_ready, new_page

# Every element in the panel whose text is cut: clipped by its own overflow or an ellipsis,
# or running past the panel's right edge.
CUT = """(sel) => {
  const root = document.querySelector(sel);
  const edge = root.getBoundingClientRect().right + 1;
  const cut = [];
  for (const el of root.querySelectorAll('*')) {
    const cs = getComputedStyle(el);
    if (cs.display === 'none' || cs.visibility === 'hidden' || !el.textContent.trim()) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0) continue;
    const clipped = cs.overflowX !== 'visible' && el.scrollWidth > el.clientWidth + 1
      && !['SELECT', 'INPUT'].includes(el.tagName) && el !== root;
    if (clipped || cs.textOverflow === 'ellipsis' && el.scrollWidth > el.clientWidth || r.right > edge) {
      cut.push(`${el.tagName}.${el.className}: ${el.textContent.trim().slice(0, 40)}`);
    }
  }
  return cut;
}"""

# The KPIs end before the buttons on the right begin (a long word must not run under them).
KPIS_CLEAR = """() => [...document.querySelectorAll('.kpis .kpi')]
    .every((k) => k.scrollWidth <= k.clientWidth + 1)
  && document.querySelector('.kpis').getBoundingClientRect().right
     <= document.querySelector('.top-right').getBoundingClientRect().left + 1"""

# Every empty field's placeholder fits its box: measured in the field's own font by a canvas.
PLACEHOLDERS_CUT = """(sel) => {
  const ctx = document.createElement('canvas').getContext('2d');
  const cut = [];
  for (const el of document.querySelectorAll(`${sel} input[placeholder]`)) {
    if (el.value || !el.placeholder || !el.checkVisibility()) continue;
    const cs = getComputedStyle(el);
    ctx.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
    const room = el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    if (ctx.measureText(el.placeholder).width > room) cut.push(`${el.id || el.name}: ${el.placeholder}`);
  }
  return cut;
}"""

RING = """(device) => window.ioc.map.queryRenderedFeatures({layers: ['pressure_sensor:pressure_sensor:ring']})
  .some((f) => f.id === device || f.properties.id === device)"""

STREET_NAMES = """() => window.ioc.map.queryRenderedFeatures({layers: ['roads:roads:name']})
  .map((f) => f.properties.name)"""


async def first_sensor(url):
    return (await aq(url, "select id, ST_X(geom), ST_Y(geom) from devices where kind = 'pressure_sensor' "
                          "order by id limit 1"))[0]


async def show_wards(page):
    await page.click("label[for=tab-wards]")
    await page.wait_for_selector(".wards-table tbody tr")


async def test_legible_map_en_vi_desktop_and_phone(browser, city_db_url, make_settings, token_for,
                                                   mosquitto, rules_file):
    token = await token_for(city_db_url, "operator")
    sensor, lon, lat = await first_sensor(city_db_url)
    settings = make_settings(city_db_url, rules={"paths": [str(rules_file)]})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        page = await new_page(browser, viewport={"width": 1280, "height": 800})
        await page.goto(f"{base_url(client)}/?token={token}#map=17/{lat}/{lon}")
        await map_ready(page)
        low = orjson.dumps({"values": {"pressure_bar": 0.8}})
        await pub.publish(f"ioc/v1/{sensor}/telemetry", low, qos=1)
        await page.wait_for_selector(f"#alarm-list .alarm[data-device='{sensor}']", timeout=15_000)
        await page.wait_for_function(RING, arg=sensor, timeout=10_000)

        # The alarm is a ring: the device keeps its kind's colour (no severity in its fill).
        fill = await page.evaluate("() => JSON.stringify(window.ioc.map.getPaintProperty("
                                   "'pressure_sensor:pressure_sensor:point', 'circle-color'))")
        assert "#ff9500" not in fill and "#ff1f5a" not in fill, fill
        legend = await page.inner_text("#legend")
        assert "ring round the device" in legend, legend
        await page.screenshot(path=artifact("legible-alarms-en.png"))
        await page.locator("#legend").screenshot(path=artifact("legible-legend-en.png"))
        assert await page.evaluate(CUT, "#alarm-list") == []

        # Street names along the streets at street zoom, drawn from our font file.
        names = await page.evaluate(STREET_NAMES)
        assert names, "no street name drawn at z17"
        await page.click("[data-lang=vi]")
        assert "vòng tròn quanh thiết bị" in await page.inner_text("#legend")
        await map_idle(page)
        names = await page.evaluate(STREET_NAMES)
        assert any(set(n) & set("ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ") for n in names), names
        await page.screenshot(path=artifact("legible-streets-vi.png"))
        # The header keeps everything on screen in the longer language too.
        assert await page.evaluate(CUT, ".topbar") == []
        assert await page.evaluate(PLACEHOLDERS_CUT, ".topbar") == []
        assert await page.evaluate(KPIS_CLEAR) is True
        assert await page.evaluate(CUT, "#alarm-list") == []

        # The city: ward names stay above the count bubbles' labels.
        # (z 12.6: ward names shown, lamps still counted in bubbles)
        await page.evaluate("() => { const b = window.ioc.wards.data.bbox; window.ioc.map.jumpTo("
                            "{center: [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], zoom: 12.6}); }")
        await map_idle(page)
        await page.locator(".maplibregl-marker.agg-label").first.wait_for()  # both kinds shown
        z = await page.evaluate("""() => {
          const zi = (sel) => Number(getComputedStyle(document.querySelector(sel)).zIndex) || 0;
          return [zi('.maplibregl-marker.ward-label'), zi('.maplibregl-marker.agg-label')];
        }""")
        assert z[0] > z[1], z
        await show_wards(page)
        await page.screenshot(path=artifact("legible-wards-vi.png"))
        assert await page.evaluate(CUT, "#ward-table") == []
        await page.click("[data-lang=en]")
        assert await page.evaluate(CUT, "#ward-table") == []
        assert await page.evaluate(CUT, ".topbar") == []
        assert await page.evaluate(PLACEHOLDERS_CUT, ".topbar") == []
        assert await page.evaluate(KPIS_CLEAR) is True
        await page.screenshot(path=artifact("legible-wards-en.png"))
        assert page.errors == []

        # A phone: the same panels, in Vietnamese, nothing cut.
        phone = await new_page(browser, viewport={"width": 390, "height": 844}, locale="vi-VN")
        await phone.goto(f"{base_url(client)}/?token={token}#map=16/{lat}/{lon}")
        await map_ready(phone)
        await phone.click("[data-lang=vi]")
        await phone.wait_for_selector(f"#alarm-list .alarm[data-device='{sensor}']")
        assert await phone.evaluate(CUT, "#alarm-list") == []
        await phone.locator(f"#alarm-list .alarm[data-device='{sensor}']").scroll_into_view_if_needed()
        await phone.screenshot(path=artifact("legible-alarms-vi-phone.png"))
        await show_wards(phone)
        await phone.locator("#ward-table").scroll_into_view_if_needed()
        assert await phone.evaluate(CUT, "#ward-table") == []
        await phone.screenshot(path=artifact("legible-wards-vi-phone.png"))
        assert phone.errors == []
