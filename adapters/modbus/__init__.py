"""Modbus TCP / RTU-over-TCP adapter (kind ``modbus``): thin glue over the connection owner.

* :mod:`adapters.modbus.profile` — register-map profiles (JSON data, built-ins in
  ``profiles/``), validated with pydantic.
* :mod:`adapters.modbus.protocol` — pure planning and decoding (registers → readings).
* :mod:`adapters.modbus.connection` — :class:`GatewayConnection`, the one client per gateway
  and the only place pymodbus exceptions are caught.
* :mod:`adapters.modbus.simulator` — real in-process pymodbus servers built from profiles,
  for tests and the demo.

The server polls gateways with ``server.polling.modbus.ModbusPoller`` (per-unit intervals,
backoff, availability). :class:`ModbusAdapter` is the same gateway behind the generic
:class:`~adapters.sdk.PollingAdapter` surface, registered as::

    [project.entry-points."ioc.adapters"]
    modbus = "adapters.modbus:ModbusAdapter"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.modbus.connection import (
    CommandFailed,
    GatewayConnection,
    LinkDown,
    UnitSilent,
)
from adapters.modbus.protocol import InvalidCommand
from adapters.sdk import ConfigError, PollingAdapter, Reading, TransientError

__all__ = [
    "CommandFailed",
    "GatewayConfig",
    "GatewayConnection",
    "InvalidCommand",
    "LinkDown",
    "ModbusAdapter",
    "UnitConfig",
    "UnitSilent",
]


class UnitConfig(BaseModel):
    """One unit behind a gateway (same fields as ``[[modbus.gateways.units]]``)."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(min_length=1, description="device id in the registry")
    unit: int = Field(ge=0, le=255, description="Modbus unit / device id")
    profile: str = Field(min_length=1, description="built-in profile name or a profile file")
    interval_s: float = Field(default=10.0, ge=0.1, le=86_400)
    params: dict[str, int] = Field(
        default={}, description="profile parameters, e.g. {channel: 0, short_address: 12}"
    )


class GatewayConfig(BaseModel):
    """One gateway (same fields as ``[[modbus.gateways]]``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    host: str
    port: int = Field(default=502, ge=1, le=65_535)
    framer: Literal["socket", "rtu"] = "socket"
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    units: list[UnitConfig] = []

    @model_validator(mode="after")
    def _unique_units(self) -> GatewayConfig:
        ids = [u.unit for u in self.units]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"gateway {self.name!r}: unit(s) {dupes} listed twice")
        return self


class ModbusAdapter(PollingAdapter):
    """One gateway as a generic polling adapter: each poll reads every unit once.

    A unit that does not answer is skipped (its readings are missing from the poll); the
    poll raises :class:`TransientError` only when no unit answered or the link is down,
    so the supervisor's backoff applies to the gateway, not to one dead meter.
    """

    kind: ClassVar[str] = "modbus"
    config_model: ClassVar[type[BaseModel]] = GatewayConfig
    poll_interval: ClassVar[timedelta] = timedelta(seconds=10)

    def __init__(self, config: Mapping[str, Any] | BaseModel | None = None) -> None:
        super().__init__(config)
        cfg: GatewayConfig = self.config  # type: ignore[assignment]
        self.connection = GatewayConnection(cfg)
        for unit in cfg.units:  # a bad profile stops start-up naming the device
            self.connection.unit_map(unit)
        self._by_device = {u.device: u for u in cfg.units}

    async def connect(self) -> None:
        await self.connection.connect()

    async def poll(self) -> Sequence[Reading]:
        readings: list[Reading] = []
        errors: list[TransientError] = []
        for unit in self._by_device.values():
            try:
                readings.extend(await self.connection.read_unit(unit))
            except LinkDown:
                raise
            except TransientError as err:
                errors.append(err)
        if errors and len(errors) == len(self._by_device):
            raise errors[0]
        return readings

    async def write(self, device_id: str, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if (unit := self._by_device.get(device_id)) is None:
            raise ConfigError(f"device {device_id} is not behind gateway {self.connection.name}")
        return await self.connection.write(unit, name, args)

    async def close(self) -> None:
        await self.connection.close()
