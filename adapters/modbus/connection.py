"""The one connection owner of a Modbus gateway: every unit and every write goes through it.

Cheap RS485/TCP gateways often accept a single TCP client, and pymodbus sends one request
at a time per client anyway, so a second client "for speed" only fights the first. This
class holds ONE ``AsyncModbusTcpClient`` (MBAP "socket" or RTU-over-TCP framing) and
serialises whole unit reads and write-then-read-back commands with its own lock.

Retries belong to the caller (the server's Modbus poller): pymodbus gets ``retries=0`` and
``reconnect_delay=0`` so it never retries or reconnects on its own, and
``set_max_no_responses`` is raised so it never drops the link because one unit is dead.
Instead the link is declared dead here, when every unit addressed so far has stopped
answering (at least 3 requests in a row): a gateway that still relays for one unit is up.

Every pymodbus and OS exception is translated at this edge (``raise ... from err``):

* no answer within ``timeout_s``, exception 0x0A/0x0B (the gateway's "device behind me is
  dead") → :class:`UnitSilent` (a :class:`TransientError`) for that unit only;
* link refused or lost → :class:`LinkDown` (a :class:`TransientError`), ``connected`` False;
* exception 01/02 (illegal function/address) → :class:`ConfigError`: the profile does not
  fit the device and retrying will not help;
* other exception codes on a read → ``Quality.FAULT`` readings (the device reported it);
  on a write → :class:`CommandFailed`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from adapters.modbus.protocol import (
    InvalidCommand,
    ReadRequest,
    UnitMap,
    decode_command,
    decode_request,
    encode_command,
    fault_request,
    resolve,
)
from adapters.sdk import AdapterError, ConfigError, DecodeError, Reading, TransientError, utcnow

__all__ = [
    "CommandFailed",
    "GatewayConnection",
    "GatewayLike",
    "LinkDown",
    "UnitLike",
    "UnitSilent",
]

logger = logging.getLogger(__name__)

# pymodbus closes the socket after retries+3 unanswered requests (any unit); we decide.
_NEVER_DISCONNECT = 2**31 - 1
_GATEWAY_SAYS_DEAD = {0x0A: "gateway path unavailable", 0x0B: "target device failed to respond"}
_CONFIG_CODES = {0x01: "illegal function", 0x02: "illegal data address"}


class GatewayLike(Protocol):
    """What the connection needs of a gateway's settings (``server.settings.ModbusGateway``)."""

    name: str
    host: str
    port: int
    framer: str
    timeout_s: float


class UnitLike(Protocol):
    """What it needs of a unit's settings (``server.settings.ModbusUnit``)."""

    device: str
    unit: int
    profile: str


class UnitSilent(TransientError):
    """The unit did not answer (timeout, or the gateway reported it dead); the link is fine."""


class LinkDown(TransientError):
    """The TCP link to the gateway is down; every unit behind it is unreachable."""


class CommandFailed(AdapterError):
    """The device refused a write, or read back something other than what was written."""


