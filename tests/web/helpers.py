"""Helpers the browser tests share: a page that collects script errors, waits for the
map, where screenshots go, the test server's address."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from playwright.async_api import Browser, Page

from tests.helpers import ROOT

ARTIFACTS = ROOT / "artifacts" / "web"


def base_url(client) -> str:
    return str(client.make_url("/")).rstrip("/")


async def new_page(browser: Browser, **kw) -> Page:
    """A page whose script errors fail the test (collected in ``page.errors``)."""
    kw.setdefault("viewport", {"width": 1600, "height": 900})
    kw.setdefault("locale", "en-GB")
    context = await browser.new_context(**kw)
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    # The pages' Content-Security-Policy must not refuse anything they need.
    page.on("console", lambda m: page.errors.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text else None)
    if os.environ.get("IOC_WEB_DEBUG"):  # the browser's console, for a failing test
        page.on("console", lambda m: print(f"console.{m.type}: {m.text}"))
    return page


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


async def map_ready(page: Page, timeout_ms: int = 60_000) -> None:
    """The console has started and the map has drawn every tile of the current view."""
    await page.wait_for_function("() => window.ioc && window.ioc.ready", timeout=timeout_ms)
    await map_idle(page, timeout_ms)


async def map_idle(page: Page, timeout_ms: int = 60_000) -> None:
    await page.wait_for_function(
        "() => { const m = window.ioc.map; return m.isStyleLoaded() && m.areTilesLoaded() "
        "&& !m.isMoving(); }", timeout=timeout_ms)
    # One more rendered frame so queryRenderedFeatures sees what was just placed. A frame,
    # not 'idle': while an alarm's halo pulses the map repaints five times a second and never
    # goes idle. Waited for with a timeout, so a map that stops drawing fails the test.
    await page.evaluate("() => { window.__iocFrame = false; const m = window.ioc.map; "
                        "m.once('render', () => { window.__iocFrame = true; }); "
                        "m.triggerRepaint(); }")
    await page.wait_for_function("() => window.__iocFrame === true", timeout=timeout_ms)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
