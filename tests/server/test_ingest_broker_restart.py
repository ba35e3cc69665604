"""The broker configurations the project ships keep a persistent session's queue through a
broker restart at full rate: the server is down, devices publish far more than mosquitto's
default queue of 1,000 messages, the broker restarts twice (once mid-burst), and the server
then stores every reading.

Both shipped configurations run: the embedded one (server/cli/embedded.py, ``ioc demo``) and
deploy/mosquitto.conf (compose), the latter verbatim except its listener and persistence
path. mosquitto's defaults run too, to show the test notices a queue that drops messages.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest

import server.cli.embedded as embedded
from server.cli.embedded import EmbeddedMosquitto
from server.mqtt.link import MqttLink
from tests.helpers import ROOT, acount, aq, count, running, wait_connected, wait_for

MESSAGES = 12_000  # 12 × mosquitto's default queue
WINDOW = 1_000  # QoS 1 publishes in flight at once: the publisher's full rate


def _deploy_template() -> str:
    """deploy/mosquitto.conf as a template for EmbeddedMosquitto: only where it listens and
    where it keeps its persistence file change."""
    text = (ROOT / "deploy" / "mosquitto.conf").read_text()
    # Its queue policy is under test here, not its accounts or TLS listener
    # (test_broker_security.py): those lines go, and the template stays anonymous.
    text = re.sub(r"(?m)^(per_listener_settings|plugin|plugin_opt_config_file|cafile|certfile|"
                  r"keyfile|tls_version) .*$|^listener 8883 .*$", "", text)
    text, n1 = re.subn(r"(?m)^listener .*$", "listener {port} {host}", text)
    text, n2 = re.subn(r"(?m)^persistence_location .*$", "persistence_location {persistence}/", text)
    text, n3 = re.subn(r"(?m)^allow_anonymous .*$", "allow_anonymous {anonymous}", text)
    assert n1 == n2 == n3 == 1, "deploy/mosquitto.conf changed shape; update this test"
    return text


DEFAULTS = """\
listener {port} {host}
allow_anonymous {anonymous}
persistence true
persistence_location {persistence}/
"""

POLICY = ("persistence", "autosave_interval", "max_queued_messages", "max_queued_bytes",
          "max_inflight_messages")


def _options(conf: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in conf.splitlines()
                if line.strip() and not line.startswith("#") and line.split()[0] in POLICY)


def test_the_shipped_configurations_agree_on_the_queue_policy():
    embedded_opts = _options(embedded.MOSQUITTO_CONF)
    assert embedded_opts == _options(_deploy_template())
    assert embedded_opts["max_queued_messages"] == "0"  # unlimited count, bounded bytes


async def _publish_all(url: str, lamps: list[str], base: datetime, broker: EmbeddedMosquitto):
    """MESSAGES telemetry messages (one reading each, distinct timestamps) as fast as one
    client publishes at QoS 1; the broker restarts with the middle window in flight. Every
    publish returns only once the broker has acknowledged it (unacknowledged ones are sent
    again after the reconnect)."""
    link = MqttLink(url, "device-fleet", max_backoff_s=0.3)

    async def publish(i: int) -> None:
        while True:  # a device whose broker is away tries again
            try:
                return await link.publish(
                    f"ioc/v1/{lamps[i % len(lamps)]}/telemetry",
                    orjson.dumps({"ts": int((base + timedelta(milliseconds=i)).timestamp() * 1000),
                                  "values": {"power_w": float(i % 100)}}))
            except ConnectionError:
                await asyncio.sleep(0.05)

    await link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        for start in range(0, MESSAGES, WINDOW):
            window = asyncio.gather(*(publish(i) for i in range(start, min(start + WINDOW, MESSAGES))))
            if start == MESSAGES // 2:  # restart with this whole window in flight
                # gather() scheduled the window's tasks; their first steps all run in the
                # loop's next turn (each registers and sends its PUBLISH) and no PUBACK of
                # them is read before this check runs right after them. So the restart
                # starts with every message of the window outstanding. (Polling on a timer
                # could miss it: a window can be sent and acknowledged between two polls.)
                await wait_for(lambda: len(link._outgoing) == WINDOW, interval=0)
                await asyncio.to_thread(broker.stop)
                await asyncio.to_thread(broker.start)
            await asyncio.wait_for(window, 60)
    finally:
        await link.stop()


@pytest.mark.parametrize("config", ["embedded", "deploy", "mosquitto defaults"])
async def test_broker_restart_keeps_the_queued_messages(config, tmp_path, monkeypatch,
                                                         city_db_url, make_settings):
    template = {"embedded": embedded.MOSQUITTO_CONF, "deploy": _deploy_template(),
                "mosquitto defaults": DEFAULTS}[config]
    monkeypatch.setattr(embedded, "MOSQUITTO_CONF", template)
    broker = EmbeddedMosquitto(tmp_path)
    broker.start()
    try:
        settings = make_settings(city_db_url, mqtt_url=broker.url)
        lamps = [r[0] for r in await aq(city_db_url, "select id from devices where kind = 'streetlight' "
                                                     "order by id")]
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=4)
        async with running(settings) as client:  # the server's persistent session exists
            await wait_connected(client)
        await _publish_all(broker.url, lamps, base, broker)  # the server is down meanwhile
        await asyncio.to_thread(broker.stop)  # and the broker restarts with all of it queued
        await asyncio.to_thread(broker.start)
        async with running(settings) as client:
            await wait_connected(client)
            if config == "mosquitto defaults":
                def settled():  # nothing more arrives
                    n = count(city_db_url)
                    settled.seen = [*getattr(settled, "seen", [])[-20:], n]
                    return len(settled.seen) > 20 and len(set(settled.seen)) == 1
                await wait_for(settled, within=60, interval=0.1)
                assert await acount(city_db_url) < MESSAGES / 2, "the default queue drops most of it"
                return
            await wait_for(lambda: count(city_db_url) == MESSAGES, within=90, interval=0.25, blocking=True)
        [(first, last)] = await aq(city_db_url, "select min(ts), max(ts) from telemetry")
        assert (first, last) == (base, base + timedelta(milliseconds=MESSAGES - 1))
    finally:
        broker.stop()
