"""The tokens API against the real database: secrets shown once, stored hashed, revocable."""

from __future__ import annotations

import hashlib

import pytest

from server.http.app import create_app
from tests.helpers import acount, aq

PROBLEM = "application/problem+json"


@pytest.fixture
async def api(aiohttp_client, db_url, make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(db_url, mqtt_url=None)))
    client.admin = await token_for(db_url, "admin")
    client.viewer = await token_for(db_url, "viewer")
    client.url = db_url
    return client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_create_list_use_and_revoke(api):
    resp = await api.post("/api/v1/tokens", json={"role": "operator", "name": "night shift"},
                          headers=bearer(api.admin))
    assert resp.status == 201, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    made = await resp.json()
    secret = made["token"]
    assert made["role"] == "operator" and made["name"] == "night shift" and made["active"]
    assert secret.startswith(made["prefix"])
    assert resp.headers["Location"] == f"/api/v1/tokens/{made['id']}"

    # stored as its SHA-256 only
    stored = (await aq(api.url, "select token_hash from api_tokens where id = %s", made["id"]))[0][0]
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert await acount(api.url, "select count(*) from api_tokens where token_hash = %s", secret) == 0
    [audit] = await aq(api.url, "select actor, action from audit_log where action = 'token.create' "
                                "and target = %s", f"token {made['id']}")
    assert audit == ("test-admin (admin)", "token.create")

    # the new token works, and the listing never shows a secret
    assert (await api.get("/api/v1/devices", headers=bearer(secret))).status == 200
    listing = await (await api.get("/api/v1/tokens", headers=bearer(api.admin))).json()
    mine = next(t for t in listing["tokens"] if t["id"] == made["id"])
    assert "token" not in mine and "token_hash" not in mine
    assert secret not in str(listing)
    assert mine["last_used_at"] is not None

    # revoked: refused at once (the cache forgot it), gone from the active listing
    resp = await api.delete(f"/api/v1/tokens/{made['id']}", headers=bearer(api.admin))
    assert resp.status == 204
    resp = await api.get("/api/v1/devices", headers=bearer(secret))
    assert resp.status == 401 and resp.content_type == PROBLEM
    active = await (await api.get("/api/v1/tokens", params={"include_revoked": "false"},
                                  headers=bearer(api.admin))).json()
    assert made["id"] not in [t["id"] for t in active["tokens"]]
    again = await api.delete(f"/api/v1/tokens/{made['id']}", headers=bearer(api.admin))
    assert again.status == 404 and again.content_type == PROBLEM


async def test_only_admins_manage_tokens(api):
    for method, path, body in [("GET", "/api/v1/tokens", None),
                               ("POST", "/api/v1/tokens", {"role": "admin"}),
                               ("DELETE", "/api/v1/tokens/1", None)]:
        resp = await api.request(method, path, json=body, headers=bearer(api.viewer))
        assert resp.status == 403, (method, path)
        assert "admin" in (await resp.json())["detail"]
    assert await acount(api.url, "select count(*) from api_tokens") == 2


@pytest.mark.parametrize("body, fragment", [
    ({"role": "root"}, "role must be one of"),
    ({"role": "viewer", "name": ""}, "name must be"),
    ({"role": "crew", "name": "crew without crew"}, "acts for one crew"),
    ({"role": "crew", "crew": "no-such-crew"}, "no crew with id"),
    ({"role": "viewer", "secret": "x"}, "unexpected member"),
    (["viewer"], "JSON object"),
])
async def test_bad_requests_say_why_and_store_nothing(api, body, fragment):
    resp = await api.post("/api/v1/tokens", json=body, headers=bearer(api.admin))
    assert resp.status == 400 and resp.content_type == PROBLEM
    assert fragment in (await resp.json())["detail"]
    assert await acount(api.url, "select count(*) from api_tokens") == 2


async def test_cannot_revoke_own_token(api):
    own = (await aq(api.url, "select id from api_tokens where role = 'admin'"))[0][0]
    resp = await api.delete(f"/api/v1/tokens/{own}", headers=bearer(api.admin))
    assert resp.status == 409
    assert (await api.get("/api/v1/tokens", headers=bearer(api.admin))).status == 200
    for bad in ("abc", "99999999999"):
        resp = await api.delete(f"/api/v1/tokens/{bad}", headers=bearer(api.admin))
        assert resp.status == 404, bad
