"""Simulated Modbus TCP gateways, in-process, that the server's Modbus adapter polls.

Real cabinets and water instruments hang on RS-485 lines behind Modbus TCP gateways, one
gateway carrying many unit ids. We serve the same shape: one pymodbus ``ModbusTcpServer``
per gateway, one ``SimDevice`` per unit, ``per_gateway`` devices each (cabinets, pressure
transmitters and flowmeters on separate gateways, as utilities wire them).

Registers are encoded from the very profiles the server decodes with
(``adapters.modbus.protocol.resolve``): every point's address, type, scale and word order
come from ``adapters/modbus/profiles/<name>.json``, so encoder and decoder agree by
construction and a profile fix fixes both. Each gateway's task rewrites its units'
registers every second from the :class:`~server.simulate.world.World`; a silenced unit
answers exception 0x0B (gateway target failed to respond), as a real gateway does for a
dead device behind it.

A cabinet is two units: the Eastron SDM630 meter (unit n) and a digital-input module
(unit 100 + n, ``cabinet_io.json``) for the breaker contact and the door switch, which an
energy meter cannot report.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.modbus.protocol import Point, UnitMap, resolve
from server.simulate.world import World

logger = logging.getLogger(__name__)

PROFILES = {"lighting_cabinet": "eastron_sdm630", "pressure_sensor": "keller_series30",
            "flow_meter": "siemens_mag6000"}
CABINET_IO_PROFILE = str(Path(__file__).with_name("cabinet_io.json"))
GATEWAY_PREFIX = {"lighting_cabinet": "cabinet-gw", "pressure_sensor": "pressure-gw",
                  "flow_meter": "flow-gw"}
IO_UNIT_OFFSET = 100
_FMT = {"float32": "f", "float64": "d", "int16": "h", "uint16": "H", "int32": "i",
        "uint32": "I"}
_LIMITS = {"int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1),
           "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1)}


def encode_point(point: Point, value: float) -> list[int]:
    """The registers a device holds for ``value`` (the inverse of ``decode_value``)."""
    raw: float | int = value / point.scale
    if point.type in _LIMITS:
        lo, hi = _LIMITS[point.type]
        raw = int(min(hi, max(lo, round(raw)))) if math.isfinite(raw) else hi
    data = struct.pack(">" + _FMT[point.type], raw)
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if point.word_order == "little":
        words.reverse()
    return words


@dataclass(slots=True)
class SimUnit:
    device: str
    kind: str
    index: int  # in the world's group of that kind
    unit: int
    profile: str
    interval_s: float
    map: UnitMap
    low: int = 0  # first register served
    high: int = 0  # one past the last

    def __post_init__(self) -> None:
        self.low = min(r.address for r in self.map.requests)
        self.high = max(r.address + r.count for r in self.map.requests)

    def registers(self, vals: dict[str, np.ndarray]) -> list[int]:
        regs = [0] * (self.high - self.low)
        for req in self.map.requests:
            for p in req.points:
                at = p.address - self.low
                v = float(vals[p.metric][self.index])
                if p.type == "bits":
                    regs[at] |= (1 << (p.bit or 0)) if v else 0
                else:
                    regs[at:at + p.count] = encode_point(p, v)
        return regs


@dataclass(slots=True)
class Gateway:
    name: str
    port: int
    units: list[SimUnit]
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class ModbusFleet:
    """The plan (which device is which unit where) and one serving coroutine per gateway."""

    def __init__(self, world: World, *, intervals: dict[str, float], host: str = "127.0.0.1",
                 base_port: int = 0, per_gateway: int = 10, timeout_s: float = 1.0,
                 clock: Callable[[], float]) -> None:
        self.world = world
        self.host = host
        self.timeout_s = timeout_s
        self.clock = clock
        self.gateways: list[Gateway] = []
        for kind, profile in PROFILES.items():
            g = world.fleet.groups.get(kind)
            if g is None:
                continue
            meter = resolve(profile)
            io = resolve(CABINET_IO_PROFILE) if kind == "lighting_cabinet" else None
            every = float(intervals[kind])
            for n, first in enumerate(range(0, len(g), per_gateway), start=1):
                units: list[SimUnit] = []
                for u, i in enumerate(range(first, min(first + per_gateway, len(g))), start=1):
                    units.append(SimUnit(g.ids[i], kind, i, u, profile, every, meter))
                    if io is not None:
                        units.append(SimUnit(g.ids[i], kind, i, IO_UNIT_OFFSET + u,
                                             CABINET_IO_PROFILE, every, io))
                port = base_port + len(self.gateways) if base_port else 0
                self.gateways.append(Gateway(f"{GATEWAY_PREFIX[kind]}-{n:02d}", port, units))

    def settings(self) -> list[dict]:
        """``[[modbus.gateways]]`` entries (CONTRACT.md) for the server to poll these."""
        if any(gw.port == 0 for gw in self.gateways):
            raise RuntimeError("gateway ports are known once the gateways listen "
                               "(or give a base port)")
        return [{
            "name": gw.name, "host": self.host, "port": gw.port, "framer": "socket",
            "timeout_s": self.timeout_s,
            "units": [{"device": u.device, "unit": u.unit, "profile": u.profile,
                       "interval_s": u.interval_s} for u in gw.units],
        } for gw in self.gateways]

    def _action(self, unit: SimUnit):
        async def action(fc, start, address, count, registers, set_values):
            if set_values is None and self.world.silent(unit.kind)[unit.index]:
                return ExcCodes.GATEWAY_NO_RESPONSE
            return None

        return action

    async def _refresh(self, server: ModbusTcpServer, gw: Gateway) -> None:
        now = self.clock()
        self.world.advance(now)
        for u in gw.units:
            fc = u.map.requests[0].function
            await server.async_setValues(u.unit, fc, u.low,
                                         u.registers(self.world.values(u.kind, now)))

    async def serve(self, gw: Gateway, period_s: float = 1.0) -> None:
        """Listen as ``gw``, keep its registers current; shut down when cancelled."""
        devices = [SimDevice(id=u.unit, action=self._action(u), simdata=SimData(
            address=u.low, count=u.high - u.low, datatype=DataType.REGISTERS))
            for u in gw.units]
        server = ModbusTcpServer(devices, address=(self.host, gw.port))
        try:
            await self._refresh(server, gw)
            await server.serve_forever(background=True)
            gw.port = server.transport.sockets[0].getsockname()[1]
            gw.ready.set()
            logger.debug("%s serving %d units on %s:%d", gw.name, len(gw.units), self.host,
                         gw.port)
            loop = asyncio.get_running_loop()
            while True:
                started = loop.time()
                await self._refresh(server, gw)
                await asyncio.sleep(max(0.0, period_s - (loop.time() - started)))
        finally:
            await server.shutdown()
