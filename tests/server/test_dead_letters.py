"""Dead letters are bounded: the payload cut to [ingest] dead_letter_max_kib and kept once per
input, old ones deleted after dead_letter_retention_days; /metrics says who sends garbage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from server.ingest import deadletters
from server.settings import IngestSettings
from tests.helpers import aq, q, running, wait_for


async def test_payloads_are_cut_kept_once_and_counted_by_device_and_source(
        city_db_url, make_settings, token_for):
    lamp = q(city_db_url, "select id from devices where kind = 'streetlight' order by id limit 1")[0][0]
    h = {"Authorization": f"Bearer {await token_for(city_db_url, 'integrator')}"}
    # 300 readings nobody can store, in one request of ~20 KiB
    body = [{"device_id": lamp, "values": {"power_w": "not a number", "note_" * 3: i}}
            for i in range(150)]
    body += [{"device_id": "STRANGER-1", "values": {"power_w": 1}} for _ in range(150)]
    settings = make_settings(city_db_url, mqtt_url=None,
                             ingest=IngestSettings(dead_letter_max_kib=1))
    async with running(settings) as client:
        resp = await client.post("/api/v1/telemetry", json=body, headers=h)
        assert resp.status == 202, await resp.text()
        rejected = len((await resp.json())["rejected"])
        assert rejected == 450
        await wait_for(lambda: q(city_db_url, "select count(*) from dead_letters")[0][0] >= rejected,
                       blocking=True)
        metrics = await (await client.get("/metrics", headers=h)).text()
    rows = await aq(city_db_url, "select length(payload), payload_size from dead_letters "
                                 "where payload is not null")
    assert len(rows) == 1, "the request's payload is kept once, not once per bad reading"
    [(kept, size)] = rows
    assert kept == 1024 and size > 15_000, (kept, size)
    counted = {line for line in metrics.splitlines() if line.startswith("ioc_dead_letter")}
    # two per entry: a text power_w, and a metric a lamp does not report
    assert f'ioc_dead_letters_by_device_total{{device="{lamp}"}} 300.0' in counted, counted
    assert 'ioc_dead_letters_by_device_total{device="unregistered"} 150.0' in counted
    assert f'ioc_dead_letter_bytes_total{{source="http"}} {float(size)}' in counted


async def test_old_dead_letters_are_deleted(db_url):
    conn = await asyncpg.connect(db_url)
    try:
        now = datetime.now(UTC)
        await conn.executemany(
            "insert into dead_letters (received_at, source, reason) values ($1, 'mqtt', 'x')",
            [(now - timedelta(days=d, minutes=1),) for d in (0, 1, 13, 14, 15, 400)])
        assert await deadletters.expire(conn, now, 14) == 3
        left = sorted(r[0] for r in await conn.fetch(
            "select (now() - received_at) < interval '14 days' from dead_letters"))
        assert left == [True, True, True]
    finally:
        await conn.close()


def test_the_bounds_are_settings():
    s = IngestSettings()
    assert s.dead_letter_max_kib == 4 and s.dead_letter_retention_days == 14
