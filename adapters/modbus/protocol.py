"""Pure Modbus decoding and planning: registers in, :class:`Reading`s out. No I/O.

* :func:`bind` resolves a profile for one unit (base address from its parameters) into a
  :class:`UnitMap`: absolute points, the read plan, the commands.
* :func:`plan_reads` groups points into the fewest requests of contiguous registers that
  respect the device's limits (most registers a request, even alignment, largest gap).
* :func:`decode_request` turns one request's registers into readings; NaN becomes
  ``Quality.NOT_A_NUMBER``, ±inf and vendor sentinels ``Quality.OUT_OF_RANGE`` (value 0.0,
  never a number on the map). :func:`fault_request` is the same request answered with a
  Modbus exception: every point becomes a ``Quality.FAULT`` reading.
* :func:`encode_command` / :func:`decode_command` are the write side (``set_dim``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.modbus.profile import (
    REGISTERS,
    CommandSpec,
    ProfileSpec,
    load_profile,
    parse_profile_ref,
)
from adapters.sdk import ConfigError, DecodeError, Quality, Reading

__all__ = [
    "Command",
    "InvalidCommand",
    "Point",
    "ReadRequest",
    "UnitMap",
    "bind",
    "command_value",
    "decode_command",
    "decode_request",
    "decode_value",
    "encode_command",
    "fault_request",
    "pack_value",
    "plan_reads",
    "resolve",
    "unpack_value",
]

_STRUCT = {
    "float32": "f",
    "float64": "d",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "bits": "H",
}


class InvalidCommand(ValueError):
    """A command this unit cannot carry out (unknown name, missing or bad argument)."""


@dataclass(frozen=True, slots=True)
class Point:
    metric: str
    function: int
    address: int  # absolute PDU address
    type: str
    scale: float = 1.0
    bit: int | None = None
    invalid: frozenset[float] = frozenset()
    word_order: str = "big"

    @property
    def count(self) -> int:
        return REGISTERS[self.type]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    function: int  # 3 holding, 4 input
    address: int
    count: int
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    address: int  # absolute
    spec: CommandSpec
    word_order: str


@dataclass(frozen=True, slots=True)
class UnitMap:
    profile: str
    requests: tuple[ReadRequest, ...]
    commands: Mapping[str, Command]

    @property
    def metrics(self) -> list[str]:
        return [p.metric for r in self.requests for p in r.points]


def resolve(ref: str, params: Mapping[str, int] | None = None) -> UnitMap:
    """Load the profile a unit names (``name?key=value``) and bind it to that unit."""
    name, ref_params = parse_profile_ref(ref)
    return bind(load_profile(name), {**ref_params, **(params or {})}, label=ref)


def bind(profile: ProfileSpec, params: Mapping[str, int], *, label: str = "profile") -> UnitMap:
    try:
        base = profile.base_address(dict(params))
    except ValueError as err:
        raise ConfigError(f"{label}: {err}") from None
    points = [
        Point(
            metric=p.metric,
            function=b.function,
            address=base + p.address,
            type=p.type,
            scale=p.scale,
            bit=p.bit,
            invalid=frozenset(p.invalid),
            word_order=p.word_order or profile.word_order,
        )
        for b in profile.blocks
        for p in b.points
    ]
    if any(p.address + p.count > 65_536 for p in points):
        raise ConfigError(f"{label}: a point lies beyond register 65535 (base {base})")
    commands = {
        name: Command(name, base + c.address, c, profile.word_order) for name, c in profile.commands.items()
    }
    requests = plan_reads(
        points, max_registers=profile.max_registers, alignment=profile.alignment, max_gap=profile.max_gap
    )
    return UnitMap(label, tuple(requests), commands)


def plan_reads(
    points: Iterable[Point], *, max_registers: int = 125, alignment: int = 1, max_gap: int = 0
) -> list[ReadRequest]:
    """The fewest read requests covering ``points``.

    Greedy left to right over the sorted points, per function code: a point joins the
    current request when the registers between them are at most ``max_gap`` and the
    aligned request stays within ``max_registers``. For covering sorted intervals with
    windows of bounded length, greedy extension is optimal.
    """

    def down(a: int) -> int:
        return a - a % alignment

    def up(a: int) -> int:
        return -(-a // alignment) * alignment

    out: list[ReadRequest] = []
    current: list[Point] = []
    start = end = 0
    for p in sorted(points, key=lambda p: (p.function, p.address, p.bit or 0)):
        p_end = p.address + p.count
        if (
            current
            and p.function == current[0].function
            and p.address - end <= max_gap
            and up(max(end, p_end)) - start <= max_registers
        ):
            current.append(p)
            end = max(end, p_end)
            continue
        if current:
            out.append(ReadRequest(current[0].function, start, up(end) - start, tuple(current)))
        current, start, end = [p], down(p.address), p_end
    if current:
        out.append(ReadRequest(current[0].function, start, up(end) - start, tuple(current)))
    return out


def unpack_value(kind: str, regs: Sequence[int], word_order: str) -> float | int:
    words = list(regs)
    if word_order == "little":
        words.reverse()
    return struct.unpack(">" + _STRUCT[kind], b"".join(w.to_bytes(2, "big") for w in words))[0]


def pack_value(kind: str, raw: float | int, word_order: str) -> list[int]:
    data = struct.pack(">" + _STRUCT[kind], raw)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    return words


def decode_value(point: Point, regs: Sequence[int]) -> tuple[float, Quality]:
    """One point's registers → (value, quality). A bad value is never returned as a number."""
    if len(regs) != point.count:
        raise DecodeError(
            f"{point.metric}: {len(regs)} registers, expected {point.count}", field=point.metric
        )
    raw = unpack_value(point.type, regs, point.word_order)
    if point.type == "bits":
        return float((int(raw) >> (point.bit or 0)) & 1), Quality.OK
    if isinstance(raw, float) and math.isnan(raw):
        return 0.0, Quality.NOT_A_NUMBER
    if raw in point.invalid or (isinstance(raw, float) and math.isinf(raw)):
        return 0.0, Quality.OUT_OF_RANGE
    if point.type == "float32":
        # float32 carries 7 significant digits: 0x4366 0x3334 is 230.2, not 230.20001220703125.
        raw = float(f"{raw:.7g}")
    value = float(raw * point.scale)
    if math.isinf(value):  # a huge float64 times the scale
        return 0.0, Quality.OUT_OF_RANGE
    if point.scale != 1.0:
        value = float(f"{value:.15g}")  # 3 × 0.1 is 0.3, not 0.30000000000000004
    return value, Quality.OK


