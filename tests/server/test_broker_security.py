"""The broker as the demo and compose run it: no anonymous clients, one account per device
with its own topics only (mosquitto's dynamic security plugin, server/mqtt/dynsec.py), the
server administering the accounts as devices are created and deleted, and MQTT over TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import stat
import subprocess
import uuid

import aiomqtt
import pytest

from server.cli.common import connect
from server.cli.embedded import EmbeddedMosquitto, free_port
from server.mqtt.dynsec import DynSec, tls_context
from server.mqtt.link import MqttLink
from server.registry.credentials import issue
from server.settings import Settings
from tests.helpers import auth, running, wait_connected, wait_for


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory):
    """A broker with dynamic security and a TLS listener signed by a test CA."""
    data = tmp_path_factory.mktemp("mqtt-secure")
    tls = data / "tls"
    tls.mkdir()
    make_ca(tls, "test-ca")
    make_ca(tls, "other-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "broker.key", "-out", "broker.csr", cwd=tls)
    (tls / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "test-ca.crt", "-CAkey", "test-ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.crt", cwd=tls)
    tls_port = free_port()
    broker = EmbeddedMosquitto(data, dynsec=True, extra_conf=(
        f"listener {tls_port} 127.0.0.1\ncafile {tls}/test-ca.crt\n"
        f"certfile {tls}/broker.crt\nkeyfile {tls}/broker.key\n"))
    broker.tls_port = tls_port
    broker.start()
    yield broker
    broker.stop()


def server_settings(broker: EmbeddedMosquitto, db_url: str, **kw) -> Settings:
    accounts = broker.accounts()
    return Settings(database_url=db_url, mqtt_url=broker.url_for(*accounts["server"]),
                    mqtt_admin_file=broker.admin_file,
                    mqtt_client_id="ioc-test-" + uuid.uuid4().hex[:8], **kw)


def device_client(broker: EmbeddedMosquitto, user: str | None, password: str | None):
    return aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                          identifier=f"{user or 'anon'}-{uuid.uuid4().hex[:6]}", timeout=5)


def feature(dev_id: str) -> dict:
    return {"type": "Feature", "id": dev_id, "geometry": {"type": "Point", "coordinates": [2.17, 41.38]},
            "properties": {"kind": "streetlight", "name": dev_id}}


async def test_anonymous_and_wrong_passwords_are_refused(secure_broker):
    with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori"):
        async with device_client(secure_broker, None, None):
            pass
    user, _ = secure_broker.accounts()["server"]
    with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori"):
        async with device_client(secure_broker, user, "not-the-password"):
            pass


async def test_devices_publish_and_read_only_their_own(secure_broker, db_url, token_for):
    settings = server_settings(secure_broker, db_url)
    async with running(settings) as client:
        await wait_connected(client)
        token = await token_for(db_url, "admin")
        for dev in ("SEC-A", "SEC-B"):
            r = await client.post("/api/v1/devices", json=feature(dev), headers=auth(token))
            assert r.status == 201, await r.text()
        conn = await connect(db_url)
        try:
            passwords = await issue(conn, ["SEC-A"], "test")
        finally:
            await conn.close()
        dyn = DynSec.from_settings(settings)
        await dyn.set_passwords(passwords)
        server_user, server_pw = secure_broker.accounts()["server"]
        async with aiomqtt.Client(secure_broker.host, secure_broker.port, username=server_user,
                                  password=server_pw, identifier="watch-" + uuid.uuid4().hex[:6]
                                  ) as watch:
            await watch.subscribe("ioc/v1/+/telemetry", qos=1)
            # mosquitto 2.0 drops a connection that publishes where it may not.
            with contextlib.suppress(aiomqtt.MqttError):
                async with device_client(secure_broker, "SEC-A", passwords["SEC-A"]) as dev:
                    await dev.publish("ioc/v1/SEC-B/telemetry", b'{"values": {"x": 1}}', qos=1)
            async with device_client(secure_broker, "SEC-A", passwords["SEC-A"]) as dev:
                await dev.subscribe("ioc/v1/SEC-B/commands", qos=1)
                await dev.subscribe("ioc/v1/+/commands", qos=1)
                await dev.subscribe("ioc/v1/SEC-A/commands", qos=1)
                await dev.publish("ioc/v1/SEC-A/telemetry", b'{"values": {"x": 2}}', qos=1)
                # What was refused would have arrived first.
                async with asyncio.timeout(5):
                    async for msg in watch.messages:
                        assert str(msg.topic) == "ioc/v1/SEC-A/telemetry", "published as another"
                        break
                await watch.publish("ioc/v1/SEC-B/commands", b'{"id": "b"}', qos=1)
                await watch.publish("ioc/v1/SEC-A/commands", b'{"id": "a"}', qos=1)
                async with asyncio.timeout(5):
                    async for msg in dev.messages:
                        assert str(msg.topic) == "ioc/v1/SEC-A/commands", "read another's command"
                        break
        # The API's device without a password exists on the broker but cannot log in.
        with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori"):
            async with device_client(secure_broker, "SEC-B", passwords["SEC-A"]):
                pass


async def test_a_device_deleted_through_the_api_is_cut_off_at_once(secure_broker, db_url,
                                                                    token_for):
    settings = server_settings(secure_broker, db_url)
    async with running(settings) as client:
        token = await token_for(db_url, "admin")
        r = await client.post("/api/v1/devices", json=feature("SEC-DEL"), headers=auth(token))
        assert r.status == 201
        conn = await connect(db_url)
        try:
            passwords = await issue(conn, ["SEC-DEL"], "test")
        finally:
            await conn.close()
        await DynSec.from_settings(settings).set_passwords(passwords)
        async with device_client(secure_broker, "SEC-DEL", passwords["SEC-DEL"]) as dev:
            await dev.subscribe("ioc/v1/SEC-DEL/commands", qos=1)
            cut = asyncio.Event()

            async def listen():
                try:
                    async for _ in dev.messages:
                        pass
                except aiomqtt.MqttError:
                    cut.set()

            listener = asyncio.create_task(listen())
            r = await client.delete("/api/v1/devices/SEC-DEL", headers=auth(token))
            assert r.status == 204
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await asyncio.wait_for(cut.wait(), 1.0)  # the broker dropped it within a second
            assert loop.time() - t0 < 1.0
            listener.cancel()
        with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori"):
            async with device_client(secure_broker, "SEC-DEL", passwords["SEC-DEL"]):
                pass


async def test_a_device_deleted_by_another_process_is_cut_off_at_once(secure_broker, db_url,
                                                                       token_for):
    """Not through the API: ``ioc seed --replace``, an import without a server, SQL by hand.
    The commit notifies ioc_devices_deleted and the running server reconciles."""
    from server.mqtt.dynsec import FOLLOWING

    settings = server_settings(secure_broker, db_url)
    async with running(settings) as client:
        token = await token_for(db_url, "admin")
        r = await client.post("/api/v1/devices", json=feature("SEC-SQL"), headers=auth(token))
        assert r.status == 201
        async with asyncio.timeout(10):  # the server follows deletions (first reconcile done)
            await client.app[FOLLOWING].wait()
        conn = await connect(db_url)
        try:
            passwords = await issue(conn, ["SEC-SQL"], "test")
            await DynSec.from_settings(settings).set_passwords(passwords)
            async with device_client(secure_broker, "SEC-SQL", passwords["SEC-SQL"]) as dev:
                cut = asyncio.Event()

                async def listen():
                    try:
                        async for _ in dev.messages:
                            pass
                    except aiomqtt.MqttError:
                        cut.set()

                listener = asyncio.create_task(listen())
                await conn.execute("delete from devices where id = 'SEC-SQL'")
                await asyncio.wait_for(cut.wait(), 1.0)  # dropped within a second of the commit
                listener.cancel()
        finally:
            await conn.close()
        with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori"):
            async with device_client(secure_broker, "SEC-SQL", passwords["SEC-SQL"]):
                pass


async def test_mqtts_with_the_test_ca_and_not_with_another(secure_broker):
    tls = secure_broker.data_dir / "tls"
    user, pw = secure_broker.accounts()["server"]
    url = secure_broker.url_for(user, pw, scheme="mqtts", port=secure_broker.tls_port)
    seen: list[bool] = []
    link = MqttLink(url, "tls-" + uuid.uuid4().hex[:6], on_connected=seen.append,
                    tls=tls_context(tls / "test-ca.crt"))
    await link.start()
    try:
        await wait_for(lambda: link.is_connected, 10, what="TLS connection")
        await link.publish("ioc/v1/TLS/commands", b"{}", qos=1)
    finally:
        await link.stop()
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(secure_broker.host, secure_broker.tls_port,
                                      ssl=tls_context(tls / "other-ca.crt"))
    # the plain listener of the same broker is not a TLS one: no accidental downgrade
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(secure_broker.host, secure_broker.port,
                                      ssl=tls_context(tls / "test-ca.crt"))


def test_embedded_postgres_wants_its_password(pg_cluster):
    import psycopg

    assert stat.S_IMODE(pg_cluster.password_file.stat().st_mode) == 0o600
    with psycopg.connect(pg_cluster.url(), connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    hba = (pg_cluster.pgdata / "pg_hba.conf").read_text()
    assert "trust" not in [line.split()[-1] for line in hba.splitlines()
                           if line.strip() and not line.lstrip().startswith("#")]
    good = pg_cluster.url()
    for url in (good.replace(pg_cluster.password_file.read_text().strip(), "wrong"),
                f"postgresql://{pg_cluster.superuser}@{pg_cluster.host}:{pg_cluster.port}/postgres"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(url, connect_timeout=5)


def _demo(data, port: int, env: dict, log_path):
    import sys

    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "demo", "--port", str(port), "--data-dir", str(data),
         "--devices", "40"], stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    return proc


def _stop(proc) -> None:
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(60) == 0
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _wait_ready(proc, data, log_path) -> dict:
    import json
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()
        if "admin token:" in log_path.read_text(errors="replace"):
            with contextlib.suppress(OSError, ValueError):
                return json.loads((data / "services.json").read_text())
        time.sleep(0.2)
    raise AssertionError(log_path.read_text())


async def _connects(host: str, port: int, user: str | None, password: str | None) -> bool:
    try:
        async with aiomqtt.Client(host, port, username=user, password=password, timeout=5,
                                  identifier=f"{user}-{uuid.uuid4().hex[:6]}"):
            return True
    except aiomqtt.MqttError:
        return False


async def test_the_demo_broker_is_secure_and_its_accounts_survive_a_restart(tmp_path):
    """Anonymous clients refused; the simulator's readings arrive under its own account; a
    password from `ioc credentials issue` beside the demo lets the device in, and still does
    after a restart (the plugin's file is made again from the registry's hashes)."""
    import os
    import sys
    from urllib.parse import urlsplit

    import psycopg

    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    data, log_path = tmp_path / "data", tmp_path / "demo.log"
    proc = _demo(data, free_port(), env, log_path)
    try:
        services = await asyncio.to_thread(_wait_ready, proc, data, log_path)
        broker = urlsplit(services["mqtt_url"])
        host, port = broker.hostname, broker.port
        assert "ioc-server" in services["mqtt_url"]
        assert stat.S_IMODE((data / "mosquitto" / "accounts.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((data / "mosquitto" / "admin.json").stat().st_mode) == 0o600
        assert not await _connects(host, port, None, None)

        def readings() -> int:
            with psycopg.connect(services["database_url"]) as conn:
                return conn.execute("select count(*) from telemetry").fetchone()[0]

        await wait_for(readings, 60, blocking=True, what="the simulator's readings")
        issued = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "server", "credentials", "issue", "SL-000001",
            "--data-dir", str(data)], capture_output=True, text=True, env=env, timeout=60)
        assert issued.returncode == 0, issued.stderr
        dev, password = issued.stdout.split()
        assert dev == "SL-000001"
        assert await _connects(host, port, dev, password)
        assert not await _connects(host, port, "SL-000002", password)
    finally:
        await asyncio.to_thread(_stop, proc)
    log_path = tmp_path / "demo2.log"
    proc = _demo(data, free_port(), env, log_path)
    try:
        services = await asyncio.to_thread(_wait_ready, proc, data, log_path)
        broker = urlsplit(services["mqtt_url"])
        assert await _connects(broker.hostname, broker.port, dev, password)
    finally:
        await asyncio.to_thread(_stop, proc)


async def _clients(dyn: DynSec) -> set[str]:
    answer = await dyn.checked([{"command": "listClients", "count": -1}])
    return set(answer[0]["data"]["clients"])


async def test_gateways_have_accounts_scoped_to_their_topics(secure_broker, db_url):
    dyn = DynSec.from_settings(server_settings(secure_broker, db_url))
    await dyn.checked([{"command": "deleteClient", "username": u} for u in ("gw-cs", "gw-sp")],
                      tolerate=("not found",))
    await dyn.add_account("gw-cs", "cs-pass", "ioc-chirpstack")
    await dyn.add_account("gw-sp", "sp-pass", "ioc-sparkplug")
    server_user, server_pw = secure_broker.accounts()["server"]
    async with aiomqtt.Client(secure_broker.host, secure_broker.port, username=server_user,
                              password=server_pw, identifier="gwwatch-" + uuid.uuid4().hex[:6]
                              ) as watch:
        await watch.subscribe("#", qos=1)
        for user, password, foreign, own in (
                ("gw-cs", "cs-pass", "ioc/v1/SL-1/telemetry", "application/1/device/0011/event/up"),
                ("gw-sp", "sp-pass", "application/1/device/0011/event/up", "spBv1.0/city/NBIRTH/edge1")):
            with contextlib.suppress(aiomqtt.MqttError):
                async with device_client(secure_broker, user, password) as gw:
                    await gw.publish(foreign, b"{}", qos=1)
            async with device_client(secure_broker, user, password) as gw:
                await gw.publish(own, b"{}", qos=1)
            async with asyncio.timeout(5):
                async for msg in watch.messages:
                    if msg.retain:  # what earlier servers left (their Sparkplug STATE)
                        continue
                    assert str(msg.topic) == own, f"{user} published on {msg.topic}"
                    break


async def test_the_server_reconciles_device_accounts_when_it_starts(secure_broker, db_url):
    from tests.helpers import aexecute

    settings = server_settings(secure_broker, db_url)
    dyn = DynSec.from_settings(settings)
    await dyn.add_devices(["SEC-GONE"])  # deleted from the registry while the server was down
    await aexecute(db_url, "insert into devices (id, kind, name, geom) values ('SEC-NEW', "
                   "'streetlight', 'new', st_setsrid(st_makepoint(2.17, 41.38), 4326))")
    async with running(settings):
        async def reconciled() -> bool:
            clients = await _clients(dyn)
            return "SEC-NEW" in clients and "SEC-GONE" not in clients

        await wait_for(reconciled, 15, what="the device accounts reconciled")


def test_ioc_import_makes_the_broker_accounts_at_once(secure_broker, db_url, tmp_path):
    import json
    import os
    import sys

    settings = server_settings(secure_broker, db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env.update(IOC_DATABASE_URL=db_url, IOC_MQTT_URL=settings.mqtt_url,
               IOC_MQTT_ADMIN_FILE=str(secure_broker.admin_file))
    path = tmp_path / "two.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection",
                                "features": [feature("SEC-IMP1"), feature("SEC-IMP2")]}))
    done = subprocess.run([sys.executable, "-m", "server", "import", str(path)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    clients = asyncio.run(_clients(DynSec.from_settings(settings)))
    assert {"SEC-IMP1", "SEC-IMP2"} <= clients


def test_dynsec_file_sets_up_a_broker_by_hand(db_url, tmp_path):
    """compose's mqtt-init: the plugin's file from the registry, before the broker starts."""
    import json
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env.update(IOC_DATABASE_URL=db_url, IOC_MQTT_URL="mqtt://ioc-server:s3rver@127.0.0.1:1")
    broker = EmbeddedMosquitto(tmp_path / "mqtt", dynsec=True)
    broker.data_dir.mkdir()
    admin_file = tmp_path / "admin.json"
    done = subprocess.run([sys.executable, "-m", "server", "credentials", "dynsec-file",
                           str(broker.dynsec_file), "--admin-file", str(admin_file)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "s3rver" not in done.stdout and stat.S_IMODE(admin_file.stat().st_mode) == 0o600
    admin = json.loads(admin_file.read_text())
    broker.start()
    try:
        async def check() -> None:
            assert await _connects(broker.host, broker.port, "ioc-server", "s3rver")
            assert not await _connects(broker.host, broker.port, None, None)
            dyn = DynSec(broker.host, broker.port, admin["username"], admin["password"])
            assert "ioc-server" in await _clients(dyn)

        asyncio.run(check())
    finally:
        broker.stop()


@pytest.mark.parametrize("trusted", [[], ["127.0.0.1/32"]])
async def test_forwarded_headers_only_from_configured_proxies(db_url, token_for, trusted):
    settings = Settings(database_url=db_url, http_trusted_proxies=trusted)
    token = await token_for(db_url, "viewer")
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ioc.example.org",
               "X-Forwarded-For": "203.0.113.9, 127.0.0.1"}
    async with running(settings) as client:
        r = await client.get("/ogc", headers=headers | {"Accept": "application/json"} | auth(token))
        assert r.status == 200, await r.text()
        hrefs = [link["href"] for link in (await r.json())["links"]]
    if trusted:
        assert all(h.startswith("https://ioc.example.org/") for h in hrefs), hrefs
    else:
        assert not any("example.org" in h or h.startswith("https:") for h in hrefs), hrefs
