"""Device MQTT credentials against a real mosquitto started with authentication on.

The broker here is this module's own (password and ACL files written from the database),
not the session's anonymous one.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import uuid

import aiomqtt
import psycopg
import pytest

from server.cli.common import connect
from server.cli.embedded import EmbeddedMosquitto
from server.cli.main import main
from server.registry import credentials

SERVER_USER, SERVER_PASSWORD = "ioc-server", "server-secret-" + uuid.uuid4().hex


def add_devices(url: str, *ids: str) -> None:
    with psycopg.connect(url) as conn:
        for i in ids:
            conn.execute("insert into devices (id, kind, geom) values "
                         "(%s, 'streetlight', ST_SetSRID(ST_MakePoint(105.8, 21.5), 4326))", (i,))


def test_hash_is_mosquittos_own_format(tmp_path):
    h = credentials.mosquitto_hash("s3cret")
    assert h.startswith("$7$101$") and credentials.verify("s3cret", h)
    assert not credentials.verify("other", h)
    # and mosquitto_passwd's hashes check out with ours
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "dev", "from-tool"], check=True)
    user, hashed = pw.read_text().strip().split(":", 1)
    assert user == "dev" and credentials.verify("from-tool", hashed)


async def _issue(url: str, *ids: str) -> dict[str, str]:
    conn = await connect(url)
    try:
        return await credentials.issue(conn, list(ids), "test")
    finally:
        await conn.close()


async def _files(url: str) -> tuple[str, str]:
    conn = await connect(url)
    try:
        return (await credentials.password_file(conn, SERVER_USER, SERVER_PASSWORD),
                credentials.acl_file(SERVER_USER))
    finally:
        await conn.close()


@pytest.fixture
async def broker(tmp_path):
    b = EmbeddedMosquitto(tmp_path / "authmqtt", auth=True)
    yield b
    b.stop()


def client(broker: EmbeddedMosquitto, user: str | None, password: str | None,
           timeout: float = 10) -> aiomqtt.Client:
    return aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                          identifier=f"{user or 'anon'}-{uuid.uuid4().hex[:6]}", timeout=timeout)


async def refused(broker, user, password) -> bool:
    try:
        async with client(broker, user, password):
            return False
    except aiomqtt.MqttError:
        return True


async def next_message(c: aiomqtt.Client, within: float = 15.0) -> aiomqtt.Message:
    async with asyncio.timeout(within):
        async for msg in c.messages:
            return msg
    raise AssertionError("no message")


async def test_devices_publish_only_as_themselves(db_url, broker):
    add_devices(db_url, "SL-A", "SL-B")
    passwords = await _issue(db_url, "SL-A", "SL-B")
    broker.install_auth(*await _files(db_url))
    broker.start()

    # unknown clients, anonymous clients and wrong passwords are refused at CONNECT
    assert await refused(broker, None, None)
    assert await refused(broker, "SL-NOBODY", "guess")
    assert await refused(broker, "SL-A", passwords["SL-B"])

    async with client(broker, SERVER_USER, SERVER_PASSWORD) as server:
        await server.subscribe("ioc/v1/+/telemetry", qos=1)
        for qos in (0, 1):
            # A pretends to be B. mosquitto refuses the publish (2.0 also drops the
            # connection); the QoS 1 publish after it on the same connection is answered or
            # fails only once the broker has dealt with the first.
            try:
                # (a short timeout: the broker drops this connection rather than answer)
                async with client(broker, "SL-A", passwords["SL-A"], timeout=2) as dev_a:
                    await dev_a.publish("ioc/v1/SL-B/telemetry", b'{"values": {"x": 666}}',
                                        qos=qos)
                    await dev_a.publish("ioc/v1/SL-A/status", b"online", qos=1)
            except aiomqtt.MqttError:
                pass
            # then A as itself, on a new connection: this must be the next message the
            # subscriber sees, so B's never arrived.
            async with client(broker, "SL-A", passwords["SL-A"]) as dev_a:
                await dev_a.publish("ioc/v1/SL-A/telemetry", b'{"values": {"power_w": %d}}' % qos,
                                    qos=1)
                msg = await next_message(server)
            assert str(msg.topic) == "ioc/v1/SL-A/telemetry"
            assert msg.payload == b'{"values": {"power_w": %d}}' % qos

    async with client(broker, SERVER_USER, SERVER_PASSWORD) as server, \
            client(broker, "SL-A", passwords["SL-A"]) as dev_a:
        # commands: A reads its own, never B's
        await dev_a.subscribe("ioc/v1/SL-A/commands", qos=1)
        await dev_a.subscribe("ioc/v1/SL-B/commands", qos=1)
        await dev_a.subscribe("ioc/v1/#", qos=1)
        await server.publish("ioc/v1/SL-B/commands", b'{"id": "1", "name": "set_dim"}', qos=1)
        await server.publish("ioc/v1/SL-A/commands", b'{"id": "2", "name": "set_dim"}', qos=1)
        msg = await next_message(dev_a)
        assert str(msg.topic) == "ioc/v1/SL-A/commands" and b'"2"' in msg.payload

        # and may answer its command on the result topic
        await server.subscribe("ioc/v1/+/commands/+/result", qos=1)
        await dev_a.publish("ioc/v1/SL-A/commands/2/result", b'{"ok": true}', qos=1)
        msg = await next_message(server)
        assert str(msg.topic) == "ioc/v1/SL-A/commands/2/result"


async def test_new_and_revoked_credentials_apply_on_reload(db_url, broker):
    add_devices(db_url, "SL-A", "SL-C")
    first = await _issue(db_url, "SL-A")
    broker.install_auth(*await _files(db_url))
    broker.start()
    assert await refused(broker, "SL-C", "anything")

    later = await _issue(db_url, "SL-C")
    conn = await connect(db_url)
    try:
        assert await credentials.revoke(conn, ["SL-A"], "test") == ["SL-A"]
    finally:
        await conn.close()
    broker.install_auth(*await _files(db_url))  # SIGHUP: reread without a restart

    async def reloaded() -> bool:
        return not await refused(broker, "SL-C", later["SL-C"])

    deadline = asyncio.get_running_loop().time() + 20
    while not await reloaded():
        assert asyncio.get_running_loop().time() < deadline, "mosquitto did not reload"
        await asyncio.sleep(0.2)
    assert await refused(broker, "SL-A", first["SL-A"])


def test_cli_issues_once_and_exports_files(db_url, tmp_path, monkeypatch, capsys):
    add_devices(db_url, "SL-1", "SL-2", "SL-3")
    monkeypatch.setenv("IOC_DATABASE_URL", db_url)
    monkeypatch.setenv("IOC_MQTT_URL", f"mqtt://{SERVER_USER}:{SERVER_PASSWORD}@127.0.0.1:1883")
    monkeypatch.delenv("IOC_CONFIG", raising=False)
    assert main(["credentials", "issue", "SL-1", "SL-2"]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert set(printed) == {"SL-1", "SL-2"}
    with psycopg.connect(db_url) as conn:
        stored = dict(conn.execute("select device_id, password_hash from device_credentials"))
        audit = conn.execute("select count(*) from audit_log "
                             "where action = 'credentials.issue'").fetchone()[0]
    assert audit == 1
    for dev, password in printed.items():
        assert password not in stored[dev] and credentials.verify(password, stored[dev])

    with pytest.raises(SystemExit, match="no device"):
        main(["credentials", "issue", "SL-1", "SL-404"])

    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    assert main(["credentials", "export", "--password-file", str(pw), "--acl-file", str(acl)]) == 0
    lines = pw.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == [SERVER_USER, "SL-1", "SL-2"]
    assert credentials.verify(SERVER_PASSWORD, lines[0].split(":", 1)[1])
    assert stat.S_IMODE(os.stat(pw).st_mode) == 0o600
    assert "pattern write ioc/v1/%u/telemetry" in acl.read_text()
    assert f"user {SERVER_USER}\ntopic readwrite #" in acl.read_text()

    monkeypatch.setenv("IOC_MQTT_URL", "mqtt://127.0.0.1:1883")
    with pytest.raises(SystemExit, match="its own account"):
        main(["credentials", "export", "--password-file", str(pw), "--acl-file", str(acl)])
