"""Sparkplug B ingest and commands against an edge node no one here wrote.

The edge node is Eclipse Tahu's JavaScript client (npm ``sparkplug-client``, a dev
dependency in package.json) in ``sparkplug_edge.js``, talking to the real mosquitto of the
test session; the server is the whole app on the real database. One session walks the
lifecycle: births, data by alias, a lost message that makes the server ask for a rebirth,
a DCMD the edge applies and reports, DDEATH and NDEATH.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import aiomqtt
import orjson
import pytest

from adapters.registry import AdapterRegistry
from adapters.sparkplug import SparkplugAdapter
from server.ingest import contexts
from server.keys import MQTT_INGEST
from server.mqtt.link import parse_mqtt_url
from server.polling import adapters as polling
from tests.helpers import aexecute, aq, auth, running, until_status, wait_connected, wait_for

ROOT = Path(__file__).resolve().parents[2]
EDGE_JS = Path(__file__).with_name("sparkplug_edge.js")
TAHU = ROOT / "node_modules" / "sparkplug-client"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not TAHU.is_dir(),
    reason="needs node and `npm ci` (make web) for Eclipse Tahu's sparkplug-client")


@pytest.fixture(autouse=True)
def sparkplug_registered(monkeypatch):
    """The ``ioc.adapters`` entry point comes from the installed package metadata: an
    environment installed before the adapter existed does not list it until it is
    reinstalled (``make venv`` does on a pyproject change). Register it the same way then."""
    real = contexts.discover

    def discover(eps=None) -> AdapterRegistry:
        registry = real(eps)
        if "sparkplug" not in registry.classes:
            registry.register("sparkplug", SparkplugAdapter)
        return registry

    monkeypatch.setattr(contexts, "discover", discover)
    monkeypatch.setattr(polling, "discover", discover)


class Edge:
    """The Tahu edge node process: ops in on stdin, events out on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.events.append(json.loads(line))

    async def send(self, **op) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(op).encode() + b"\n")
        await self.proc.stdin.drain()

    async def event(self, name: str, after: int = 0, within: float = 15.0) -> dict:
        found = await wait_for(lambda: next((e for e in self.events[after:] if e["event"] == name),
                                            None), within=within, what=f"edge event {name}")
        return found

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self._reader.cancel()


