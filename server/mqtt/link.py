"""The server's one MQTT session, with its one retry policy.

QoS 1, a persistent session (``clean_session=False``) under a stable client id, so the
broker keeps what arrives while the server is down. Acknowledgements are manual: a
message is PUBACKed only when its owner calls :meth:`MqttLink.ack` (or
:meth:`MqttLink.ack_all`), which the ingest pipeline does after the message's readings are
committed. A crash before that means the broker redelivers; storage is idempotent, so the
redelivery is harmless.

Why this module speaks MQTT 3.1.1 itself instead of going through aiomqtt
--------------------------------------------------------------------------
The stack named aiomqtt, and the first version used it (with paho's ``manual_ack_set``
reached through ``client._client``). At 10,000 messages/s it was the server's largest
cost. Measured by draining 100,000 queued QoS 1 messages of a persistent session, no
database, CPU per message (``bench/ingest.py --clients``, 2-core machine):

==========================================================  ============
aiomqtt 2.5 (paho underneath), manual PUBACK per message     83 µs
paho-mqtt 2.2 directly, its own loop, manual PUBACK           18.6 µs
gmqtt 0.8 (MQTT 5 so the PUBACK can wait for the handler)     21.9 µs
a minimal asyncio reader: frames parsed from large reads,      1.4 µs
one write for all PUBACKs of a read
==========================================================  ============

aiomqtt and paho wake once per message (a future, a queue put, a callback under a lock)
and send each 4-byte PUBACK with its own ``send()``; py-spy put two thirds of the server's
CPU at 10,000 msg/s in paho, aiomqtt and the event loop. What the server needs of MQTT is
small and fixed: one connection, CONNECT with a persistent session, SUBSCRIBE at QoS 1,
PUBLISH in both directions at QoS 0/1, PUBACK, PINGREQ. So this module implements exactly
that on an :class:`asyncio.Protocol`:

* frames are parsed from whatever ``data_received`` hands over (up to 256 KiB), and the
  messages of all reads since the handler last ran go to it as one list, so per-message
  work after the parser is a loop iteration, not a task wake-up;
* PUBACKs are queued and written once per event-loop iteration: the ~100 PUBACKs of one
  committed batch cost one ``send()``;
* when the handler falls behind (ingest backpressure) reading is paused, so TCP and the
  broker's in-flight window push back on the devices instead of memory growing.

Everything else keeps the aiomqtt-era behaviour: capped, jittered reconnects; the same
``MqttLink`` interface; ``publish`` raising :class:`ConnectionError` (our :class:`MqttError`
is also an ``aiomqtt.MqttError`` for code written against aiomqtt) and waiting for the
broker's PUBACK at QoS 1; unacknowledged outgoing QoS 1 messages sent again (DUP) after a
reconnect, as MQTT 3.1.1 §4.4 asks of a persistent session. Acknowledgements are tied to
the connection a message came on: after a reconnect the broker redelivers what was not
acknowledged, and a stale acknowledgement is dropped rather than sent on the new
connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress

from server.mqtt.session import BatchHandler, Message, MessageHandler, Session
from server.mqtt.topics import Topic, TopicRouter, parse_mqtt_url, topic_matches
from server.mqtt.wire import CONNACK_ERRORS, U16, MqttError, frame, string

__all__ = ["CONNECT_TIMEOUT_S", "Message", "MqttError", "MqttLink", "Topic", "TopicRouter",
           "parse_mqtt_url", "topic_matches"]

logger = logging.getLogger(__name__)

#: The TLS context given for a broker URL (mqtts://), for the links of the same process
#: that are made without one (the websocket relay, the ingest share's helpers).
_TLS: dict[str, ssl.SSLContext] = {}

KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 10.0
# Messages parsed but not yet handed to the handler: reading pauses above the high mark
# (the handler is behind, e.g. ingest backpressure) and resumes below the low one. The
# broker's in-flight window (max_inflight_messages) bounds QoS 1 messages anyway.
INBOX_HIGH = 20_000
INBOX_LOW = 5_000
# At most this many messages per handler call (a batch of about 50,000 readings).
HANDLER_BATCH_MAX = 10_000


class MqttLink:
    """Owns the connection: connect, subscribe, dispatch, reconnect with capped backoff.

    Give ``on_messages`` (a list per call: the fast path) or ``on_message`` (one message
    per call). Without either, every message is acknowledged on arrival.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        subscriptions: Sequence[str] = (),
        on_message: MessageHandler | None = None,
        on_messages: BatchHandler | None = None,
        on_connected: Callable[[bool], None] | None = None,
        max_backoff_s: float = 30.0,
        keepalive_s: int = KEEPALIVE_S,
        will: tuple[str, bytes] | None = None,
        reconnect: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._params = parse_mqtt_url(url)
        self._url = url
        if tls is not None:
            _TLS[url] = tls
        self._tls = tls
        self.client_id = client_id
        # (topic, payload) the broker publishes, retained at QoS 1, when this connection
        # ends without a DISCONNECT (the process died or the network went away).
        self._will = will
        # False: one connection only (a borrowed session must not fight its owner for it).
        self._reconnect = reconnect
        self.subscriptions = list(dict.fromkeys(subscriptions))
        self._on_message = on_message
        self._on_messages = on_messages
        self._on_connected = on_connected
        self._max_backoff = max_backoff_s
        self._keepalive = keepalive_s
        self._session: Session | None = None
        self._task: asyncio.Task | None = None
        self._inbox: list[Message] = []
        self._inbox_ready = asyncio.Event()
        self._next_mid = 0
        self._outgoing: dict[int, tuple[bytes, asyncio.Future[None]]] = {}
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

    # -- the session loop
    async def _run(self) -> None:
        attempt = 0
        while True:
            session = Session(self)
            up = False
            try:
                await self._connect(session)
                up, attempt = True, 0
                async with asyncio.TaskGroup() as tg:
                    dispatch = tg.create_task(self._dispatch(session), name="mqtt.dispatch")
                    pinger = tg.create_task(self._keep_alive(session), name="mqtt.keepalive")
                    err = await session.closed
                    dispatch.cancel()
                    pinger.cancel()
                raise err
            except (MqttError, OSError, TimeoutError) as err:
                self._lost(session)
                if not self._reconnect:
                    logger.info("MQTT session %s ended (%s); not reconnecting", self.client_id, err)
                    return
                delay = random.uniform(0, min(self._max_backoff, 0.5 * 2 ** min(attempt, 8)))
                attempt += 1
                if up or attempt == 1:
                    logger.warning("MQTT link lost (%s); reconnecting", err)
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                if session.transport is not None:
                    with suppress(MqttError):
                        session.write(b"\xe0\x00")  # DISCONNECT: the session itself stays
                    session.transport.close()
                self._lost(session)
                raise

    def _lost(self, session: Session) -> None:
        if session.transport is not None:
            session.transport.abort()
        self._session_lost(session)

    async def _connect(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        p = self._params
        self._session = session
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            tls = self._tls or _TLS.get(self._url)
            if tls is None and self._url.startswith("mqtts://"):
                tls = ssl.create_default_context()  # the system's CAs
            await loop.create_connection(lambda: session, p["hostname"], p["port"], ssl=tls)
            flags = 0  # clean_session=0: the broker keeps our subscriptions and queue
            payload = string(self.client_id)
            if self._will is not None:
                flags |= 0x04 | 0x08 | 0x20  # will, will QoS 1, will retain
                payload += string(self._will[0]) + string(self._will[1])
            if p["username"] is not None:
                flags |= 0x80
                payload += string(p["username"])
                if p["password"] is not None:
                    flags |= 0x40
                    payload += string(p["password"])
            var = string("MQTT") + bytes((4, flags)) + U16.pack(self._keepalive)
            session.write(frame(0x10, var + payload))
            present, code = await session.connack
            if code:
                raise MqttError(f"the broker refused the connection: "
                                f"{CONNACK_ERRORS.get(code, f'code {code}')}")
            for topic in self.subscriptions:
                await self._subscribe_on(session, topic)
        # Unacknowledged QoS 1 publishes of the last connection go again, marked DUP.
        for packet, _ in self._outgoing.values():
            session.write(bytes((packet[0] | 0x08,)) + packet[1:])
        self.connects += 1
        self._set_connected(True)
        logger.info("MQTT connected to %s:%s as %s (session %s)", p["hostname"], p["port"],
                    self.client_id, "resumed" if present else "new")

    def _mid(self) -> int:
        for _ in range(65535):
            self._next_mid = self._next_mid % 65535 + 1
            if self._next_mid not in self._outgoing:
                return self._next_mid
        raise MqttError("65,535 QoS 1 messages are waiting for the broker")

    async def _subscribe_on(self, session: Session, topic: str) -> None:
        mid = self._mid()
        fut = session.loop.create_future()
        session.waiting[mid] = fut
        session.write(frame(0x82, U16.pack(mid) + string(topic) + b"\x01"))
        codes = await fut
        if codes[:1] == b"\x80":
            raise MqttError(f"the broker refused the subscription to {topic!r} "
                            "(check its ACL for this client)")

    async def subscribe(self, topic: str) -> None:
        """Subscribe now (when connected) and on every reconnect."""
        if topic in self.subscriptions:
            return
        self.subscriptions.append(topic)
        if self._session is not None and self.is_connected:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._subscribe_on(self._session, topic)

    async def _keep_alive(self, session: Session) -> None:
        """PINGREQ when we have been quiet for half the keepalive; a broker silent for a
        whole keepalive after that (while we are reading) is gone."""
        half = self._keepalive / 2
        while True:
            await asyncio.sleep(half / 2)
            now = session.loop.time()
            if now - session.last_sent >= half:
                session.write(b"\xc0\x00")
            if not session.paused and now - session.last_heard > self._keepalive * 1.5:
                logger.warning("nothing heard from the MQTT broker for %.0f s; reconnecting",
                               now - session.last_heard)
                session.abort()
                return

    def _session_lost(self, session: Session) -> None:
        if self._session is session:
            self._session = None
            self._inbox.clear()  # not acknowledged: the broker delivers them again
        self._set_connected(False)

    def _inbox_filled(self) -> None:
        self._inbox_ready.set()
        if len(self._inbox) > INBOX_HIGH and self._session is not None:
            self._session.pause()

    async def _dispatch(self, session: Session) -> None:
        while True:
            while not self._inbox:
                self._inbox_ready.clear()
                await self._inbox_ready.wait()
            inbox = self._inbox
            if len(inbox) <= HANDLER_BATCH_MAX:
                batch, self._inbox = inbox, []
            else:
                batch = inbox[:HANDLER_BATCH_MAX]
                del inbox[:HANDLER_BATCH_MAX]
            if session.paused and len(self._inbox) < INBOX_LOW:
                session.resume()
            try:
                if self._on_messages is not None:
                    await self._on_messages(batch)
                elif self._on_message is not None:
                    for message in batch:
                        await self._on_message(message)
                else:
                    self.ack_all(batch)
            except Exception:  # supervision boundary: a handler bug must not end the session
                logger.exception("MQTT message handler failed; reconnecting so the broker "
                                 "delivers the unacknowledged messages again")
                session.abort()
                return

    def _set_connected(self, up: bool) -> None:
        if up == self.is_connected:
            return
        if up:
            self.connected.set()
        else:
            self.connected.clear()
        if self._on_connected:
            self._on_connected(up)

    # -- acknowledgements
    def ack(self, message: Message) -> None:
        """PUBACK ``message`` (QoS 1); a no-op for QoS 0 or when its connection is gone."""
        session = message._session
        if message.qos and session is not None and session is self._session:
            session.queue_ack(message.mid)

    def ack_all(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self.ack(message)

    # -- publishing
    async def publish(self, topic: str, payload: bytes | str, *, qos: int = 1,
                      retain: bool = False) -> None:
        """Publish; at QoS 1 return once the broker has acknowledged it.

        Raises :class:`ConnectionError` (:class:`MqttError`) when the broker is not
        connected. A QoS 1 message whose connection drops before its PUBACK is sent again
        after the reconnect and this call keeps waiting.
        """
        if qos not in (0, 1):
            raise ValueError("the server publishes at QoS 0 or 1")
        session = self._session
        if session is None or not self.is_connected:
            raise MqttError("the MQTT broker is not connected")
        body = payload.encode() if isinstance(payload, str) else bytes(payload)
        first = 0x30 | (qos << 1) | (1 if retain else 0)
        if qos == 0:
            session.write(frame(first, string(topic) + body))
            return
        mid = self._mid()
        packet = frame(first, string(topic) + U16.pack(mid) + body)
        fut = session.loop.create_future()
        self._outgoing[mid] = (packet, fut)
        try:
            await session.writable.wait()
            session.write(packet)
            await fut
        finally:
            self._outgoing.pop(mid, None)

    def _published(self, mid: int) -> None:
        entry = self._outgoing.pop(mid, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(None)
