"""/api/docs in a real browser: Swagger UI (from npm, served by us) shows the OpenAPI document
of the running server to a signed-in user, and asks anyone else for a token."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT, running
from tests.web.helpers import artifact, new_page

SWAGGER_UI = ROOT / "server" / "static" / "vendor" / "swagger-ui" / "swagger-ui-bundle.js"


@pytest.fixture
def swagger_ui() -> None:
    if not SWAGGER_UI.exists():
        pytest.fail(f"{SWAGGER_UI} is missing: run `make web` (npm ci copies swagger-ui-dist there).")


def base_url(client) -> str:
    return str(client.make_url("/")).rstrip("/")


def operation(page, method: str, path: str):
    """Swagger UI's block for one operation (its summary carries the raw path)."""
    return page.locator(f".opblock-{method.lower()} .opblock-summary-path[data-path='{path}']")


async def test_api_docs_render_the_servers_own_document(browser, swagger_ui, db_url, make_settings,
                                                        token_for):
    token = await token_for(db_url, "viewer")
    async with running(make_settings(db_url)) as client:
        assert (await client.get("/api/docs")).status == 200, "the page itself is public"
        assert (await client.get("/api/v1/openapi.json")).status == 401, "the document is not"
        doc = await (await client.get("/api/v1/openapi.json",
                                      headers={"Authorization": f"Bearer {token}"})).json()
        assert "post" in doc["paths"]["/api/v1/alarms/{id}/ack"]

        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/api/docs?token={token}")
        ack = operation(page, "POST", "/api/v1/alarms/{id}/ack")
        await ack.wait_for(state="visible", timeout=30_000)
        assert "token=" not in page.url, "the token must leave the address bar"
        assert await operation(page, "GET", "/api/v1/devices").is_visible()
        assert doc["info"]["title"] in await page.locator(".info .title").inner_text()
        await page.screenshot(path=artifact("api-docs.png"))
        assert page.errors == []


async def test_api_docs_ask_for_a_token_and_say_why_one_is_refused(browser, swagger_ui, db_url,
                                                                  make_settings, token_for):
    token = await token_for(db_url, "operator")
    async with running(make_settings(db_url)) as client:
        page = await new_page(browser)
        await page.goto(f"{base_url(client)}/api/docs")
        form = page.locator("#sign-in")
        await form.wait_for(state="visible")
        assert await page.locator(".opblock").count() == 0

        await page.fill("#token", "ioc_not-a-real-token")
        await page.click("#sign-in button[type=submit]")
        error = page.locator("#sign-in-error")
        await error.filter(has_text="unknown or revoked").wait_for(state="visible")
        await page.screenshot(path=artifact("api-docs-sign-in.png"))

        await page.fill("#token", token)
        await page.click("#sign-in button[type=submit]")
        await operation(page, "GET", "/api/v1/devices").wait_for(state="visible", timeout=30_000)
        assert await form.is_hidden()
        assert page.errors == []
