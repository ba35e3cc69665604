"""The simulator against real services: PostGIS for the devices, mosquitto, pymodbus clients."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import tomllib
import uuid
from datetime import UTC, datetime

import aiomqtt
import numpy as np
import orjson
import psycopg
import pytest
from pymodbus.client import AsyncModbusTcpClient

from adapters.modbus.protocol import decode_request, resolve
from adapters.mqtt.protocol import decode
from adapters.sdk import Quality, Reading
from geo.city import generate_city
from server.registry.seed import seed_info
from server.settings import ModbusSettings
from server.simulate import Simulator
from server.simulate.cli import to_toml
from server.store.catalog import KINDS
from tests.helpers import wait_for
from tests.server.helpers import city_rows, local

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NIGHT = local(10, 22)


@pytest.fixture
def city(db_url):
    """The small city of the pattern tests, under ids unique to this test (the broker keeps
    retained statuses across tests), inserted with plain SQL."""
    tag = uuid.uuid4().hex[:6]
    ids = {}
    with psycopg.connect(db_url) as conn:
        rows = sorted(city_rows(), key=lambda r: r["parent"] is not None)
        for r in rows:
            ids[r["id"]] = f"{r['id']}-{tag}"
            conn.execute(
                "insert into devices (id, kind, name, geom, parent, properties) values "
                "(%s, %s, %s, st_setsrid(st_makepoint(%s, %s), 4326), %s, %s::jsonb)",
                (ids[r["id"]], r["kind"], r["id"], r["lon"], r["lat"],
                 ids.get(r["parent"]), orjson.dumps(r["properties"]).decode()))
        # a static pipe: not simulated, and a line (its point is on the surface)
        conn.execute("insert into devices (id, kind, geom) values (%s, 'water_pipe', "
                     "st_geomfromtext('LINESTRING(105.84 21.59, 105.85 21.59)', 4326))",
                     (f"WP-{tag}",))
    return db_url, ids


async def collect(url: str, topics: list[str], until, wait_s: float = 8.0,
                  subscribed: asyncio.Event | None = None) -> list:
    """Messages on ``topics`` until ``until(messages)`` is true (or the timeout); sets
    ``subscribed`` once the broker has the subscriptions."""
    got: list[aiomqtt.Message] = []
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier=f"t-{uuid.uuid4().hex[:8]}") as c:
        for t in topics:
            await c.subscribe(t, qos=1)
        if subscribed is not None:
            subscribed.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for m in c.messages:
                    got.append(m)
                    if until(got):
                        break
    return got


def ours(messages, ids, suffix="/telemetry"):
    wanted = {v for v in ids.values()}
    return [m for m in messages if m.topic.value.endswith(suffix)
            and m.topic.value.split("/")[2] in wanted]


async def test_mqtt_fleet_publishes_native_convention(city, mosquitto):
    db, ids = city
    fast = {k: 1 for k in ("streetlight", "water_meter", "traffic_controller", "road_segment",
                           "env_sensor", "camera")}
    sim = Simulator(db, mosquitto.url, modbus=False, faults=False, intervals=fast,
                    start_time=NIGHT)
    mqtt_ids = {k: v for k, v in ids.items() if not k.startswith(("LC", "PS", "FM"))}
    subscribed = asyncio.Event()
    listener = asyncio.create_task(collect(
        mosquitto.url, ["ioc/v1/+/telemetry", "ioc/v1/+/status"],
        lambda got: {m.topic.value.split("/")[2] for m in ours(got, mqtt_ids)}
        >= set(mqtt_ids.values()), subscribed=subscribed))
    await asyncio.wait_for(subscribed.wait(), 10)
    await sim.start()
    try:
        got = await listener
    finally:
        await sim.stop()
    telemetry = ours(got, mqtt_ids)
    assert {m.topic.value.split("/")[2] for m in telemetry} == set(mqtt_ids.values())
    # Modbus-only kinds never appear on MQTT
    assert not [m for m in got if m.topic.value.split("/")[2].startswith(("LC-", "PS-", "FM-"))]
    statuses = {m.topic.value.split("/")[2]: m.payload for m in ours(got, mqtt_ids, "/status")}
    assert set(statuses.values()) == {b"online"} and len(statuses) == len(mqtt_ids)
    kinds = {k.kind: set(k.metrics or ()) for k in KINDS}
    now = datetime.now(UTC)
    for m in telemetry:
        assert m.qos == 1
        doc = orjson.loads(m.payload)
        assert set(doc) == {"ts", "values"} and TS.match(doc["ts"]), doc
        readings, errors = decode(m.topic.value, m.payload, now)
        assert not errors and readings and all(isinstance(r, Reading) for r in readings)
        device = m.topic.value.split("/")[2]
        kind = next(r["kind"] for r in city_rows() if ids[r["id"]] == device)
        assert set(doc["values"]) <= kinds[kind]
        if kind == "streetlight":
            assert doc["values"]["lamp_on"] is True and doc["values"]["dim_level_pct"] == 100
            assert doc["values"]["lamp_fault"] is False
            assert readings[0].ts.astimezone(UTC).hour == 15  # 22:00 in Hanoi


async def test_cabinet_trip_over_mqtt_and_commands(city, mosquitto):
    db, ids = city
    sim = Simulator(db, mosquitto.url, modbus=False, faults=False, start_time=NIGHT,
                    intervals={"streetlight": 1})
    lamps = {v for k, v in ids.items() if k.startswith("SL-1")}  # the six lamps of LC-0001
    await sim.start()
    try:
        await collect(mosquitto.url, ["ioc/v1/+/telemetry"],  # everyone has reported once
                      lambda got: {m.topic.value.split("/")[2] for m in got} >= lamps)

        def dark(got):
            return {m.topic.value.split("/")[2] for m in got
                    if orjson.loads(m.payload)["values"].get("lamp_fault")} >= lamps

        subscribed = asyncio.Event()
        listener = asyncio.create_task(collect(mosquitto.url, ["ioc/v1/+/telemetry"], dark,
                                               subscribed=subscribed))
        await asyncio.wait_for(subscribed.wait(), 10)
        fault = sim.inject("cabinet_trip", ids["LC-0001"])
        got = await listener
        assert fault in sim.active_faults
        for m in got:
            device, values = m.topic.value.split("/")[2], orjson.loads(m.payload)["values"]
            if device in lamps:
                assert values["lamp_on"] is False and values["power_w"] == 0
            elif device in ids.values() and "lamp_on" in values:
                assert values["lamp_on"] is True and values["lamp_fault"] is False
        assert dark(got)

        # the server's command round trip: set_dim on another lamp
        lamp, cid = ids["SL-2001"], uuid.uuid4().hex
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port)) as c:
            await c.subscribe(f"ioc/v1/{lamp}/commands/+/result", qos=1)
            await c.publish(f"ioc/v1/{lamp}/commands", orjson.dumps(
                {"id": cid, "name": "set_dim", "args": {"level": 40}}), qos=1)
            async with asyncio.timeout(5):
                async for m in c.messages:
                    assert m.topic.value == f"ioc/v1/{lamp}/commands/{cid}/result"
                    assert orjson.loads(m.payload) == {"ok": True}
                    break
        i = sim.fleet.groups["streetlight"].index[lamp]
        assert sim.world.values("streetlight", sim.clock())["dim_level_pct"][i] == 40
    finally:
        await sim.stop()


async def modbus_read(port: int, unit: int, fc: int, address: int, count: int):
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    await client.connect()
    try:
        read = client.read_input_registers if fc == 4 else client.read_holding_registers
        return await read(address, count=count, device_id=unit)
    finally:
        client.close()


async def read_until(port: int, unit: int, fc: int, address: int, count: int, ok):
    """The registers once ``ok(response)`` holds (the simulator rewrites them every second)."""
    async def attempt():
        rr = await modbus_read(port, unit, fc, address, count)
        return rr if ok(rr) else None

    return await wait_for(attempt, within=10, interval=0.1)


def readings(profile: str, registers: list[int]) -> dict[str, Reading]:
    (req,) = resolve(profile).requests
    return {r.metric: r for r in decode_request(req, registers, "x", datetime.now(UTC))}


async def test_modbus_gateways_answer_real_clients(city):
    db, ids = city
    sim = Simulator(db, None, mqtt=False, faults=False, start_time=NIGHT)
    await sim.start()
    try:
        gws = {g["name"]: g for g in sim.gateway_settings()}
        assert set(gws) == {"cabinet-gw-01", "pressure-gw-01", "flow-gw-01"}
        ModbusSettings.model_validate({"gateways": list(gws.values())})  # the server's config
        cab = gws["cabinet-gw-01"]
        unit = next(u for u in cab["units"] if u["device"] == ids["LC-0001"]
                    and u["profile"] == "eastron_sdm630")
        rr = await modbus_read(cab["port"], unit["unit"], 4, 0, 74)
        assert not rr.isError()
        meter = readings("eastron_sdm630", rr.registers)
        assert 225 < meter["voltage_l1_v"].value < 235 and meter["current_l1_a"].value > 0.5
        assert 45 < meter["frequency_hz"].value < 55

        io = next(u for u in cab["units"] if u["device"] == ids["LC-0001"] and u is not unit)
        sim.inject("cabinet_trip", ids["LC-0001"])
        await read_until(cab["port"], io["unit"], 3, 0, 1, lambda rr: not rr.isError() and readings(
            io["profile"], rr.registers)["breaker_tripped"].value == 1.0)
        state = readings(io["profile"], (await modbus_read(cab["port"], io["unit"], 3, 0, 1))
                         .registers)
        assert state["breaker_tripped"].value == 1.0 and state["door_open"].value == 0.0
        meter = readings("eastron_sdm630", (await modbus_read(cab["port"], unit["unit"], 4, 0,
                                                               74)).registers)
        assert meter["current_l1_a"].value < 0.1 and meter["power_w"].value < 20

        ps = gws["pressure-gw-01"]
        keller = next(u for u in ps["units"] if u["device"] == ids["PS-NEAR"])
        before = readings("keller_series30",
                          (await modbus_read(ps["port"], keller["unit"], 3, 2, 6)).registers)
        assert 2.5 < before["pressure_bar"].value < 3.8
        sim.inject("sensor_nan", ids["PS-NEAR"])
        await read_until(ps["port"], keller["unit"], 3, 2, 6,
                         lambda rr: not rr.isError() and rr.registers[:2] == [0x7FC0, 0x0000])
        rr = await modbus_read(ps["port"], keller["unit"], 3, 2, 6)
        assert rr.registers[:2] == [0x7FC0, 0x0000]  # a float32 quiet NaN, high word first
        after = readings("keller_series30", rr.registers)
        assert after["pressure_bar"].quality == Quality.NOT_A_NUMBER
        assert after["temperature_c"].quality == Quality.OK

        fm = gws["flow-gw-01"]["units"][0]
        rr = await modbus_read(gws["flow-gw-01"]["port"], fm["unit"], 3, 3002, 2)
        assert 0.005 < readings_value(rr.registers) < 0.2  # m³/s

        sim.inject("silent", ids["PS-MID"])
        mid = next(u for u in ps["units"] if u["device"] == ids["PS-MID"])
        await read_until(ps["port"], mid["unit"], 3, 2, 6, lambda rr: rr.isError())
        rr = await modbus_read(ps["port"], mid["unit"], 3, 2, 6)
        assert rr.isError() and rr.exception_code == 0x0B
    finally:
        await sim.stop()


def readings_value(registers: list[int]) -> float:
    import struct

    return struct.unpack(">f", b"".join(r.to_bytes(2, "big") for r in registers))[0]


async def test_start_stop_leaves_nothing_running(city, mosquitto):
    db, _ = city
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    sim = Simulator(db, mosquitto.url, seed=3, start_time=NIGHT, fault_interval_s=1)
    await sim.start()
    names = sorted(t.get_name() for t in sim.tasks)
    assert names == ["sim.modbus[cabinet-gw-01]", "sim.modbus[flow-gw-01]",
                     "sim.modbus[pressure-gw-01]", "sim.mqtt"]
    ports = [g["port"] for g in sim.gateway_settings()]
    await asyncio.sleep(1.5)  # the point: stop() meets a simulator that has run (and faulted)
    await sim.stop()
    assert not sim.tasks
    assert asyncio.all_tasks() == tasks_before
    # the loop's own default executor (aiomqtt resolves and connects in it) is the loop's
    new = [t for t in threading.enumerate() if t not in threads_before
           and not t.name.startswith("asyncio_")]
    assert not new, new
    for port in ports:
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_rate_mode_publishes_that_many_five_value_messages(city, mosquitto):
    db, ids = city
    sim = Simulator(db, mosquitto.url, modbus=False, faults=False, rate=200)
    mine = set(ids.values())
    subscribed = asyncio.Event()
    listener = asyncio.create_task(collect(mosquitto.url, ["ioc/v1/+/telemetry"],
                                           lambda got: False, wait_s=2.2, subscribed=subscribed))
    await asyncio.wait_for(subscribed.wait(), 10)
    await sim.start()
    try:
        got = [m for m in await listener if m.topic.value.split("/")[2] in mine]
    finally:
        await sim.stop()
    assert 250 <= len(got) <= 450  # ~2 s at 200/s
    assert all(len(orjson.loads(m.payload)["values"]) == 5 for m in got)


def test_print_config_is_the_contracts_toml(city, monkeypatch, capsys):
    from server.cli.main import main

    db, ids = city
    monkeypatch.setenv("IOC_DATABASE_URL", db)
    monkeypatch.delenv("IOC_CONFIG", raising=False)
    assert main(["simulate", "--print-config", "--modbus-port", "25020"]) == 0
    config = tomllib.loads(capsys.readouterr().out)
    gws = ModbusSettings.model_validate(config["modbus"]).gateways
    assert [g.port for g in gws] == [25020, 25021, 25022]
    assert {u.device for g in gws for u in g.units} == {
        v for k, v in ids.items() if k.startswith(("LC", "PS", "FM"))}
    assert tomllib.loads(to_toml([])) == {}


async def test_the_seeded_city_comes_alive(city_db_url):
    sim = Simulator(city_db_url, None, mqtt=False, modbus_port=35020)
    fleet = await sim.load()
    assert {"streetlight", "lighting_cabinet", "water_meter", "pressure_sensor",
            "flow_meter"} <= set(fleet.groups)
    assert (fleet.lamp_cabinet >= 0).all(), "every seeded lamp hangs off a cabinet"
    gws = ModbusSettings.model_validate({"gateways": sim.gateway_settings()}).gateways
    assert sum(len(g.units) for g in gws) == 2 * len(fleet.groups["lighting_cabinet"]) + len(
        fleet.groups["pressure_sensor"]) + len(fleet.groups.get("flow_meter", []))
    for kind in fleet.groups:
        for metric, arr in sim.world.values(kind, NIGHT).items():
            assert len(arr) == len(fleet.groups[kind]) and not np.isnan(arr).any(), metric
    cabinets = sim.world.values("lighting_cabinet", NIGHT)
    assert (cabinets["power_w"] > 100).all()  # every cabinet feeds lit lamps at 22:00
    # trees and parks are in the registry, but nothing of theirs is simulated
    with psycopg.connect(city_db_url) as conn:
        green = dict(conn.execute("select kind, count(*) from devices "
                                  "where kind in ('tree', 'green_area') group by kind").fetchall())
    assert green["tree"] > 0 and green["green_area"] > 0
    assert not {"tree", "green_area"} & set(fleet.groups)
    assert not [u for g in gws for u in g.units if u.device.startswith(("TR-", "GA-"))]


async def test_the_seeded_city_shows_its_trees_and_parks(aiohttp_client, city_db_url,
                                                        make_settings, token_for):
    from server.http.app import create_app

    seeded = seed_info(city_db_url)
    city = generate_city(seeded["streetlights"], seeded["seed"])
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    auth = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}
    for kind, geom in (("tree", "Point"), ("green_area", "Polygon")):
        resp = await client.get("/api/v1/devices", params={"kind": kind, "limit": "10000"},
                                headers=auth)
        assert resp.status == 200, await resp.text()
        features = (await resp.json())["features"]
        assert {f["id"] for f in features} == {d.id for d in city.by_kind(kind)}
        for f in features:
            p = f["properties"]
            assert f["geometry"]["type"] == geom and p["kind"] == kind and p["ward"]
            # no telemetry: never seen, so never stale or offline
            assert p["status"] == "unknown" and p["values"] == {}
            if kind == "tree":
                assert {"species", "height_m", "trunk_diameter_cm", "planted",
                        "condition"} <= set(p)


def test_ioc_simulate_runs_for_a_duration_and_stops(city, mosquitto, monkeypatch, capsys):
    from server.cli.main import main

    db, _ = city
    monkeypatch.setenv("IOC_DATABASE_URL", db)
    monkeypatch.setenv("IOC_MQTT_URL", mosquitto.url)
    monkeypatch.delenv("IOC_CONFIG", raising=False)
    assert main(["simulate", "--duration", "1", "--no-modbus", "--seed", "5"]) == 0
    assert f"simulating {len(city_rows())} devices" in capsys.readouterr().out
