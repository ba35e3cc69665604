"""Simulated Modbus gateways: real in-process pymodbus servers whose units are built from
the same profiles the adapter reads, for tests and the demo.

    gw = SimulatedGateway()
    gw.add_unit(1, "eastron_sdm120", {"voltage_l1_v": 230.2})
    async with gw:                       # listens on a free loopback port
        ...  # GatewayConnection(host=gw.host, port=gw.port)
        gw.silent.add(1)                 # unit 1 stops answering (requests are dropped)
        await gw.set_value(1, "voltage_l1_v", float("nan"))

Registers are declared with pymodbus ``SimDevice``/``SimData`` (holding and input registers
kept apart, as Eastron meters do). Every register a profile's read plan covers is defined
(gaps read as 0); anything else answers exception 02. A unit not added is silent, like an
RTU device missing from the bus behind a plain gateway, or (``missing_units=
"gateway_error"``) answered with exception 0x0B, like a gateway that reports it.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.modbus.protocol import Point, UnitMap, pack_value, resolve

__all__ = ["SimulatedGateway", "encode_point"]


def encode_point(point: Point, value: float, current: list[int] | None = None) -> list[int]:
    """The registers that make ``point`` decode to ``value`` (NaN and ±inf allowed)."""
    if point.type == "bits":
        reg = (current or [0])[0]
        mask = 1 << (point.bit or 0)
        return [(reg | mask) if value else (reg & ~mask)]
    raw: float | int = value if math.isnan(value) or math.isinf(value) else value / point.scale
    if point.type.startswith(("int", "uint")):
        raw = round(raw)
    return pack_value(point.type, raw, point.word_order)


class _Unit:
    def __init__(self, umap: UnitMap) -> None:
        self.map = umap
        self.regs: dict[int, dict[int, int]] = {3: {}, 4: {}}  # function → address → value
        for req in umap.requests:
            for a in range(req.address, req.address + req.count):
                self.regs[req.function].setdefault(a, 0)
        for cmd in umap.commands.values():
            for i in range(len(pack_value(cmd.spec.type, 0, cmd.word_order))):
                self.regs[3].setdefault(cmd.address + i, 0)

    def point(self, metric: str) -> Point:
        for req in self.map.requests:
            for p in req.points:
                if p.metric == metric:
                    return p
        raise KeyError(f"profile {self.map.profile} has no metric {metric!r}")


def _runs(regs: dict[int, int]) -> list[SimData]:
    out: list[SimData] = []
    start, values = -2, []
    for addr in sorted(regs):
        if addr != start + len(values):
            if values:
                out.append(SimData(start, values=values, datatype=DataType.REGISTERS))
            start, values = addr, []
        values.append(regs[addr])
    if values:
        out.append(SimData(start, values=values, datatype=DataType.REGISTERS))
    # SimDevice needs at least one entry per table; a lone register at the top is harmless.
    return out or [SimData(65_535, values=[0], datatype=DataType.REGISTERS)]


class SimulatedGateway:
    """A Modbus TCP server on loopback with units built from profiles."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        framer: Literal["socket", "rtu"] = "socket",
        missing_units: Literal["silent", "gateway_error"] = "silent",
    ) -> None:
        self.host, self.port, self.framer = host, port, framer
        self.missing_units = missing_units
        self.silent: set[int] = set()  # units whose replies are dropped
        self.exceptions: dict[int, int] = {}  # unit → exception code it answers with
        self.requests: Counter[int] = Counter()  # requests received, per unit
        self._units: dict[int, _Unit] = {}
        self._server: ModbusTcpServer | None = None
        self._internal = False

    def add_unit(
        self,
        unit: int,
        profile: str,
        values: Mapping[str, float] | None = None,
        params: Mapping[str, int] | None = None,
    ) -> None:
        sim = self._units[unit] = _Unit(resolve(profile, params))
        for metric, value in (values or {}).items():
            self._store(sim, metric, value)

    @property
    def running(self) -> bool:
        return self._server is not None

    async def set_value(self, unit: int, metric: str, value: float) -> None:
        """Change what a unit reports; takes effect at once if the server is running."""
        sim = self._units[unit]
        address, regs, function = self._store(sim, metric, value)
        await self._set_live(unit, function, address, regs)

    async def set_registers(self, unit: int, function: int, address: int, regs: list[int]) -> None:
        """Raw registers (an exact bit pattern: a vendor sentinel, a signalling NaN)."""
        table = self._units[unit].regs[function]
        for i, r in enumerate(regs):
            table[address + i] = r
        await self._set_live(unit, function, address, regs)

    def register(self, unit: int, function: int, address: int) -> int:
        """A register's value as last set from here (client writes are not tracked)."""
        return self._units[unit].regs[function][address]

    async def read_registers(self, unit: int, function: int, address: int, count: int) -> list[int]:
        """The running server's registers, including what clients wrote."""
        assert self._server is not None, "server not running"
        self._internal = True
        try:
            return list(await self._server.async_getValues(unit, function, address, count))
        finally:
            self._internal = False

    async def _set_live(self, unit: int, function: int, address: int, regs: list[int]) -> None:
        if self._server is None:
            return
        self._internal = True  # not a client request: no injected exception
        try:
            await self._server.async_setValues(unit, function, address, regs)
        finally:
            self._internal = False

    def _store(self, sim: _Unit, metric: str, value: float) -> tuple[int, list[int], int]:
        p = sim.point(metric)
        table = sim.regs[p.function]
        regs = encode_point(p, value, [table.get(p.address, 0)])
        for i, r in enumerate(regs):
            table[p.address + i] = r
        return p.address, regs, p.function

    async def start(self) -> None:
        devices = [
            SimDevice(
                id=unit,
                simdata=(
                    [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                    [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                    _runs(sim.regs[3]),
                    _runs(sim.regs[4]),
                ),
                action=functools.partial(self._action, unit),
            )
            for unit, sim in sorted(self._units.items())
        ]
        if self.missing_units == "silent" and 0 not in self._units:
            # id 0 serves every unit not listed (its replies are dropped in _trace_packet):
            # without it pymodbus logs a KeyError traceback for each request to a missing unit.
            devices.append(SimDevice(id=0, simdata=[SimData(0, values=[0], datatype=DataType.REGISTERS)]))
        self._server = ModbusTcpServer(
            devices,
            address=(self.host, self.port),
            framer=FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET,
            trace_packet=self._trace_packet,
            trace_pdu=self._trace_pdu,
        )
        await self._server.serve_forever(background=True)
        if not self.port:
            self.port = self._server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

    async def __aenter__(self) -> SimulatedGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- server hooks --------------------------------------------------------------------

    def _unit_of(self, frame: bytes) -> int | None:
        at = 0 if self.framer == "rtu" else 6
        return frame[at] if len(frame) > at else None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        unit = self._unit_of(data)
        if not sending:
            if unit is not None:
                self.requests[unit] += 1
            return data
        if unit in self.silent or (unit not in self._units and self.missing_units == "silent"):
            return b""  # the request is dropped: the client times out
        return data

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending and pdu.dev_id not in self._units and isinstance(pdu, ExceptionResponse):
            pdu.exception_code = ExcCodes.GATEWAY_NO_RESPONSE
        return pdu

    async def _action(
        self,
        unit: int,
        function: int,
        _start: int,
        _address: int,
        _count: int,
        _registers: list[int],
        _values: Any,
    ) -> ExcCodes | None:
        if self._internal:
            return None
        code = self.exceptions.get(unit)
        return ExcCodes(code) if code else None
