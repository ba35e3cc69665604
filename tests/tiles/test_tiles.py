"""/tiles against real PostGIS holding the synthetic city (600 lamps), decoded with mapbox-vector-tile."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import mapbox_vector_tile
import morecantile
import pytest

from server.http.app import create_app
from server.keys import DB, TILES

MVT = "application/vnd.mapbox-vector-tile"
PROBLEM = "application/problem+json"
TMS = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture
async def start(aiohttp_client, make_settings, token_for):
    """start(url, **tiles settings) → a client of the whole app with tokens per role."""

    async def run(url: str, **tiles):
        tiles = {"version_check_s": 0.1, **tiles}
        settings = make_settings(url, mqtt_url=None, tiles=tiles, api={"rate_limit": False})
        client = await aiohttp_client(create_app(settings))
        client.tokens = {r: await token_for(url, r) for r in ("viewer", "integrator")}
        client.url = url
        return client

    return run


@pytest.fixture
async def api(start, city_db_url):
    return await start(city_db_url)


@pytest.fixture
async def db(city_db_url):
    conn = await asyncpg.connect(city_db_url)
    yield conn
    await conn.close()


def auth(client, role="viewer"):
    return {"Authorization": f"Bearer {client.tokens[role]}"}


async def get_tile(client, layer, z, x, y, **headers):
    return await client.get(f"/tiles/{layer}/{z}/{x}/{y}.mvt", headers={**auth(client), **headers})


async def features(client, layer, z, x, y) -> list[dict]:
    resp = await get_tile(client, layer, z, x, y)
    if resp.status == 204:
        return []
    assert resp.status == 200, await resp.text()
    assert resp.content_type == MVT
    decoded = mapbox_vector_tile.decode(await resp.read())
    assert set(decoded) == {layer}, "one MVT layer per tile, named like the tile layer"
    return decoded[layer]["features"]


async def problem(resp, status):
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body = await resp.json()
    assert body["status"] == status and body["detail"]
    return body


async def eventually(check, within=20.0, interval=0.1):
    """Poll an async ``check`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


async def a_lamp(db) -> asyncpg.Record:
    return await db.fetchrow(
        "select key, id, name, ward, parent, ST_X(geom) as lon, ST_Y(geom) as lat from devices"
        " where kind = 'streetlight' order by id limit 1")


def tile_at(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    t = TMS.tile(lon, lat, z)
    return t.z, t.x, t.y


def vertices(feature: dict) -> int:
    geom = feature["geometry"]
    coords = geom["coordinates"]
    if geom["type"] == "LineString":
        return len(coords)
    return sum(len(part) for part in coords)


# ---------------------------------------------------------------- catalogue and TileJSON
async def test_layer_list_names_every_kind_and_the_base_layers(api, db):
    resp = await api.get("/tiles", headers=auth(api))
    assert resp.status == 200
    layers = {lyr["id"]: lyr for lyr in (await resp.json())["layers"]}
    kinds = {r["kind"] for r in await db.fetch("select kind from kinds")}
    assert kinds | {"wards", "roads", "alarms", "ward_stats", "reports"} == set(layers)
    lamp = layers["streetlight"]
    assert lamp["detail_minzoom"] == 14 and lamp["title_vi"] == "Đèn đường"
    assert lamp["tiles"].endswith("/tiles/streetlight/{z}/{x}/{y}.mvt")
    assert layers["water_pipe"]["geometry"] != "point" and layers["water_pipe"]["detail_minzoom"] == 0
    assert layers["alarms"]["live"] and layers["alarms"]["max_age_s"] <= 5


async def test_tilejson_describes_the_layer(api, db):
    resp = await api.get("/tiles/streetlight.json", params={"token": api.tokens["viewer"]})
    assert resp.status == 200
    tj = await resp.json()
    assert tj["tilejson"] == "3.0.0"
    assert tj["scheme"] == "xyz" and tj["minzoom"] == 0 and tj["maxzoom"] == 18
    (url,) = tj["tiles"]
    assert "/tiles/streetlight/{z}/{x}/{y}.mvt" in url
    assert f"token={api.tokens['viewer']}" in url, "a TileJSON fetched with ?token= hands it on"
    (vl,) = tj["vector_layers"]
    assert vl["id"] == "streetlight"
    assert {"id", "kind", "name", "ward", "parent", "count", "online"} <= set(vl["fields"])
    assert "status" not in vl["fields"], "live status comes over the websocket, not in the tile"
    assert tj["detail_minzoom"] == 14
    box = await db.fetchrow("select ST_XMin(e) w, ST_YMin(e) s, ST_XMax(e) e, ST_YMax(e) n from"
                            " (select ST_Extent(geom) e from devices where kind = 'streetlight') x")
    assert tj["bounds"] == pytest.approx([box["w"], box["s"], box["e"], box["n"]])
    lon, lat, zoom = tj["center"]
    assert box["w"] < lon < box["e"] and box["s"] < lat < box["n"] and 0 <= zoom <= 18
    # without ?token= the tile URL carries none (the header is the client's business)
    plain = await (await api.get("/tiles/roads.json", headers=auth(api))).json()
    assert "token=" not in plain["tiles"][0]
    assert (await api.get("/tiles/nope.json", headers=auth(api))).status == 404


# ---------------------------------------------------------------- features
async def test_device_features_carry_the_device_key_and_id(api, db):
    lamp = await a_lamp(db)
    feats = await features(api, "streetlight", *tile_at(lamp["lon"], lamp["lat"], 16))
    assert feats
    ids = {r["key"]: r["id"] for r in await db.fetch(
        "select key, id from devices where kind = 'streetlight'")}
    for f in feats:
        assert ids[f["id"]] == f["properties"]["id"], "MVT id is devices.key, property id the device id"
        assert f["properties"]["kind"] == "streetlight"
        assert f["geometry"]["type"] == "Point"
    mine = next(f for f in feats if f["id"] == lamp["key"])
    props = mine["properties"]
    assert props["id"] == lamp["id"] and props["name"] == lamp["name"]
    assert props["ward"] == lamp["ward"] and props["parent"] == lamp["parent"]
    assert "status" not in props and "agg" not in props


async def test_small_kinds_carry_their_free_properties(api, db):
    cam = await db.fetchrow("select key, id, properties, ST_X(geom) lon, ST_Y(geom) lat from devices"
                            " where kind = 'camera' order by id limit 1")
    feats = await features(api, "camera", *tile_at(cam["lon"], cam["lat"], 15))
    mine = next(f for f in feats if f["id"] == cam["key"])
    import orjson

    stream = orjson.loads(cam["properties"])["stream_url"]
    assert mine["properties"]["stream_url"] == stream


async def test_lines_are_simplified_per_zoom(api, db):
    """A main that zigzags ±3 m: below half a pixel at z12 (dropped) but drawn at z17."""
    lamp = await a_lamp(db)
    lon0, lat0 = lamp["lon"], lamp["lat"]
    step, amp = 20 / 111_320, 3 / 111_320  # 20 m along, ±3 m across
    coords = [[lon0 + i * step, lat0 + (amp if i % 2 else -amp)] for i in range(60)]
    resp = await api.post("/api/v1/devices", headers=auth(api, "integrator"), json={
        "type": "Feature", "id": "WP-ZIGZAG",
        "geometry": {"type": "LineString", "coordinates": coords},
        "properties": {"kind": "water_pipe", "name": "zigzag main"}})
    assert resp.status == 201, await resp.text()
    key = await db.fetchval("select key from devices where id = 'WP-ZIGZAG'")
    mid = coords[30]

    async def pipe(z):
        feats = await features(api, "water_pipe", *tile_at(mid[0], mid[1], z))
        return next((f for f in feats if f["id"] == key), None)

    fine = await eventually(lambda: pipe(17))
    coarse = await pipe(12)
    assert coarse is not None and coarse["properties"]["id"] == "WP-ZIGZAG"
    assert vertices(coarse) <= 4, f"z12 keeps {vertices(coarse)} vertices of a 1.2 km zigzag"
    assert vertices(fine) >= 10, "z17 keeps the zigzag (of the part of the line in the tile)"


# ---------------------------------------------------------------- aggregates
async def test_low_zoom_tiles_hold_grid_aggregates_with_status_counts_and_worst_alarm(start, city_db_url):
    conn = await asyncpg.connect(city_db_url)
    try:
        lamp = await a_lamp(conn)
        # some lamps report, one of them has a major and a minor alarm
        await conn.execute(
            "insert into device_state (device_key, status) select key, 'online' from devices"
            " where kind = 'streetlight' order by id limit 50")
        await conn.execute(
            "insert into alarms (rule, device, severity, dedup_key, message) values"
            " ('lamp-fault', $1, 'minor', 'lamp-fault:' || $1, 'test'),"
            " ('lamp-off', $1, 'major', 'lamp-off:' || $1, 'test')", lamp["id"])
        api = await start(city_db_url)
        z = 12
        tiles = {tile_at(*r, z) for r in await conn.fetch(
            "select ST_X(geom), ST_Y(geom) from devices where kind = 'streetlight'")}
        total, online, cells = 0, 0, []
        for t in tiles:
            feats = await features(api, "streetlight", *t)
            for f in feats:
                p = f["properties"]
                assert p["agg"] == "cell" and p["kind"] == "streetlight"
                assert p["id"].startswith(f"cell:{z}/") and isinstance(f["id"], int)
                assert p["count"] == p["online"] + p["stale"] + p["offline"] + p["unknown"]
                total += p["count"]
                online += p["online"]
                cells.append(p)
        assert total == await conn.fetchval("select count(*) from devices where kind = 'streetlight'")
        assert online == 50
        assert len(cells) > len(tiles), "several cells per tile"
        worst = [c for c in cells if c.get("alarm_severity")]
        assert [(c["alarm_severity"], c["alarms"]) for c in worst] == [("major", 1)]
        # at the detail zoom the same layer holds the lamps themselves
        feats = await features(api, "streetlight", *tile_at(lamp["lon"], lamp["lat"], 14))
        assert feats and all("agg" not in f["properties"] for f in feats)
    finally:
        await conn.close()


async def test_ward_stats_count_devices_per_ward(api, db):
    lamp = await a_lamp(db)
    feats = await features(api, "ward_stats", *tile_at(lamp["lon"], lamp["lat"], 13))
    assert feats
    per_ward = {r["ward"]: r for r in await db.fetch(
        "select ward, count(*) as n, count(*) filter (where kind = 'streetlight') as lamps"
        " from devices group by ward")}
    for f in feats:
        p = f["properties"]
        assert p["devices"] == per_ward[p["id"]]["n"]
        assert p["lamps"] == per_ward[p["id"]]["lamps"]
        assert p["alarms"] == 0 and "alarm_severity" not in p
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")


async def test_alarms_layer_shows_the_worst_active_alarm_per_device(api, db):
    lamp = await a_lamp(db)
    t = tile_at(lamp["lon"], lamp["lat"], 15)
    assert await features(api, "alarms", *t) == []
    await db.execute(
        "insert into alarms (rule, device, severity, dedup_key, message) values"
        " ('lamp-fault', $1, 'minor', 'a:' || $1, 'lamp failure'),"
        " ('feeder', $1, 'critical', 'b:' || $1, 'feeder dark')", lamp["id"])

    async def shown():
        return await features(api, "alarms", *t)

    (f,) = await eventually(shown)
    assert f["id"] == lamp["key"]
    p = f["properties"]
    assert p["id"] == lamp["id"] and p["severity"] == "critical" and p["alarms"] == 2
    assert p["state"] == "active_unacked" and p["message"] == "feeder dark"


# ---------------------------------------------------------------- caching
async def test_etag_and_if_none_match(api, db):
    lamp = await a_lamp(db)
    t = tile_at(lamp["lon"], lamp["lat"], 16)
    first = await get_tile(api, "streetlight", *t)
    assert first.status == 200
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert "max-age=" in first.headers["Cache-Control"]
    body = await first.read()
    again = await get_tile(api, "streetlight", *t, **{"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    assert again.headers["ETag"] == etag
    weak = await get_tile(api, "streetlight", *t, **{"If-None-Match": f'"other", W/{etag}'})
    assert weak.status == 304
    other = await get_tile(api, "streetlight", *t, **{"If-None-Match": '"other"'})
    assert other.status == 200 and await other.read() == body
    assert api.app[TILES].cache.hits >= 3, "repeats come from the in-memory cache"


async def test_live_tiles_are_short_lived(api, db):
    lamp = await a_lamp(db)
    for layer, z in (("alarms", 15), ("ward_stats", 13), ("streetlight", 12)):
        resp = await get_tile(api, layer, *tile_at(lamp["lon"], lamp["lat"], z))
        assert resp.headers["Cache-Control"] == "private, max-age=5", layer
    resp = await get_tile(api, "streetlight", *tile_at(lamp["lon"], lamp["lat"], 16))
    assert resp.headers["Cache-Control"] == "private, max-age=60"


async def test_patching_a_device_geometry_invalidates_its_tiles(api, db):
    lamp = await a_lamp(db)
    old = tile_at(lamp["lon"], lamp["lat"], 16)
    first = await get_tile(api, "streetlight", *old)
    etag = first.headers["ETag"]
    assert any(f["id"] == lamp["key"] for f in await features(api, "streetlight", *old))
    # move it about 1 km east: another z16 tile
    lon, lat = lamp["lon"] + 0.01, lamp["lat"]
    new = tile_at(lon, lat, 16)
    assert new != old
    assert not any(f["id"] == lamp["key"] for f in await features(api, "streetlight", *new))
    resp = await api.patch(f"/api/v1/devices/{lamp['id']}", headers=auth(api, "integrator"),
                           json={"geometry": {"type": "Point", "coordinates": [lon, lat]}})
    assert resp.status == 200, await resp.text()

    async def moved():
        gone = not any(f["id"] == lamp["key"] for f in await features(api, "streetlight", *old))
        there = any(f["id"] == lamp["key"] for f in await features(api, "streetlight", *new))
        return gone and there

    await eventually(moved)
    resp = await get_tile(api, "streetlight", *old, **{"If-None-Match": etag})
    assert resp.status in (200, 204) and resp.headers["ETag"] != etag


async def test_cache_off_still_serves_tiles(start, city_db_url, db):
    api = await start(city_db_url, cache_mb=0)
    lamp = await a_lamp(db)
    t = tile_at(lamp["lon"], lamp["lat"], 16)
    a = await get_tile(api, "streetlight", *t)
    b = await get_tile(api, "streetlight", *t)
    assert a.status == b.status == 200 and a.headers["ETag"] == b.headers["ETag"]
    assert len(api.app[TILES].cache) == 0


async def test_tiles_have_their_own_pool_so_a_busy_main_pool_does_not_hold_them_up(start, city_db_url, db):
    """Ingest, alarms and the API keep the main pool; a map's burst of tiles uses its own."""
    api = await start(city_db_url, cache_mb=0)
    lamp = await a_lamp(db)
    assert (await get_tile(api, "streetlight", *tile_at(lamp["lon"], lamp["lat"], 16))).status == 200
    main = api.app[DB]
    held = [await main.acquire() for _ in range(main.get_max_size())]
    try:
        resp = await asyncio.wait_for(
            get_tile(api, "streetlight", *tile_at(lamp["lon"], lamp["lat"], 17)), 10)
        assert resp.status == 200 and await resp.read()
    finally:
        for conn in held:
            await main.release(conn)


async def test_stored_mercator_coordinates_are_postgis_web_mercator(db):
    """The grid aggregates bin devices by devices.merc_x/merc_y, kept by PostgreSQL itself."""
    anchor = "case when GeometryType(geom) = 'POINT' then geom else ST_PointOnSurface(geom) end"
    rows = await db.fetch(
        f"select id, merc_x, merc_y, ST_X(p) as x, ST_Y(p) as y from"
        f" (select id, merc_x, merc_y, ST_Transform({anchor}, 3857) as p from devices) d")
    assert {"streetlight", "water_pipe"} <= {r["kind"] for r in await db.fetch("select kind from devices")}
    for r in rows:
        assert (r["merc_x"], r["merc_y"]) == pytest.approx((r["x"], r["y"]), abs=0.01), r["id"]
    lamp = await a_lamp(db)
    tx = db.transaction()
    await tx.start()
    try:
        moved = await db.fetchrow(
            "update devices set geom = ST_SetSRID(ST_MakePoint(105.9, 21.6), 4326) where key = $1"
            " returning merc_x, merc_y, ST_X(ST_Transform(geom, 3857)) as x,"
            " ST_Y(ST_Transform(geom, 3857)) as y", lamp["key"])
    finally:
        await tx.rollback()
    assert (moved["merc_x"], moved["merc_y"]) == pytest.approx((moved["x"], moved["y"]), abs=0.01)


# ---------------------------------------------------------------- errors, empty tiles, auth
@pytest.mark.parametrize("path,why", [
    ("streetlight/a/0/0", "zoom"),
    ("streetlight/12/x/0", "x"),
    ("streetlight/12/0/1.5", "y"),
    ("streetlight/12/-1/0", "x"),
    ("streetlight/12/4096/0", "out of range"),
    ("streetlight/3/0/8", "out of range"),
    ("streetlight/19/0/0", "maxzoom"),
    ("streetlight/99999/0/0", "zoom"),
])
async def test_bad_tile_coordinates_are_400(api, path, why):
    body = await problem(await api.get(f"/tiles/{path}.mvt", headers=auth(api)), 400)
    assert why in body["detail"]


async def test_unknown_layer_is_404_naming_the_layers(api):
    body = await problem(await get_tile(api, "lamps", 12, 0, 0), 404)
    assert "'lamps'" in body["detail"] and "streetlight" in body["detail"]


async def test_an_empty_tile_is_204(api):
    resp = await get_tile(api, "streetlight", 15, 0, 0)
    assert resp.status == 204 and await resp.read() == b""
    assert resp.headers["ETag"]
    # a z8 tile holds the whole city: 32 wards
    resp = await get_tile(api, "wards", *tile_at(105.84, 21.59, 8))
    assert resp.status == 200
    types = Counter(f["geometry"]["type"] for f in (
        mapbox_vector_tile.decode(await resp.read())["wards"]["features"]))
    assert sum(types.values()) == 32 and set(types) <= {"Polygon", "MultiPolygon"}


async def test_tiles_need_a_token_and_viewers_may_read(api, db):
    lamp = await a_lamp(db)
    path = "/tiles/streetlight/{}/{}/{}.mvt".format(*tile_at(lamp["lon"], lamp["lat"], 16))
    for url in ("/tiles", "/tiles/streetlight.json", path):
        await problem(await api.get(url), 401)
        await problem(await api.get(url, params={"token": "ioc_wrong"}), 401)
        assert (await api.get(url, headers=auth(api, "viewer"))).status == 200
        assert (await api.get(url, params={"token": api.tokens["viewer"]})).status == 200


async def test_several_layers_in_one_tile(api, db):
    cam = await db.fetchrow("select ST_X(geom) lon, ST_Y(geom) lat from devices where kind = 'camera'"
                            " order by id limit 1")
    t = tile_at(cam["lon"], cam["lat"], 15)
    resp = await api.get("/tiles/camera,wards,roads/{}/{}/{}.mvt".format(*t), headers=auth(api))
    assert resp.status == 200 and resp.content_type == MVT
    decoded = mapbox_vector_tile.decode(await resp.read())
    assert set(decoded) == {"camera", "wards", "roads"}
    for name in decoded:
        alone = await features(api, name, *t)
        assert sorted(f["properties"]["id"] for f in decoded[name]["features"]) == sorted(
            f["properties"]["id"] for f in alone)
    etag = resp.headers["ETag"]
    again = await api.get("/tiles/camera,wards,roads/{}/{}/{}.mvt".format(*t),
                          headers={**auth(api), "If-None-Match": etag})
    assert again.status == 304
    tj = await (await api.get("/tiles/camera,wards,roads.json", headers=auth(api))).json()
    assert [vl["id"] for vl in tj["vector_layers"]] == ["camera", "wards", "roads"]
    assert "/tiles/camera,wards,roads/{z}/{x}/{y}.mvt" in tj["tiles"][0]
    body = await problem(await api.get("/tiles/camera,lamps/1/0/0.mvt", headers=auth(api)), 404)
    assert "'lamps'" in body["detail"]
