"""One TCP connection to the broker (an :class:`asyncio.Protocol`): the frame parser,
PUBACKs written once per loop iteration, replies to the link's requests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from server.mqtt.topics import Topic
from server.mqtt.wire import PUBACK, U16, MqttError

if TYPE_CHECKING:
    from server.mqtt.link import MqttLink

logger = logging.getLogger(__name__)


class Message:
    """One received PUBLISH (the attributes aiomqtt's ``Message`` has, plus ``dup``)."""

    __slots__ = ("_session", "dup", "mid", "payload", "qos", "retain", "topic")

    def __init__(self, topic: Topic, payload: bytes, qos: int, retain: bool, mid: int,
                 dup: bool = False, session: Session | None = None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.mid = mid
        self.dup = dup
        self._session = session

    def __repr__(self) -> str:
        return f"<Message {self.topic} qos={self.qos} mid={self.mid} {len(self.payload)} B>"



MessageHandler = Callable[[Message], Awaitable[None]]
BatchHandler = Callable[[list[Message]], Awaitable[None]]



class Session(asyncio.Protocol):
    """One TCP connection to the broker: frame parser, acknowledgements, replies."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = self.loop.create_future()
        self.connack: asyncio.Future[tuple[bool, int]] = self.loop.create_future()
        self.waiting: dict[int, asyncio.Future] = {}  # SUBACK by packet id
        self.acks: list[bytes] = []
        self.flush_scheduled = False
        self.paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.last_sent = self.last_heard = self.loop.time()

    # -- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.writable.set()
        err = MqttError(f"connection to the broker lost: {exc}" if exc
                        else "the broker closed the connection")
        for fut in (self.connack, *self.waiting.values()):
            if not fut.done():
                fut.set_exception(err)
        self.waiting.clear()
        if not self.closed.done():
            self.closed.set_result(err)
        self.link._session_lost(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.loop.time()
        buf = self.buf
        buf += data
        end = len(buf)
        pos = 0
        inbox = self.link._inbox
        n0 = len(inbox)
        while pos + 2 <= end:
            first = buf[pos]
            # Remaining length: 1-4 bytes of 7 bits, least significant first.
            i, length, shift = pos + 1, 0, 0
            while i < end:
                b = buf[i]
                i += 1
                length |= (b & 0x7F) << shift
                if not b & 0x80:
                    break
                shift += 7
                if shift > 21:
                    return self._protocol_error("malformed remaining length")
            else:
                break  # the header itself is incomplete
            if i + length > end:
                break
            kind = first >> 4
            if kind == 3:  # PUBLISH
                tl = (buf[i] << 8) | buf[i + 1]
                start = i + 2 + tl
                topic = Topic(buf[i + 2:start].decode("utf-8", "replace"))
                qos = (first >> 1) & 3
                if qos:
                    if qos == 2:
                        return self._protocol_error("QoS 2 delivery on a QoS 1 subscription")
                    mid = (buf[start] << 8) | buf[start + 1]
                    start += 2
                else:
                    mid = 0
                inbox.append(Message(topic, bytes(buf[start:i + length]), qos, bool(first & 1),
                                     mid, bool(first & 8), self))
            else:
                self._control(kind, first, bytes(buf[i:i + length]))
                if self.transport is None:
                    return
            pos = i + length
        if pos:
            del buf[:pos]
        if len(inbox) > n0:
            self.link._inbox_filled()

    # -- control packets
    def _control(self, kind: int, first: int, body: bytes) -> None:
        if kind == 2:  # CONNACK
            if len(body) == 2 and not self.connack.done():
                self.connack.set_result((bool(body[0] & 1), body[1]))
        elif kind == 4:  # PUBACK of one of our QoS 1 publishes
            self.link._published(U16.unpack_from(body)[0])
        elif kind == 9:  # SUBACK
            fut = self.waiting.pop(U16.unpack_from(body)[0], None)
            if fut is not None and not fut.done():
                fut.set_result(body[2:])
        elif kind in (13, 11):  # PINGRESP, UNSUBACK
            pass
        else:
            self._protocol_error(f"unexpected packet type {kind}")

    def _protocol_error(self, why: str) -> None:
        logger.warning("MQTT protocol error from the broker (%s); reconnecting", why)
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- sending
    def write(self, data: bytes) -> None:
        if self.transport is None:
            raise MqttError("the MQTT broker is not connected")
        self.transport.write(data)
        self.last_sent = self.loop.time()

    def queue_ack(self, mid: int) -> None:
        self.acks.append(PUBACK.pack(0x40, 2, mid))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self.flush_scheduled = False
        acks, self.acks = self.acks, []
        if acks and self.transport is not None:
            self.write(b"".join(acks))

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.last_heard = self.loop.time()  # silence while paused was ours
            self.transport.resume_reading()
