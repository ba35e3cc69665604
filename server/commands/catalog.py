"""What each device kind can be told to do, and whether a request says it properly.

Pure: no I/O. The catalogue is the server's promise to operators (the map offers these
commands, the API validates against them); a device's adapter may carry out fewer (a
Modbus profile without the command), which :mod:`server.commands.transports` checks per device.

    streetlight        set_dim {level 0..100}, switch {on}, reboot
    lighting_cabinet   set_dim {level 0..100} (central dimming), switch {on}, reboot
    traffic_controller set_plan {plan 0..255}, flash {on}, reboot
    env_sensor         reboot
    camera             set_recording {on}, reboot
    water_meter        set_valve {open} (meters with a shut-off valve)

Commands are absolute ("dim to 40 %", "switch on"), never relative ("dim by 10"), so a
command delivered twice (an MQTT redelivery, a retry after a restart) does no harm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from server.errors import Invalid

__all__ = ["CATALOGUE", "ArgSpec", "CommandSpec", "InvalidRequest", "commands_for", "validate"]


class InvalidRequest(Invalid, ValueError):
    """A command request this server will not accept; the message says what to send."""


@dataclass(frozen=True, slots=True)
class ArgSpec:
    type: Literal["number", "integer", "boolean"]
    minimum: float | None = None
    maximum: float | None = None
    required: bool = True

    def describe(self) -> str:
        if self.type == "boolean":
            return "true or false"
        kind = "an integer" if self.type == "integer" else "a number"
        if self.minimum is not None and self.maximum is not None:
            return f"{kind} from {self.minimum:g} to {self.maximum:g}"
        return kind


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    kinds: frozenset[str]
    args: Mapping[str, ArgSpec]
    description: str
    # Kinds a group command picks when its target names none ("dim the ward" means its
    # lamps, not its cabinets as well, which would dim the lamps twice).
    group_kinds: frozenset[str]


def _cmd(name: str, kinds: tuple[str, ...], description: str, group_kinds: tuple[str, ...] = (),
         **args: ArgSpec) -> CommandSpec:
    return CommandSpec(name, frozenset(kinds), args, description, frozenset(group_kinds or kinds))


_LEVEL = ArgSpec("number", 0, 100)
_ON = ArgSpec("boolean")

CATALOGUE: dict[str, CommandSpec] = {c.name: c for c in (
    _cmd("set_dim", ("streetlight", "lighting_cabinet"),
         "dim level in percent (0 = off); a cabinet dims every lamp it feeds",
         ("streetlight",), level=_LEVEL),
    _cmd("switch", ("streetlight", "lighting_cabinet"), "switch on (true) or off (false)",
         ("streetlight",), on=_ON),
    _cmd("set_plan", ("traffic_controller",), "run timing plan n", plan=ArgSpec("integer", 0, 255)),
    _cmd("flash", ("traffic_controller",), "all-red/amber flash on (true) or back to the plan",
         on=_ON),
    _cmd("set_recording", ("camera",), "start (true) or stop (false) recording", on=_ON),
    _cmd("set_valve", ("water_meter",), "open (true) or close (false) the shut-off valve",
         open=_ON),
    _cmd("reboot", ("streetlight", "lighting_cabinet", "traffic_controller", "env_sensor",
                    "camera"), "restart the device's controller", ("camera",)),
)}


def commands_for(kind: str) -> list[str]:
    return sorted(n for n, c in CATALOGUE.items() if kind in c.kinds)


def spec_of(name: Any) -> CommandSpec:
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"name must be a command name, one of {', '.join(sorted(CATALOGUE))}")
    spec = CATALOGUE.get(name)
    if spec is None:
        raise InvalidRequest(f"unknown command {name!r}; commands: {', '.join(sorted(CATALOGUE))}")
    return spec


def check_args(spec: CommandSpec, args: Any) -> dict[str, Any]:
    """The arguments, checked against the command's specification (all problems at once)."""
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise InvalidRequest(f"args must be an object, e.g. {_example(spec)}")
    problems = []
    unknown = sorted(set(args) - set(spec.args))
    if unknown:
        takes = ", ".join(spec.args) or "no arguments"
        problems.append(f"unexpected argument(s) {', '.join(unknown)} ({spec.name} takes {takes})")
    out: dict[str, Any] = {}
    for key, arg in spec.args.items():
        if key not in args:
            if arg.required:
                problems.append(f"args.{key} is required: {arg.describe()}")
            continue
        value = args[key]
        if not _fits(arg, value):
            problems.append(f"args.{key} must be {arg.describe()}, got {value!r}")
            continue
        out[key] = value
    if problems:
        raise InvalidRequest(f"{spec.name}: " + "; ".join(problems))
    return out


def _fits(arg: ArgSpec, value: Any) -> bool:
    if arg.type == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if arg.type == "integer" and value != int(value):
        return False
    return (arg.minimum is None or value >= arg.minimum) and (arg.maximum is None or value <= arg.maximum)


def _example(spec: CommandSpec) -> str:
    sample = {"number": 50, "integer": 1, "boolean": "true"}
    inner = ", ".join(f'"{k}": {sample[a.type]}' for k, a in spec.args.items())
    return "{" + inner + "}"


def validate(kind: str, name: Any, args: Any) -> tuple[CommandSpec, dict[str, Any]]:
    """The command and its checked arguments for a device of ``kind``, or InvalidRequest."""
    spec = spec_of(name)
    if kind not in spec.kinds:
        takes = ", ".join(commands_for(kind)) or "no commands"
        raise InvalidRequest(f"a {kind} does not take the command {spec.name}; it takes {takes}")
    return spec, check_args(spec, args)
