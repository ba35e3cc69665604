"""Browser tests: Debian's chromium, headless, driven by Playwright for Python.

The browser is the system package (``make setup`` installs it); Playwright's own browser
download (``playwright install``) is never used, so nothing is fetched at run time. The
server is the real app on a free port against the session's PostgreSQL and mosquitto.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.helpers import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VENDOR = ROOT / "server" / "static" / "vendor" / "maplibre-gl" / "maplibre-gl.mjs"

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


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "web-rules.yaml"
    path.write_text(RULES_YAML)
    return path
