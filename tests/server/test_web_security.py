"""The pages' headers (CSP, nosniff, framing, referrer), where a token may travel (header,
session cookie, ?token= only where no header can be sent), token expiry, ``last_used_at``,
sign-in links and sessions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from server import keys
from server.http.app import create_app
from server.http.auth import create_token_sync, sign_in_link_sync
from tests.helpers import aexecute, aq

PAGES = ("/", "/crew", "/api/docs", "/report", "/reports/CODE", "/public")


@pytest.fixture
async def api(aiohttp_client, db_url, make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(db_url, mqtt_url=None)))
    client.admin = await token_for(db_url, "admin")
    client.viewer = await token_for(db_url, "viewer")
    client.url = db_url
    return client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (x.strip() for x in csp.split(";")) if d}


@pytest.mark.parametrize("path", PAGES)
async def test_pages_send_a_strict_csp_and_run_no_inline_script(api, path):
    resp = await api.get(path)
    assert resp.status == 200
    html = await resp.text()
    h = resp.headers
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "same-origin"
    csp = _directives(h["Content-Security-Policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
    assert "'unsafe-inline'" not in csp["style-src"]
    assert csp["worker-src"] == ["'self'", "blob:"], "MapLibre's workers"
    # Every script is a file, or data (the config), or the import map, allowed by its hash.
    for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S):
        if "src=" in attrs:
            assert not body.strip()
        elif 'type="application/json"' in attrs:
            continue
        else:
            assert 'type="importmap"' in attrs, f"an inline script on {path}: {attrs} {body[:80]}"
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in csp["script-src"]
    assert "<style" not in html and " style=" not in html


async def test_every_other_response_is_nosniff_and_runs_nothing(api):
    for path, headers in (("/api/v1/me", bearer(api.viewer)), ("/api/v1/me", {}),
                          ("/api/v1/nope", bearer(api.viewer)), ("/healthz", {})):
        resp = await api.get(path, headers=headers)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert resp.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    static = await api.get("/static/app.css")
    assert static.status == 200 and static.headers["X-Content-Type-Options"] == "nosniff"
    # No policy on scripts: a module worker would take it as its own.
    assert "Content-Security-Policy" not in static.headers


async def test_a_query_token_is_refused_except_where_no_header_can_be_sent(api):
    for path in ("/api/v1/devices", "/api/v1/tokens", "/api/v1/me", "/api/v1/audit", "/metrics"):
        resp = await api.get(path, params={"token": api.admin})
        assert resp.status == 400, path
        problem = await resp.json()
        assert problem["errors"] == [{"field": "token",
                                      "reason": "not accepted in the query on this path"}]
        assert "Authorization: Bearer" in problem["detail"]
    # ...even beside a good header: the address has leaked it already
    resp = await api.get("/api/v1/devices", params={"token": api.viewer}, headers=bearer(api.viewer))
    assert resp.status == 400
    # where a browser or GIS client loads by URL, it works
    assert (await api.get("/tiles", params={"token": api.viewer})).status == 200
    async with api.ws_connect("/api/v1/ws", params={"token": api.viewer}) as ws:
        await ws.send_json({"op": "subscribe", "bbox": [105.8, 21.5, 105.9, 21.6], "layers": []})
        msg = await ws.receive_json(timeout=10)
        assert msg["type"] == "snapshot"


async def test_tokens_expire(api, tmp_path, monkeypatch, capsys):
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    resp = await api.post("/api/v1/tokens", json={"role": "viewer", "expires_at": soon},
                          headers=bearer(api.admin))
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert made["expires_at"] is not None and made["kind"] == "api" and made["active"]
    assert (await api.get("/api/v1/me", headers=bearer(made["token"]))).status == 200

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    resp = await api.post("/api/v1/tokens", json={"role": "viewer", "expires_at": past},
                          headers=bearer(api.admin))
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["field"] == "expires_at"

    # time passes (moved in the database), and the cache's few seconds with it
    await aexecute(api.url, "update api_tokens set expires_at = now() - interval '1 second' where id = %s",
             made["id"])
    api.app[keys.TOKENS].forget()
    resp = await api.get("/api/v1/me", headers=bearer(made["token"]))
    assert resp.status == 401 and "expired" in (await resp.json())["detail"]
    listed = await (await api.get("/api/v1/tokens", headers=bearer(api.admin))).json()
    mine = next(t for t in listed["tokens"] if t["id"] == made["id"])
    assert mine["active"] is False and mine["expires_at"] is not None
    active = await (await api.get("/api/v1/tokens", params={"include_revoked": "false"},
                                  headers=bearer(api.admin))).json()
    assert made["id"] not in [t["id"] for t in active["tokens"]]

    # the command line: --expires takes a duration
    from server.cli.main import main

    monkeypatch.setenv("IOC_DATABASE_URL", api.url)
    assert await asyncio.to_thread(main, ["token", "create", "--role", "viewer", "--expires", "2h"]) == 0
    cli_token = capsys.readouterr().out.strip()
    [(left,)] = await aq(api.url, "select expires_at - now() from api_tokens where prefix = %s",
                         cli_token[:10])
    assert timedelta(hours=1, minutes=59) < left <= timedelta(hours=2)
    with pytest.raises(SystemExit, match="duration"):
        await asyncio.to_thread(main, ["token", "create", "--role", "viewer", "--expires", "soon"])
    # ioc token link: a sign-in link for minutes
    monkeypatch.setenv("IOC_DATA_DIR", str(tmp_path))  # no running demo to find
    assert await asyncio.to_thread(main, ["token", "link", "--minutes", "2"]) == 0
    link = capsys.readouterr().out.strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:8080/\?token=ioc_\S+", link), link
    [(kind, role, left)] = await aq(api.url, "select kind, role, expires_at - now() from api_tokens "
                                             "where prefix = %s", link.split("token=")[1][:10])
    assert (kind, role) == ("sign_in", "admin") and left <= timedelta(minutes=2)


async def test_last_used_at_is_not_a_write_per_request(api):
    store = api.app[keys.TOKENS]
    [(before,)] = await aq(api.url, "select xmin::text from api_tokens where name = 'test-viewer'")
    for _ in range(20):
        store.forget()  # every request a cache miss: the worst case
        assert (await api.get("/api/v1/me", headers=bearer(api.viewer))).status == 200
    [(after, used)] = await aq(api.url, "select xmin::text, last_used_at from api_tokens "
                                        "where name = 'test-viewer'")
    assert used is not None
    assert before != after
    # ...and not again within the minute, however many requests
    for _ in range(5):
        store.forget()
        await api.get("/api/v1/me", headers=bearer(api.viewer))
    [(again,)] = await aq(api.url, "select xmin::text from api_tokens where name = 'test-viewer'")
    assert again == after


async def test_a_sign_in_link_starts_one_session_in_an_httponly_cookie(api):
    link = await asyncio.to_thread(sign_in_link_sync, api.url, "http://ioc.example", minutes=5)
    assert link.startswith("http://ioc.example/?token=")
    sign_in = link.split("token=")[1]
    resp = await api.get("/api/v1/devices", headers=bearer(sign_in))
    assert resp.status == 401 and "sign-in link" in (await resp.json())["detail"]

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        base = str(api.make_url(""))
        resp = await browser.post(f"{base}/api/v1/session", headers=bearer(sign_in))
        assert resp.status == 201, await resp.text()
        cookie = resp.headers["Set-Cookie"]
        assert "ioc_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        me = await resp.json()
        assert me["role"] == "admin" and "token" not in me
        assert sign_in not in cookie
        # the session works from the cookie alone, for the API and the websocket
        assert (await browser.get(f"{base}/api/v1/me")).status == 200
        async with browser.ws_connect(f"{base}/api/v1/ws", origin=base) as ws:
            await ws.send_json({"op": "subscribe", "bbox": [105.8, 21.5, 105.9, 21.6], "layers": []})
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
        # another site's page cannot use it to change anything or to listen
        resp = await browser.post(f"{base}/api/v1/tokens", json={"role": "admin"},
                                  headers={"Origin": "http://evil.example"})
        assert resp.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await browser.ws_connect(f"{base}/api/v1/ws", origin="http://evil.example")
        # the link worked once
        again = await api.post("/api/v1/session", headers=bearer(sign_in))
        assert again.status in (401, 409)
        # signing out ends the session
        resp = await browser.delete(f"{base}/api/v1/session", headers={"Origin": base})
        assert resp.status == 204
        assert (await browser.get(f"{base}/api/v1/me")).status == 401
    kinds = await aq(api.url, "select kind, revoked_at is not null from api_tokens "
                              "where kind <> 'api' order by id")
    assert kinds == [("sign_in", True), ("session", True)]


async def test_revoking_a_token_ends_the_sessions_made_from_it(api):
    operator = await asyncio.to_thread(create_token_sync, api.url, "operator", "console")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        base = str(api.make_url(""))
        resp = await browser.post(f"{base}/api/v1/session", headers=bearer(operator))
        assert resp.status == 201
        assert (await browser.get(f"{base}/api/v1/me")).status == 200
        [(op_id,)] = await aq(api.url, "select id from api_tokens where name = 'console' "
                                       "and kind = 'api'")
        assert (await api.delete(f"/api/v1/tokens/{op_id}", headers=bearer(api.admin))).status == 204
        resp = await browser.get(f"{base}/api/v1/me")
        assert resp.status == 401 and "session has ended" in (await resp.json())["detail"]
