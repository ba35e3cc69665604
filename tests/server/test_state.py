"""``GET /api/v1/state?at=``: the map at a past instant, from readings and alarm events
seeded at known times, on the real database and server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg
import pytest

from server.http.app import create_app
from server.store import compress
from tests.helpers import iso

IV = 300  # a streetlight's reporting interval (the catalogue's)
NOW = datetime.now(UTC).replace(microsecond=0)
# Two days ago at 23:00: an hour of readings that crosses midnight (two partitions).
T0 = (NOW - timedelta(days=2)).replace(hour=23, minute=0, second=0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def seed(url: str) -> dict[str, str]:
    """Lamps A (readings every 5 min for an hour, one of bad quality), B (none), C (one
    reading on the first day only) and the alarms described in each test."""
    with psycopg.connect(url) as conn:
        lamps = [r[0] for r in conn.execute(
            "select id from devices where kind = 'streetlight' order by id limit 3")]
        a, b, c = lamps
        key = {dev: conn.execute("select key from devices where id = %s", (dev,)).fetchone()[0]
               for dev in lamps}
        mid = dict(conn.execute("select name, id from metrics"))
        for d in range(3):
            conn.execute("select ioc_ensure_telemetry_partition(%s)", ((T0 + timedelta(days=d)).date(),))
        conn.execute("delete from telemetry")
        with conn.cursor().copy("copy telemetry (device_key, metric_id, ts, value, quality) "
                                "from stdin") as cp:
            for i in range(13):  # 23:00 .. 00:00
                ts = at(5 * i)
                cp.write_row((key[a], mid["power_w"], ts, float(i), 2 if i == 12 else 0))
                cp.write_row((key[a], mid["lamp_on"], ts, 1.0 if i < 6 else 0.0, 0))
            cp.write_row((key[c], mid["dim_level_pct"], at(10), 70.0, 0))
        conn.execute("insert into crews (id, name) values ('c1', 'Crew one'), ('c2', 'Crew two')")
    return {"a": a, "b": b, "c": c}


def alarm(conn, device: str, severity: str, raised: datetime, crew: str | None = None) -> int:
    """An alarm raised at ``raised``, written the way the alarm writer does: row, then event."""
    aid = conn.execute(
        "insert into alarms (rule, device, severity, raised_at, dedup_key, assigned_crew) "
        "values ('r_' || %s || %s, %s, %s, %s, 'k', %s) returning id",
        (severity, device, device, severity, raised, crew)).fetchone()[0]
    conn.execute("insert into alarm_events (alarm_id, at, event) values (%s, %s, 'raised')",
                 (aid, raised))
    return aid


def change(conn, aid: int, when: datetime, event: str, **cols) -> None:
    if cols:
        sets = ", ".join(f"{k} = %s" for k in cols)
        conn.execute(f"update alarms set {sets} where id = %s", (*cols.values(), aid))
    conn.execute("insert into alarm_events (alarm_id, at, event) values (%s, %s, %s)",
                 (aid, when, event))


@pytest.fixture
async def app(aiohttp_client, city_db_url, make_settings, token_for):
    devices = seed(city_db_url)
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    token = await token_for(city_db_url, "viewer")

    async def get(when, token=token, **params):
        params = {"at": iso(when) if isinstance(when, datetime) else when, **params}
        resp = await client.get("/api/v1/state", params=params,
                                headers={"Authorization": f"Bearer {token}"})
        return resp.status, await resp.json()

    get.client, get.url, get.devices, get.token = client, city_db_url, devices, token
    return get


def props(body, dev):
    [f] = [f for f in body["features"] if f["id"] == dev]
    return f["properties"]


async def test_values_and_status_as_they_were(app):
    a, b, c = app.devices["a"], app.devices["b"], app.devices["c"]
    status, body = await app(at(32))
    assert status == 200 and body["type"] == "FeatureCollection"
    pa = props(body, a)
    assert pa["status"] == "online"
    assert pa["values"] == {"power_w": 6.0, "lamp_on": False}  # the 23:30 readings
    assert pa["last_seen"].startswith(iso(at(30))[:19])
    assert props(body, b)["status"] == "unknown" and props(body, b)["values"] == {}
    # C reported once, at 23:10: stale after 3 intervals (23:25), offline after 10 (00:00)
    assert props(body, c)["status"] == "stale" and props(body, c)["values"] == {"dim_level_pct": 70.0}

    _, body = await app(at(61))  # next day: the newest value of C is in yesterday's partition
    assert props(body, c)["status"] == "offline"
    assert props(body, c)["values"] == {"dim_level_pct": 70.0}
    assert props(body, a)["values"] == {"power_w": None, "lamp_on": False}  # bad quality: null
    _, body = await app(at(60 + 3 * IV / 60 + 1))
    assert props(body, a)["status"] == "stale"
    _, body = await app(at(60 + 10 * IV / 60 + 1))
    assert props(body, a)["status"] == "offline"
    _, body = await app(at(-1))  # before anything
    assert props(body, a)["status"] == "unknown" and props(body, a)["values"] == {}


async def test_feature_shape_is_the_devices_one(app):
    a = app.devices["a"]
    _, body = await app(at(30))
    resp = await app.client.get(f"/api/v1/devices/{a}",
                                headers={"Authorization": f"Bearer {app.token}"})
    now = await resp.json()
    past = next(f for f in body["features"] if f["id"] == a)
    assert past.keys() == now.keys()
    assert past["properties"].keys() == now["properties"].keys()
    assert past["geometry"] == now["geometry"]
    assert body["at"].startswith(iso(at(30))[:19])
    total = len(body["features"])
    assert total == body["numberReturned"] > 600  # the whole city

    _, body = await app(at(30), kind="water_meter")
    assert body["features"] and {f["properties"]["kind"] for f in body["features"]} == {"water_meter"}
    lon, lat = past["geometry"]["coordinates"]
    box = f"{lon - 1e-6},{lat - 1e-6},{lon + 1e-6},{lat + 1e-6}"
    _, body = await app(at(30), bbox=box)
    assert a in [f["id"] for f in body["features"]] and len(body["features"]) < 5
    _, body = await app(at(30), bbox=box, kind="streetlight")
    assert [f["id"] for f in body["features"]] == [a]


async def test_alarm_severity_from_events(app, token_for):
    a, b, c = app.devices["a"], app.devices["b"], app.devices["c"]
    with psycopg.connect(app.url) as conn:
        minor = alarm(conn, a, "minor", at(5))
        major = alarm(conn, a, "major", at(10))
        change(conn, major, at(20), "acknowledged", state="active_acked", acked_at=at(20))
        change(conn, major, at(40), "cleared", state="closed", active=False, cleared_at=at(40),
               closed_at=at(40))
        sup = alarm(conn, b, "critical", at(5))
        change(conn, sup, at(6), "suppressed", suppressed=True)
        crit = alarm(conn, c, "critical", at(0), crew="c1")
        change(conn, crit, at(50), "assigned", assigned_crew="c2")
        # Events from before the copies existed (migration 0007): folded from their names.
        conn.execute("alter table alarm_events disable trigger alarm_events_copy")
        old = alarm(conn, b, "warning", at(15))
        change(conn, old, at(25), "cleared", state="rtn_unacked", active=False, cleared_at=at(25))
        conn.execute("alter table alarm_events enable trigger alarm_events_copy")
        assert minor
    expect = {
        2: {a: None, b: None, c: "critical"},
        12: {a: "major", b: None, c: "critical"},
        16: {a: "major", b: "warning", c: "critical"},
        30: {a: "major", b: None, c: "critical"},  # acknowledged: still active
        45: {a: "minor", b: None, c: "critical"},  # the major one closed at 40
    }
    for minute, want in expect.items():
        _, body = await app(at(minute))
        got = {d: props(body, d)["alarm_severity"] for d in (a, b, c)}
        assert got == want, minute

    # Crews see only the alarms assigned to their crew at that instant.
    c1 = await token_for(app.url, "crew", "c1")
    c2 = await token_for(app.url, "crew", "c2")
    _, body = await app(at(45), token=c1)
    assert props(body, c)["alarm_severity"] == "critical" and props(body, a)["alarm_severity"] is None
    _, body = await app(at(45), token=c2)
    assert props(body, c)["alarm_severity"] is None
    _, body = await app(at(55), token=c2)
    assert props(body, c)["alarm_severity"] == "critical"
    _, body = await app(at(55), token=c1)
    assert props(body, c)["alarm_severity"] is None


BAD = [
    ({"at": "yesterday"}, "at"),
    ({"at": iso(NOW + timedelta(days=1))}, "at"),
    ({"at": "2026-13-45T99:00:00Z"}, "at"),
    ({"at": iso(T0), "bbox": "1,2,3"}, "bbox"),
    ({"at": iso(T0), "bbox": "10,20,5,30"}, "bbox"),
    ({"at": iso(T0), "kind": "unicorn"}, "kind"),
    ({}, "at"),
]


async def test_bad_requests_name_the_field(aiohttp_client, db_url, make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(db_url, mqtt_url=None)))
    token = await token_for(db_url, "viewer")
    for params, field in BAD:
        resp = await client.get("/api/v1/state", params=params,
                                headers={"Authorization": f"Bearer {token}"})
        body = await resp.json()
        assert resp.status == 400, (params, body)
        assert resp.content_type == "application/problem+json"
        named = {body.get("field")} | {e.get("field") for e in body.get("errors", [])}
        assert field in named, (params, body)


async def test_the_same_once_compressed(app):
    """Closed days compressed (server/store/compress.py): every answer is the same."""
    instants = [at(-1), at(32), at(61), at(60 + 3 * IV / 60 + 1)]
    before = [await app(t) for t in instants]
    conn = await asyncpg.connect(app.url)
    try:
        await compress.compress_due(conn, NOW + timedelta(days=3))
        assert await conn.fetchval("select count(*) from telemetry") == 0
    finally:
        await conn.close()
    assert [await app(t) for t in instants] == before


async def test_the_same_with_late_readings_beside_compressed_days(app):
    """Readings that arrive after their day was compressed land in the row store, and the
    map at an instant merges them with the segments as if they had always been there: inside
    a segment (its reading, or a later late one), after a segment's end (its tail columns,
    or a later late one), of bad quality; a late repeat of a compressed time keeps the
    segment's value, as the row store keeps a time's first write. The same once folded in."""
    a, c = app.devices["a"], app.devices["c"]
    with psycopg.connect(app.url) as conn:
        key = dict(conn.execute("select id, key from devices where id = any(%s)", ([a, c],)))
        mid = dict(conn.execute("select name, id from metrics"))
    late = [(key[a], mid["power_w"], at(33), 99.0, 0),  # inside A's first segment (23:00-23:55)
            (key[a], mid["power_w"], at(30), -5.0, 0),  # a compressed time again: not kept
            (key[a], mid["lamp_on"], at(58), 1.0, 1),  # after that segment's end, bad quality
            (key[c], mid["dim_level_pct"], at(20), 40.0, 0)]  # after C's one reading (23:10)
    insert = ("insert into telemetry (device_key, metric_id, ts, value, quality) "
              "values (%s, %s, %s, %s, %s) on conflict do nothing")
    instants = [at(31), at(34), at(57), at(59), at(61), at(75)]
    with psycopg.connect(app.url) as conn:  # the answers of the row store alone
        kept = [row for row in late if conn.execute(insert, row).rowcount]
    assert len(kept) == 3
    expected = [await app(t) for t in instants]
    assert props(expected[1][1], a)["values"]["power_w"] == 99.0
    assert props(expected[0][1], a)["values"]["power_w"] == 6.0
    with psycopg.connect(app.url) as conn:
        for k, m, ts, _, _ in kept:
            conn.execute("delete from telemetry where device_key = %s and metric_id = %s and ts = %s",
                         (k, m, ts))
    pg = await asyncpg.connect(app.url)
    try:
        await compress.compress_due(pg, NOW + timedelta(days=3))
        assert await pg.fetchval("select count(*) from telemetry") == 0
        with psycopg.connect(app.url) as conn:  # now they arrive: all four land in the row store
            assert sum(conn.execute(insert, row).rowcount for row in late) == 4
        assert [await app(t) for t in instants] == expected
        await compress.compress_due(pg, NOW + timedelta(days=3))  # folded in
        assert await pg.fetchval("select count(*) from telemetry") == 0
        assert [await app(t) for t in instants] == expected
    finally:
        await pg.close()


async def test_ward_roll_up_at_a_past_instant(app, token_for):
    """``GET /api/v1/wards/summary?at=``: the roll-up (and its totals, the map's KPIs) as it
    was, from the same past state; crews count their crew's alarms only."""
    a, b = app.devices["a"], app.devices["b"]
    with psycopg.connect(app.url) as conn:
        ward_a, ward_b = (conn.execute("select ward from devices where id = %s", (d,)).fetchone()[0]
                          for d in (a, b))
        major = alarm(conn, b, "major", at(10), crew="c1")
        change(conn, major, at(40), "cleared", state="closed", active=False, cleared_at=at(40),
               closed_at=at(40))
    client, headers = app.client, {"Authorization": f"Bearer {app.token}"}

    async def summary(when=None, headers=headers):
        params = {"at": iso(when)} if when is not None else {}
        resp = await client.get("/api/v1/wards/summary", params=params, headers=headers)
        assert resp.status == 200
        body = await resp.json()
        return body["totals"], {w["code"]: w for w in body["wards"]}

    # 23:20: lamp A online and on; B's alarm open (B is out)
    totals, wards = await summary(at(20))
    assert totals["alarms"] == 1 and totals["unacked"] == 1 and totals["lamps_out"] == 1
    assert totals["online"] == 2 and totals["offline"] == 0  # A, and C read at 23:10
    assert wards[ward_b]["alarms"]["by_severity"]["major"] == 1
    assert wards[ward_b]["lamps"]["out"] == 1
    assert wards[ward_a]["lamps"]["on"] >= 1
    # the same shape as the live roll-up: cameras counted (none reported then: all down)
    assert totals["cameras"] > 0 and totals["cameras_down"] == totals["cameras"]
    assert set(wards[ward_a]["cameras"]) == {"total", "online", "recording", "down"}
    # 23:50: the alarm closed, lamp A off; now (live): nothing open, nothing out
    totals, wards = await summary(at(50))
    assert totals["alarms"] == 0 and totals["lamps_out"] == 0
    assert wards[ward_a]["lamps"]["on"] == 0
    totals, _ = await summary()
    assert totals["alarms"] == 0 and totals["lamps_out"] == 0
    # a crew sees its crew's alarms only
    c2 = {"Authorization": f"Bearer {await token_for(app.url, 'crew', 'c2')}"}
    totals, _ = await summary(at(20), headers=c2)
    assert totals["alarms"] == 0 and totals["lamps_out"] == 0
    c1 = {"Authorization": f"Bearer {await token_for(app.url, 'crew', 'c1')}"}
    totals, _ = await summary(at(20), headers=c1)
    assert totals["alarms"] == 1
    # a bad or future instant: a 400 naming the field
    for bad in ("yesterday", iso(NOW + timedelta(hours=1))):
        resp = await client.get("/api/v1/wards/summary", params={"at": bad}, headers=headers)
        body = await resp.json()
        assert resp.status == 400, body
        named = {body.get("field")} | {e.get("field") for e in body.get("errors", [])}
        assert "at" in named, body
