"""The server's one MQTT session (aiomqtt), with its one retry policy.

QoS 1, a persistent session (``clean_session=False``) under a stable client id, so the
broker keeps what arrives while the server is down. Acknowledgements are manual: a
message is PUBACKed only when its owner calls :meth:`MqttLink.ack`, which the ingest
pipeline does after the message's readings are committed. A crash before that means the
broker redelivers; storage is idempotent, so the redelivery is harmless.

paho (under aiomqtt 2.5) has ``manual_ack_set``/``ack`` but aiomqtt does not expose them,
so we reach its paho client once, here, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from urllib.parse import unquote, urlsplit

import aiomqtt

logger = logging.getLogger(__name__)

MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]


def parse_mqtt_url(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"IOC_MQTT_URL must start with mqtt://, got {url!r}")
    return {
        "hostname": parts.hostname or "127.0.0.1",
        "port": parts.port or 1883,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }


class MqttLink:
    """Owns the connection: connect, subscribe, dispatch, reconnect with capped backoff."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        subscriptions: Sequence[str] = (),
        on_message: MessageHandler | None = None,
        on_connected: Callable[[bool], None] | None = None,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._params = parse_mqtt_url(url)
        self.client_id = client_id
        self.subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._on_connected = on_connected
        self._max_backoff = max_backoff_s
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()
        self.connects = 0

    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt.session")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                async with aiomqtt.Client(
                    **self._params,
                    identifier=self.client_id,
                    clean_session=False,
                    keepalive=30,
                    timeout=10,
                    max_inflight_messages=1000,
                ) as client:
                    # Before any message can arrive: PUBACK only after commit.
                    client._client.manual_ack_set(True)
                    self._client = client
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    attempt = 0
                    self.connects += 1
                    self._set_connected(True)
                    logger.info("MQTT connected to %s:%s as %s", self._params["hostname"],
                                self._params["port"], self.client_id)
                    async for message in client.messages:
                        if self._on_message is not None:
                            await self._on_message(message)
                        else:
                            self.ack(message)
            except aiomqtt.MqttError as err:
                was = self.is_connected
                self._set_connected(False)
                self._client = None
                delay = random.uniform(0, min(self._max_backoff, 0.5 * 2 ** min(attempt, 8)))
                attempt += 1
                if was or attempt == 1:
                    logger.warning("MQTT link lost (%s); reconnecting", err)
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self._set_connected(False)
                self._client = None
                raise

    def _set_connected(self, up: bool) -> None:
        if up:
            self.connected.set()
        else:
            self.connected.clear()
        if self._on_connected:
            self._on_connected(up)

    def ack(self, message: aiomqtt.Message) -> None:
        """PUBACK ``message`` (QoS 1); a no-op for QoS 0 or when the session is gone."""
        client = self._client
        if client is not None and message.qos > 0:
            client._client.ack(message.mid, message.qos)

    async def publish(self, topic: str, payload: bytes | str, *, qos: int = 1,
                      retain: bool = False) -> None:
        client = self._client
        if client is None:
            raise ConnectionError("the MQTT broker is not connected")
        await client.publish(topic, payload, qos=qos, retain=retain)
