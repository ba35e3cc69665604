"""Signing in, in a real browser: the sign-in link `ioc demo` prints opens the map once, the
page keeps no token a script can read (an HttpOnly session cookie), the address and the
history lose the token, a reload stays signed in (phones reload), a used link says so, and
the pages' CSP refuses nothing they need (new_page fails on any CSP violation)."""

from __future__ import annotations

import asyncio

from server.http.auth import sign_in_link_sync
from tests.helpers import aq, running
from tests.web.helpers import artifact, base_url, map_ready, new_page

# Everything a script on the page can reach where a token could hide.
SCRIPT_VISIBLE = """() => JSON.stringify({cookie: document.cookie,
  session: Object.entries(sessionStorage), local: Object.entries(localStorage)})"""


async def test_a_sign_in_link_opens_the_map_once_and_leaves_no_token_behind(
        browser, city_db_url, make_settings):
    async with running(make_settings(city_db_url)) as client:
        base = base_url(client)
        link = await asyncio.to_thread(sign_in_link_sync, city_db_url, base, minutes=5)
        token = link.split("token=")[1]

        page = await new_page(browser)
        await page.goto(f"{link}#map=13/21.59/105.84")
        await map_ready(page)
        assert "token=" not in page.url and page.url.endswith("#map=13/21.59/105.84")
        assert token not in await page.evaluate("() => history.state === null ? '' : "
                                                "JSON.stringify(history.state)")
        visible = await page.evaluate(SCRIPT_VISIBLE)
        assert "ioc_" not in visible, f"a script can read a token: {visible}"
        cookies = await page.context.cookies()
        [session] = [c for c in cookies if c["name"] == "ioc_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert session["value"] != token
        assert "admin" in await page.inner_text("#user")
        await page.screenshot(path=artifact("sign-in-link-en.png"))

        # A phone or a tab reloads: still signed in, from the cookie alone.
        await page.reload()
        await map_ready(page)
        assert await page.is_hidden("#login")

        # The same link in another browser: used up. Said in Vietnamese.
        other = await new_page(browser, locale="vi-VN")
        await other.goto(link)
        error = other.locator("#login-error")
        await error.filter(has_text="Liên kết đăng nhập này đã được dùng").wait_for()
        assert "token=" not in other.url
        await other.screenshot(path=artifact("sign-in-link-used-vi.png"))
        assert other.errors == []

        # Signing out ends the session on the server, not only in the page.
        await page.click("#sign-out")
        await page.locator("#login-form").wait_for()
        revoked = await aq(city_db_url, "select count(*) from api_tokens where kind = 'session' "
                                        "and revoked_at is null")
        assert revoked == [(0,)]
        assert page.errors == []


async def test_the_crew_page_keeps_its_session_on_a_phone(browser, city_db_url, make_settings,
                                                          token_for):
    crew = (await aq(city_db_url, "select id from crews order by id limit 1"))[0][0]
    crew_token = await token_for(city_db_url, "crew", crew)
    async with running(make_settings(city_db_url)) as client:
        page = await new_page(browser, viewport={"width": 390, "height": 844}, is_mobile=True,
                              has_touch=True, device_scale_factor=2, locale="vi-VN")
        await page.goto(f"{base_url(client)}/crew?token={crew_token}")
        await page.wait_for_function("() => window.iocCrew && window.iocCrew.ready", timeout=30_000)
        assert "token=" not in page.url
        assert "ioc_" not in await page.evaluate(SCRIPT_VISIBLE)
        # The phone puts the tab away and brings it back: no token to type again.
        await page.reload()
        await page.wait_for_function("() => window.iocCrew && window.iocCrew.ready", timeout=30_000)
        assert await page.is_hidden("#login")
        await page.screenshot(path=artifact("crew-session-vi.png"))
        # The map opened from the crew page shares the session.
        map_page = await page.context.new_page()
        map_page.errors = []
        await map_page.goto(f"{base_url(client)}/")
        await map_page.wait_for_function("() => window.ioc && window.ioc.ready", timeout=30_000)
        assert await map_page.is_hidden("#login")
        assert page.errors == []
