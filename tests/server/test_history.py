"""History API: raw points, buckets, and rollups giving the same answers as raw data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from server import keys
from server.http.app import create_app
from server.ingest.maintenance import Maintenance
from server.store import compress

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


@pytest.fixture
def filled(city_db_url):
    """Two days of power_w every minute for one lamp: value = minute of day."""
    with psycopg.connect(city_db_url) as conn:
        key, dev = conn.execute("select key, id from devices where kind = 'streetlight' "
                                "order by id limit 1").fetchone()
        mid = conn.execute("select id from metrics where name = 'power_w'").fetchone()[0]
        for d in range(3):
            conn.execute("select ioc_ensure_telemetry_partition(%s)", ((T0 + timedelta(days=d)).date(),))
        with conn.cursor().copy("copy telemetry (device_key, metric_id, ts, value, quality) "
                                "from stdin") as cp:
            for i in range(2 * 24 * 60):
                ts = T0 + timedelta(minutes=i)
                cp.write_row((key, mid, ts, float(i % 1440), 0))
            cp.write_row((key, mid, T0 + timedelta(seconds=30), 999.0, 2))  # bad quality
    return dev


async def _get(client, token, dev, **params):
    resp = await client.get(f"/api/v1/devices/{dev}/telemetry", params=params,
                            headers={"Authorization": f"Bearer {token}"})
    return resp.status, await resp.json()


async def test_raw_and_buckets(aiohttp_client, city_db_url, make_settings, token_for, filled):
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    token = await token_for(city_db_url, "viewer")
    frm, to = "2026-11-20T00:00:00Z", "2026-11-20T00:10:00Z"
    status, body = await _get(client, token, filled, metric="power_w", **{"from": frm, "to": to})
    assert status == 200 and body["device"] == filled and body["metric"] == "power_w"
    assert len(body["points"]) == 11  # 10 good minutes and the bad-quality point
    assert [p[1] for p in body["points"]][:3] == [0.0, None, 1.0]

    status, body = await _get(client, token, filled, metric="power_w", bucket="5m", agg="avg",
                              **{"from": frm, "to": to})
    assert [p[1] for p in body["points"]] == [2.0, 7.0]  # bad quality excluded
    for agg, want in (("min", 0.0), ("max", 4.0), ("sum", 10.0), ("count", 5), ("last", 4.0)):
        _, body = await _get(client, token, filled, metric="power_w", bucket="5m", agg=agg,
                             **{"from": frm, "to": to})
        assert body["points"][0][1] == want, agg


async def test_hourly_rollups_match_raw(aiohttp_client, city_db_url, make_settings, token_for,
                                        filled):
    app = create_app(make_settings(city_db_url, mqtt_url=None))
    client = await aiohttp_client(app)
    token = await token_for(city_db_url, "viewer")
    q = {"metric": "power_w", "from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z"}
    _, raw_hourly = await _get(client, token, filled, bucket="1h", agg="avg", **q)
    _, raw_daily = await _get(client, token, filled, bucket="1d", agg="max", **q)
    maint = Maintenance(app[keys.DB], app[keys.DIRECTORY], app[keys.SETTINGS].ingest)
    async with app[keys.DB].acquire() as conn:
        for _ in range(3):  # catches up a day per round
            await maint.rollup(conn, datetime(2026, 11, 22, 0, 30, tzinfo=UTC))
        n = await conn.fetchval("select count(*) from telemetry_hourly")
        # now remove raw data: answers must come from the rollups alone
        await conn.execute("delete from telemetry")
    assert n == 48
    _, rolled_hourly = await _get(client, token, filled, bucket="1h", agg="avg", **q)
    _, rolled_daily = await _get(client, token, filled, bucket="1d", agg="max", **q)
    assert rolled_hourly["points"] == raw_hourly["points"]
    assert len(rolled_hourly["points"]) == 48
    assert (raw_hourly["tier"], rolled_hourly["tier"], rolled_daily["tier"]) == ("raw", "hourly", "daily")
    assert rolled_daily["points"] == raw_daily["points"] and rolled_daily["points"][0][1] == 1439.0


@pytest.mark.parametrize("params", [
    {"metric": "nope"}, {}, {"metric": "power_w", "bucket": "7x"},
    {"metric": "power_w", "agg": "median", "bucket": "1h"},
    {"metric": "power_w", "from": "yesterday"},
    {"metric": "power_w", "from": "2026-11-21T00:00:00Z", "to": "2026-11-20T00:00:00Z"},
])
async def test_bad_history_queries_are_400(aiohttp_client, city_db_url, make_settings, token_for,
                                           filled, params):
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    status, body = await _get(client, await token_for(city_db_url, "viewer"), filled, **params)
    assert status == 400 and body["detail"]
    status, _ = await _get(client, await token_for(city_db_url, "viewer"), "NOPE-9", metric="power_w")
    assert status == 404


async def test_answers_do_not_change_when_compressed(aiohttp_client, city_db_url, make_settings,
                                                    token_for, filled):
    app = create_app(make_settings(city_db_url, mqtt_url=None))
    client = await aiohttp_client(app)
    token = await token_for(city_db_url, "viewer")
    asks = [{"from": "2026-11-20T00:00:00Z", "to": "2026-11-20T00:10:00Z"},
            {"from": "2026-11-20T23:58:30Z", "to": "2026-11-21T00:02:00Z", "limit": "3"},
            {"from": "2026-11-20T10:17:00Z", "to": "2026-11-21T13:00:00Z", "bucket": "1h", "agg": "last"},
            {"from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z", "bucket": "7m", "agg": "avg"}]
    before = [await _get(client, token, filled, metric="power_w", **a) for a in asks]
    async with app[keys.DB].acquire() as conn:
        report = await compress.compress_due(conn, datetime(2026, 11, 25, tzinfo=UTC))
        assert await conn.fetchval("select count(*) from telemetry") == 0
    assert report.points == 2 * 24 * 60 + 1 and report.segments == 2
    after = [await _get(client, token, filled, metric="power_w", **a) for a in asks]
    # (the tier may differ: the server's housekeeping rolls hours up meanwhile)
    assert [b["points"] for _, b in after] == [b["points"] for _, b in before]
    assert [len(b["points"]) for _, b in after] == [11, 3, 27, 412]
    metrics = await (await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})).text()
    assert 'ioc_telemetry_points{tier="compressed"} 2881.0' in metrics
    seg_bytes = float(metrics.split('ioc_telemetry_bytes{tier="compressed"} ')[1].split()[0])
    assert 0 < seg_bytes < 100_000
