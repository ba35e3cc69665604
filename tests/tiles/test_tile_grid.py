"""The kept grid counts (tile_grid, migration 0018_tile_grid) against counting every device.

An aggregate tile read from the grid must be the very tile the direct count makes (same bytes),
whatever happened to devices and their state since: states inserted, statuses changed, state
rows and devices deleted, devices added, moved and re-kinded, alarms raised; before and after
the log is folded in. And the grid kept by the triggers must equal the grid rebuilt from scratch.
"""

from __future__ import annotations

import asyncpg
import mapbox_vector_tile
import morecantile
import pytest

from tiles import catalogue, sql

TMS = morecantile.tms.get("WebMercatorQuad")
LAMP = catalogue.kind_layer("streetlight", "Streetlight", "Đèn đường", True)


@pytest.fixture
async def db(city_db_url):
    conn = await asyncpg.connect(city_db_url)
    yield conn
    await conn.close()


async def tiles_over_city(db, zooms=(9, 11, 12, 13)) -> list[tuple[int, int, int]]:
    box = await db.fetchrow("select ST_XMin(e) w, ST_YMin(e) s, ST_XMax(e) e, ST_YMax(e) n from"
                            " (select ST_Extent(geom) e from devices where kind = 'streetlight') x")
    return [(t.z, t.x, t.y) for z in zooms
            for t in TMS.tiles(box["w"] - 0.01, box["s"] - 0.01, box["e"] + 0.01, box["n"] + 0.01, [z])]


async def tile(db, z, x, y, grid: bool, crew=None) -> bytes:
    statement, args = sql.query(LAMP, sql.bounds(z, x, y), crew, grid=grid)
    assert statement is (sql.DEVICE_GRID if grid else sql.DEVICE_CELLS)
    return bytes(await db.fetchval(statement, *args) or b"")


async def assert_grid_is_the_direct_count(db, alarms: int = 0) -> int:
    """Every aggregate tile over the city, both ways; returns the lamps counted at z12 (and
    checks that the cells at z12 count ``alarms`` lamps with an alarm)."""
    at_12 = with_alarm = 0
    crew = await db.fetchval("select min(id) from crews")
    assert crew
    for z, x, y in await tiles_over_city(db):
        for of_crew in (crew, None):
            kept, counted = await tile(db, z, x, y, True, of_crew), await tile(db, z, x, y, False, of_crew)
            assert kept == counted, f"tile {z}/{x}/{y} (crew {of_crew}): the grid differs from the count"
        if z == 12 and kept:
            cells = [f["properties"] for f in mapbox_vector_tile.decode(kept)["streetlight"]["features"]]
            at_12 += sum(c["count"] for c in cells)
            with_alarm += sum(c["alarms"] for c in cells)
            assert all(c["count"] == c["online"] + c["stale"] + c["offline"] + c["unknown"] for c in cells)
    assert with_alarm == alarms
    return at_12


async def change_things(db, round_: int) -> None:
    lamps = [r["key"] for r in await db.fetch(
        "select key from devices where kind = 'streetlight' order by key")]
    # first readings (one statement: the statement trigger) in every status
    await db.execute(
        "insert into device_state (device_key, status) select key,"
        " (array['online','stale','offline','unknown'])[1 + key % 4] from devices"
        " where kind = 'streetlight' and key % 3 = $1 on conflict do nothing", round_ % 3)
    # status changes (row trigger), the ingest's upsert shape included
    await db.execute("update device_state set status = 'offline' where device_key = any($1::int[])",
                     lamps[round_::17])
    await db.execute("update device_state set status = 'online' where device_key = any($1::int[])",
                     lamps[round_ + 5::23])
    await db.execute("delete from device_state where device_key = any($1::int[])", lamps[round_ + 2::41])
    # a device deleted with its state (the cascade), one moved, one re-kinded, one added
    await db.execute("delete from devices where key = $1", lamps[round_ + 3])
    await db.execute("update devices set geom = ST_Translate(geom, 0.004, -0.003) where key = $1",
                     lamps[round_ + 7])
    await db.execute("update devices set kind = 'camera' where key = $1", lamps[round_ + 11])
    await db.execute("update devices set kind = 'streetlight' where key = $1", lamps[round_ + 11])
    await db.execute(
        "insert into devices (id, kind, geom) select 'grid-new-' || $1, 'streetlight',"
        " ST_Translate(geom, 0.0002, 0.0002) from devices where key = $2", str(round_), lamps[round_ + 13])
    # alarms: every alarm and a crew's own ones count
    await db.execute(
        "insert into alarms (rule, device, severity, dedup_key, message, assigned_crew)"
        " select 'lamp-off', id, (array['minor','major','critical'])[1 + key % 3],"
        " 'grid-test:' || id, 'test', case when key % 2 = 0 then (select min(id) from crews) end"
        " from devices where key = any($1::int[]) on conflict do nothing", lamps[round_ + 19::97])


