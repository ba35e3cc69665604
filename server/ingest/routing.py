"""MQTT messages → push adapters' decoders → the ingest pipeline.

The handler runs in the session's dispatch loop. It never acknowledges a message itself:
the ingest writer does, through ``on_commit``, once the message's readings and dead
letters are committed. Retained status messages are last-known state, not news: they
update the status but are marked ``retained`` so rules do not raise on a replay.

:meth:`MqttIngest.handle_batch` is the fast path: the session hands over every message
parsed since the last call, and they are routed, decoded and validated in one loop and
queued as one ingest envelope, acknowledged together after their commit. Per message that
leaves the decoder's own work and a few dictionary lookups.

Some conventions talk back. A Sparkplug B host asks an edge node to rebirth when it missed
a message: adapters with ``take_outgoing()`` queue such messages while decoding, and they
are published (QoS 0) after each batch. An adapter with ``host_state(online, ms)`` gives
the server's presence as a host application: the offline message is the session's will
(:attr:`MqttIngest.will`) and the online one is published, retained, on every connect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from adapters.sdk import DecodeError, PushAdapter, StatusUpdate
from server.ingest.writer import Inbound, Ingest
from server.mqtt.link import Message, MqttLink, TopicRouter, topic_matches
from server.runtime.metrics import Registry

logger = logging.getLogger(__name__)

#: Devices answer commands here (CONTRACT): ``ioc/v1/{device}/commands/{id}/result``.
COMMAND_RESULT_FILTER = "ioc/v1/+/commands/+/result"
_EARLY_RESULTS_MAX = 10_000


class MqttIngest:
    def __init__(self, adapters: Mapping[str, PushAdapter], ingest: Ingest,
                 metrics: Registry, shared_group: str | None = None) -> None:
        self.adapters = dict(adapters)
        self.shared_group = shared_group
        self.ingest = ingest
        self.metrics = metrics
        self.link: MqttLink | None = None
        self._routes: list[tuple[str, str, PushAdapter]] = [
            (flt, kind, a) for kind, a in self.adapters.items() for flt in a.topic_filters
        ]
        # One regular expression for all filters: routing is one match per message.
        self._router = TopicRouter([flt for flt, _, _ in self._routes])
        # Counter children looked up once per adapter, not once per message.
        self._counted = {kind: metrics.mqtt_messages.labels(kind) for kind in self.adapters}
        # Command results go to the command service, which starts after the session: what
        # a persistent session delivers before that waits here (bounded) to be replayed.
        self._command_results: Callable[[str, bytes], None] | None = None
        self._early_results: list[tuple[str, bytes]] = []
        # Adapters that publish while decoding (Sparkplug rebirth requests).
        self._talkers = [a for a in self.adapters.values() if callable(getattr(a, "take_outgoing", None))]
        # The host application presence (Sparkplug STATE): one timestamp ties birth and will.
        self._state_ms = int(time.time() * 1000)
        self._host = next((a for a in self.adapters.values()
                           if callable(getattr(a, "host_state", None))
                           and a.host_state(False, self._state_ms) is not None), None)
        self._state_task: asyncio.Task | None = None

    @property
    def will(self) -> tuple[str, bytes] | None:
        """The session's last will: the host application's offline STATE, if an adapter has one."""
        return None if self._host is None else self._host.host_state(False, self._state_ms)

    def link_up(self, up: bool) -> None:
        """On each connect, publish the online STATE (retained, QoS 1) the will undoes."""
        if not up or self._host is None or self.link is None:
            return
        topic, payload = self._host.host_state(True, self._state_ms)
        link = self.link

        async def announce() -> None:
            try:
                await link.publish(topic, payload, qos=1, retain=True)
            except ConnectionError as err:  # lost again at once: the next connect announces
                logger.info("host STATE not published: %s", err)

        self._state_task = asyncio.get_running_loop().create_task(announce(), name="mqtt.state")

    async def farewell(self, timeout_s: float = 2.0) -> None:
        """Before a clean disconnect (which sends no will): the offline STATE, retained."""
        link = self.link
        if self._host is None or link is None or not link.is_connected:
            return
        topic, payload = self._host.host_state(False, self._state_ms)
        try:
            async with asyncio.timeout(timeout_s):
                await link.publish(topic, payload, qos=1, retain=True)
        except (ConnectionError, TimeoutError) as err:
            logger.info("offline STATE not published: %s", err)

    async def _publish_outgoing(self) -> None:
        link = self.link
        for adapter in self._talkers:
            out = adapter.take_outgoing()
            if link is None:
                continue
            for topic, payload in out:
                try:
                    await link.publish(topic, payload, qos=0)
                except ConnectionError as err:  # the adapter asks again on the next sign
                    logger.info("not published to %s: %s", topic, err)

    def attach_command_results(self, consumer: Callable[[str, bytes], None] | None) -> None:
        """Hand device answers to ``consumer(topic, payload)``, first those that came early."""
        self._command_results = consumer
        early, self._early_results = self._early_results, []
        if consumer is not None:
            for topic, payload in early:
                consumer(topic, payload)

    @property
    def subscriptions(self) -> list[str]:
        """Devices' topics, through ``$share/<group>/`` when processes share ingest (each
        message then goes to one of them); command results always whole, because the
        process that sent a command is the one waiting for its answer."""
        prefix = f"$share/{self.shared_group}/" if self.shared_group else ""
        return sorted({prefix + flt for flt, _, _ in self._routes} | {COMMAND_RESULT_FILTER})

    def route(self, topic: str) -> tuple[str, PushAdapter] | None:
        i = self._router(topic)
        if i is None:
            return None
        _, kind, adapter = self._routes[i]
        return kind, adapter

    def _command_result(self, topic: str, payload: bytes) -> bool:
        """Hand a device's answer to a command to the command service; True if it was one."""
        if not (topic.endswith("/result") and topic_matches(COMMAND_RESULT_FILTER, topic)):
            return False
        if self._command_results is not None:
            self._command_results(topic, payload)
        elif len(self._early_results) < _EARLY_RESULTS_MAX:
            self._early_results.append((topic, payload))
        return True

    def _inbound(self, topic: str, payload: bytes, retain: bool,
                 counts: dict[str, int]) -> Inbound:
        routed = self.route(topic)
        if routed is None:
            return Inbound((), (DecodeError(f"no adapter handles topic {topic!r}"),), "mqtt",
                           payload, topic)
        kind, adapter = routed
        counts[kind] = counts.get(kind, 0) + 1
        try:
            items, errors = adapter.decode_partial(topic, payload)
        except DecodeError as err:  # an adapter that raises instead of reporting
            items, errors = (), (err,)
        except Exception as err:  # a buggy decoder must not stop the session
            logger.exception("adapter %s failed on topic %s", kind, topic)
            items, errors = (), (DecodeError(f"adapter {kind} failed: {err}"),)
        if retain:
            items = [StatusUpdate(i.device_id, i.online, i.ts, True)
                     if isinstance(i, StatusUpdate) else i for i in items]
        return Inbound(items, errors, f"mqtt:{kind}", payload, topic,
                       adapter.addressed_by == "external_id")

    def _count(self, counts: dict[str, int]) -> None:
        for kind, n in counts.items():
            self._counted[kind].inc(n)

    async def handle_batch(self, messages: list[Message]) -> None:
        """Every message the session parsed since the last call, committed together."""
        inputs: list[Inbound] = []
        stored: list[Message] = []
        answered: list[Message] = []
        counts: dict[str, int] = {}
        for m in messages:
            topic, payload = m.topic, m.payload
            if self._command_result(topic, payload):
                answered.append(m)
                continue
            inputs.append(self._inbound(topic, payload, m.retain, counts))
            stored.append(m)
        self._count(counts)
        if self._talkers:
            await self._publish_outgoing()
        link = self.link
        if link is None:
            return
        if answered:
            link.ack_all(answered)
        if inputs:
            await self.ingest.submit_many(inputs, on_commit=lambda: link.ack_all(stored))

    async def handle(self, message: Message) -> None:
        """One message (the slow path, for callers that have one)."""
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes) else (
            str(message.payload).encode() if message.payload is not None else b"")
        link = self.link

        def ack() -> None:
            if link is not None:
                link.ack(message)

        if self._command_result(topic, payload):
            ack()
            return
        counts: dict[str, int] = {}
        inbound = self._inbound(topic, payload, message.retain, counts)
        self._count(counts)
        if self._talkers:
            await self._publish_outgoing()
        await self.ingest.submit_many([inbound], on_commit=ack)
