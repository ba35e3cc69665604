"""The websocket replay: a snapshot at ``from``, the past's state and alarm messages in their
original order with their original ts, ``replay_end``, and back to live; on the real
database, broker and server, with readings and alarm events seeded at known times."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg

from tests.helpers import iso, publisher, q, running, wait_connected, wait_for
from tests.server.test_state import alarm, change
from tests.server.test_ws import connect, publish, state_of

NOW = datetime.now(UTC).replace(microsecond=0)
B = NOW - timedelta(minutes=60)  # the replays start here


def at(seconds: float) -> datetime:
    return B + timedelta(seconds=seconds)


def seed(url: str) -> dict[str, str]:
    """Lamp A reads every minute from B-2 min to B+5 min; lamp C once, at B-10 min (it goes
    stale 15 min later, at B+5 min); an alarm on A is raised at B+30 s and acknowledged at
    B+90 s; one on C, open since B-5 min, is assigned to crew c1."""
    with psycopg.connect(url) as conn:
        a, c = [r[0] for r in conn.execute(
            "select id from devices where kind = 'streetlight' order by id limit 2")]
        key = dict(conn.execute("select id, key from devices where id = any(%s)", ([a, c],)))
        mid = dict(conn.execute("select name, id from metrics"))
        for d in (-1, 0, 1):
            conn.execute("select ioc_ensure_telemetry_partition(%s)", ((B + timedelta(days=d)).date(),))
        with conn.cursor().copy("copy telemetry (device_key, metric_id, ts, value, quality) "
                                "from stdin") as cp:
            for i in range(-2, 6):
                cp.write_row((key[a], mid["power_w"], at(60 * i), float(i), 0))
                cp.write_row((key[a], mid["lamp_on"], at(60 * i), 1.0, 0))
            cp.write_row((key[c], mid["power_w"], at(-600), 33.0, 0))
        conn.execute("insert into crews (id, name) values ('c1', 'Crew one')")
        old = alarm(conn, c, "minor", at(-300), crew="c1")
        new = alarm(conn, a, "major", at(30))
        change(conn, new, at(90), "acknowledged", state="active_acked", acked_at=at(90))
    return {"a": a, "c": c, "old": old, "new": new}


async def played(peer, kinds=("state", "alarm")) -> list[dict]:
    """The replay's messages of these types, up to its replay_end."""
    out = []
    while (m := await peer.next(lambda m: m["type"] in (*kinds, "replay_end")))["type"] != "replay_end":
        out.append(m)
    return out


