"""The adapter SDK: the only module an integrator imports.

An adapter turns a device protocol into :class:`Reading`s. The server owns everything
else: connections' retry policy, scheduling, availability, validation and all writes.

Two shapes:

* :class:`PollingAdapter` — the server calls :meth:`~PollingAdapter.poll` on a schedule;
  the adapter talks to its device (Modbus, HTTP, ...).
* :class:`PushAdapter` — the server owns the one MQTT connection and hands every message
  under the adapter's ``topic_filters`` to the pure, synchronous :meth:`~PushAdapter.decode`.

Errors (raise these; translate library exceptions with ``raise ... from err``)::

    AdapterError            base class, never raised directly
    ├── TransientError      the link or device did not answer: retried with backoff
    ├── ConfigError         this device's configuration is wrong: the device is stopped
    ├── AuthError           credentials refused: stopped until credentials change
    └── DecodeError         one payload could not be decoded: it becomes a dead letter

A fault the device itself reports (a Modbus exception, a NaN from a failed sensor) is data,
not an exception: return a :class:`Reading` with ``quality=Quality.FAULT``.

Adapters are found through the ``ioc.adapters`` entry-point group; the entry-point name is
the adapter's ``kind``::

    [project.entry-points."ioc.adapters"]
    acme_lamp = "acme_ioc.lamp:AcmeLampAdapter"
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "AdapterError",
    "AuthError",
    "ConfigError",
    "DecodeError",
    "DeviceBinding",
    "IotClass",
    "PollingAdapter",
    "PushAdapter",
    "Quality",
    "Reading",
    "StatusUpdate",
    "TransientError",
    "utcnow",
]

IotClass = Literal["local_polling", "local_push", "cloud_polling", "cloud_push"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Quality(enum.IntEnum):
    """How far a value can be trusted; stored beside it (``telemetry.quality``)."""

    OK = 0
    FAULT = 1  # the device reported an error for this value (Modbus exception, sensor fault)
    NOT_A_NUMBER = 2  # NaN: the sensor channel failed
    OUT_OF_RANGE = 3  # ±infinity or a vendor sentinel: over/under range
    COMM_FAIL = 4  # the device did not answer; value is the last known or 0


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one metric of one device at the device's time.

    ``value`` is a float (booleans are 0.0/1.0). A reading whose quality is not OK is
    stored and drives fault rules, but never shows as a number on the map.
    """

    device_id: str
    metric: str
    value: float
    ts: datetime
    quality: Quality = Quality.OK

    @classmethod
    def of(
        cls, device_id: str, metric: str, raw: float | int | bool, ts: datetime | None = None
    ) -> Reading:
        """Build a reading, giving NaN and infinities the quality they mean."""
        value = float(raw)
        quality = Quality.OK
        if math.isnan(value):
            quality, value = Quality.NOT_A_NUMBER, 0.0
        elif math.isinf(value):
            quality = Quality.OUT_OF_RANGE
            value = 0.0
        return cls(device_id, metric, value, ts or utcnow(), quality)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A device's connectivity as its protocol reports it (an MQTT last will, say)."""

    device_id: str
    online: bool
    ts: datetime = field(default_factory=utcnow)
    retained: bool = False  # last-known state replayed by the broker, not fresh news


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """A device an adapter serves, with its validated configuration."""

    device_id: str
    config: Mapping[str, Any]
    external_id: str | None = None


class AdapterError(Exception):
    """Base class of every error an adapter raises."""


class TransientError(AdapterError):
    """The device or link did not answer; the supervisor retries with capped backoff."""


class ConfigError(AdapterError):
    """The configuration is wrong; the device is stopped until it is fixed."""


class AuthError(AdapterError):
    """Credentials were refused; the device waits for new ones (no hammering)."""


class DecodeError(AdapterError):
    """A payload could not be decoded; it becomes a dead letter with this message."""

    def __init__(self, message: str, *, field: str | None = None, device_id: str | None = None):
        super().__init__(message)
        self.field = field
        self.device_id = device_id


class _EmptyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Configured:
    """Both adapter shapes validate their configuration the same way, at construction,
    so a bad config stops start-up with pydantic's error naming the field."""

    config_model: ClassVar[type[BaseModel]] = _EmptyConfig

    def __init__(self, config: Mapping[str, Any] | BaseModel | None = None) -> None:
        if isinstance(config, BaseModel):
            self.config = config
        else:
            self.config = self.config_model.model_validate(dict(config or {}))


class PollingAdapter(_Configured, ABC):
    """An adapter the server polls. Subclasses set the class attributes and three methods.

    The supervisor calls :meth:`connect` once (and again after a :class:`TransientError`,
    with backoff), then :meth:`poll` every ``poll_interval`` with jitter and a timeout, and
    :meth:`close` at shutdown. ``poll`` returns what it read; an empty sequence is fine.

    Configuration comes from the ``[adapters.<kind>]`` section of the server's config file
    (validated by ``config_model``; the server keeps ``enabled``, ``interval_s`` and
    ``timeout_s`` for itself). The devices the registry binds to this adapter (a device's
    ``adapter`` = ``kind``, with its ``adapter_config``) are in :attr:`bindings`, set before
    :meth:`connect` and kept current between polls.

    What the supervisor does with the errors :meth:`connect` and :meth:`poll` raise:
    :class:`TransientError` (and a poll that outlives its timeout) → close, retry with
    capped, jittered backoff, the devices offline after two intervals without a poll;
    :class:`AuthError` → the devices offline at once, retried only every few minutes;
    :class:`ConfigError` → the devices offline, the adapter stopped until the server
    restarts with a corrected configuration.
    """

    kind: ClassVar[str]
    iot_class: ClassVar[IotClass] = "local_polling"
    config_model: ClassVar[type[BaseModel]] = _EmptyConfig
    poll_interval: ClassVar[timedelta] = timedelta(seconds=10)
    bindings: Sequence[DeviceBinding] = ()


    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def poll(self) -> Sequence[Reading]: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def write(self, device_id: str, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Carry out a command; return what was read back. Not every adapter can."""
        raise ConfigError(f"{self.kind} adapter does not accept commands")


class PushAdapter(_Configured, ABC):
    """An adapter fed by the server's MQTT connection.

    ``decode`` is synchronous and pure: bytes in, readings out. Raise :class:`DecodeError`
    for a payload that cannot be used; the good readings of a batch should still be
    returned when only some entries are bad (use :meth:`decode_partial`).
    """

    kind: ClassVar[str]
    iot_class: ClassVar[IotClass] = "local_push"
    config_model: ClassVar[type[BaseModel]] = _EmptyConfig
    topic_filters: ClassVar[tuple[str, ...]]
    # "external_id": the readings' device_id holds the protocol's id (a LoRaWAN DevEUI, a
    # Sparkplug edge/device) and the server maps it to the registry's device id.
    addressed_by: ClassVar[Literal["device_id", "external_id"]] = "device_id"


    @abstractmethod
    def decode(self, topic: str, payload: bytes) -> Sequence[Reading | StatusUpdate]: ...

    def decode_partial(
        self, topic: str, payload: bytes
    ) -> tuple[Sequence[Reading | StatusUpdate], Sequence[DecodeError]]:
        """Readings that decoded, and one error per part that did not.

        The default treats the payload as all-or-nothing; adapters whose payloads hold
        several values override it so one bad value does not cost the others.
        """
        try:
            return self.decode(topic, payload), ()
        except DecodeError as err:
            return (), (err,)
