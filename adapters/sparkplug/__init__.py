"""Sparkplug B 3.0 edge nodes (kind ``sparkplug``): industrial gateways, PLCs, SCADA edges.

Thin glue over :mod:`adapters.sparkplug.protocol`, where the decoding and the session
memory live. The server owns the broker connection, subscribes to ``spBv1.0/#`` and calls
:meth:`~SparkplugAdapter.decode_partial` per message; readings carry the external id
(``{group}/{edge node}/{device}``, or ``{group}/{edge node}`` for a node's own metrics) and
the server maps it to the registry's device (``addressed_by = "external_id"``).

Three things a JSON convention does not need, which the server asks of this adapter:

* :meth:`~SparkplugAdapter.take_outgoing`: the Rebirth requests (NCMD) decoding queued,
  which the server publishes after each batch;
* :meth:`~SparkplugAdapter.host_state`: the server's own STATE as a Sparkplug host
  application (``spBv1.0/STATE/{host_id}``, retained JSON, the offline one as its will);
* :meth:`~SparkplugAdapter.command` and :meth:`~SparkplugAdapter.watch`: a catalogue
  command as a DCMD metric write, and the reading that confirms it.

Configuration, in the server's config file (CONTRACT, "Standards")::

    [sparkplug]
    metric_map = { "Lamp/Dimmer" = "dim_level_pct", "Meter/Total" = "volume_m3" }
    host_id = "ioc-server"        # "" publishes no STATE
    rebirth_interval_s = 5.0

Registered as::

    [project.entry-points."ioc.adapters"]
    sparkplug = "adapters.sparkplug:SparkplugAdapter"
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.mqtt import raise_first
from adapters.mqtt.protocol import metric_name_problem
from adapters.sdk import DecodeError, PushAdapter, Reading, StatusUpdate, utcnow
from adapters.sparkplug import protocol

__all__ = ["COMMAND_METRICS", "SparkplugAdapter", "SparkplugConfig"]

# How a catalogue command becomes a metric write: command → (its argument, the catalogue
# metric written). The edge node is expected to report the metric's new value (DDATA),
# which confirms the command.
COMMAND_METRICS: Mapping[str, tuple[str, str]] = {
    "set_dim": ("level", "dim_level_pct"),
    "switch": ("on", "lamp_on"),
    "set_plan": ("plan", "plan"),
    "set_recording": ("on", "recording"),
}

_HOST_RE = re.compile(r"[^\x00-\x1f\x7f/+#]{0,64}")


class SparkplugConfig(BaseModel):
    """How Sparkplug metric names become catalogue metrics, and how we act as a host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Sparkplug metric name (the whole name, folders included) → catalogue metric. Names
    # that are catalogue metrics, or whose last '/' segment is one, need no entry.
    metric_map: dict[str, str] = Field(default_factory=dict)
    # Our Sparkplug host application id (STATE topic); empty: publish no STATE.
    host_id: str = "ioc-server"
    # After asking a node to rebirth, wait this long before asking again.
    rebirth_interval_s: float = Field(default=5.0, gt=0, le=3600)

    @field_validator("metric_map")
    @classmethod
    def _targets_are_metric_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, metric in value.items():
            problem = metric_name_problem(metric)
            if problem is not None:
                raise ValueError(f"metric_map[{key!r}]: {problem}")
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        if not _HOST_RE.fullmatch(value):
            raise ValueError("a Sparkplug host id has at most 64 characters and no '/', '+', '#' "
                             "or control characters")
        return value


