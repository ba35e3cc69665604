"""ChirpStack v4 uplinks (kind ``chirpstack``): how most LoRaWAN water meters arrive.

Thin glue over :mod:`adapters.chirpstack.protocol`. The server owns the broker connection,
subscribes to :attr:`ChirpStackAdapter.topic_filters` and calls
:meth:`~ChirpStackAdapter.decode_partial` per message. Readings carry the DevEUI as their
``device_id`` (``addressed_by = "external_id"``); the server looks the device up by its
``external_id``, so one adapter instance serves every LoRaWAN device.

The codec key → metric mapping is configuration because every vendor's codec names things
differently; the defaults cover the common ones, and an integrator adds the rest without
touching code::

    [adapters.chirpstack]
    metric_map = { vol_m3 = "volume_m3", bat = "battery_pct" }

Registered as::

    [project.entry-points."ioc.adapters"]
    chirpstack = "adapters.chirpstack:ChirpStackAdapter"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.chirpstack import protocol
from adapters.mqtt import raise_first
from adapters.mqtt.protocol import metric_name_problem
from adapters.sdk import DecodeError, PushAdapter, Reading, StatusUpdate, utcnow

__all__ = ["ChirpStackAdapter", "ChirpStackConfig"]


class ChirpStackConfig(BaseModel):
    """How codec output keys become metric names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Merged over DEFAULT_METRIC_MAP (set use_default_map = false to start from nothing).
    metric_map: dict[str, str] = Field(default_factory=dict)
    use_default_map: bool = True
    # Codec keys that already are snake_case metric names (volume_m3, battery_pct) are kept.
    pass_through: bool = True

    @field_validator("metric_map")
    @classmethod
    def _targets_are_metric_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, metric in value.items():
            problem = metric_name_problem(metric)
            if problem is not None:
                raise ValueError(f"metric_map[{key!r}]: {problem}")
        return value

    def effective_map(self) -> dict[str, str]:
        base = dict(protocol.DEFAULT_METRIC_MAP) if self.use_default_map else {}
        base.update(self.metric_map)
        return base


class ChirpStackAdapter(PushAdapter):
    """Uplink and device-status events from ChirpStack's MQTT integration (JSON marshaler)."""

    kind = "chirpstack"
    iot_class = "local_push"
    config_model = ChirpStackConfig
    topic_filters: ClassVar[tuple[str, ...]] = (protocol.UP_FILTER, protocol.STATUS_FILTER)
    addressed_by = "external_id"

    def __init__(self, config: Mapping[str, Any] | BaseModel | None = None) -> None:
        super().__init__(config)
        if not isinstance(self.config, ChirpStackConfig):  # another model: re-validate it
            self.config = ChirpStackConfig.model_validate(self.config.model_dump())
        settings = self.config
        self._decoder = protocol.UplinkDecoder(settings.effective_map(), pass_through=settings.pass_through)

    def decode(self, topic: str, payload: bytes) -> Sequence[Reading | StatusUpdate]:
        """All or nothing: the readings, or a DecodeError for the first problem found."""
        readings, errors = self._decoder.decode(topic, payload, utcnow())
        raise_first(errors)
        return readings

    def decode_partial(
        self, topic: str, payload: bytes
    ) -> tuple[Sequence[Reading | StatusUpdate], Sequence[DecodeError]]:
        return self._decoder.decode(topic, payload, utcnow())

    def decode_at(
        self, topic: str, payload: bytes, received_at: datetime
    ) -> tuple[Sequence[Reading | StatusUpdate], Sequence[DecodeError]]:
        """:meth:`decode_partial` with the receive time given (replays, tests)."""
        return self._decoder.decode(topic, payload, received_at)
