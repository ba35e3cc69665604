"""Browser tests: Debian's chromium, headless, driven by Playwright for Python.

The browser is the system package (``make setup`` installs it); Playwright's own browser
download (``playwright install``) is never used, so nothing is fetched at run time. The
server is the real app on a free port against the session's PostgreSQL and mosquitto.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VENDOR = ROOT / "server" / "static" / "vendor" / "maplibre-gl" / "maplibre-gl.mjs"
ARTIFACTS = ROOT / "artifacts" / "web"

# A pressure sensor reading below 1.5 bar raises a major alarm at once (no on-delay), so
# the time from publish to screen is the pipeline's, not the rule's.
RULES_YAML = """\
rules:
  - id: web-pressure-low
    kind: threshold
    select: {kind: pressure_sensor}
    metric: pressure_bar
    below: 1.5
    severity: major
"""


@pytest.fixture
def installed() -> None:
    """The browser and the map library, or a failure that says how to install them."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests drive Debian's chromium. "
                    "Run `make setup` (or `apt-get install chromium`).")
    if not VENDOR.exists():
        pytest.fail(f"{VENDOR} is missing: run `make web` (npm ci copies maplibre-gl there).")


@pytest.fixture
async def browser(installed):
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def new_page(browser: Browser, **kw) -> Page:
    """A page whose script errors fail the test (collected in ``page.errors``)."""
    kw.setdefault("viewport", {"width": 1600, "height": 900})
    kw.setdefault("locale", "en-GB")
    context = await browser.new_context(**kw)
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    if os.environ.get("IOC_WEB_DEBUG"):  # the browser's console, for a failing test
        page.on("console", lambda m: print(f"console.{m.type}: {m.text}"))
    return page


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "web-rules.yaml"
    path.write_text(RULES_YAML)
    return path


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
    # One more frame so queryRenderedFeatures sees what was just placed.
    await asyncio.sleep(0.2)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
