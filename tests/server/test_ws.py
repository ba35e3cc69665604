"""The websocket hub end to end: the real app, database and broker, real websocket clients."""

from __future__ import annotations

import asyncio
import socket
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import pytest

from server.keys import HUB, METRICS
from tests.helpers import aq, iso, publisher, q, running, wait_connected, wait_for

WS = "/api/v1/ws"


class Closed(Exception):
    def __init__(self, msg: aiohttp.WSMessage) -> None:
        super().__init__(f"websocket closed: {msg.type.name} {msg.data} {msg.extra}")
        self.code = msg.data
        self.reason = msg.extra


class Peer:
    """A websocket client that keeps everything it received, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.all: list[dict] = []
        self._unread: list[dict] = []

    async def send(self, doc) -> None:
        await self.ws.send_str(doc if isinstance(doc, str) else orjson.dumps(doc).decode())

    async def _receive(self, within: float) -> None:
        msg = await self.ws.receive(timeout=within)
        if msg.type == aiohttp.WSMsgType.TEXT:
            doc = orjson.loads(msg.data)
            docs = doc if isinstance(doc, list) else [doc]
            self.all.extend(docs)
            self._unread.extend(docs)
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                          aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            raise Closed(msg)

    async def next(self, pred=lambda m: True, within: float = 20.0) -> dict:
        """The first message not yet returned that matches ``pred`` (earlier non-matching
        ones are skipped for good)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            for i, m in enumerate(self._unread):
                if pred(m):
                    del self._unread[: i + 1]
                    return m
            self._unread.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no matching message within {within} s")
            try:
                await self._receive(left)
            except TimeoutError:
                raise AssertionError(f"no matching message within {within} s") from None

    async def snapshot(self, **sub) -> dict:
        await self.send({"op": "subscribe", **sub})
        return await self.next(lambda m: m["type"] in ("snapshot", "error"))

    def states(self, device: str) -> list[dict]:
        return [m for m in self.all if m["type"] == "state" and m["device"] == device]


def state_of(device: str, **values):
    def pred(m):
        return (m["type"] == "state" and m["device"] == device
                and all(m["values"].get(k) == v for k, v in values.items()))
    return pred


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def connect(client, token: str) -> Peer:
    return Peer(await client.ws_connect(WS, headers=headers(token)))


