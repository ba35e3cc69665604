"""``ioc demo``'s last day of history (server/simulate/history.py): written once, resumed
where it stopped, and the map at past instants shows what the simulator's patterns say
(lamps on in the evening, dimmed after midnight, off at noon; alarms that came and went)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from server.alarms.rulefiles import read_rule_file
from server.cli.demo import DEMO_RULES
from server.http.app import create_app
from server.simulate import history
from server.simulate.fleet import load_fleet
from server.simulate.patterns import Patterns
from tests.helpers import iso

NOW = datetime.now(UTC).replace(microsecond=0)
RULES = {r.id: r for r in read_rule_file(DEMO_RULES)[0]}
HOURS = 6  # of every kind's readings; the map test writes a whole day of lamps


class Stop(Exception):
    pass


async def _counts(conn: asyncpg.Connection) -> tuple[int, int, int]:
    return (await conn.fetchval("select count(*) from telemetry"),
            await conn.fetchval("select count(*) from (select distinct device_key, metric_id, ts "
                                "from telemetry) d"),
            await conn.fetchval("select count(*) from alarms"))


async def test_written_once_and_resumed_where_it_stopped(city_db_url):
    pool = await asyncpg.create_pool(city_db_url, min_size=1, max_size=2)
    try:
        # stopped after its third hour (the progress line comes after each hour's commit)
        hours = []

        def stop_after_three(line: str) -> None:
            hours.append(line)
            if len(hours) == 3:
                raise Stop

        with pytest.raises(Stop):
            await history.backfill(city_db_url, pool, NOW, hours=HOURS, rules=RULES,
                                   progress=stop_after_three)
        async with pool.acquire() as conn:
            part = await _counts(conn)
        assert 0 < part[0] == part[1]
        # the next start finishes the day, and writes nothing twice
        report = await history.backfill(city_db_url, pool, NOW, hours=HOURS, rules=RULES)
        assert report.ranges[0].to == NOW and report.points > 0
        async with pool.acquire() as conn:
            whole = await _counts(conn)
            # the same readings as one uninterrupted run would write
            fleet = await load_fleet(city_db_url)
            keys = {r["id"]: r["key"] for r in await conn.fetch("select id, key from devices")}
            metrics = {r["name"]: r["id"] for r in await conn.fetch("select name, id from metrics")}
            city = history.City(fleet, keys, metrics, 42)
            start = NOW - timedelta(hours=HOURS)
            city.plan_episodes(start, NOW)
            expected = len(city.readings(start.timestamp(), NOW.timestamp())[0])
            first, last = await conn.fetchrow("select min(ts), max(ts) from telemetry")
            events = await conn.fetchval("select count(*) from alarm_events")
        assert whole[0] == whole[1] == expected
        assert start <= first and last < NOW
        assert whole[2] >= 5 and events == 3 * whole[2]  # raised, acknowledged, cleared each
        # started again at once: nothing to do; two hours later: those two hours only
        assert (await history.backfill(city_db_url, pool, NOW, hours=HOURS, rules=RULES)).points == 0
        later = NOW + timedelta(hours=1)
        report = await history.backfill(city_db_url, pool, later, hours=HOURS, rules=RULES)
        assert len(report.ranges) == 1
        assert report.ranges[0].frm > last and report.ranges[0].to == later
        async with pool.acquire() as conn:
            grown = await _counts(conn)
        assert grown[0] == grown[1]
        assert 0 < grown[0] - whole[0] < whole[0] / 4
    finally:
        await pool.close()


def _instants(patterns: Patterns) -> dict[str, datetime]:
    """An instant of the last day in each part of the local night and day: the evening
    (lamps at 100 %), after midnight (dimmed to 50 %), midday (off)."""
    out = {}
    for k in range(4, 23 * 4):
        t = NOW - timedelta(minutes=15 * k)
        hour = patterns.local(t.timestamp())[1]
        if 20 <= hour < 23:
            out.setdefault("evening", t)
        elif 1 <= hour < 4:
            out.setdefault("dimmed", t)
        elif 11 <= hour < 14:
            out.setdefault("midday", t)
    return out


async def test_the_map_at_past_instants_follows_the_patterns(aiohttp_client, city_db_url, make_settings,
                                                             token_for):
    pool = await asyncpg.create_pool(city_db_url, min_size=1, max_size=2)
    try:
        await history.backfill(city_db_url, pool, NOW, rules=RULES, kinds=["streetlight"])
        async with pool.acquire() as conn:
            # an alarm of the history: active a minute after it was raised, closed by now
            alarm = await conn.fetchrow(
                "select device, severity, raised_at from alarms where rule = 'lamp-fault' "
                "and state = 'closed' order by raised_at limit 1")
    finally:
        await pool.close()
    patterns = Patterns(await load_fleet(city_db_url))
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    headers = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}

    async def lamps(at: datetime) -> dict[str, dict]:
        resp = await client.get("/api/v1/state", params={"at": iso(at), "kind": "streetlight"},
                                headers=headers)
        assert resp.status == 200
        return {f["id"]: f["properties"] for f in (await resp.json())["features"]}

    def share(props: dict[str, dict], test) -> float:
        return sum(1 for p in props.values() if test(p)) / len(props)

    when = _instants(patterns)
    assert set(when) == {"evening", "dimmed", "midday"}
    evening, dimmed, midday = [await lamps(when[k]) for k in ("evening", "dimmed", "midday")]
    assert share(evening, lambda p: p["status"] == "online") > 0.95
    assert share(evening, lambda p: p["values"].get("lamp_on") is True
                 and p["values"].get("dim_level_pct") == 100) > 0.9
    assert share(dimmed, lambda p: p["values"].get("lamp_on") is True
                 and p["values"].get("dim_level_pct") == 50) > 0.9
    assert share(midday, lambda p: p["values"].get("lamp_on") is False
                 and p["values"].get("power_w") == 0) > 0.9
    # a lamp's fault and its alarm, while they lasted; neither now
    then = (await lamps(alarm["raised_at"] + timedelta(minutes=1)))[alarm["device"]]
    assert then["alarm_severity"] == alarm["severity"]
    assert then["values"]["lamp_fault"] is True and then["values"]["lamp_on"] is False
    now = (await lamps(NOW))[alarm["device"]]
    assert now["alarm_severity"] is None and now["values"]["lamp_fault"] is False
