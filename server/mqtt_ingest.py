"""MQTT messages → push adapters' decoders → the ingest pipeline.

The handler runs in the session's message loop. It never acknowledges a message itself:
the ingest writer does, through ``on_commit``, once the message's readings and dead
letters are committed. Retained status messages are last-known state, not news: they
update the status but are marked ``retained`` so rules do not raise on a replay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import aiomqtt
from paho.mqtt.client import topic_matches_sub

from adapters.sdk import DecodeError, PushAdapter, StatusUpdate
from server.ingest import Ingest
from server.metrics import Registry
from server.mqtt import MqttLink

logger = logging.getLogger(__name__)

#: Devices answer commands here (CONTRACT): ``ioc/v1/{device}/commands/{id}/result``.
COMMAND_RESULT_FILTER = "ioc/v1/+/commands/+/result"
_EARLY_RESULTS_MAX = 10_000


class MqttIngest:
    def __init__(self, adapters: Mapping[str, PushAdapter], ingest: Ingest,
                 metrics: Registry) -> None:
        self.adapters = dict(adapters)
        self.ingest = ingest
        self.metrics = metrics
        self.link: MqttLink | None = None
        self._routes: list[tuple[str, str, PushAdapter]] = [
            (flt, kind, a) for kind, a in self.adapters.items() for flt in a.topic_filters
        ]
        # Counter children looked up once per adapter, not once per message.
        self._counted = {kind: metrics.mqtt_messages.labels(kind) for kind in self.adapters}
        # Command results go to the command service, which starts after the session: what
        # a persistent session delivers before that waits here (bounded) to be replayed.
        self._command_results: Callable[[str, bytes], None] | None = None
        self._early_results: list[tuple[str, bytes]] = []

    def attach_command_results(self, consumer: Callable[[str, bytes], None] | None) -> None:
        """Hand device answers to ``consumer(topic, payload)``, first those that came early."""
        self._command_results = consumer
        early, self._early_results = self._early_results, []
        if consumer is not None:
            for topic, payload in early:
                consumer(topic, payload)

    @property
    def subscriptions(self) -> list[str]:
        return sorted({flt for flt, _, _ in self._routes} | {COMMAND_RESULT_FILTER})

    def route(self, topic: str) -> tuple[str, PushAdapter] | None:
        for flt, kind, adapter in self._routes:
            if topic_matches_sub(flt, topic):
                return kind, adapter
        return None

    async def handle(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else (
            str(message.payload).encode() if message.payload is not None else b"")
        link = self.link

        def ack() -> None:
            if link is not None:
                link.ack(message)

        if topic.endswith("/result") and topic_matches_sub(COMMAND_RESULT_FILTER, topic):
            if self._command_results is not None:
                self._command_results(topic, payload)
            elif len(self._early_results) < _EARLY_RESULTS_MAX:
                self._early_results.append((topic, payload))
            ack()
            return
        routed = self.route(topic)
        if routed is None:
            await self.ingest.dead_letter(source="mqtt", topic=topic, raw=payload, on_commit=ack,
                                          reason=f"no adapter handles topic {topic!r}")
            return
        kind, adapter = routed
        self._counted[kind].inc()
        try:
            items, errors = adapter.decode_partial(topic, payload)
        except DecodeError as err:  # an adapter that raises instead of reporting
            items, errors = (), (err,)
        except Exception as err:  # a buggy decoder must not stop the session
            logger.exception("adapter %s failed on topic %s", kind, topic)
            items, errors = (), (DecodeError(f"adapter {kind} failed: {err}"),)
        if message.retain:
            items = [StatusUpdate(i.device_id, i.online, i.ts, True)
                     if isinstance(i, StatusUpdate) else i for i in items]
        await self.ingest.submit(
            items, errors=errors, source=f"mqtt:{kind}", raw=payload, topic=topic,
            on_commit=ack, by_external_id=adapter.addressed_by == "external_id",
        )