async def test_replay_then_live(city_db_url, make_settings, mosquitto, token_for):
    url = city_db_url
    ids = seed(url)
    a, c = ids["a"], ids["c"]
    (ax, ay), (cx, cy) = (psycopg.connect(url).execute(
        "select ST_X(geom), ST_Y(geom) from devices where id = %s", (d,)).fetchone() for d in (a, c))
    bbox = [min(ax, cx) - 0.001, min(ay, cy) - 0.001, max(ax, cx) + 0.001, max(ay, cy) + 0.001]
    async with running(make_settings(url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        peer = await connect(client, await token_for(url, "viewer"))
        live = await peer.snapshot(bbox=bbox, layers=["streetlight"], alarms=True)
        assert "at" not in live

        started = time.monotonic()
        await peer.send({"op": "replay", "from": iso(B), "to": iso(at(400)), "speed": 400,
                         "bbox": bbox, "layers": ["streetlight"], "id": "r1"})
        snap = await peer.next(lambda m: m["type"] in ("snapshot", "error"))
        assert snap["type"] == "snapshot" and snap["id"] == "r1"
        assert snap["at"] == iso(B)
        dev = {d["id"]: d for d in snap["devices"]}
        assert dev[a]["status"] == "online" and dev[a]["values"] == {"power_w": 0.0, "lamp_on": True}
        assert dev[a]["last_seen"] == iso(B) and dev[a]["alarm_severity"] is None
        assert dev[c]["status"] == "online" and dev[c]["alarm_severity"] == "minor"
        assert [x["id"] for x in snap["alarms"]] == [ids["old"]]
        assert set(dev[a]) == set(live["devices"][0])  # the live snapshot's shape

        # A live reading while replaying is not sent.
        await publish(pub, a, NOW, power_w=99.0)

        msgs = await played(peer, ("state", "alarm", "error"))
        elapsed = time.monotonic() - started
        assert elapsed >= 400 / 400 * 0.9  # paced: 400 s of the past at 400x

        def key(m):
            return (m["type"], m.get("device") or m["alarm"]["id"], m["ts"],
                    m.get("status") or m["alarm"]["state"])

        assert [key(m) for m in msgs] == [
            ("alarm", ids["new"], iso(at(30)), "active_unacked"),
            ("state", a, iso(at(60)), "online"),
            ("alarm", ids["new"], iso(at(90)), "active_acked"),
            ("state", a, iso(at(120)), "online"),
            ("state", a, iso(at(180)), "online"),
            ("state", a, iso(at(240)), "online"),
            ("state", a, iso(at(300)), "online"),
            ("state", c, iso(at(300) + timedelta(milliseconds=1)), "stale"),
        ]
        assert msgs[1]["values"] == {"power_w": 1.0, "lamp_on": True}
        assert msgs[0]["alarm"]["severity"] == "major" and msgs[0]["alarm"]["device"] == a
        assert msgs[-1]["values"] == {}
        assert all(s["values"].get("power_w") != 99.0 for s in peer.states(a))
        await wait_for(lambda: q(url, "select 1 from device_state s join devices d on d.key = "
                                      "s.device_key where d.id = %s and (s.values->>'power_w')::float = 99",
                                 a), blocking=True, what="the live reading stored")

        # Back to live: a fresh live snapshot of the viewport left, then live deltas again.
        await peer.send({"op": "live", "id": "l1"})
        back = await peer.next(lambda m: m["type"] == "snapshot")
        assert "at" not in back and back["id"] == "l1"
        assert {d["id"]: d for d in back["devices"]}[a]["values"]["power_w"] == 99.0
        await publish(pub, a, NOW + timedelta(seconds=1), power_w=100.0)
        await peer.next(state_of(a, power_w=100.0))

        # Devices heard no more go stale after 3 intervals and offline after 10, as the
        # staleness scan would have had them (A's last reading is at B+5 min, C's at B-10 min).
        await peer.send({"op": "replay", "from": iso(B), "to": iso(at(2500)), "speed": 20_000,
                         "bbox": bbox, "layers": ["streetlight"]})
        await peer.next(lambda m: m["type"] == "snapshot" and "at" in m)
        changes = [(m["device"], m["status"], m["ts"]) for m in await played(peer, ("state",))
                   if m["status"] != "online"]
        ms = timedelta(milliseconds=1)
        assert changes == [(c, "stale", iso(at(-600 + 3 * 300) + ms)),
                           (a, "stale", iso(at(300 + 3 * 300) + ms)),
                           (c, "offline", iso(at(-600 + 10 * 300) + ms))]
        await peer.ws.close()


async def test_live_stops_a_replay_and_crews_see_their_alarms(city_db_url, make_settings, token_for):
    url = city_db_url
    ids = seed(url)
    async with running(make_settings(url, mqtt_url=None)) as client:
        crew = await connect(client, await token_for(url, "crew", "c1"))
        await crew.send({"op": "replay", "from": iso(at(-400)), "to": iso(at(100)), "speed": 1000})
        snap = await crew.next(lambda m: m["type"] == "snapshot")
        assert snap["alarms"] == [] and snap["devices"] == []  # no bbox: alarms only
        got = await played(crew, ("alarm",))
        assert [(m["alarm"]["id"], m["ts"]) for m in got] == [(ids["old"], iso(at(-300)))]

        # A slow replay is stopped by "live": no more of it, a live snapshot instead.
        await crew.send({"op": "replay", "from": iso(at(-400)), "to": iso(at(400)), "speed": 100})
        await crew.next(lambda m: m["type"] == "alarm")  # 1 s in
        await crew.send({"op": "live"})
        back = await crew.next(lambda m: m["type"] in ("snapshot", "replay_end", "alarm"))
        assert back["type"] == "snapshot" and "at" not in back
        viewer = await connect(client, await token_for(url, "viewer"))
        await viewer.send({"op": "replay", "from": iso(at(-400)), "to": iso(at(100)),
                           "speed": 10_000})
        snap = await viewer.next(lambda m: m["type"] == "snapshot")
        got = [(m["alarm"]["id"], m["alarm"]["state"]) for m in await played(viewer, ("alarm",))]
        assert got == [(ids["old"], "active_unacked"), (ids["new"], "active_unacked"),
                       (ids["new"], "active_acked")]
        await crew.ws.close()
        await viewer.ws.close()


async def test_bad_replays_get_errors_naming_the_field(city_db_url, make_settings, token_for):
    url = city_db_url
    future = iso(datetime.now(UTC) + timedelta(hours=1))
    bad = [
        ({"from": "yesterday"}, "from"),
        ({}, "from"),
        ({"from": future}, "from"),
        ({"from": iso(B), "to": future}, "to"),
        ({"from": iso(B), "to": iso(B - timedelta(minutes=1))}, "to"),
        ({"from": iso(B - timedelta(days=40))}, "to"),
        ({"from": iso(B), "speed": 0}, "speed"),
        ({"from": iso(B), "speed": "fast"}, "speed"),
        ({"from": iso(B), "bbox": [1, 2, 3]}, "bbox"),
        ({"from": iso(B), "bbox": [0, 0, 1, 1], "layers": ["unicorn"]}, "layers"),
    ]
    async with running(make_settings(url, mqtt_url=None)) as client:
        peer = await connect(client, await token_for(url, "viewer"))
        for i, (msg, field) in enumerate(bad):
            await peer.send({"op": "replay", "id": i, **msg})
            m = await peer.next(lambda m, i=i: m.get("id") == i)
            assert m["type"] == "error" and m["field"] == field, (msg, m)
            assert field in m["message"], m
        await peer.send({"op": "ping"})
        assert (await peer.next())["type"] == "pong"  # still connected
        await peer.ws.close()