async def start_edge(broker_url: str, group: str, edge: str, bd_seq: int = 0) -> Edge:
    p = parse_mqtt_url(broker_url)
    opts = {"serverUrl": f"tcp://{p['hostname']}:{p['port']}", "groupId": group, "edgeNode": edge,
            "username": p["username"] or "", "password": p["password"] or "", "bdSeq": bd_seq}
    proc = await asyncio.create_subprocess_exec(
        "node", str(EDGE_JS), json.dumps(opts), cwd=ROOT, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    edge_node = Edge(proc)
    await edge_node.event("connected")
    return edge_node


TELEMETRY = ("select m.name, t.value from telemetry t join devices d on d.key = t.device_key "
             "join metrics m on m.id = t.metric_id where d.id = $1 order by t.ts, m.name")
STATUS = ("select s.status from device_state s join devices d on d.key = s.device_key "
          "where d.id = $1")


async def values(url: str, device: str, metric: str) -> list[float]:
    return [r[1] for r in await aq(url, TELEMETRY.replace("$1", "%s"), device) if r[0] == metric]


async def status(url: str, device: str) -> str | None:
    rows = await aq(url, STATUS.replace("$1", "%s"), device)
    return rows[0][0] if rows else None


async def test_tahu_edge_node_births_aliases_rebirth_commands_and_deaths(
        city_db_url, make_settings, mosquitto, token_for):
    group, node = "city", "gw-" + uuid.uuid4().hex[:6]
    lamps = [r[0] for r in await aq(city_db_url, "select id from devices where kind = 'streetlight' "
                                                 "order by id limit 2")]
    for lamp, name in zip(lamps, ("lamp-1", "lamp-2"), strict=True):
        await aexecute(city_db_url, "update devices set external_id = %s, adapter = 'sparkplug' "
                                    "where id = %s", f"{group}/{node}/{name}", lamp)
    lamp1, lamp2 = lamps
    settings = make_settings(city_db_url, sparkplug={"metric_map": {"Dimmer/Level": "dim_level_pct"},
                                                     "rebirth_interval_s": 1.0})
    token = await token_for(city_db_url, "operator")
    lamp_birth = [
        {"name": "Lamp/power_w", "alias": 1, "type": "Double", "value": 41.5},
        {"name": "Dimmer/Level", "alias": 2, "type": "Int32", "value": 70},
        {"name": "Lamp/lamp_on", "alias": 3, "type": "Boolean", "value": True},
        {"name": "Vendor/Serial", "alias": 4, "type": "String", "value": "SN-1"},
    ]
    async with running(settings) as client:
        await wait_connected(client)
        edge = await start_edge(mosquitto.url, group, node, bd_seq=4)
        try:
            await edge.send(op="birth", node=[], devices={
                "lamp-1": lamp_birth, "lamp-2": [dict(m) for m in lamp_birth[:1]],
                "lamp-x": [{"name": "power_w", "alias": 1, "type": "Double", "value": 1.0}]})
            # Data by alias only: the births said which metric each alias is.
            await edge.send(op="ddata", device="lamp-1",
                            metrics=[{"alias": 1, "type": "Double", "value": 40.0}])
            await wait_for(lambda: values(city_db_url, lamp1, "power_w"), what="lamp-1 readings")
            await wait_for(lambda: _eq(values(city_db_url, lamp1, "power_w"), [41.5, 40.0]))
            assert await values(city_db_url, lamp1, "dim_level_pct") == [70.0]  # metric_map
            assert await values(city_db_url, lamp1, "lamp_on") == [1.0]  # last '/' segment
            assert await status(city_db_url, lamp1) == "online"
            reasons = await wait_for(lambda: _reasons(city_db_url, 2), what="dead letters")
            assert any(f"{group}/{node}/lamp-x" in r for r in reasons), reasons  # unknown device
            assert any("Vendor/Serial" in r for r in reasons), reasons  # unknown metric, said so

            # Three messages lost: the next one's seq jumps. Its reading is kept (the alias
            # is known), and the server asks for a rebirth, which the edge answers.
            seen = len(edge.events)
            await edge.send(op="gap", skip=3)
            await edge.send(op="ddata", device="lamp-1",
                            metrics=[{"alias": 1, "type": "Double", "value": 39.0}])
            ncmd = await edge.event("ncmd", after=seen)
            assert {"name": "Node Control/Rebirth", "value": True}.items() <= \
                ncmd["payload"]["metrics"][0].items()
            await edge.event("rebirth", after=seen)
            # The rebirth's DBIRTH reports lamp-1's current values again: stored too.
            await wait_for(lambda: _eq(values(city_db_url, lamp1, "power_w"), [41.5, 40.0, 39.0, 39.0]),
                           what="the gap's reading and the rebirth's")
            await edge.send(op="ddata", device="lamp-1",
                            metrics=[{"alias": 1, "type": "Double", "value": 38.0}])
            await wait_for(lambda: _eq(values(city_db_url, lamp1, "power_w"),
                                       [41.5, 40.0, 39.0, 39.0, 38.0]))
            assert client.app[MQTT_INGEST].adapters["sparkplug"].decoder.rebirths_requested == 1

            # A command goes out as a DCMD on the birth's metric, and the device's report
            # of the new value confirms it.
            seen = len(edge.events)
            resp = await client.post(f"/api/v1/devices/{lamp1}/commands", headers=auth(token),
                                     json={"name": "set_dim", "args": {"level": 30}})
            assert resp.status == 202, await resp.text()
            cmd = await resp.json()
            dcmd = await edge.event("dcmd", after=seen)
            assert dcmd["device"] == "lamp-1"
            written = dcmd["payload"]["metrics"][0]
            assert (written["name"], written["value"], written["type"]) == ("Dimmer/Level", 30, "Int32")
            assert _long(written["alias"]) == 2  # as the birth declared it
            done = await until_status(client, token, cmd["id"], "succeeded", "failed")
            assert done["status"] == "succeeded", done
            assert done["result"]["metric"] == "dim_level_pct" and done["result"]["value"] == 30

            # DDEATH: that device offline; NDEATH (bdSeq of this session): all of them.
            await edge.send(op="ddeath", device="lamp-2")
            await wait_for(lambda: _is(status(city_db_url, lamp2), "offline"), what="lamp-2 offline")
            assert await status(city_db_url, lamp1) == "online"
            await edge.send(op="stop")
            await wait_for(lambda: _is(status(city_db_url, lamp1), "offline"), what="lamp-1 offline")
        finally:
            await edge.close()


async def test_server_is_a_sparkplug_host_and_ignores_a_stale_death(city_db_url, make_settings,
                                                                   mosquitto):
    """STATE retained while up; an NDEATH whose bdSeq is not the current birth's (the will
    of an earlier connection, delivered late) leaves the devices online."""
    group, node = "city", "gw-" + uuid.uuid4().hex[:6]
    lamp = (await aq(city_db_url, "select id from devices where kind = 'streetlight' "
                                  "order by id limit 1"))[0][0]
    await aexecute(city_db_url, "update devices set external_id = %s where id = %s",
                   f"{group}/{node}/lamp-1", lamp)
    host = "ioc-test-" + uuid.uuid4().hex[:6]
    settings = make_settings(city_db_url, sparkplug={"host_id": host})
    p = parse_mqtt_url(mosquitto.url)
    async with running(settings) as client:
        await wait_connected(client)
        ingest = client.app[MQTT_INGEST]
        await wait_for(lambda: ingest._state_task is not None and ingest._state_task.done(),
                       what="the online STATE published")
        async with aiomqtt.Client(**p, identifier="spb-watch-" + uuid.uuid4().hex[:6]) as watch:
            await watch.subscribe(f"spBv1.0/STATE/{host}", qos=1)
            async with asyncio.timeout(10):
                msg = await anext(aiter(watch.messages))
            state = orjson.loads(msg.payload)
            assert msg.retain and state["online"] is True and state["timestamp"] > 0
        # bdSeq 0: Tahu's client builds its will when it is created, before a bdSeq could be set.
        edge = await start_edge(mosquitto.url, group, node)
        try:
            await edge.send(op="birth", node=[], devices={
                "lamp-1": [{"name": "power_w", "alias": 1, "type": "Float", "value": 12.5}]})
            await wait_for(lambda: _is(status(city_db_url, lamp), "online"))
            # Another session's will (bdSeq 255) arrives late: not this session's end.
            from adapters.sparkplug.sparkplug_b_pb2 import Payload

            stale = Payload(timestamp=1)
            m = stale.metrics.add()
            m.name, m.datatype, m.long_value = "bdSeq", 8, 255
            counted = client.app[MQTT_INGEST]._counted["sparkplug"]
            before = counted._value.get()
            async with aiomqtt.Client(**p, identifier="spb-pub-" + uuid.uuid4().hex[:6]) as pub:
                await pub.publish(f"spBv1.0/{group}/NDEATH/{node}", stale.SerializeToString())
            await wait_for(lambda: counted._value.get() > before, what="the stale NDEATH read")
            decoder = client.app[MQTT_INGEST].adapters["sparkplug"].decoder
            assert decoder.nodes[(group, node)].born
            assert await status(city_db_url, lamp) == "online"
            # The real end (the broker's will after a crash, bdSeq 0) takes it offline.
            await edge.send(op="crash")
            await wait_for(lambda: _is(status(city_db_url, lamp), "offline"), within=20,
                           what="the will's NDEATH")
            assert not decoder.nodes[(group, node)].born
        finally:
            await edge.close()
    # A clean stop says goodbye: the retained STATE is offline, with the same timestamp.
    async with aiomqtt.Client(**p, identifier="spb-watch-" + uuid.uuid4().hex[:6]) as watch:
        await watch.subscribe(f"spBv1.0/STATE/{host}", qos=1)
        async with asyncio.timeout(10):
            msg = await anext(aiter(watch.messages))
        assert orjson.loads(msg.payload) == {"online": False, "timestamp": state["timestamp"]}
        await watch.publish(f"spBv1.0/STATE/{host}", b"", qos=1, retain=True)  # clear it


def _long(value) -> int:
    """A uint64 as protobufjs hands it over: a number, or a Long {low, high}."""
    return value if isinstance(value, int) else value["low"] + (value["high"] << 32)


async def _eq(coro, expected) -> bool:
    return await coro == expected


async def _is(coro, expected) -> bool:
    return await coro == expected


async def _reasons(url: str, at_least: int) -> list[str] | None:
    rows = await aq(url, "select reason from dead_letters where source like 'mqtt:sparkplug%%'")
    return [r[0] for r in rows] if len(rows) >= at_least else None
