"""Rate limits per token (429 + Retry-After) and bounded request bodies (413)."""

from __future__ import annotations

import pytest

from server.http.app import create_app
from server.http.ratelimit import RateLimiter
from server.settings import ApiSettings, RateLimit
from tests.helpers import acount

PROBLEM = "application/problem+json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_bucket_allows_burst_then_refills_at_rate():
    clock = Clock()
    rl = RateLimiter({"viewer": RateLimit(rate_per_s=2, burst=3)}, clock=clock)
    assert [rl.take(1, "viewer") for _ in range(3)] == [0, 0, 0]
    wait = rl.take(1, "viewer")
    assert wait == pytest.approx(0.5)
    assert rl.take(2, "viewer") == 0, "another token has its own bucket"
    clock.t += 0.5
    assert rl.take(1, "viewer") == 0
    assert rl.take(1, "viewer") > 0
    clock.t += 100
    assert [rl.take(1, "viewer") for _ in range(3)] == [0, 0, 0], "refills up to burst only"
    assert rl.take(1, "viewer") > 0


def test_rate_limit_settings_reject_unknown_roles_and_keep_defaults():
    s = ApiSettings(rate_limits={"viewer": {"rate_per_s": 1, "burst": 1}})
    assert s.rate_limits["viewer"].burst == 1
    assert s.rate_limits["admin"].burst >= 1000
    with pytest.raises(ValueError, match="unknown role"):
        ApiSettings(rate_limits={"root": {"rate_per_s": 1, "burst": 1}})


@pytest.fixture
async def tight(aiohttp_client, db_url, make_settings, token_for):
    settings = make_settings(db_url, mqtt_url=None, api={
        "rate_limits": {"viewer": {"rate_per_s": 0.2, "burst": 3}},
        "max_body_bytes": 4096, "max_import_bytes": 64 * 1024,
    })
    client = await aiohttp_client(create_app(settings))
    client.viewer = await token_for(db_url, "viewer")
    client.integrator = await token_for(db_url, "integrator")
    client.url = db_url
    return client


async def test_429_with_retry_after_per_token(tight):
    for _ in range(3):
        assert (await tight.get("/api/v1/devices", headers=bearer(tight.viewer))).status == 200
    resp = await tight.get("/api/v1/devices", headers=bearer(tight.viewer))
    assert resp.status == 429 and resp.content_type == PROBLEM
    retry = int(resp.headers["Retry-After"])
    assert 1 <= retry <= 5
    body = await resp.json()
    assert body["retry_after"] == retry and "too many requests" in body["detail"]
    # another token (another role, another bucket) is not affected; probes never are
    assert (await tight.get("/api/v1/devices", headers=bearer(tight.integrator))).status == 200
    assert (await tight.get("/healthz")).status == 200


async def test_ordinary_body_over_limit_is_413_and_stores_nothing(tight):
    feature = {"type": "Feature", "id": "SL-BIG", "geometry": {"type": "Point",
               "coordinates": [105.8, 21.6]},
               "properties": {"kind": "streetlight", "note": "x" * 5000}}
    resp = await tight.post("/api/v1/devices", json=feature, headers=bearer(tight.integrator))
    assert resp.status == 413 and resp.content_type == PROBLEM
    assert "4,096 bytes" in (await resp.json())["detail"]
    assert await acount(tight.url, "select count(*) from devices") == 0


async def test_chunked_body_over_limit_is_413(tight):
    async def gen():
        for _ in range(10):
            yield b"[" + b" " * 1000

    resp = await tight.post("/api/v1/telemetry", data=gen(), headers=bearer(tight.integrator))
    assert resp.status == 413 and resp.content_type == PROBLEM
