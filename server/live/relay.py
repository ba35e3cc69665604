"""Hub envelopes between server processes over the MQTT broker they already share
(``hub.relay = true``): the scale-out transport of :meth:`Hub.apply_remote`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.live.hub import Hub

logger = logging.getLogger(__name__)

RELAY_TOPIC = "ioc/internal/v1/hub"
RELAY_BACKLOG = 1_000  # envelopes waiting for the broker before the oldest are dropped


class BrokerRelay:
    """Hub envelopes between server processes over the MQTT broker they already share.

    Each process publishes its envelopes to ``ioc/internal/v1/hub/{node}`` at QoS 0 and
    subscribes to ``ioc/internal/v1/hub/+`` on a connection of its own (client id
    ``{mqtt_client_id}-hub``). QoS 0 on purpose: a live update is worth nothing late, and
    the broker does not queue QoS 0 messages for a process that is down, so a restarted
    process never replays stale states (its clients take a fresh snapshot from the
    database). When the broker is unreachable envelopes are dropped (counted in the log);
    the clients of other processes catch up at their next snapshot.
    """

    def __init__(self, hub: Hub, mqtt_url: str, client_id: str) -> None:
        from server.mqtt.link import MqttLink

        self.hub = hub
        self.topic = f"{RELAY_TOPIC}/{hub.node}"
        self.link = MqttLink(mqtt_url, f"{client_id}-hub", subscriptions=[f"{RELAY_TOPIC}/+"],
                             on_messages=self._received)
        self._out: deque[bytes] = deque(maxlen=RELAY_BACKLOG)
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.dropped = 0

    async def start(self) -> None:
        await self.link.start()
        self.hub.relays.append(self.offer)
        self._task = asyncio.create_task(self._sender(), name="hub.relay.sender")

    async def stop(self) -> None:
        if self.offer in self.hub.relays:
            self.hub.relays.remove(self.offer)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.link.stop()

    def offer(self, envelope: bytes) -> None:
        if len(self._out) == self._out.maxlen:
            self.dropped += 1
        self._out.append(envelope)
        self._ready.set()

    async def _sender(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._out:
                envelope = self._out.popleft()
                try:
                    await self.link.publish(self.topic, envelope, qos=0)
                except ConnectionError:
                    self.dropped += 1 + len(self._out)
                    self._out.clear()
                    logger.warning("hub relay: broker not connected; %d update envelope(s) "
                                   "dropped so far", self.dropped)

    async def _received(self, messages) -> None:
        for message in messages:
            try:
                self.hub.apply_remote(message.payload)
            except Exception:  # a peer's bad envelope must not stop the others
                logger.exception("hub relay: bad envelope on %s", message.topic.value)
        self.link.ack_all(messages)
