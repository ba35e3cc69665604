"""Scale-out: two ``ioc serve`` processes, one broker (the session's mosquitto), one database.

Both run with ``IOC_MQTT_SHARED_GROUP`` (devices' topics through ``$share/<group>/...``,
each process under its own client id), ``hub.relay = true`` and the same rule file. One
test, in phases, because starting server processes is most of its cost:

1. readings published at a steady rate are all stored, each once, and both processes
   stored part of them (their ``ioc_readings_stored_total`` sum to the total);
2. a websocket client on either process sees the updates ingested by both: mosquitto
   hands shared messages round-robin, so of two readings of a device published back to
   back one goes to each process, and each client sees both;
3. readings that trip a threshold rule, arriving through both processes, give one alarm
   per (rule, device) with one "raised" event, and both clients are told of it;
4. one process SIGKILLed mid-stream hands its share to the other. What mosquitto 2.0
   does by itself: it keeps giving the dead member its turn (new messages too, not just
   those in flight), queued in its persistent session until a client with its id
   connects; nothing is lost, but half the readings would wait for the dead process. So
   the survivor, told by the dead one's MQTT will, connects with the dead one's client id
   (``server/ingest/takeover.py``) and stores what was queued and in flight there and every
   new reading, with the dead process still down;
5. the killed process started again (same client id) takes its session, and its share,
   back: of readings published afterwards, each process stores its half;
6. stopped on purpose (SIGTERM), it marks itself offline and the survivor takes its share
   the same way, so a rolling restart parks no readings.

``test_alarm_opened_by_another_process_meanwhile_is_raised_once`` makes the race of phase 3
deterministic: another transaction holds the new alarm row while the engine inserts its
own, and the engine applies its transition to that row instead of raising twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack

import aiohttp
import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml

from server.keys import ALARMS
from tests.faults.helpers import Publisher, lamp_ids, metric, serving, stored, token, wait_stored
from tests.helpers import aq, q, running, wait_connected, wait_for

pytestmark = pytest.mark.slow

RATE = 1_000  # messages/s, two values each, while two servers share this machine's 2 cores
RULE = "so-hot"
STORED = "ioc_readings_stored_total"


# ---------------------------------------------------------------- helpers
def poll(predicate: Callable[[], object], what: str, within: float = 30.0):
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        time.sleep(0.1)


def neighbours(url: str, exclude: list[str], n: int = 3) -> list[str]:
    """``n`` streetlights close together, none of ``exclude``."""
    rows = q(url, """
        with c as (select id, geom from devices where kind = 'streetlight' and id <> all(%s)
                   order by id desc limit 1)
        select d.id from devices d, c where d.kind = 'streetlight' and d.id <> all(%s)
        order by d.geom <-> c.geom limit %s""", exclude, exclude, n)
    return [r[0] for r in rows]


def bbox_of(url: str, devices: list[str]) -> list[float]:
    x0, y0, x1, y1 = q(url, "select ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) from "
                            "(select ST_Extent(geom)::geometry as e from devices where id = any(%s)) t",
                       devices)[0]
    return [x0 - 0.0005, y0 - 0.0005, x1 + 0.0005, y1 + 0.0005]


class Sender:
    """Single readings, published one at a time at QoS 1 and in order (the broker's
    round-robin then alternates them between the two processes)."""

    def __init__(self, broker_url: str) -> None:
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="so-send-" + uuid.uuid4().hex[:6],
                                  protocol=mqtt.MQTTv311)
        self.client.connect(host, int(port), keepalive=30)
        self.client.loop_start()

    def send(self, device: str, ts_ms: int, **values: float) -> None:
        info = self.client.publish(f"ioc/v1/{device}/telemetry",
                                   orjson.dumps({"ts": ts_ms, "values": values}), qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Watcher:
    """A websocket client of one server process, in a thread with its own event loop (the
    test itself blocks on the database and the broker), recording everything it is sent."""

    def __init__(self, base_url: str, bearer: str, bbox: list[float]) -> None:
        self.url = base_url + "/api/v1/ws"
        self.bearer = bearer
        self.bbox = bbox
        self.messages: list[dict] = []
        self.error: BaseException | None = None
        self.subscribed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="so-ws", daemon=True)
        self._thread.start()
        if not self.subscribed.wait(30):
            raise AssertionError(f"no snapshot from {self.url}: {self.error!r}")

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._task = loop.create_task(self._main())
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as err:  # reported by the test's assertions
            self.error = err
        finally:
            loop.close()

    async def _main(self) -> None:
        async with (aiohttp.ClientSession() as session,
                    session.ws_connect(self.url, headers={"Authorization": f"Bearer {self.bearer}"},
                                       heartbeat=20) as ws):
            await ws.send_json({"op": "subscribe", "bbox": self.bbox, "layers": ["streetlight"],
                                "alarms": True})
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                doc = orjson.loads(msg.data)
                for m in doc if isinstance(doc, list) else [doc]:
                    self.messages.append(m)
                    if m.get("type") == "snapshot":
                        self.subscribed.set()

    def values(self, device: str, metric_name: str) -> set[float]:
        return {m["values"][metric_name] for m in list(self.messages)
                if m.get("type") == "state" and m.get("device") == device
                and metric_name in m.get("values", {})}

    def alarms(self, rule: str) -> dict[str, dict]:
        """The latest alarm message per device of ``rule``."""
        return {m["alarm"]["device"]: m["alarm"] for m in list(self.messages)
                if m.get("type") == "alarm" and m["alarm"].get("rule") == rule}

    def close(self) -> None:
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)


def counters(servers, bearer: str) -> list[float]:
    return [metric(s, bearer, STORED) or 0.0 for s in servers]


def shared_env(monkeypatch, tmp_path, devices: list[str]) -> str:
    """What both processes get (``serving`` passes this process's environment on)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [
        {"id": RULE, "kind": "threshold", "select": {"devices": devices}, "metric": "power_w",
         "above": 100, "severity": "major"}]}))
    group = "so-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("IOC_MQTT_SHARED_GROUP", group)
    monkeypatch.setenv("IOC_HUB__RELAY", "true")
    monkeypatch.setenv("IOC_RULES__PATHS", orjson.dumps([str(rules)]).decode())
    return group