def small_receive_buffer(addr_info):
    """A client socket with a 4 KiB receive buffer, set before connecting so the TCP
    window stays small: such a client that stops reading backs the server up quickly."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def slow_peer(client, token: str):
    """A client whose reads we control: it reads only when the test calls it."""
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as session:
        ws = await session.ws_connect(client.make_url(WS), headers=headers(token),
                                      autoping=True, heartbeat=None)
        try:
            yield Peer(ws)
        finally:
            await ws.close()


def lamps(url: str) -> list[tuple[str, float, float]]:
    return q(url, "select id, ST_X(geom), ST_Y(geom) from devices where kind = 'streetlight' "
                  "order by id")


def city_bbox(url: str) -> list[float]:
    x0, y0, x1, y1 = q(url, "select ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                            "from (select ST_Extent(geom)::geometry as e from devices) t")[0]
    return [x0 - 0.001, y0 - 0.001, x1 + 0.001, y1 + 0.001]


def around(x: float, y: float, r: float = 0.0015) -> list[float]:
    return [x - r, y - r, x + r, y + r]


def in_bbox(url: str, bbox: list[float], kinds: list[str]) -> set[str]:
    return {r[0] for r in q(url, "select id from devices where geom && "
                                 "ST_MakeEnvelope(%s, %s, %s, %s, 4326) and kind = any(%s)",
                            *bbox, kinds)}


async def publish(pub, device: str, ts: datetime, **values) -> None:
    await pub.publish(f"ioc/v1/{device}/telemetry",
                      orjson.dumps({"ts": iso(ts), "values": values}), qos=1)


def far_apart(url: str) -> tuple[tuple[str, float, float], tuple[str, float, float]]:
    ls = lamps(url)
    a = ls[0]
    b = max(ls, key=lambda r: (r[1] - a[1]) ** 2 + (r[2] - a[2]) ** 2)
    return a, b


def metric(client, name: str) -> float:
    return getattr(client.app[METRICS], name)._value.get()


# ---------------------------------------------------------------- snapshot
async def test_snapshot_holds_the_devices_of_the_bbox_and_layers(city_db_url, make_settings,
                                                                 token_for):
    url = city_db_url
    (a, ax, ay), _ = far_apart(url)
    with_state = (await aq(url, "select key from devices where id = %s", a))[0][0]
    await aq(url, "insert into device_state (device_key, values, times, status, last_seen) values "
                  "(%s, '{\"power_w\": 41.5, \"lamp_on\": true}', '{}', 'online', now()) returning 1",
             with_state)
    await aq(url, "insert into alarms (rule, device, severity, dedup_key) values "
                  "('lamp-fault', %s, 'minor', 'x1'), ('feeder', %s, 'major', 'x2') returning 1", a, a)
    bbox = around(ax, ay, 0.004)
    kinds = ["streetlight", "camera"]
    expected = in_bbox(url, bbox, kinds)
    assert len(expected) >= 3, "the test needs a few devices in its bbox"
    token = await token_for(url, "viewer")
    async with running(make_settings(url, mqtt_url=None)) as client:
        peer = await connect(client, token)
        snap = await peer.snapshot(bbox=bbox, layers=kinds, alarms=True, id="s1")
        assert snap["type"] == "snapshot" and snap["id"] == "s1"
        assert {d["id"] for d in snap["devices"]} == expected
        mine = next(d for d in snap["devices"] if d["id"] == a)
        assert mine["status"] == "online"
        assert mine["values"] == {"power_w": 41.5, "lamp_on": True}
        assert mine["alarm_severity"] == "major"  # the worst active one
        assert mine["kind"] == "streetlight" and mine["last_seen"].endswith("Z")
        other = next(d for d in snap["devices"] if d["id"] != a)
        assert other["status"] == "unknown" and other["values"] == {}
        assert other["alarm_severity"] is None

        # Another layer set over the whole city: exactly the cameras.
        whole = city_bbox(url)
        snap = await peer.snapshot(bbox=whole, layers=["camera"])
        cameras = {r[0] for r in await aq(url, "select id from devices where kind = 'camera'")}
        assert {d["id"] for d in snap["devices"]} == cameras

        # No bbox: alarms only, no devices.
        snap = await peer.snapshot(alarms=True)
        assert snap["devices"] == []

        await wait_for(lambda: metric(client, "ws_clients") == 1)

        async def scraped() -> str | None:  # message counts reach Prometheus on the hub's next tick
            text = await (await client.get("/metrics", headers=headers(token))).text()
            return text if 'ioc_ws_messages_sent_total{type="snapshot"} 3.0' in text else None

        text = await wait_for(scraped)
        assert "ioc_ws_clients 1.0" in text
        assert 'ioc_ws_messages_sent_total{type="snapshot"} 3.0' in text
        await peer.ws.close()


async def test_snapshot_is_capped(city_db_url, make_settings, token_for):
    url = city_db_url
    settings = make_settings(url, mqtt_url=None, hub={"max_snapshot": 10})
    async with running(settings) as client:
        peer = await connect(client, await token_for(url, "viewer"))
        snap = await peer.snapshot(bbox=city_bbox(url), layers=["streetlight"])
        assert len(snap["devices"]) == 10
        assert snap["truncated"] is True and snap["limit"] == 10
        await peer.ws.close()


async def test_a_wide_view_gets_grid_cells_and_no_device_deltas(city_db_url, make_settings, mosquitto,
                                                                token_for):
    """Above max_snapshot_devices a kind comes as the cells of the aggregate tiles (their MVT ids),
    its devices' updates are not routed, and the cells are sent again when their counts change;
    a view under the bound is the plain snapshot, without the new fields."""
    url = city_db_url
    (a, ax, ay), _ = far_apart(url)
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    everything = city_bbox(url)
    cameras = in_bbox(url, everything, ["camera"])
    bound = len(cameras)  # the cameras are under it, the lamps (many more) above
    settings = make_settings(url, hub={"max_snapshot_devices": bound, "cells_refresh_s": 0.2})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        peer = await connect(client, await token_for(url, "viewer"))
        kinds = ["streetlight", "camera"]
        snap = await peer.snapshot(bbox=everything, layers=kinds, zoom=12, coalesce=True)
        assert snap["aggregated"] == ["streetlight"] and snap["cell_zoom"] == 12
        assert 0 < bound < len(in_bbox(url, everything, ["streetlight"]))
        assert {d["id"] for d in snap["devices"]} == cameras, "the kinds under the bound: devices"
        cells = snap["cells"]
        assert sum(c["count"] for c in cells) == len(in_bbox(url, everything, ["streetlight"]))
        for c in cells:
            assert c["kind"] == "streetlight" and c["cell"].startswith("cell:12/")
            _, x, y = (int(v) for v in c["cell"].removeprefix("cell:").split("/"))
            assert c["id"] == y * 2 ** 15 + x, "the MVT id of the cell in the z12 tile"
            assert c["count"] == c["online"] + c["stale"] + c["offline"] + c["unknown"]
        online = sum(c["online"] for c in cells)

        await publish(pub, a, t, power_w=10.0, lamp_on=True)
        m = await peer.next(lambda m: m["type"] == "cells", within=20)
        assert sum(c["online"] for c in m["cells"]) == online + 1 and m["cell_zoom"] == 12
        assert peer.states(a) == [], "no per-device deltas for an aggregated kind"

        # At the lamps' detail zoom the map draws each lamp from its tiles: each needs its state.
        detailed = await peer.snapshot(bbox=everything, layers=kinds, zoom=14)
        assert "aggregated" not in detailed and a in {d["id"] for d in detailed["devices"]}

        narrow = await peer.snapshot(bbox=around(ax, ay), layers=kinds)
        assert a in {d["id"] for d in narrow["devices"]}
        assert "cells" not in narrow and "aggregated" not in narrow
        await publish(pub, a, t + timedelta(seconds=1), power_w=11.0)
        await peer.next(state_of(a, power_w=11.0))

        bad = await peer.snapshot(bbox=everything, zoom="12")
        assert bad["type"] == "error" and bad["field"] == "zoom"
        await peer.ws.close()


# ---------------------------------------------------------------- deltas
async def test_deltas_follow_the_viewport(city_db_url, make_settings, mosquitto, token_for):
    url = city_db_url
    (a, ax, ay), (b, bx, by) = far_apart(url)
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    async with running(make_settings(url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        peer = await connect(client, await token_for(url, "viewer"))
        snap = await peer.snapshot(bbox=around(ax, ay), layers=["streetlight"])
        assert a in {d["id"] for d in snap["devices"]}
        assert b not in {d["id"] for d in snap["devices"]}

        await publish(pub, a, t, power_w=10.0, lamp_on=True)
        m = await peer.next(state_of(a, power_w=10.0))
        assert m == {"type": "state", "device": a, "ts": iso(t), "status": "online",
                     "values": {"power_w": 10.0, "lamp_on": True}}

        # B is outside the viewport: published before A's next reading, never delivered.
        await publish(pub, b, t, power_w=20.0)
        await publish(pub, a, t + timedelta(seconds=1), power_w=11.0)
        await peer.next(state_of(a, power_w=11.0))
        assert peer.states(b) == []

        # Status: from the status topic, and from the staleness scan.
        await pub.publish(f"ioc/v1/{a}/status", b"offline", qos=1)
        m = await peer.next(lambda m: m["type"] == "state" and m["device"] == a
                            and m["status"] == "offline")
        assert m["values"] == {}
        key = (await aq(url, "select key from devices where id = %s", a))[0][0]
        client.app[HUB].on_status([(key, "stale")])
        await peer.next(lambda m: m["type"] == "state" and m["device"] == a
                        and m["status"] == "stale")

        # Move the viewport to B: a new snapshot with B's stored state, then only B.
        snap = await peer.snapshot(bbox=around(bx, by), layers=["streetlight"])
        ids = {d["id"]: d for d in snap["devices"]}
        assert a not in ids and ids[b]["values"] == {"power_w": 20.0}
        seen_a = len(peer.states(a))
        await publish(pub, a, t + timedelta(seconds=2), power_w=12.0)
        await publish(pub, b, t + timedelta(seconds=2), power_w=21.0)
        await peer.next(state_of(b, power_w=21.0))
        assert len(peer.states(a)) == seen_a

        # Layers filter deltas too: B is a streetlight, and cameras are all we want now.
        await peer.snapshot(bbox=around(bx, by), layers=["camera"])
        seen_b = len(peer.states(b))
        await publish(pub, b, t + timedelta(seconds=3), power_w=22.0)
        await wait_for(lambda: q(url, "select s.values->>'power_w' from device_state s join "
                                      "devices d on d.key = s.device_key where d.id = %s",
                                 b)[0][0] == "22.0", blocking=True)
        await peer.send({"op": "ping", "id": 7})
        assert await peer.next(lambda m: m["type"] == "pong") == {"type": "pong", "id": 7}
        assert len(peer.states(b)) == seen_b
        await peer.ws.close()


async def test_a_device_created_after_start_is_routed(city_db_url, make_settings, mosquitto,
                                                      token_for):
    url = city_db_url
    (_, ax, ay), _ = far_apart(url)
    x, y = ax + 0.0005, ay + 0.0005
    feature = {"type": "Feature", "id": "ENV-NEW-1",
               "geometry": {"type": "Point", "coordinates": [x, y]},
               "properties": {"kind": "env_sensor", "name": "new sensor"}}
    async with running(make_settings(url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        peer = await connect(client, await token_for(url, "viewer"))
        await peer.snapshot(bbox=around(x, y), layers=["env_sensor"])
        resp = await client.post("/api/v1/devices", json=feature,
                                 headers=headers(await token_for(url, "integrator")))
        assert resp.status == 201, await resp.text()
        # At once, before the hub's next look at the directory.
        await publish(pub, "ENV-NEW-1", datetime.now(UTC), pm25_ugm3=35.0)
        await peer.next(state_of("ENV-NEW-1", pm25_ugm3=35.0))
        await peer.ws.close()


# ---------------------------------------------------------------- slow clients
async def fill_until(pub, lamp_ids, done, rounds: int = 40) -> None:
    """Publish rounds of readings for every lamp until ``done()`` (a client is backed up)."""
    base = datetime.now(UTC) - timedelta(minutes=10)
    for r in range(rounds):
        ts = base + timedelta(seconds=r)
        for i, lamp in enumerate(lamp_ids):
            await publish(pub, lamp, ts, power_w=float(i % 90), dim_level_pct=float(r % 100),
                          energy_kwh=1000.0 + r, burning_hours=5000.0 + r, lamp_on=True)
        try:
            await wait_for(done, within=3)
            return
        except AssertionError:
            continue
    raise AssertionError("the slow client never fell behind")


def hub_client(client, role: str):
    return next(c for c in client.app[HUB].clients if c.principal.role == role)


async def test_slow_reader_gets_merged_states_and_every_alarm(city_db_url, make_settings,
                                                              mosquitto, token_for):
    url = city_db_url
    ids = [r[0] for r in await asyncio.to_thread(lamps, url)]
    d = ids[0]
    whole = city_bbox(url)
    settings = make_settings(url, hub={"send_buffer_bytes": 4096, "slow_after_s": 300})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        hub = client.app[HUB]
        fast = await connect(client, await token_for(url, "operator"))
        await fast.snapshot(bbox=whole, layers=["streetlight"], alarms=True)
        async with slow_peer(client, await token_for(url, "viewer")) as slow:
            await slow.snapshot(bbox=whole, layers=["streetlight"], alarms=True)
            fast_reader = asyncio.create_task(fast.next(lambda m: m.get("alarm", {}).get("id")
                                                        == 300, within=120))
            # The slow one stops reading; its writer is stuck once the buffers are full.
            stuck = hub_client(client, "viewer")
            await fill_until(pub, ids, lambda: stuck.lag(time.monotonic()) > 1)
            conflated_before = metric(client, "ws_conflated")
            t0 = datetime.now(UTC)
            for i in range(5):
                await publish(pub, d, t0 + timedelta(milliseconds=i), power_w=100.0 + i)
                await wait_for(lambda i=i: q(url, "select s.values->>'power_w' from device_state s "
                                                  "join devices d on d.key = s.device_key "
                                                  "where d.id = %s", d)[0][0] == str(100.0 + i),
                               blocking=True)
            for n in range(1, 301):
                hub.publish_alarm({"id": n, "rule": "r", "device": d, "severity": "minor",
                                   "state": "active_unacked"})
            assert stuck.lag(time.monotonic()) > 1, "still backed up"

            # Now it reads everything that was kept for it.
            await slow.next(lambda m: m.get("alarm", {}).get("id") == 300, within=60)
            await slow.next(state_of(d, power_w=104.0), within=30)
            alarms = [m["alarm"]["id"] for m in slow.all if m["type"] == "alarm"]
            assert alarms == list(range(1, 301)), "every alarm, once, in order"
            burst = [m for m in slow.states(d) if m["values"].get("power_w", 0) >= 100]
            assert len(burst) < 5, "the five updates of one device were merged"
            assert burst[-1]["values"]["power_w"] == 104.0, "the latest value wins"
            assert metric(client, "ws_conflated") - conflated_before >= 4
            await fast_reader
            assert [m["alarm"]["id"] for m in fast.all if m["type"] == "alarm"] == list(range(1, 301))
        await fast.ws.close()


async def test_a_client_that_stays_behind_is_disconnected_and_others_go_on(
        city_db_url, make_settings, mosquitto, token_for):
    url = city_db_url
    ids = [r[0] for r in await asyncio.to_thread(lamps, url)]
    whole = city_bbox(url)
    settings = make_settings(url, hub={"send_buffer_bytes": 4096, "slow_after_s": 2.0})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        fast = await connect(client, await token_for(url, "operator"))
        await fast.snapshot(bbox=whole, layers=["streetlight"])
        # The fast client reads all along; 77 W is a value only published after the kick.
        fast_sees_it = asyncio.create_task(fast.next(state_of(ids[1], power_w=77.0), within=180))
        async with slow_peer(client, await token_for(url, "viewer")) as slow:
            await slow.snapshot(bbox=whole, layers=["streetlight"])
            await fill_until(pub, ids, lambda: metric(client, "ws_disconnected_slow") >= 1)

            async def slow_reads_to_the_end() -> Closed:
                while True:
                    try:
                        await slow._receive(30)
                    except Closed as closed:
                        return closed

            async def fast_goes_on() -> None:
                await publish(pub, ids[1], datetime.now(UTC), power_w=77.0)
                await fast_sees_it

            closed, _ = await asyncio.gather(slow_reads_to_the_end(), fast_goes_on())
            assert closed.code == 1013
            assert "too slow" in closed.reason
        await wait_for(lambda: metric(client, "ws_clients") == 1)
        assert hub_client(client, "operator") is not None
        text = await (await client.get("/metrics", headers=headers(
            await token_for(url, "viewer")))).text()
        assert "ioc_ws_disconnected_slow_total 1.0" in text
        await fast.ws.close()


# ---------------------------------------------------------------- alarms and crews
async def test_crews_get_only_their_alarms_and_messages(city_db_url, make_settings, token_for):
    url = city_db_url
    crew_a, crew_b = (r[0] for r in await aq(url, "select id from crews order by id limit 2"))
    async with running(make_settings(url, mqtt_url=None)) as client:
        hub = client.app[HUB]
        op = await connect(client, await token_for(url, "operator"))
        pa = await connect(client, await token_for(url, "crew", crew=crew_a))
        pb = await connect(client, await token_for(url, "crew", crew=crew_b))
        for p in (op, pa, pb):
            assert (await p.snapshot(alarms=True))["type"] == "snapshot"

        def alarm(n, crew, state="active_unacked"):
            return {"id": n, "rule": "r", "device": "SL-1", "severity": "minor", "state": state,
                    "assigned_crew": crew}

        def is_alarm(n):
            return lambda m: m["type"] == "alarm" and m["alarm"]["id"] == n

        hub.publish_alarm(alarm(1, crew_a))
        hub.publish_alarm(alarm(2, crew_b))
        hub.publish_alarm(alarm(3, None))
        await pa.next(is_alarm(1))
        await pb.next(is_alarm(2))
        for n in (1, 2, 3):
            await op.next(is_alarm(n))
        # Alarm 1 moves to crew B: crew A hears of it once more (it is no longer theirs).
        hub.publish_alarm(alarm(1, crew_b))
        assert (await pa.next(lambda m: m["type"] == "alarm"))["alarm"]["assigned_crew"] == crew_b
        assert (await pb.next(lambda m: m["type"] == "alarm"))["alarm"]["id"] == 1
        hub.publish_alarm(alarm(1, crew_b, "closed"))  # not crew A's business any more
        hub.publish_alarm(alarm(4, crew_a))
        assert (await pa.next(lambda m: m["type"] == "alarm"))["alarm"]["id"] == 4
        assert [m["alarm"]["id"] for m in pa.all if m["type"] == "alarm"] == [1, 1, 4]
        assert [m["alarm"]["id"] for m in pb.all if m["type"] == "alarm"] == [2, 1]

        note = {"type": "notification", "alarm": 4, "text": "lamp out"}
        assert hub.send_to_crew(crew_a, note) is True
        assert await pa.next(lambda m: m["type"] == "notification") == note
        assert hub.send_to_crew("no-such-crew", note) is False
        assert hub.send_to_crew(crew_b, {**note, "alarm": 5}) is True
        assert (await pb.next(lambda m: m["type"] == "notification"))["alarm"] == 5
        assert not [m for m in op.all if m["type"] == "notification"]

        # Unsubscribed: no more alarms (a pong queued after it comes first, and alone).
        await op.send({"op": "unsubscribe"})
        await op.send({"op": "ping"})
        await op.next(lambda m: m["type"] == "pong")
        hub.publish_alarm(alarm(5, None))
        await op.send({"op": "ping", "id": 2})
        assert (await op.next())["type"] == "pong"
        assert 5 not in [m["alarm"]["id"] for m in op.all if m["type"] == "alarm"]
        for p in (op, pa, pb):
            await p.ws.close()


# ---------------------------------------------------------------- auth and bad input
async def test_auth(city_db_url, make_settings, token_for):
    url = city_db_url
    token = await token_for(url, "viewer")
    async with running(make_settings(url, mqtt_url=None)) as client:
        for kw in ({}, {"headers": headers("ioc_not-a-token")}, {"params": {"token": "nope"}}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await client.ws_connect(WS, **kw)
            assert err.value.status == 401
        resp = await client.get(WS, headers=headers("ioc_not-a-token"))
        assert resp.status == 401
        assert "unknown or revoked" in (await resp.json())["detail"]
        by_query = Peer(await client.ws_connect(WS, params={"token": token}))
        assert (await by_query.snapshot(alarms=True))["type"] == "snapshot"
        await by_query.ws.close()
        # Open when the server stops: told it is going away.
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(client.make_url(WS), headers=headers(token))
        peer = Peer(ws)
        await peer.snapshot(alarms=True)
    try:
        with pytest.raises(Closed) as closed:
            await peer.next(within=10)
        assert closed.value.code == 1001
    finally:
        await session.close()


async def test_bad_messages_get_errors_and_the_connection_stays(city_db_url, make_settings,
                                                                token_for):
    url = city_db_url
    async with running(make_settings(url, mqtt_url=None)) as client:
        peer = await connect(client, await token_for(url, "viewer"))
        cases = [
            ("{not json", "not JSON"),
            ("[1, 2]", "JSON object"),
            ({"op": "dance"}, "unknown op 'dance'"),
            ({"op": "subscribe", "bbox": [1, 2, 3]}, "four numbers"),
            ({"op": "subscribe", "bbox": [106, 22, 105, 21]}, "minimum above its maximum"),
            ({"op": "subscribe", "bbox": [0, 0, 200, 10]}, "outside WGS 84"),
            ({"op": "subscribe", "bbox": [0, 0, 1, 1], "layers": ["spaceship"]},
             "unknown layer(s) spaceship; layers are device kinds: camera"),
            ({"op": "subscribe", "layers": "streetlight"}, "list of device kinds"),
            ({"op": "subscribe", "alarms": "yes"}, "alarms must be true or false"),
        ]
        for sent, expected in cases:
            await peer.send(sent)
            m = await peer.next()
            assert m["type"] == "error" and expected in m["message"], (sent, m)
        await peer.send({"op": "subscribe", "bbox": "x", "id": "req-9"})
        assert (await peer.next())["id"] == "req-9"
        await peer.ws.send_bytes(b"\x00\x01")
        assert "text frames" in (await peer.next())["message"]
        snap = await peer.snapshot(bbox=city_bbox(url), layers=["camera"])
        assert snap["type"] == "snapshot" and snap["devices"]
        await peer.ws.close()


# ---------------------------------------------------------------- scale-out entry points
async def test_relay_envelopes_out_and_remote_updates_in(city_db_url, make_settings, mosquitto,
                                                         token_for):
    url = city_db_url
    (a, ax, ay), _ = far_apart(url)
    async with running(make_settings(url)) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        hub = client.app[HUB]
        out: list[bytes] = []
        hub.relays.append(out.append)
        peer = await connect(client, await token_for(url, "viewer"))
        await peer.snapshot(bbox=around(ax, ay), layers=["streetlight"], alarms=True)
        ts = datetime.now(UTC).replace(microsecond=0)
        await publish(pub, a, ts, power_w=5.0)
        await peer.next(state_of(a, power_w=5.0))
        # Retained status messages other tests left on the session broker may share the
        # envelope (and set the status time): look for this device's reading in it.
        env = next(orjson.loads(e) for e in out if b'"states"' in e and b'"power_w"' in e)
        assert env["node"] == hub.node
        ms = int(ts.timestamp() * 1000)
        item = next(st for st in env["states"] if st[0] == a and st[4])
        assert item[:3] == [a, ms, "online"] and item[4] == {"power_w": [ms, 5.0]}, item

        # What another server process ingested, through its relay.
        hub.apply_remote(orjson.dumps({"node": "peer-1", "states": [
            [a, ms + 1000, "online", ms + 1000, {"power_w": [ms + 1000, 6.0]}]]}))
        m = await peer.next(state_of(a, power_w=6.0))
        assert m["ts"] == iso(ts + timedelta(seconds=1))
        hub.apply_remote({"node": "peer-1", "alarm": {"id": 9, "state": "active_unacked"}})
        assert (await peer.next(lambda m: m["type"] == "alarm"))["alarm"]["id"] == 9
        # Our own envelope, echoed back by a transport, is not routed twice.
        before = len(peer.all)
        hub.apply_remote({"node": hub.node, "alarm": {"id": 10}})
        hub.apply_remote({"node": "peer-1", "alarm": {"id": 11}})
        assert (await peer.next(lambda m: m["type"] == "alarm"))["alarm"]["id"] == 11
        assert len(peer.all) == before + 1
        await peer.ws.close()


async def test_two_server_processes_share_live_updates(city_db_url, make_settings, mosquitto,
                                                       token_for):
    """A client of one process sees what the other ingested and raised, over the broker."""
    url = city_db_url
    (a, ax, ay), _ = far_apart(url)
    ingesting = make_settings(url, hub={"relay": True})
    # The second process ingests nothing itself (its MQTT adapters are off).
    other = make_settings(url, hub={"relay": True},
                          adapters={"mqtt": {"enabled": False}, "chirpstack": {"enabled": False}})
    async with (running(ingesting) as one, running(other) as two,
                publisher(mosquitto.url) as pub):
        await wait_connected(one)
        for c in (one, two):
            await asyncio.wait_for(c.app[HUB].broker.link.connected.wait(), 15)
        peer = await connect(two, await token_for(url, "viewer"))
        await peer.snapshot(bbox=around(ax, ay), layers=["streetlight"], alarms=True)
        await publish(pub, a, datetime.now(UTC), power_w=33.0)
        await peer.next(state_of(a, power_w=33.0))
        one.app[HUB].publish_alarm({"id": 77, "device": a, "state": "active_unacked"})
        assert (await peer.next(lambda m: m["type"] == "alarm"))["alarm"]["id"] == 77
        assert metric(two, "readings_stored") == 0, "the second process ingested nothing"
        # Its own envelopes come back from the broker too; nothing is delivered twice.
        await peer.send({"op": "ping"})
        await peer.next(lambda m: m["type"] == "pong")
        assert len(peer.states(a)) == 1
        assert len([m for m in peer.all if m["type"] == "alarm"]) == 1
        await peer.ws.close()