def decode_request(
    request: ReadRequest, registers: Sequence[int], device_id: str, ts: datetime
) -> list[Reading]:
    """One answered request → one reading per point."""
    if len(registers) < request.count:
        raise DecodeError(
            f"reply to FC{request.function} {request.address}+{request.count} holds "
            f"{len(registers)} registers",
            device_id=device_id,
        )
    out = []
    for p in request.points:
        offset = p.address - request.address
        value, quality = decode_value(p, registers[offset : offset + p.count])
        out.append(Reading(device_id, p.metric, value, ts, quality))
    return out


def fault_request(request: ReadRequest, device_id: str, ts: datetime) -> list[Reading]:
    """The device answered this request with a Modbus exception: its values are faults."""
    return [Reading(device_id, p.metric, 0.0, ts, Quality.FAULT) for p in request.points]


def encode_command(command: Command, args: Mapping[str, Any]) -> list[int]:
    """The registers a command writes, after checking its argument."""
    spec = command.spec
    if spec.argument not in args:
        raise InvalidCommand(f"{command.name} needs the argument {spec.argument!r}")
    value = args[spec.argument]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidCommand(f"{command.name}: {spec.argument} must be a number, got {value!r}")
    if (spec.minimum is not None and value < spec.minimum) or (
        spec.maximum is not None and value > spec.maximum
    ):
        raise InvalidCommand(
            f"{command.name}: {spec.argument}={value} is outside {spec.minimum}..{spec.maximum}"
        )
    raw: float | int = value / spec.scale
    if spec.type != "float32":
        raw = round(raw)
    try:
        return pack_value(spec.type, raw, command.word_order)
    except struct.error as err:
        raise InvalidCommand(f"{command.name}: {spec.argument}={value} does not fit {spec.type}") from err


def decode_command(command: Command, regs: Sequence[int]) -> float:
    """The value a command's register holds when read back."""
    count = REGISTERS[command.spec.type]
    if len(regs) != count:
        raise DecodeError(f"{command.name}: read back {len(regs)} registers, expected {count}")
    return float(unpack_value(command.spec.type, regs, command.word_order)) * command.spec.scale


def command_value(command: Command, args: Mapping[str, Any]) -> float:
    """The value a successful command reads back: the argument after register rounding."""
    return decode_command(command, encode_command(command, args))