# ---------------------------------------------------------------- the two processes
def test_two_processes_share_ingest_live_updates_and_alarms(city_db_url, mosquitto, tmp_path,
                                                           monkeypatch):
    url = city_db_url
    fleet = lamp_ids(url, 100)
    trio = neighbours(url, fleet)
    shared_env(monkeypatch, tmp_path, trio)
    ids = ["ioc-so-a-" + uuid.uuid4().hex[:6], "ioc-so-b-" + uuid.uuid4().hex[:6]]
    bearer = token(url)
    with ExitStack() as stack:
        a = stack.enter_context(serving(tmp_path, url, mosquitto.url, ids[0]))
        b = stack.enter_context(serving(tmp_path, url, mosquitto.url, ids[1]))
        sender = Sender(mosquitto.url)
        stack.callback(sender.close)

        # 1. every reading stored once, by both processes together
        pub = Publisher(mosquitto.url, fleet, seconds=5, rate=RATE).start()
        expected = pub.finish()
        wait_stored(url, expected, a)
        done = poll(lambda: (c := counters([a, b], bearer)) and sum(c) == expected and c,
                    f"the processes' {STORED} sum to {expected}")
        assert all(n > 0 for n in done), f"one process stored nothing: {done}"

        # 2. a websocket client on either process sees updates ingested by both
        box = bbox_of(url, trio)
        watchers = [Watcher(s.base_url, bearer, box) for s in (a, b)]
        for w in watchers:
            stack.callback(w.close)
        base = int(time.time() * 1000)
        before = counters([a, b], bearer)
        for rnd, power in enumerate((11.0, 12.0)):
            for i, dev in enumerate(trio):
                sender.send(dev, base + rnd * 1000 + i, power_w=power + i / 10)
            # Both updates of a device are seen one by one, not merged into the latest.
            for w in watchers:
                poll(lambda w=w, p=power: all(p + i / 10 in w.values(dev, "power_w")
                                              for i, dev in enumerate(trio)),
                     f"round {rnd} on the client of {w.url}", within=20)
        after = poll(lambda: (c := counters([a, b], bearer)) and sum(c) - sum(before) == 6 and c,
                     "6 readings stored")
        # Round-robin: of the 6 readings each process stored 3, so of each device's two
        # readings one came through each process, and each client saw both.
        assert [x - y for x, y in zip(after, before, strict=True)] == [3, 3]
        for w in watchers:
            for i, dev in enumerate(trio):
                assert {11.0 + i / 10, 12.0 + i / 10} <= w.values(dev, "power_w"), (w.url, dev)

        # 3. no alarm raised twice: tripping readings arrive through both processes
        before = counters([a, b], bearer)
        for rnd in range(4):
            for i, dev in enumerate(trio):
                sender.send(dev, base + 5000 + rnd * 1000 + i, power_w=150.0 + rnd)
        poll(lambda: q(url, "select count(*) from alarms where rule = %s", RULE)[0][0] == 3
             and all(len(w.alarms(RULE)) == 3 for w in watchers), "3 alarms, seen by both clients")
        after = counters([a, b], bearer)
        assert all(x > y for x, y in zip(after, before, strict=True)), (before, after)
        time.sleep(2.0)  # the slower engine's transitions are stored (as no-ops) meanwhile
        rows = q(url, """select a.device, a.state, count(e.*) filter (where e.event = 'raised')
                         from alarms a left join alarm_events e on e.alarm_id = a.id
                         where a.rule = %s group by a.id order by a.device""", RULE)
        assert rows == [(d, "active_unacked", 1) for d in sorted(trio)], rows
        for s in (a, b):
            log = s.log_path.read_text(errors="replace")
            assert "storing an alarm transition failed" not in log, s.tail(30)

        # 4. SIGKILL one process mid-stream: the survivor takes over its share
        start = stored(url)[0]
        pub = Publisher(mosquitto.url, fleet, seconds=6, rate=RATE).start()
        pub.wait_sent(2.0)
        os.kill(b.pid, signal.SIGKILL)
        b.proc.wait(10)
        expected = start + pub.finish()
        wait_stored(url, expected, a)  # with the killed process still down
        assert f"{ids[1]} is gone; this process ({ids[0]}) serves its share" in \
            a.log_path.read_text(errors="replace"), a.tail(30)
        # Every reading published now is stored by the survivor.
        before = counters([a], bearer)[0]
        for rnd in range(2):
            for i, dev in enumerate(trio):
                sender.send(dev, base + 20_000 + rnd * 1000 + i, power_w=150.0)
        poll(lambda: counters([a], bearer)[0] - before == 6, "the survivor stored all 6")
        wait_stored(url, expected + 6, a)

        # 5. the killed process, started again with its client id, takes its share back
        b2 = stack.enter_context(serving(tmp_path, url, mosquitto.url, ids[1]))
        poll(lambda: f"gave {ids[1]}'s share back" in a.log_path.read_text(errors="replace"),
             "the survivor returned the borrowed session", within=30)
        before = counters([a, b2], bearer)
        for rnd in range(2):
            for i, dev in enumerate(trio):
                sender.send(dev, base + 30_000 + rnd * 1000 + i, power_w=150.0)
        after = poll(lambda: (c := counters([a, b2], bearer)) and sum(c) - sum(before) == 6 and c,
                     "6 readings stored after the restart")
        assert [x - y for x, y in zip(after, before, strict=True)] == [3, 3]
        wait_stored(url, expected + 12, a)

        # 6. stopped on purpose (SIGTERM), it hands its share over the same way
        b2.proc.send_signal(signal.SIGTERM)
        b2.proc.wait(30)
        poll(lambda: a.log_path.read_text(errors="replace").count(
            f"{ids[1]} is gone; this process ({ids[0]}) serves its share") == 2,
             "the survivor took the stopped process's share", within=30)
        before = counters([a], bearer)[0]
        for rnd in range(2):
            for i, dev in enumerate(trio):
                sender.send(dev, base + 40_000 + rnd * 1000 + i, power_w=150.0)
        poll(lambda: counters([a], bearer)[0] - before == 6, "the survivor stored all 6")
        wait_stored(url, expected + 18, a)
        for w in watchers:
            assert w.error is None, w.error