class SparkplugAdapter(PushAdapter):
    """Births, data and deaths of Sparkplug B edge nodes and their devices."""

    kind = "sparkplug"
    iot_class = "local_push"
    config_model = SparkplugConfig
    topic_filters: ClassVar[tuple[str, ...]] = (protocol.TOPIC_FILTER,)
    addressed_by = "external_id"

    def __init__(self, config: Mapping[str, Any] | BaseModel | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config)
        if not isinstance(self.config, SparkplugConfig):  # another model: re-validate it
            self.config = SparkplugConfig.model_validate(self.config.model_dump())
        settings: SparkplugConfig = self.config
        self._clock = clock
        self.decoder = protocol.SessionDecoder(settings.metric_map,
                                               rebirth_interval_s=settings.rebirth_interval_s)
        self.decoder.on_reading = self._reading
        self._watchers: dict[tuple[str, str], list[Callable[[float], None]]] = {}

    # ------------------------------------------------------------------ decoding
    def decode(self, topic: str, payload: bytes) -> Sequence[Reading | StatusUpdate]:
        """All or nothing: the readings, or a DecodeError for the first problem found."""
        items, errors = self.decode_partial(topic, payload)
        raise_first(errors)
        return items

    def decode_partial(
        self, topic: str, payload: bytes
    ) -> tuple[Sequence[Reading | StatusUpdate], Sequence[DecodeError]]:
        return self.decoder.decode(topic, payload, utcnow(), self._clock())

    def decode_at(
        self, topic: str, payload: bytes, received_at: datetime
    ) -> tuple[Sequence[Reading | StatusUpdate], Sequence[DecodeError]]:
        """:meth:`decode_partial` with the receive time given (replays, tests)."""
        return self.decoder.decode(topic, payload, received_at, self._clock())

    def take_outgoing(self) -> list[tuple[str, bytes]]:
        """The messages decoding asked to publish (Rebirth NCMDs), oldest first; QoS 0."""
        out, self.decoder.outgoing = self.decoder.outgoing, []
        return out

    # ------------------------------------------------------------------ host application
    def host_state(self, online: bool, ms: int) -> tuple[str, bytes] | None:
        """Our STATE message (publish retained at QoS 1; the offline one is the will), or
        None when no ``host_id`` is configured."""
        host = self.config.host_id
        if not host:
            return None
        return f"{protocol.NAMESPACE}/STATE/{host}", protocol.state_payload(online, ms)

    # ------------------------------------------------------------------ commands
    def command(self, external_id: str, name: str, args: Mapping[str, Any]) -> tuple[str, bytes, str, float]:
        """The DCMD (NCMD for a node's own metrics) that carries command ``name``:
        ``(topic, payload, catalogue metric written, value)``. ValueError when the command has
        no Sparkplug mapping or the external id is not ``group/edge[/device]``."""
        mapping = COMMAND_METRICS.get(name)
        if mapping is None:
            raise ValueError(f"command {name!r} has no Sparkplug metric write (mapped commands: "
                             f"{', '.join(sorted(COMMAND_METRICS))})")
        arg, metric = mapping
        value = args[arg]
        parts = external_id.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"external_id {external_id!r} is not group/edge node[/device]")
        spb_name, alias, datatype = self.decoder.sparkplug_name(external_id, metric)
        payload = protocol.command_payload(spb_name, alias, datatype, value)
        if len(parts) == 3:
            topic = f"{protocol.NAMESPACE}/{parts[0]}/DCMD/{parts[1]}/{parts[2]}"
        else:
            topic = f"{protocol.NAMESPACE}/{parts[0]}/NCMD/{parts[1]}"
        return topic, payload, metric, float(value)

    def watch(self, external_id: str, metric: str, fn: Callable[[float], None]) -> Callable[[], None]:
        """Call ``fn(value)`` for each reading of ``metric`` from ``external_id`` decoded from
        now on; returns the function that stops it."""
        key = (external_id.lower(), metric)
        self._watchers.setdefault(key, []).append(fn)

        def unwatch() -> None:
            fns = self._watchers.get(key)
            if fns is not None and fn in fns:
                fns.remove(fn)
                if not fns:
                    del self._watchers[key]

        return unwatch

    def _reading(self, external_id: str, metric: str, value: float) -> None:
        if self._watchers:
            for fn in list(self._watchers.get((external_id.lower(), metric), ())):
                fn(value)
