"""The server's own MQTT 3.1.1 session (server/mqtt/link.py): framing, acknowledgements,
backpressure, publishing, keepalive and refusals, against the real mosquitto."""

from __future__ import annotations

import asyncio
import random
import struct
import uuid

import aiomqtt
import pytest

from server.cli.embedded import EmbeddedMosquitto
from server.mqtt.link import MqttLink
from server.mqtt.session import Message, Session
from server.mqtt.topics import TopicRouter, parse_mqtt_url, topic_matches
from server.mqtt.wire import MqttError
from tests.helpers import wait_for


def _publish_packet(topic: str, payload: bytes, qos: int, mid: int = 0, retain: bool = False,
                    dup: bool = False) -> bytes:
    body = struct.pack("!H", len(topic.encode())) + topic.encode()
    if qos:
        body += struct.pack("!H", mid)
    body += payload
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            break
    return bytes((0x30 | (dup << 3) | (qos << 1) | retain,)) + bytes(length) + body


async def test_frames_split_anywhere_parse_the_same():
    """Remaining lengths of 1 to 3 bytes, QoS 0 and 1, retained and DUP flags, empty and
    2 MiB payloads, cut into random chunks down to single bytes."""
    link = MqttLink("mqtt://127.0.0.1:1", "parser-test")
    rnd = random.Random(3)
    sent = []
    for i, size in enumerate([0, 1, 127, 128, 16_383, 16_384, 2 * 1024 * 1024, 40]):
        payload = bytes(rnd.getrandbits(8) for _ in range(min(size, 64))) * (size // 64 or 1)
        payload = payload[:size]
        qos = i % 2
        sent.append((f"ioc/v1/DEV-{i}/telemetry", payload, qos, i + 1 if qos else 0, i == 3, i == 5))
    stream = b"".join(_publish_packet(*s) for s in sent) + b"\xd0\x00"  # and a PINGRESP
    for chunking in ("bytes", "random", "whole"):
        session = Session(link)
        session.connection_made(_NullTransport())
        link._session = session
        link._inbox = []
        if chunking == "bytes":
            chunks = [stream[i:i + 1] for i in range(200)] + [stream[200:]]
        elif chunking == "random":
            cuts = sorted(rnd.sample(range(1, len(stream)), 300))
            chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        else:
            chunks = [stream]
        for chunk in chunks:
            session.data_received(chunk)
        got = [(m.topic, m.payload, m.qos, m.mid, m.retain, m.dup) for m in link._inbox]
        assert got == sent, chunking
        assert not session.buf
        assert all(isinstance(m, Message) and m.topic.value == m.topic for m in link._inbox)


class _NullTransport(asyncio.Transport):
    def write(self, data) -> None:
        pass

    def abort(self) -> None:
        pass


def test_router_agrees_with_the_mqtt_matching_rules():
    rnd = random.Random(5)
    levels = ["a", "b", "", "$SYS", "+", "#", "ioc"]
    words = ["a", "b", "", "$SYS", "ioc", "x"]
    for _ in range(5000):
        flt = [rnd.choice(levels) for _ in range(rnd.randint(1, 4))]
        if "#" in flt[:-1]:
            continue
        topic = "/".join(rnd.choice(words) for _ in range(rnd.randint(1, 5)))
        assert (TopicRouter(["/".join(flt)])(topic) == 0) == topic_matches("/".join(flt), topic)
    router = TopicRouter(["ioc/v1/+/telemetry", "ioc/v1/+/status", "application/#"])
    assert router("ioc/v1/SL-1/status") == 1
    assert router("application/1/device/ab/event/up") == 2
    assert router("ioc/v1/SL-1/commands") is None


async def _collect(url: str, topic: str, got: list, ready: asyncio.Event):
    async with aiomqtt.Client(**parse_mqtt_url(url), identifier="sub-" + uuid.uuid4().hex[:6]) as c:
        await c.subscribe(topic, qos=1)
        ready.set()
        async for m in c.messages:
            got.append((m.topic.value, m.payload, m.qos))


async def test_publish_waits_for_the_broker_and_reaches_subscribers(mosquitto):
    prefix = f"t/{uuid.uuid4().hex[:8]}"
    got, ready = [], asyncio.Event()
    sub = asyncio.create_task(_collect(mosquitto.url, f"{prefix}/#", got, ready))
    link = MqttLink(mosquitto.url, "pub-" + uuid.uuid4().hex[:6])
    try:
        await asyncio.wait_for(ready.wait(), 10)
        with pytest.raises(ConnectionError):  # not connected yet: a clear error, no hang
            await link.publish(f"{prefix}/early", b"x")
        await link.start()
        await asyncio.wait_for(link.connected.wait(), 10)
        await asyncio.gather(*(link.publish(f"{prefix}/{i}", f"m{i}", qos=i % 2) for i in range(200)))
        assert not link._outgoing  # every QoS 1 publish was acknowledged before returning
        await wait_for(lambda: len(got) == 200)
        assert sorted(p for _, p, _ in got) == sorted(f"m{i}".encode() for i in range(200))
    finally:
        await link.stop()
        sub.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sub


async def test_unacknowledged_messages_come_back_acknowledged_ones_do_not(mosquitto):
    """The persistent session redelivers exactly what was not acknowledged, to the same
    client id, after the link stops (as after a crash before the commit)."""
    client_id = "ack-" + uuid.uuid4().hex[:6]
    prefix = f"t/{uuid.uuid4().hex[:8]}"
    batches: list[list[Message]] = []

    async def keep(batch):
        batches.append(batch)

    link = MqttLink(mosquitto.url, client_id, subscriptions=[f"{prefix}/#"], on_messages=keep)
    await link.start()
    await asyncio.wait_for(link.connected.wait(), 10)
    async with aiomqtt.Client(**parse_mqtt_url(mosquitto.url), identifier="p-" + client_id) as pub:
        for i in range(100):
            await pub.publish(f"{prefix}/{i}", str(i), qos=1)
    await wait_for(lambda: sum(map(len, batches)) == 100)
    messages = [m for b in batches for m in b]
    assert len(batches) < 100, "messages arrive in batches, not one call each"
    link.ack_all(m for m in messages if int(m.payload) % 2 == 0)
    await wait_for(lambda: not link._session.acks)  # the queued PUBACKs go out with the next turn
    await link.stop()

    again: list[Message] = []

    async def collect(batch):
        again.extend(batch)
        link2.ack_all(batch)

    link2 = MqttLink(mosquitto.url, client_id, subscriptions=[f"{prefix}/#"], on_messages=collect)
    await link2.start()
    try:
        await wait_for(lambda: len(again) >= 50)
        await asyncio.sleep(0.3)  # the point: time for a wrongly redelivered 51st to show
        assert sorted(int(m.payload) for m in again) == list(range(1, 100, 2))
        assert all(m.dup for m in again)
    finally:
        await link2.stop()
    # and acknowledged now: a third session gets nothing
    third: list[Message] = []

    async def more(batch):
        third.extend(batch)

    link3 = MqttLink(mosquitto.url, client_id, subscriptions=[f"{prefix}/#"], on_messages=more)
    await link3.start()
    await asyncio.wait_for(link3.connected.wait(), 10)
    await asyncio.sleep(0.5)  # the point: time for a wrongly kept message to arrive
    await link3.stop()
    assert third == []


async def test_a_slow_handler_pauses_reading_and_loses_nothing(mosquitto, monkeypatch):
    import server.mqtt.link as mqtt

    monkeypatch.setattr(mqtt, "INBOX_HIGH", 50)
    monkeypatch.setattr(mqtt, "INBOX_LOW", 10)
    monkeypatch.setattr(mqtt, "HANDLER_BATCH_MAX", 20)
    prefix = f"t/{uuid.uuid4().hex[:8]}"
    gate = asyncio.Event()
    seen: list[int] = []
    paused = []
    link: MqttLink

    async def slow(batch):
        paused.append(link._session.paused if link._session else None)
        await gate.wait()
        seen.extend(int(m.payload) for m in batch)
        link.ack_all(batch)

    link = MqttLink(mosquitto.url, "slow-" + uuid.uuid4().hex[:6], subscriptions=[f"{prefix}/#"],
                    on_messages=slow)
    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        async with aiomqtt.Client(**parse_mqtt_url(mosquitto.url), identifier="p-" + prefix[-8:]) as pub:
            for i in range(500):
                await pub.publish(f"{prefix}/x", str(i), qos=1)
        await wait_for(lambda: link._session is not None and link._session.paused)
        gate.set()
        await wait_for(lambda: len(seen) == 500)
        assert sorted(seen) == list(range(500))
        assert not link._session.paused
        assert link.connects == 1
    finally:
        await link.stop()


async def test_keepalive_holds_an_idle_session(mosquitto):
    link = MqttLink(mosquitto.url, "idle-" + uuid.uuid4().hex[:6], keepalive_s=2)
    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        await asyncio.sleep(5)  # 2.5 keepalives without traffic but our PINGREQs
        assert link.is_connected and link.connects == 1
    finally:
        await link.stop()


async def test_refused_connection_says_why_and_keeps_retrying(tmp_path, caplog):
    broker = EmbeddedMosquitto(tmp_path, auth=True)  # nobody has credentials
    broker.start()
    link = MqttLink(broker.url, "refused", max_backoff_s=0.2)
    try:
        await link.start()
        await wait_for(lambda: "not authorised" in caplog.text or "bad user name" in caplog.text)
        assert not link.is_connected
        with pytest.raises(MqttError):
            await link.publish("x", b"y")
    finally:
        await link.stop()
        broker.stop()


async def test_reconnects_after_a_broker_restart_and_resends_an_unanswered_publish(tmp_path):
    broker = EmbeddedMosquitto(tmp_path)
    broker.start()
    link = MqttLink(broker.url, "restart-" + uuid.uuid4().hex[:6], max_backoff_s=0.5)
    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        broker.stop()
        await wait_for(lambda: not link.is_connected)
        broker.start()  # same port and persistence
        await asyncio.wait_for(link.connected.wait(), 20)
        assert link.connects == 2
        await asyncio.wait_for(link.publish("after/restart", b"ok"), 10)
    finally:
        await link.stop()
        broker.stop()