class GatewayConnection:
    """Owner of one gateway's client; see the module docstring for the error contract."""

    def __init__(self, gateway: GatewayLike) -> None:
        self.gateway = gateway
        self.name = gateway.name
        self._client: AsyncModbusTcpClient | None = None  # built in connect(): needs a loop
        self._lock = asyncio.Lock()
        self._maps: dict[tuple[str, str], UnitMap] = {}
        self._addressed: set[int] = {u.unit for u in getattr(gateway, "units", ())}
        self._silent: set[int] = set()
        self._silent_in_a_row = 0
        self.log = logging.LoggerAdapter(logger, {"gateway": self.name})

    def __repr__(self) -> str:
        g = self.gateway
        return f"<GatewayConnection {self.name} {g.host}:{g.port} {g.framer}>"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def unit_map(self, unit: UnitLike) -> UnitMap:
        """The unit's resolved profile; :class:`ConfigError` names the device if it is bad."""
        params = getattr(unit, "params", None) or {}
        key = (unit.profile, repr(sorted(params.items())))
        if (umap := self._maps.get(key)) is None:
            try:
                umap = resolve(unit.profile, params)
            except ConfigError as err:
                raise ConfigError(
                    f"device {unit.device} (gateway {self.name}, unit {unit.unit}): {err}"
                ) from None
            self._maps[key] = umap
        return umap

    def read_budget_s(self, unit: UnitLike) -> float:
        """Longest a healthy :meth:`read_unit` can take: each request may use the timeout."""
        return self.gateway.timeout_s * (len(self.unit_map(unit).requests) + 1)

    async def connect(self) -> None:
        g = self.gateway
        if self._client is None:
            self._client = AsyncModbusTcpClient(
                g.host,
                port=g.port,
                name=f"modbus[{g.name}]",
                framer=FramerType.RTU if g.framer == "rtu" else FramerType.SOCKET,
                timeout=g.timeout_s,
                retries=0,
                reconnect_delay=0,
                reconnect_delay_max=0,
            )
            # Must precede connect(): pymodbus copies it into the counter on connection.
            self._client.set_max_no_responses(_NEVER_DISCONNECT)
        if self._client.connected:
            return
        try:
            ok = await self._client.connect()
        except (ModbusException, OSError) as err:
            raise LinkDown(f"gateway {g.name} ({g.host}:{g.port}): {err}") from err
        if not ok:
            raise LinkDown(f"gateway {g.name} ({g.host}:{g.port}): cannot connect")
        self._silent.clear()
        self._silent_in_a_row = 0

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def read_unit(self, unit: UnitLike) -> list[Reading]:
        """Every point of the unit's profile, in as few requests as the profile allows."""
        umap = self.unit_map(unit)
        self._addressed.add(unit.unit)
        out: list[Reading] = []
        async with self._lock:
            client = self._client_or_raise()
            for req in umap.requests:
                read = client.read_input_registers if req.function == 4 else client.read_holding_registers
                rr = await self._call(
                    unit, functools.partial(read, req.address, count=req.count, device_id=unit.unit)
                )
                ts = utcnow()
                if rr.isError():
                    out.extend(self._read_exception(unit, umap, req, rr.exception_code, ts))
                    continue
                try:
                    out.extend(decode_request(req, rr.registers, unit.device, ts))
                except DecodeError as err:
                    raise UnitSilent(f"unit {unit.unit} ({unit.device}): bad reply: {err}") from err
        return out

    async def write(self, unit: UnitLike, name: str, args: Mapping[str, Any]) -> dict[str, float]:
        """Carry out a profile command, read the register back and return what it holds.

        ``set_dim`` with ``{"level": 50}`` on a DALI lamp returns ``{"dim_level_pct": 50.0}``.
        Raises :class:`InvalidCommand` before any I/O for an unknown command or bad argument.
        """
        umap = self.unit_map(unit)
        if (cmd := umap.commands.get(name)) is None:
            known = ", ".join(sorted(umap.commands)) or "none"
            raise InvalidCommand(
                f"device {unit.device} ({umap.profile}) has no command {name!r}; its commands: {known}"
            )
        regs = encode_command(cmd, args)
        expected = decode_command(cmd, regs)
        async with self._lock:
            client = self._client_or_raise()
            if cmd.spec.function == 6:
                send = functools.partial(client.write_register, cmd.address, regs[0], device_id=unit.unit)
            else:
                send = functools.partial(client.write_registers, cmd.address, regs, device_id=unit.unit)
            rr = await self._call(unit, send)
            if rr.isError():
                self._write_exception(unit, name, rr.exception_code)
            rr = await self._call(
                unit,
                functools.partial(
                    client.read_holding_registers, cmd.address, count=len(regs), device_id=unit.unit
                ),
            )
            if rr.isError():
                self._write_exception(unit, name, rr.exception_code)
        try:
            actual = decode_command(cmd, rr.registers)
        except DecodeError as err:
            raise CommandFailed(f"device {unit.device}: {err}") from err
        if not math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-9):
            raise CommandFailed(
                f"device {unit.device}: {name} wrote {expected:g} but "
                f"register {cmd.address} reads back {actual:g}"
            )
        return {cmd.spec.result: actual}

    # -- the translation edge -------------------------------------------------------------

    def _client_or_raise(self) -> AsyncModbusTcpClient:
        if self._client is None or not self._client.connected:
            g = self.gateway
            raise LinkDown(f"gateway {g.name} ({g.host}:{g.port}) is not connected")
        return self._client

    async def _call(self, unit: UnitLike, send: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        who = f"unit {unit.unit} ({unit.device}) on gateway {self.name}"
        try:
            rr = await send()
        except ModbusIOException as err:  # nothing came back within timeout_s
            if not self.connected:
                raise LinkDown(f"gateway {self.name}: link lost") from err
            self._note_silence(unit.unit)
            raise UnitSilent(f"{who}: no answer within {self.gateway.timeout_s:g} s") from err
        except ConnectionException as err:
            raise LinkDown(f"gateway {self.name}: {err}") from err
        except (ModbusException, OSError) as err:
            raise TransientError(f"{who}: {err}") from err
        self._silent.clear()
        self._silent_in_a_row = 0
        if rr.isError() and (why := _GATEWAY_SAYS_DEAD.get(rr.exception_code)):
            raise UnitSilent(f"{who}: exception 0x{rr.exception_code:02X} ({why})")
        return rr

    def _note_silence(self, unit: int) -> None:
        self._silent.add(unit)
        self._silent_in_a_row += 1
        if self._silent_in_a_row >= max(3, len(self._addressed)) and self._silent >= (self._addressed):
            self.log.info(
                "gateway %s: none of units %s answered %d requests in a row; closing the link",
                self.name,
                sorted(self._addressed),
                self._silent_in_a_row,
            )
            if self._client is not None:
                self._client.close()

    def _read_exception(
        self, unit: UnitLike, umap: UnitMap, req: ReadRequest, code: int, ts: Any
    ) -> Sequence[Reading]:
        if why := _CONFIG_CODES.get(code):
            raise ConfigError(
                f"device {unit.device} (gateway {self.name}, unit {unit.unit}): exception "
                f"{code:02d} ({why}) reading FC{req.function:02d} {req.address}+{req.count}: "
                f"profile {umap.profile} does not fit this device"
            )
        return fault_request(req, unit.device, ts)

    def _write_exception(self, unit: UnitLike, name: str, code: int) -> None:
        where = f"device {unit.device} (gateway {self.name}, unit {unit.unit})"
        if why := _CONFIG_CODES.get(code):
            raise ConfigError(f"{where}: {name}: exception {code:02d} ({why})")
        raise CommandFailed(f"{where}: {name} refused with exception {code:02d}")
