"""The native MQTT convention (kind ``mqtt``): devices publish straight to ``ioc/v1/...``.

Thin glue over :mod:`adapters.mqtt.protocol`, where the decoding lives. The server owns the
single broker connection, subscribes to :attr:`NativeMqttAdapter.topic_filters` and calls
:meth:`~NativeMqttAdapter.decode_partial` for every message, so a telemetry message with one
bad value still stores the others and the bad one becomes a dead letter naming the metric.

The status topic is retained (devices set it as their last will); ``decode`` cannot see the
retained flag, so the server sets :attr:`StatusUpdate.retained` itself.

Registered as::

    [project.entry-points."ioc.adapters"]
    mqtt = "adapters.mqtt:NativeMqttAdapter"
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

from adapters.mqtt import protocol
from adapters.sdk import DecodeError, PushAdapter, Reading, StatusUpdate, utcnow

__all__ = ["NativeMqttAdapter"]


def raise_first(errors: Sequence[DecodeError]) -> None:
    """Raise the first error, saying how many more there were, for all-or-nothing callers."""
    if not errors:
        return
    first = errors[0]
    if len(errors) == 1:
        raise first
    raise DecodeError(
        f"{first} (and {len(errors) - 1} more problems)",
        field=first.field,
        device_id=first.device_id,
    )


class NativeMqttAdapter(PushAdapter):
    """Telemetry and status published by devices that follow the IOC's own convention."""

    kind = "mqtt"
    iot_class = "local_push"
    topic_filters: ClassVar[tuple[str, ...]] = (protocol.TELEMETRY_FILTER, protocol.STATUS_FILTER)
    addressed_by = "device_id"  # the device id is the topic's second level

    def decode(self, topic: str, payload: bytes) -> Sequence[Reading | StatusUpdate]:
        """All or nothing: the readings, or a DecodeError for the first problem found."""
        readings, errors = protocol.decode(topic, payload, utcnow())
        raise_first(errors)
        return readings

    def decode_partial(
        self, topic: str, payload: bytes
    ) -> tuple[Sequence[Reading | StatusUpdate], Sequence[DecodeError]]:
        return protocol.decode(topic, payload, utcnow())

    def decode_at(
        self, topic: str, payload: bytes, received_at: datetime
    ) -> tuple[Sequence[Reading | StatusUpdate], Sequence[DecodeError]]:
        """:meth:`decode_partial` with the receive time given (replays, tests)."""
        return protocol.decode(topic, payload, received_at)