async def test_grid_tiles_equal_the_direct_count_through_state_changes(db):
    lamps = await db.fetchval("select count(*) from devices where kind = 'streetlight'")
    # the seeded city sits in the log (nobody folded yet), then folded
    assert await assert_grid_is_the_direct_count(db) == lamps
    assert await db.fetchval(sql.FOLD_GRID) > 0
    assert await db.fetchval("select count(*) from tile_grid_log") == 0
    assert await assert_grid_is_the_direct_count(db) == lamps
    for round_ in range(3):
        await change_things(db, round_)
        assert await db.fetchval("select count(*) from tile_grid_log") > 0
        lamps = await db.fetchval("select count(*) from devices where kind = 'streetlight'")
        alarms = await db.fetchval("select count(distinct device) from alarms a join devices d"
                                   " on d.id = a.device where d.kind = 'streetlight'")
        assert alarms > 0
        assert await assert_grid_is_the_direct_count(db, alarms) == lamps, "changes still in the log"
        await db.fetchval(sql.FOLD_GRID)
        assert await assert_grid_is_the_direct_count(db, alarms) == lamps, "changes folded in"
    # the statuses the tiles show are those of device_state
    row = await db.fetchrow(
        "select count(*) filter (where s.status = 'online') as online,"
        " count(*) filter (where coalesce(s.status, 'unknown') = 'unknown') as unknown"
        " from devices d left join device_state s on s.device_key = d.key where d.kind = 'streetlight'")
    kept = await db.fetchrow("select sum(online) as online, sum(unknown) as unknown from tile_grid"
                             " where kind = 'streetlight' and level = 3")
    assert (kept["online"], kept["unknown"]) == (row["online"], row["unknown"])
    assert row["online"] > 0 and row["unknown"] > 0


async def test_the_kept_grid_equals_the_grid_rebuilt_from_scratch(db):
    for round_ in range(2):
        await change_things(db, round_)
    await db.fetchval(sql.FOLD_GRID)
    query = "select * from tile_grid where n <> 0 order by kind, level, cx, cy"
    kept = [tuple(r) for r in await db.fetch(query)]
    async with db.transaction():
        await db.execute("select ioc_tile_grid_rebuild()")
        await db.fetchval(sql.FOLD_GRID)
    rebuilt = [tuple(r) for r in await db.fetch(query)]
    assert kept == rebuilt and len(rebuilt) > 100
    # a truncate (tests, a reset) rebuilds too: nothing left to count
    await db.execute("truncate device_state")
    await db.fetchval(sql.FOLD_GRID)
    assert await db.fetchval("select sum(online + stale + offline) from tile_grid") == 0


async def test_the_grid_serves_the_levels_it_keeps_and_counts_beyond(db):
    q, args = sql.query(LAMP, sql.bounds(12, 3252, 1796))
    assert q is sql.DEVICE_GRID and args[10] == 15
    q, args = sql.query(LAMP, sql.bounds(16, 52034, 28739), aggregate=True)
    assert q is sql.DEVICE_GRID and args[10] == sql.GRID_MAX_LEVEL
    q, _ = sql.query(LAMP, sql.bounds(17, 104068, 57478), aggregate=True)
    assert q is sql.DEVICE_CELLS
