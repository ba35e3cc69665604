"""Simulated Modbus TCP gateways, in-process, that the server's Modbus adapter polls.

Real cabinets and water instruments hang on RS-485 lines behind Modbus TCP gateways, one
gateway carrying many unit ids. We serve the same shape: one gateway per ``per_gateway``
devices (cabinets, pressure transmitters and flowmeters on separate gateways, as utilities
wire them), each a :class:`adapters.modbus.simulator.SimulatedGateway` (a real pymodbus
``ModbusTcpServer`` with ``SimDevice`` units).

Registers are encoded with the adapter's own ``encode_point`` from the very profiles the
server decodes with (``adapters/modbus/profiles/<name>.json``), so encoder and decoder
agree by construction and a profile fix fixes both. Each gateway's task rewrites its
units' registers every second from the :class:`~server.simulate.world.World`; a silenced
unit answers exception 0x0B (gateway target failed to respond), as a real gateway does
for a dead device behind it, so the poller marks it offline without waiting on timeouts.

A cabinet is two units: the Eastron SDM630 meter (unit n) and a digital-input module
(unit 100 + n, ``cabinet_io.json``) for the breaker contact and the door switch, which an
energy meter cannot report. The poller accepts several units of one device on one gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adapters.modbus.protocol import ReadRequest, UnitMap, resolve
from adapters.modbus.simulator import SimulatedGateway, encode_point
from server.simulate.world import World

logger = logging.getLogger(__name__)

PROFILES = {"lighting_cabinet": "eastron_sdm630", "pressure_sensor": "keller_series30",
            "flow_meter": "siemens_mag6000"}
CABINET_IO_PROFILE = str(Path(__file__).with_name("cabinet_io.json"))
GATEWAY_PREFIX = {"lighting_cabinet": "cabinet-gw", "pressure_sensor": "pressure-gw",
                  "flow_meter": "flow-gw"}
IO_UNIT_OFFSET = 100
GATEWAY_NO_RESPONSE = 0x0B


@dataclass(slots=True)
class SimUnit:
    device: str
    kind: str
    index: int  # in the world's group of that kind
    unit: int
    profile: str
    interval_s: float
    map: UnitMap

    def registers(self, req: ReadRequest, vals: dict[str, np.ndarray]) -> list[int]:
        """What this unit holds for one read request of its profile's plan."""
        regs = [0] * req.count
        for p in req.points:
            at = p.address - req.address
            regs[at:at + p.count] = encode_point(p, float(vals[p.metric][self.index]),
                                                 regs[at:at + 1])
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

    async def _refresh(self, sim: SimulatedGateway, gw: Gateway) -> None:
        now = self.clock()
        self.world.advance(now)
        for u in gw.units:
            if self.world.silent(u.kind)[u.index]:
                sim.exceptions[u.unit] = GATEWAY_NO_RESPONSE
            else:
                sim.exceptions.pop(u.unit, None)
            vals = self.world.values(u.kind, now)
            for req in u.map.requests:
                await sim.set_registers(u.unit, req.function, req.address,
                                        u.registers(req, vals))

    async def serve(self, gw: Gateway, period_s: float = 1.0) -> None:
        """Listen as ``gw``, keep its registers current; shut down when cancelled."""
        sim = SimulatedGateway(host=self.host, port=gw.port, missing_units="gateway_error")
        for u in gw.units:
            sim.add_unit(u.unit, u.profile)
        await self._refresh(sim, gw)  # not listening yet: fills the tables
        async with sim:
            gw.port = sim.port
            gw.ready.set()
            logger.debug("%s serving %d units on %s:%d", gw.name, len(gw.units), self.host,
                         gw.port)
            loop = asyncio.get_running_loop()
            while True:
                started = loop.time()
                await self._refresh(sim, gw)
                await asyncio.sleep(max(0.0, period_s - (loop.time() - started)))
