"""Register-map profiles: what a Modbus device holds, where, and in which format.

A profile is a JSON document (the built-ins live in ``profiles/<name>.json``)::

    {
      "description": "...",
      "word_order": "big",          # "big" = high word first (ABCD), "little" = CDAB
      "max_registers": 80,          # most registers one request may read
      "alignment": 2,               # requests start and end on multiples of this
      "max_gap": 64,                # unused registers a request may span to save a request
      "parameters": {"channel": {"stride": 7000, "maximum": 1}},
      "blocks": [{"function": 4, "points": [
          {"metric": "voltage_l1_v", "address": 0, "type": "float32"}]}],
      "commands": {"set_dim": {"address": 15, "argument": "level", "result": "dim_level_pct"}}
    }

Addresses are 0-based PDU addresses (as on the wire), relative to the base address
``Σ stride × parameter``; parameters come from the unit's profile string
(``dali_gateway?channel=0&short_address=12``) and default to their ``default``.

Everything here is pure: no I/O but reading the profile file.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Literal, Self
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters.sdk import ConfigError

__all__ = [
    "REGISTERS",
    "BlockSpec",
    "CommandSpec",
    "ParameterSpec",
    "PointSpec",
    "ProfileSpec",
    "builtin_profiles",
    "load_profile",
    "parse_profile_ref",
]

WordOrder = Literal["big", "little"]
PointType = Literal["float32", "float64", "int16", "uint16", "int32", "uint32", "bits"]
CommandType = Literal["int16", "uint16", "int32", "uint32", "float32"]

#: Registers each type occupies.
REGISTERS: dict[str, int] = {
    "float32": 2,
    "float64": 4,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "bits": 1,
}

_METRIC = r"^[a-z][a-z0-9_]*$"
_BUILTIN = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointSpec(_Strict):
    metric: str = Field(pattern=_METRIC, description="CONTRACT metric name")
    address: int = Field(ge=0, le=65_535, description="offset from the base address")
    type: PointType
    scale: float = Field(default=1.0, description="value = raw × scale")
    bit: int | None = Field(default=None, ge=0, le=15, description="for type bits: which bit")
    invalid: list[float] = Field(
        default=[], description="raw values the vendor uses for 'no valid value' (65535, 32767)"
    )
    word_order: WordOrder | None = Field(default=None, description="overrides the profile's")

    @model_validator(mode="after")
    def _bit_iff_bits(self) -> Self:
        if (self.type == "bits") != (self.bit is not None):
            raise ValueError("'bit' is required for type 'bits' and only allowed there")
        return self


class BlockSpec(_Strict):
    function: Literal[3, 4] = Field(description="3 holding registers, 4 input registers")
    points: list[PointSpec] = Field(min_length=1)


class CommandSpec(_Strict):
    address: int = Field(ge=0, le=65_535, description="holding register, offset from base")
    type: CommandType = "uint16"
    function: Literal[6, 16] = Field(default=6, description="6 write single, 16 write multiple")
    argument: str = Field(default="value", description="key of the command's args to write")
    minimum: float | None = None
    maximum: float | None = None
    scale: float = Field(default=1.0, description="raw = value / scale")
    result: str = Field(pattern=_METRIC, description="name of the value read back")

    @model_validator(mode="after")
    def _single_register_fc06(self) -> Self:
        if self.function == 6 and REGISTERS[self.type] != 1:
            raise ValueError(f"function 6 writes one register; type {self.type} needs 16")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


class ParameterSpec(_Strict):
    stride: int = Field(ge=0, description="registers the base address moves per unit")
    default: int = Field(default=0, ge=0)
    minimum: int = Field(default=0, ge=0)
    maximum: int = Field(default=65_535, ge=0)


class ProfileSpec(_Strict):
    description: str = ""
    device_kind: str | None = Field(default=None, description="CONTRACT device kind")
    word_order: WordOrder = "big"
    max_registers: int = Field(default=125, ge=1, le=125, description="per read request")
    alignment: Literal[1, 2] = Field(default=1, description="2: even start address and count")
    max_gap: int = Field(default=0, ge=0, le=124, description="unused registers one read spans")
    parameters: dict[str, ParameterSpec] = {}
    blocks: list[BlockSpec] = Field(min_length=1)
    commands: dict[str, CommandSpec] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        metrics = [p.metric for b in self.blocks for p in b.points]
        if dupes := sorted({m for m in metrics if metrics.count(m) > 1}):
            raise ValueError(f"metric names must be unique, repeated: {dupes}")
        for b in self.blocks:
            for p in b.points:
                if REGISTERS[p.type] + (self.alignment - 1) * 2 > self.max_registers:
                    raise ValueError(f"point {p.metric}: longer than max_registers")
        return self

    def base_address(self, params: dict[str, int]) -> int:
        """The base address for these parameter values (unknown ones are errors)."""
        if unknown := sorted(set(params) - set(self.parameters)):
            raise ValueError(
                f"unknown profile parameter(s) {unknown}; known: {sorted(self.parameters) or 'none'}"
            )
        base = 0
        for name, spec in self.parameters.items():
            value = params.get(name, spec.default)
            if not spec.minimum <= value <= spec.maximum:
                raise ValueError(f"parameter {name}={value} is outside {spec.minimum}..{spec.maximum}")
            base += spec.stride * value
        return base


def parse_profile_ref(ref: str) -> tuple[str, dict[str, int]]:
    """``"dali_gateway?channel=1&short_address=7"`` → ``("dali_gateway", {...})``."""
    name, _, query = ref.partition("?")
    params: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        try:
            params[key] = int(value)
        except ValueError:
            raise ConfigError(f"profile {ref!r}: parameter {key}={value!r} is not an integer") from None
    return name.strip(), params


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped in ``adapters/modbus/profiles``."""
    root = resources.files("adapters.modbus.profiles")
    return sorted(p.name.removesuffix(".json") for p in root.iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str) -> ProfileSpec:
    """A built-in profile by name, or a profile file by path.

    Raises :class:`ConfigError` naming the file and the offending field.
    """
    if _BUILTIN.match(name_or_path):
        res = resources.files("adapters.modbus.profiles").joinpath(f"{name_or_path}.json")
        if res.is_file():
            return _parse(res.read_text(encoding="utf-8"), f"built-in profile {name_or_path}")
        if not Path(name_or_path).is_file():
            raise ConfigError(
                f"unknown Modbus profile {name_or_path!r}: built-in profiles are "
                f"{', '.join(builtin_profiles())}, or give a profile file path"
            )
    path = Path(name_or_path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"profile file {path}: cannot be read ({err.strerror or err})") from None
    return _parse(text, f"profile file {path}")


def _parse(text: str, origin: str) -> ProfileSpec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{origin}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    try:
        return ProfileSpec.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{origin}: {problems}") from None
