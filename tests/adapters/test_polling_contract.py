"""The built-in Modbus adapter against the polling contract in ``adapters/testing.py``.

The stand-in is a real pymodbus server (:class:`~adapters.modbus.simulator.SimulatedGateway`)
built from the same profiles the adapter reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import pytest

from adapters.modbus import ModbusAdapter
from adapters.modbus.simulator import SimulatedGateway
from adapters.sdk import AdapterError, ConfigError, TransientError
from adapters.testing import PollingAdapterContract

UNITS = {3: ("PS-0001", "keller_series30"), 4: ("SL-0007", "dali_gateway?short_address=7")}


class TestModbusContract(PollingAdapterContract):
    breakages: ClassVar[Mapping[str, type[AdapterError] | None]] = {
        "gateway_stopped": TransientError,
        "every_unit_silent": TransientError,
        "profile_does_not_fit": ConfigError,  # exception 02: illegal data address
        "sensor_nan_and_inf": None,  # data with a quality, not an error
        "device_failure": None,  # exception 04: readings with quality FAULT
    }

    @pytest.fixture
    async def gateway(self):
        gw = SimulatedGateway()
        gw.add_unit(3, "keller_series30", {"pressure_bar": 4.25, "temperature_c": 11.5})
        gw.add_unit(4, "dali_gateway?short_address=7", {"lamp_on": 1, "dim_level_pct": 80})
        async with gw:
            yield gw

    @pytest.fixture
    def adapter(self, gateway: SimulatedGateway) -> ModbusAdapter:
        return ModbusAdapter({
            "name": "gw-contract", "host": gateway.host, "port": gateway.port, "timeout_s": 0.2,
            "units": [{"device": d, "unit": u, "profile": p} for u, (d, p) in UNITS.items()],
        })

    @pytest.fixture
    def break_device(self, gateway: SimulatedGateway):
        async def breaks(how: str) -> None:
            match how:
                case "gateway_stopped":
                    await gateway.stop()
                case "every_unit_silent":
                    gateway.silent.update(UNITS)
                case "profile_does_not_fit":
                    gateway.exceptions[3] = 0x02
                case "sensor_nan_and_inf":
                    await gateway.set_value(3, "pressure_bar", math.nan)
                    await gateway.set_value(3, "temperature_c", math.inf)
                case "device_failure":
                    gateway.exceptions[3] = 0x04
        return breaks