# ---------------------------------------------------------------- the race, made deterministic
async def test_alarm_opened_by_another_process_meanwhile_is_raised_once(
        city_db_url, make_settings, mosquitto, tmp_path, caplog):
    """Another process's transaction inserts the alarm after our engine's select found
    none: the engine's insert waits on the unique index, then applies its transition to
    that alarm (a no-op, already active) instead of raising a second time or retrying."""
    url = city_db_url
    device = lamp_ids(url, 1)[0]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [
        {"id": RULE, "kind": "threshold", "select": {"devices": [device]}, "metric": "power_w",
         "above": 100, "severity": "major"}]}))
    caplog.set_level(logging.INFO, logger="server.alarms")
    async with running(make_settings(url, rules={"paths": [str(rules)]})) as client:
        await wait_connected(client)
        engine = client.app[ALARMS]
        other = await asyncio.to_thread(psycopg.connect, url)
        try:
            # "The other process": opens the alarm and its raised event, not committed yet.
            await asyncio.to_thread(other.execute, """
                insert into alarms (rule, device, severity, value, message, dedup_key)
                values (%s, %s, 'major', 150, 'raised by the other process', 'other')""",
                                    (RULE, device))
            await asyncio.to_thread(other.execute, """
                insert into alarm_events (alarm_id, event, actor, details)
                select id, 'raised', 'rules', '{}' from alarms where dedup_key = 'other'""")
            host, port = mosquitto.url.removeprefix("mqtt://").split(":")
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
            pub.connect(host, int(port))
            pub.loop_start()
            try:
                pub.publish(f"ioc/v1/{device}/telemetry",
                            orjson.dumps({"values": {"power_w": 160.0}}), qos=1).wait_for_publish(10)
            finally:
                pub.loop_stop()
                pub.disconnect()

            def engine_waits_on_the_index() -> bool:
                return q(url, "select count(*) from pg_stat_activity where datname = "
                              "current_database() and wait_event_type = 'Lock' "
                              "and query ilike '%%insert into alarms%%'")[0][0] > 0

            await wait_for(engine_waits_on_the_index, within=30)
            await asyncio.to_thread(other.commit)
        finally:
            await asyncio.to_thread(other.close)
        await wait_for(lambda: not engine._queue, within=30)
        await engine.drained()
    rows = await aq(url, """select a.message, count(e.*) filter (where e.event = 'raised')
                            from alarms a left join alarm_events e on e.alarm_id = a.id
                            where a.rule = %s group by a.id""", RULE)
    assert rows == [("raised by the other process", 1)], rows
    assert "storing an alarm transition failed" not in caplog.text
