"""GatewayConnection and ModbusAdapter against real in-process pymodbus servers (no mocks).

Servers are :class:`adapters.modbus.simulator.SimulatedGateway` on free loopback ports,
built from the same profiles the adapter reads.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from pydantic import ValidationError

from adapters.modbus import (
    CommandFailed,
    GatewayConfig,
    GatewayConnection,
    InvalidCommand,
    LinkDown,
    ModbusAdapter,
    UnitConfig,
    UnitSilent,
)
from adapters.modbus.simulator import SimulatedGateway
from adapters.sdk import ConfigError, PollingAdapter, Quality, TransientError

TIMEOUT = 0.2


def config(gw: SimulatedGateway, *units: tuple[str, int, str], **kw) -> GatewayConfig:
    return GatewayConfig(
        name="gw-test",
        host=gw.host,
        port=gw.port,
        framer=gw.framer,
        timeout_s=TIMEOUT,
        units=[UnitConfig(device=d, unit=u, profile=p) for d, u, p in units],
        **kw,
    )


def values(readings) -> dict[str, tuple[float, Quality]]:
    return {r.metric: (r.value, r.quality) for r in readings}


@pytest.fixture
async def sim():
    gw = SimulatedGateway()
    gw.add_unit(
        1,
        "eastron_sdm630",
        {"voltage_l1_v": 231.4, "voltage_l2_v": 229.9, "power_w": 1520.5, "frequency_hz": 50.01},
    )
    gw.add_unit(2, "eastron_sdm120")
    await gw.set_registers(2, 4, 0, [0x4366, 0x3334])  # the vendor document's test vector
    gw.add_unit(3, "keller_series30", {"pressure_bar": 4.25, "temperature_c": 11.5})
    gw.add_unit(4, "dali_gateway?short_address=7", {"lamp_on": 1, "dim_level_pct": 80})
    async with gw:
        yield gw


@pytest.fixture
async def conn(sim: SimulatedGateway):
    c = GatewayConnection(config(sim))
    await c.connect()
    yield c
    await c.close()


SDM630 = UnitConfig(device="LC-0001", unit=1, profile="eastron_sdm630")
SDM120 = UnitConfig(device="LC-0002", unit=2, profile="eastron_sdm120")
KELLER = UnitConfig(device="PS-0001", unit=3, profile="keller_series30")
LAMP = UnitConfig(device="SL-0007", unit=4, profile="dali_gateway?short_address=7")
GHOST = UnitConfig(device="PS-0009", unit=9, profile="keller_series30")


async def test_sdm120_test_vector_through_a_server(conn: GatewayConnection) -> None:
    got = values(await conn.read_unit(SDM120))
    assert got["voltage_l1_v"][0] == pytest.approx(230.2)
    assert got["voltage_l1_v"][1] is Quality.OK


async def test_sdm630_cabinet_in_at_most_two_requests(sim, conn) -> None:
    before = sim.requests[1]
    readings = await conn.read_unit(SDM630)
    assert sim.requests[1] - before <= 2
    got = values(readings)
    assert len(got) == 10 and all(q is Quality.OK for _, q in got.values())
    assert got["voltage_l1_v"][0] == pytest.approx(231.4)
    assert got["power_w"][0] == pytest.approx(1520.5)
    assert got["frequency_hz"][0] == pytest.approx(50.01)
    assert {r.device_id for r in readings} == {"LC-0001"}


async def test_keller_nan_and_inf(sim, conn) -> None:
    assert values(await conn.read_unit(KELLER))["pressure_bar"] == (4.25, Quality.OK)
    await sim.set_value(3, "pressure_bar", math.nan)
    await sim.set_value(3, "temperature_c", math.inf)
    got = values(await conn.read_unit(KELLER))
    assert got == {"pressure_bar": (0.0, Quality.NOT_A_NUMBER), "temperature_c": (0.0, Quality.OUT_OF_RANGE)}


async def test_device_exceptions(sim, conn) -> None:
    sim.exceptions[3] = 0x04  # device failure: data, not an exception
    got = values(await conn.read_unit(KELLER))
    assert {q for _, q in got.values()} == {Quality.FAULT}
    sim.exceptions[3] = 0x0B  # the gateway says the device behind it is dead
    with pytest.raises(UnitSilent, match="0x0B"):
        await conn.read_unit(KELLER)
    sim.exceptions[3] = 0x02  # the profile does not fit: not worth retrying
    with pytest.raises(ConfigError, match=r"PS-0001.*illegal data address"):
        await conn.read_unit(KELLER)
    del sim.exceptions[3]
    assert conn.connected
    assert values(await conn.read_unit(KELLER))["pressure_bar"][1] is Quality.OK


async def test_silent_unit_does_not_drop_the_link(sim, conn) -> None:
    for _ in range(6):  # pymodbus alone would close the socket after retries+3 = 3 of these
        with pytest.raises(UnitSilent, match="no answer"):
            await conn.read_unit(GHOST)
        assert values(await conn.read_unit(KELLER))["pressure_bar"][1] is Quality.OK
    assert conn.connected


async def test_link_dropped_when_no_unit_answers(sim) -> None:
    c = GatewayConnection(config(sim, ("PS-0009", 9, "keller_series30")))
    await c.connect()
    try:
        for _ in range(3):
            with pytest.raises(TransientError):
                await c.read_unit(GHOST)
        assert not c.connected
        with pytest.raises(LinkDown):
            await c.read_unit(GHOST)
        await c.connect()  # the same client reconnects
        assert c.connected
    finally:
        await c.close()


async def test_server_restart(sim, conn) -> None:
    await sim.stop()
    with pytest.raises(LinkDown):
        for _ in range(20):  # the FIN may take a moment to arrive
            await conn.read_unit(KELLER)
            await asyncio.sleep(0.05)
    with pytest.raises(LinkDown):
        await conn.connect()
    await sim.start()
    await conn.connect()
    assert values(await conn.read_unit(KELLER))["pressure_bar"][1] is Quality.OK


async def test_dali_set_dim_is_read_back(sim, conn) -> None:
    assert values(await conn.read_unit(LAMP))["lamp_on"] == (1.0, Quality.OK)
    assert await conn.write(LAMP, "set_dim", {"level": 35}) == {"dim_level_pct": 35.0}
    assert await sim.read_registers(4, 3, 715, 1) == [35]  # 7000·0 + 100·7 + 15
    with pytest.raises(InvalidCommand, match="level"):
        await conn.write(LAMP, "set_dim", {"level": 150})
    with pytest.raises(InvalidCommand, match="set_dim"):
        await conn.write(LAMP, "blink", {})
    with pytest.raises(InvalidCommand):
        await conn.write(KELLER, "set_dim", {"level": 1})
    sim.exceptions[4] = 0x04
    with pytest.raises(CommandFailed, match="exception 04"):
        await conn.write(LAMP, "set_dim", {"level": 20})


async def test_rtu_framing_over_tcp() -> None:
    gw = SimulatedGateway(framer="rtu")
    gw.add_unit(3, "keller_series30", {"pressure_bar": 2.5})
    gw.add_unit(5, "vaisala_aqt530", {"no2_ppb": 17, "pm25_ugm3": 8.4, "temperature_c": -3.2})
    async with gw:
        c = GatewayConnection(config(gw))
        await c.connect()
        try:
            assert values(await c.read_unit(KELLER))["pressure_bar"] == (2.5, Quality.OK)
            aqt = UnitConfig(device="ENV-1", unit=5, profile="vaisala_aqt530")
            got = values(await c.read_unit(aqt))
            assert got["pm25_ugm3"] == (8.4, Quality.OK)
            assert got["temperature_c"] == (-3.2, Quality.OK)
            await gw.set_value(5, "no2_ppb", 32767)
            assert values(await c.read_unit(aqt))["no2_ppb"] == (0.0, Quality.OUT_OF_RANGE)
        finally:
            await c.close()


async def test_gateway_error_for_a_missing_unit() -> None:
    gw = SimulatedGateway(missing_units="gateway_error")
    gw.add_unit(3, "keller_series30")
    async with gw:
        c = GatewayConnection(config(gw))
        await c.connect()
        try:
            with pytest.raises(UnitSilent, match="0x0B"):
                await c.read_unit(GHOST)
        finally:
            await c.close()


async def test_unreachable_gateway_is_transient() -> None:
    gw = SimulatedGateway()
    async with gw:
        port = gw.port
    c = GatewayConnection(GatewayConfig(name="gone", host="127.0.0.1", port=port, timeout_s=TIMEOUT))
    with pytest.raises(LinkDown, match="gone"):
        await c.connect()
    assert not c.connected
    await c.close()


# -- the adapter surface (the entry point "modbus") ----------------------------------------


def test_adapter_declares_what_it_is() -> None:
    assert issubclass(ModbusAdapter, PollingAdapter)
    assert ModbusAdapter.kind == "modbus"
    assert ModbusAdapter.iot_class == "local_polling"
    assert ModbusAdapter.config_model is GatewayConfig


def test_adapter_config_errors_name_the_field_and_device() -> None:
    with pytest.raises(ValidationError, match="timeout_s"):
        ModbusAdapter({"name": "g", "host": "127.0.0.1", "timeout_s": -1})
    with pytest.raises(ConfigError, match=r"LC-9.*unknown Modbus profile"):
        ModbusAdapter(
            {"name": "g", "host": "127.0.0.1", "units": [{"device": "LC-9", "unit": 1, "profile": "sdm999"}]}
        )
    with pytest.raises(ValidationError, match="listed twice"):
        ModbusAdapter(
            {
                "name": "g",
                "host": "127.0.0.1",
                "units": [
                    {"device": "A", "unit": 1, "profile": "eastron_sdm120"},
                    {"device": "B", "unit": 1, "profile": "eastron_sdm120"},
                ],
            }
        )


async def test_adapter_polls_writes_and_closes(sim) -> None:
    adapter = ModbusAdapter(
        {
            "name": "gw-test",
            "host": sim.host,
            "port": sim.port,
            "timeout_s": TIMEOUT,
            "units": [
                {"device": "PS-0001", "unit": 3, "profile": "keller_series30"},
                {"device": "SL-0007", "unit": 4, "profile": "dali_gateway", "params": {"short_address": 7}},
                {"device": "PS-0009", "unit": 9, "profile": "keller_series30"},
            ],
        }
    )
    await adapter.connect()
    try:
        readings = await adapter.poll()  # the silent unit costs its readings, not the poll
        assert {r.device_id for r in readings} == {"PS-0001", "SL-0007"}
        assert await adapter.write("SL-0007", "set_dim", {"level": 60}) == {"dim_level_pct": 60}
        with pytest.raises(ConfigError):
            await adapter.write("XX", "set_dim", {"level": 60})
    finally:
        await adapter.close()
    assert not adapter.connection.connected
    with pytest.raises(TransientError):
        await adapter.poll()
