"""Routing in the synthetic city (ward crew, else nearest available crew), quiet hours, and
alarms that must not be announced (shelved, suppressed, out of service)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp import web

from server import keys
from server.alarms.writes import AlarmWriter
from server.notify import notify_ctx
from server.notify.escalation import SELECT_ALARM
from server.runtime.metrics import Registry
from server.settings import Settings, WebhookChannel
from server.store.db import create_pool
from tests.helpers import free_port, until
from tests.server.helpers import (
    Receiver,
    fast_settings,
    new_alarm,
    notifier_running,
    outbox,
    raise_alarm,
    window_around,
)


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance, computed here independently of PostGIS."""
    (lon1, lat1), (lon2, lat2) = a, b
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


async def _crews(pool) -> dict[str, dict]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("select id, ward, available, escalation_level, "
                                "ST_X(location) as lon, ST_Y(location) as lat from crews")
    return {r["id"]: dict(r) for r in rows}


async def _device_in(pool, crew_wards: bool) -> dict:
    """A pressure sensor in a ward that has (or has no) crew of its own."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"""select d.id, d.ward, ST_X(d.geom) as lon, ST_Y(d.geom) as lat from devices d
                where d.kind = 'pressure_sensor' and {'' if crew_wards else 'not'}
                      exists (select 1 from crews c where c.ward = d.ward)
                order by d.id limit 1""")
    assert row is not None
    return dict(row)


def _nearest(crews: dict[str, dict], device: dict) -> list[str]:
    here = (device["lon"], device["lat"])
    ok = [c for c in crews.values() if c["available"] and c["escalation_level"] == 1]
    return [c["id"] for c in sorted(ok, key=lambda c: _metres((c["lon"], c["lat"]), here))]


async def test_raised_alarm_goes_to_the_crew_of_the_devices_ward(city_db_url: str) -> None:
    async with notifier_running(city_db_url, fast_settings(), start=False) as (pool, notifier):
        device = await _device_in(pool, crew_wards=True)
        crews = await _crews(pool)
        ward_crew = next(c for c in crews.values() if c["ward"] == device["ward"])["id"]
        alarm, result = await raise_alarm(pool, notifier, device["id"])
        assert result == {"assigned_crew": ward_crew}
        async with pool.acquire() as conn:
            assigned = await conn.fetchval("select assigned_crew from alarms where id = $1", alarm["id"])
            event = await conn.fetchrow("select actor, reason, details from alarm_events "
                                        "where alarm_id = $1 and event = 'assigned'", alarm["id"])
        rows = await outbox(pool, alarm["id"])
    assert assigned == ward_crew
    assert event["actor"] == "notifier" and event["reason"] == f"routed to {ward_crew}: ward {device['ward']}"
    assert event["details"] == {"crew": ward_crew, "by": "ward"}
    # The seeded crews have an e-mail, but no SMTP server is configured: the crew feed.
    assert [(r["channel"], r["target"], r["event"]) for r in rows] == [("crew", ward_crew, "raised")]
    assert rows[0]["payload"]["body"]["data"]["alarm"]["assigned_crew"] == ward_crew


async def test_no_ward_crew_means_the_nearest_available_crew(city_db_url: str) -> None:
    async with notifier_running(city_db_url, fast_settings(), start=False) as (pool, notifier):
        device = await _device_in(pool, crew_wards=False)
        crews = await _crews(pool)
        first, second = _nearest(crews, device)[:2]
        _, result = await raise_alarm(pool, notifier, device["id"])
        assert result == {"assigned_crew": first}
        # The nearest crew goes off duty: the next alarm there goes to the next nearest.
        async with pool.acquire() as conn:
            await conn.execute("update crews set available = false where id = $1", first)
        alarm, result = await raise_alarm(pool, notifier, device["id"], rule="pressure-high")
        assert result == {"assigned_crew": second}
        async with pool.acquire() as conn:
            details = await conn.fetchval("select details from alarm_events where alarm_id = $1 "
                                          "and event = 'assigned'", alarm["id"])
    assert details["by"] == "nearest"
    here = (device["lon"], device["lat"])
    expected = _metres((crews[second]["lon"], crews[second]["lat"]), here)
    assert details["distance_m"] == pytest.approx(expected, rel=0.01)


async def test_an_unavailable_ward_crew_is_passed_over(city_db_url: str) -> None:
    async with notifier_running(city_db_url, fast_settings(), start=False) as (pool, notifier):
        device = await _device_in(pool, crew_wards=True)
        crews = await _crews(pool)
        ward_crew = next(c for c in crews.values() if c["ward"] == device["ward"])["id"]
        async with pool.acquire() as conn:
            await conn.execute("update crews set available = false where id = $1", ward_crew)
        crews[ward_crew]["available"] = False
        _, result = await raise_alarm(pool, notifier, device["id"])
    assert result == {"assigned_crew": _nearest(crews, device)[0]}
    assert result["assigned_crew"] != ward_crew


async def test_an_incident_is_routed_by_its_estimated_location(city_db_url: str) -> None:
    """A pipe-burst incident carries its own point; the nearest crew to that point goes."""
    async with notifier_running(city_db_url, fast_settings(), start=False) as (pool, notifier):
        crews = await _crews(pool)
        target = crews["CREW-05"]
        point = {"type": "Point", "coordinates": [target["lon"] + 0.0005, target["lat"]]}
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("update crews set ward = null")  # no ward match: distance decides
            alarm = await new_alarm(conn, "PS-NOWHERE")
            result = await notifier.enqueue(conn, {**alarm, "geometry": point}, "raised")
    assert result == {"assigned_crew": "CREW-05"}


async def test_an_assigned_alarm_is_not_rerouted_and_nobody_available_is_not_an_error(
        city_db_url: str) -> None:
    async with notifier_running(city_db_url, fast_settings(), start=False) as (pool, notifier):
        device = await _device_in(pool, crew_wards=True)
        _, result = await raise_alarm(pool, notifier, device["id"], assigned_crew="CREW-08")
        assert result is None
        async with pool.acquire() as conn:
            await conn.execute("update crews set available = false")
        alarm, result = await raise_alarm(pool, notifier, device["id"], rule="pressure-high")
        assert result is None
        assert await outbox(pool, alarm["id"]) == []


@pytest.mark.parametrize("flags", [
    "suppressed = true", "out_of_service = true", "shelved_until = now() + interval '1 hour'"])
async def test_shelved_suppressed_or_out_of_service_alarms_are_not_announced(
        city_db_url: str, flags: str) -> None:
    receiver = Receiver(free_port())
    settings = fast_settings(webhooks=[WebhookChannel(name="ticketing", url=receiver.url)])
    async with notifier_running(city_db_url, settings, start=False) as (pool, notifier):
        device = await _device_in(pool, crew_wards=True)
        async with pool.acquire() as conn, conn.transaction():
            alarm = await new_alarm(conn, device["id"])
            await conn.execute(f"update alarms set {flags} where id = $1", alarm["id"])
            alarm = dict(await conn.fetchrow(SELECT_ALARM, alarm["id"]))
            assert await notifier.enqueue(conn, alarm, "raised") is None
            assert await notifier.enqueue(conn, alarm, "shelved") is None
        assert await outbox(pool, alarm["id"]) == []
        async with pool.acquire() as conn:
            assert await conn.fetchval("select assigned_crew from alarms where id = $1",
                                       alarm["id"]) is None


async def test_follow_ups_of_a_silenced_alarm_reach_only_those_already_told(city_db_url: str) -> None:
    receiver = Receiver(free_port())
    settings = fast_settings(webhooks=[
        WebhookChannel(name="ticketing", url=receiver.url),
        # Wants closures only, so it was not told of the raise: it hears nothing of this one.
        WebhookChannel(name="closures", url=receiver.url + "?closures", events=["closed"])])
    async with notifier_running(city_db_url, settings, start=False) as (pool, notifier):
        device = await _device_in(pool, crew_wards=True)
        alarm, _ = await raise_alarm(pool, notifier, device["id"])
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("update alarms set out_of_service = true, state = 'closed' "
                               "where id = $1", alarm["id"])
            await notifier.enqueue(conn, {**alarm, "out_of_service": True, "state": "closed"},
                                   "closed")
        rows = await outbox(pool, alarm["id"])
    told = sorted((r["event"], r["channel"], r["target"]) for r in rows)
    crew = rows[0]["target"]
    assert told == [("closed", "crew", crew), ("closed", "webhook", receiver.url),
                    ("raised", "crew", crew), ("raised", "webhook", receiver.url)]


async def test_quiet_hours_defer_low_priorities_but_never_critical(db_url: str) -> None:
    receiver = Receiver(free_port())
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    now = datetime.now(UTC)
    quiet = window_around(now, tz)
    settings = fast_settings(quiet_hours=quiet,
                             webhooks=[WebhookChannel(name="ticketing", url=receiver.url)])
    await receiver.start()
    try:
        async with notifier_running(db_url, settings) as (pool, notifier):
            low, _ = await raise_alarm(pool, notifier, "PS-0001", severity="minor", priority=3)
            critical, _ = await raise_alarm(pool, notifier, "PS-0002", severity="critical", priority=3)
            urgent, _ = await raise_alarm(pool, notifier, "PS-0003", severity="major", priority=1)
            await until(lambda: len(receiver.requests) == 2, what="the two urgent webhooks")
            [deferred] = await outbox(pool, low["id"])
            # Delivery of the later rows means the worker claimed past the deferred one.
            assert deferred["status"] == "pending" and deferred["attempts"] == 0
    finally:
        await receiver.stop()
    sent = sorted(orjson.loads(b)["data"]["alarm"]["id"] for _, b in receiver.requests)
    assert sent == sorted([critical["id"], urgent["id"]])
    local_end = datetime.combine((now.astimezone(tz) + timedelta(hours=1)).date(), quiet.end, tz)
    assert deferred["next_attempt_at"] == local_end.astimezone(UTC)


async def test_the_engines_writer_enqueues_with_the_running_apps_settings(city_db_url: str) -> None:
    """The alarm engine is handed the app's notifier (app[keys.NOTIFIER], set by notify_ctx)
    and its writer queues every transition's notifications through it."""
    receiver = Receiver(free_port())
    app = web.Application()
    app[keys.SETTINGS] = Settings(database_url=city_db_url, notify=fast_settings(
        webhooks=[WebhookChannel(name="only-here", url=receiver.url)]))
    app[keys.METRICS] = Registry()
    app[keys.DB] = pool = await create_pool(city_db_url, min_size=1, max_size=4)
    ctx = notify_ctx(app)
    try:
        await ctx.__anext__()
        async with pool.acquire() as conn, conn.transaction():
            alarm = await new_alarm(conn, "PS-0001")
            await AlarmWriter(app[keys.NOTIFIER]).notify(conn, alarm, "raised")
        rows = await outbox(pool, alarm["id"])
        assert ("webhook", receiver.url) in [(r["channel"], r["target"]) for r in rows]
    finally:
        with pytest.raises(StopAsyncIteration):
            await ctx.__anext__()
        await pool.close()


