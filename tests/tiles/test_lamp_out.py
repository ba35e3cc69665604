"""One definition of "lamp out": the ward_stats tile and /api/v1/wards/summary agree."""

from __future__ import annotations

import json

import mapbox_vector_tile

from tests.tiles.test_tile_grid import LAMP
from tests.tiles.test_tiles import api, auth, db, start, tile_at  # noqa: F401 (fixtures)
from tiles import sql


async def test_ward_stats_tile_and_summary_count_the_same_lamps_out(api, db):  # noqa: F811
    ward = await db.fetchval(
        "select ward from devices where kind = 'streetlight' group by ward"
        " having count(*) >= 8 order by ward limit 1")
    lamps = await db.fetch(
        "select id, key, ST_X(geom) as lon, ST_Y(geom) as lat from devices"
        " where kind = 'streetlight' and ward = $1 order by id limit 8", ward)
    states = [  # (status, values): one lamp in each state
        ("online", {"lamp_on": True}),                       # fine
        ("offline", {}),                                     # out: offline
        ("online", {"lamp_fault": True}),                    # out: lamp fault
        ("online", {"driver_fault": True}),                  # out: driver fault
        ("online", {"lamp_on": False}),                      # off in daylight: not out
        ("online", {}), ("online", {}), ("stale", {}),       # alarms below
    ]
    await db.execute("delete from device_state where device_key in (select key from devices"
                     " where kind = 'streetlight' and ward = $1)", ward)
    for (status, values), lamp in zip(states, lamps, strict=True):
        await db.execute(
            "insert into device_state (device_key, status, values, last_seen)"
            " values ($1, $2, $3::jsonb, now())",
            lamp["key"], status, json.dumps(values))
    # an active alarm, a suppressed one, a shelved one: each lamp is out
    await db.execute(
        "insert into alarms (rule, device, severity, dedup_key, message, suppressed, shelved_until)"
        " values ('lamp-off', $1, 'major', 'x:' || $1, 't', false, null),"
        " ('lamp-off', $2, 'major', 'x:' || $2, 't', true, null),"
        " ('lamp-off', $3, 'minor', 'x:' || $3, 't', false, now() + interval '1 hour')",
        lamps[5]["id"], lamps[6]["id"], lamps[7]["id"])
    expected = 3 + 3  # offline, two faults, three alarms; the rest of the ward has no state: unknown

    resp = await api.get("/api/v1/wards/summary", headers=auth(api))
    assert resp.status == 200, await resp.text()
    summary = {w["code"]: w for w in (await resp.json())["wards"]}
    assert summary[ward]["lamps"]["out"] == expected

    z, x, y = tile_at(lamps[0]["lon"], lamps[0]["lat"], 12)
    resp = await api.get(f"/tiles/ward_stats/{z}/{x}/{y}.mvt", headers=auth(api))
    assert resp.status == 200, await resp.text()
    feats = mapbox_vector_tile.decode(await resp.read())["ward_stats"]["features"]
    (tile,) = [f["properties"] for f in feats if f["properties"]["id"] == ward]
    assert tile["lamps_out"] == summary[ward]["lamps"]["out"] == expected


async def test_a_detail_tile_denser_than_the_bound_holds_grid_counts(start, city_db_url, db):  # noqa: F811
    """max_point_features: a street-zoom tile with more lamps than the bound lists cells with
    counts (agg='cell'), every lamp counted once; a sparse one still lists lamps."""
    api = await start(city_db_url, max_point_features=5)  # noqa: F811
    lamp = await db.fetchrow("select ST_X(geom) as lon, ST_Y(geom) as lat from devices"
                             " where kind = 'streetlight' order by id limit 1")
    z, x, y = tile_at(lamp["lon"], lamp["lat"], 14)
    resp = await api.get(f"/tiles/streetlight/{z}/{x}/{y}.mvt", headers=auth(api))
    assert resp.status == 200
    feats = mapbox_vector_tile.decode(await resp.read())["streetlight"]["features"]
    assert feats and all(f["properties"]["agg"] == "cell" for f in feats)
    assert sum(f["properties"]["count"] for f in feats) > 5
    roomy = await start(city_db_url, max_point_features=1_000_000)
    resp = await roomy.get(f"/tiles/streetlight/{z}/{x}/{y}.mvt", headers=auth(roomy))
    listed = mapbox_vector_tile.decode(await resp.read())["streetlight"]["features"]
    assert listed and all("agg" not in f["properties"] for f in listed)
    # the listed tile also holds the lamps in its buffer; the cells count the tile itself
    assert 5 < sum(f["properties"]["count"] for f in feats) <= len(listed)


async def test_the_bounded_statement_runs_only_the_branch_it_takes(db):  # noqa: F811
    """A detail tile counts its lamps and makes points or cells in one statement; the branch
    not taken must not run (else every street tile would pay for both)."""
    lamp = await db.fetchrow("select ST_X(geom) as lon, ST_Y(geom) as lat from devices"
                             " where kind = 'streetlight' order by id limit 1")
    t = sql.bounds(*tile_at(lamp["lon"], lamp["lat"], 15))

    def runs(node: dict) -> list[tuple[str, int]]:
        """(subplan name, loops) of every InitPlan in the plan."""
        found = [(node["Subplan Name"], node.get("Actual Loops", 0))] if "Subplan Name" in node else []
        for child in node.get("Plans", []):
            found += runs(child)
        return found

    # one argument list serves both branches: the points' arguments are the cells' first ones
    points_args = sql.query(LAMP, t)[1]
    assert sql.query(LAMP, t, aggregate=True)[1][:len(points_args)] == points_args
    for bound, dense in ((1_000_000, False), (1, True)):
        statement, args = sql.bounded(LAMP, t, bound)
        got_dense, data = await db.fetchrow(statement, *args)
        assert got_dense is dense
        feats = mapbox_vector_tile.decode(bytes(data))["streetlight"]["features"]
        assert feats and all(("agg" in f["properties"]) is dense for f in feats)
        plan = json.loads(await db.fetchval(f"explain (analyze, format json) {statement}", *args))
        # InitPlan 1 is the cells (the CASE's first branch), InitPlan 2 the points: one runs once
        inits = runs(plan[0]["Plan"])
        assert [n for _, n in inits] == ([1, 0] if dense else [0, 1]), inits
