"""Device status from the data: the staleness scan, driven by ``device_state.next_check``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.sdk import Reading, StatusUpdate
from server.ingest.directory import Directory
from server.ingest.downtime import NONE, measure
from server.ingest.maintenance import OFFLINE_INTERVALS, STALE_INTERVALS, Maintenance
from server.ingest.writer import Ingest
from server.runtime.metrics import Registry
from server.settings import IngestSettings
from server.store.db import create_pool
from tests.helpers import wait_for


@pytest.fixture
async def pipeline(city_db_url):
    pool = await create_pool(city_db_url, min_size=1, max_size=4)
    directory = Directory()
    async with pool.acquire() as conn:
        await directory.load(conn)
    ingest = Ingest(pool, directory, IngestSettings(linger_ms=0), Registry())
    await ingest.start()
    maintenance = Maintenance(pool, directory, IngestSettings())
    try:
        yield pool, ingest, maintenance
    finally:
        await ingest.stop()
        await pool.close()


async def _store(ingest: Ingest, items) -> None:
    before = ingest.metrics.readings_stored._value.get()
    await ingest.submit(items, source="test")
    n = sum(isinstance(i, Reading) for i in items)
    await wait_for(lambda: ingest.pending == 0
                   and ingest.metrics.readings_stored._value.get() >= before + n)


async def _state(pool, device_id: str):
    async with pool.acquire() as conn:
        return await conn.fetchrow(
            "select s.status, s.last_seen, s.next_check, "
            "coalesce(d.expected_interval_s, k.expected_interval_s) as iv "
            "from device_state s join devices d on d.key = s.device_key "
            "join kinds k on k.kind = d.kind where d.id = $1", device_id)


async def _lamps(pool, n: int) -> list[str]:
    async with pool.acquire() as conn:
        return [r["id"] for r in await conn.fetch(
            "select id from devices where kind = 'streetlight' order by id limit $1", n)]


async def test_scan_marks_stale_and_offline_by_each_devices_deadline(pipeline):
    pool, ingest, maintenance = pipeline
    fresh, late, gone = await _lamps(pool, 3)
    iv = await _state_interval(pool)
    now = datetime.now(UTC).replace(microsecond=0)
    heard = []
    maintenance.status_listeners.append(heard.append)
    await _store(ingest, [
        Reading(fresh, "power_w", 40.0, now),
        Reading(late, "power_w", 41.0, now - (STALE_INTERVALS + 1) * iv),
        Reading(gone, "power_w", 42.0, now - (OFFLINE_INTERVALS + 1) * iv),
    ])
    for dev in (fresh, late, gone):  # a first reading puts the device under watch at once
        st = await _state(pool, dev)
        assert st["status"] == "online" and st["next_check"] <= datetime.now(UTC)

    changes = await maintenance.update_status()
    keys = {ingest.directory.get(d).key: d for d in (fresh, late, gone)}
    assert {keys[k]: s for k, s in changes} == {late: "stale", gone: "offline"}
    assert heard == [changes]

    st = await _state(pool, fresh)
    assert st["status"] == "online"
    assert st["next_check"] == st["last_seen"] + STALE_INTERVALS * iv  # when it would go stale
    st = await _state(pool, late)
    assert st["status"] == "stale"
    assert st["next_check"] == st["last_seen"] + OFFLINE_INTERVALS * iv  # when it would go offline
    st = await _state(pool, gone)
    assert st["status"] == "offline" and st["next_check"] is None  # nothing left to watch

    assert await maintenance.update_status() == []  # nobody is due again yet

    # A reading brings the offline device back, under watch again.
    await _store(ingest, [Reading(gone, "power_w", 43.0, datetime.now(UTC))])
    st = await _state(pool, gone)
    assert st["status"] == "online" and st["next_check"] is not None
    assert await maintenance.update_status() == []
    assert (await _state(pool, gone))["next_check"] > datetime.now(UTC)


async def _state_interval(pool) -> timedelta:
    async with pool.acquire() as conn:
        s = await conn.fetchval("select expected_interval_s from kinds where kind = 'streetlight'")
    return timedelta(seconds=s)


async def test_scan_reads_only_devices_whose_time_has_come(pipeline):
    """The scan is driven by next_check (its index), not by looking at every device: an
    overdue device whose next_check is still ahead is left alone until that moment."""
    pool, ingest, maintenance = pipeline
    (lamp,) = await _lamps(pool, 1)
    iv = await _state_interval(pool)
    await _store(ingest, [Reading(lamp, "power_w", 40.0,
                                  datetime.now(UTC) - (STALE_INTERVALS + 1) * iv)])
    async with pool.acquire() as conn:
        await conn.execute("update device_state set next_check = now() + interval '1 hour'")
    assert await maintenance.update_status() == []
    assert (await _state(pool, lamp))["status"] == "online"
    async with pool.acquire() as conn:
        await conn.execute("update device_state set next_check = now()")
    assert [s for _, s in await maintenance.update_status()] == ["stale"]


async def test_status_messages_and_readings_keep_the_watch_consistent(pipeline):
    pool, ingest, maintenance = pipeline
    (lamp,) = await _lamps(pool, 1)
    await _store(ingest, [Reading(lamp, "power_w", 40.0, datetime.now(UTC))])
    await _store(ingest, [StatusUpdate(lamp, online=False)])
    st = await _state(pool, lamp)
    assert st["status"] == "offline" and st["next_check"] is None  # its last will: not watched
    await _store(ingest, [StatusUpdate(lamp, online=True)])
    st = await _state(pool, lamp)
    assert st["status"] == "online" and st["next_check"] is not None
    await maintenance.update_status()
    st = await _state(pool, lamp)
    assert st["status"] == "online" and st["next_check"] > datetime.now(UTC)


async def test_the_servers_own_downtime_is_not_the_devices_silence(pipeline):
    """After an outage, devices not heard since the start have the downtime added to their
    deadlines: the first scan marks none of them for silence nobody could hear; silence from
    before the outage still counts."""
    pool, ingest, _ = pipeline
    quiet, late = await _lamps(pool, 2)
    iv = await _state_interval(pool)
    down = (OFFLINE_INTERVALS + 5) * iv
    now = datetime.now(UTC)
    await _store(ingest, [Reading(quiet, "power_w", 40.0, now - down),  # heard until the outage
                          Reading(late, "power_w", 41.0, now - down - (STALE_INTERVALS + 1) * iv)])
    async with pool.acquire() as conn:
        outage = await measure(conn)
    assert outage.seconds == pytest.approx(down.total_seconds(), abs=30)

    keys = {ingest.directory.get(d).key: d for d in (quiet, late)}
    after = Maintenance(pool, ingest.directory, IngestSettings(), downtime=outage)
    assert {keys[k]: s for k, s in await after.update_status()} == {late: "stale"}
    st = await _state(pool, quiet)
    assert st["status"] == "online"
    grace = timedelta(seconds=outage.seconds)
    assert abs(st["next_check"] - (st["last_seen"] + grace + STALE_INTERVALS * iv)) < timedelta(
        milliseconds=1)

    # The same scan without the downtime would have called the quiet lamp offline.
    async with pool.acquire() as conn:
        await conn.execute("update device_state set next_check = now()")
    blind = Maintenance(pool, ingest.directory, IngestSettings(), downtime=NONE)
    assert {keys[k]: s for k, s in await blind.update_status()} == {quiet: "offline", late: "offline"}
