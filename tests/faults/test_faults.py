"""Fault injection with real processes: nothing a device sent is lost when things break.

Each test runs ``ioc serve`` as a child process, publishes readings with unique
(device, ts) over MQTT QoS 1 at a steady rate, breaks something mid-stream (PostgreSQL
restarted, the broker restarted, the server SIGKILLed, the database read-only or out of
space) and then counts: every reading the broker accepted is stored, exactly once.

Faults that restart or fill a service get services of their own (``own_pg``,
``own_broker``); the session's are shared by every other test and stay up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest

from bench.common import ServerProcess
from server.cli.embedded import EmbeddedMosquitto, EmbeddedPostgres, free_port
from server.registry.seed import seed_city
from server.store import migrate

pytestmark = pytest.mark.slow

RATE = 2_000  # messages/s, as the issue asks
VALUES_PER_MESSAGE = 2
SETTLE_S = 90.0  # how long a fault's backlog may take to drain on a loaded 2-core machine


# ---------------------------------------------------------------- services of our own
@pytest.fixture(scope="module")
def own_pg(tmp_path_factory):
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("fault-pg"), fast_unsafe=True)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture
def own_city(own_pg):
    """A seeded city in the restartable cluster, fresh for each test."""
    name = "f_" + uuid.uuid4().hex[:10]
    url = own_pg.create_database(name)
    migrate.upgrade(url)
    seed_city(url, streetlights=200, seed=11)
    yield url
    with suppress(psycopg.Error), psycopg.connect(own_pg.url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def own_broker(tmp_path):
    broker = EmbeddedMosquitto(tmp_path / "broker", port=free_port())
    broker.start()
    yield broker
    broker.stop()


# ---------------------------------------------------------------- helpers
def lamp_ids(url: str, n: int = 100) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select id from devices where kind = 'streetlight' order by id "
                            "limit %s", (n,)).fetchall()
    return [r[0] for r in rows]


def stored(url: str) -> tuple[int, int]:
    """(readings stored, distinct (device, metric, ts) among them)."""
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*), count(distinct (device_key, metric_id, ts)) "
                            "from telemetry").fetchone()


def wait_stored(url: str, expected: int, server: ServerProcess, within: float = SETTLE_S):
    deadline = time.monotonic() + within
    got = (-1, -1)
    while time.monotonic() < deadline:
        with suppress(psycopg.OperationalError):
            got = stored(url)
            if got[0] >= expected:
                break
        time.sleep(0.5)
    assert got[0] == expected, (
        f"stored {got[0]} of {expected} readings within {within:.0f} s{server.tail(30)}")
    assert got[0] == got[1], f"{got[0] - got[1]} readings stored twice"


def readyz(server: ServerProcess) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.base_url + "/readyz", timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())
    except OSError as err:
        return 0, {"error": str(err)}


def wait_not_ready(server: ServerProcess, fault: str, within: float = 30.0) -> dict:
    """/readyz's 503 body, once the server reports the fault; fails if it never does."""
    deadline = time.monotonic() + within
    status, body = readyz(server)
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = readyz(server)
    assert status == 503, f"/readyz never reported {fault}: {body}"
    return body


def metric(server: ServerProcess, token: str, name: str) -> float | None:
    req = urllib.request.Request(server.base_url + "/metrics",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


_publishers: list[Publisher] = []


@pytest.fixture(autouse=True)
def _stop_publishers():
    """A failed test must not leave its publisher feeding the next test's server."""
    yield
    while _publishers:
        _publishers.pop().stop()


class Publisher:
    """Publishes ``RATE`` messages/s for ``seconds`` from a thread, QoS 1, in a persistent
    session, so a broker restart costs nothing: paho keeps what the broker has not
    acknowledged and sends it again on reconnect. ``acked`` counts what the broker took."""

    def __init__(self, broker_url: str, device_ids: list[str], seconds: float,
                 rate: int = RATE) -> None:
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.device_ids = device_ids
        self.total = int(rate * seconds)
        self.rate = rate
        self.sent = 0
        self.acked = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="fault-pub-" + uuid.uuid4().hex[:8],
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1.0)
        self.client.on_publish = self._on_publish
        self.client.connect(host, int(port), keepalive=30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="fault-publisher", daemon=True)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        _publishers.append(self)

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        with self._lock:
            self.acked += 1

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        base_ms = int(time.time() * 1000)
        n_dev = len(self.device_ids)
        while self.sent < self.total and not self._stop.is_set():
            due = min(self.total, int((time.monotonic() - t0) * self.rate) + 1)
            while self.sent < due:
                n = self.sent
                dev = self.device_ids[n % n_dev]
                # One millisecond per round of devices: (device, ts) never repeats.
                payload = orjson.dumps({"ts": base_ms + n // n_dev,
                                        "values": {"power_w": 40.0 + n % 7,
                                                   "dim_level_pct": n % 100}})
                self.client.publish(f"ioc/v1/{dev}/telemetry", payload, qos=1)
                self.sent += 1
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.loop_stop()
        self.client.disconnect()

    def finish(self, within: float = 60.0) -> int:
        """Wait until every message was published and acknowledged by the broker."""
        self._thread.join(within)
        deadline = time.monotonic() + within
        while self.acked < self.total and time.monotonic() < deadline:
            time.sleep(0.1)
        self.client.loop_stop()
        self.client.disconnect()
        assert self.acked == self.total, f"the broker acknowledged {self.acked}/{self.total}"
        return self.total * VALUES_PER_MESSAGE


@contextmanager
def serving(tmp_path: Path, database_url: str, mqtt_url: str, client_id: str | None = None):
    server = ServerProcess(database_url, mqtt_url, tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log",
                           extra_env={"IOC_MQTT_CLIENT_ID": client_id or "ioc-fault-"
                                      + uuid.uuid4().hex[:8]})
    server.start(timeout=90)
    try:
        yield server
    finally:
        if server.proc and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()


def token(url: str) -> str:
    from server.http.auth import create_token_sync

    return create_token_sync(url, "viewer", "fault-test")


# ---------------------------------------------------------------- the faults
def test_postgres_restart_during_ingest_loses_nothing(own_pg, own_city, mosquitto, tmp_path):
    devices = lamp_ids(own_city)
    with serving(tmp_path, own_city, mosquitto.url) as server:
        pub = Publisher(mosquitto.url, devices, seconds=8).start()
        time.sleep(2.0)
        own_pg.stop()
        down_status = readyz(server)
        time.sleep(2.0)
        own_pg.start()
        expected = pub.finish()
        wait_stored(own_city, expected, server)
        assert down_status[0] == 503, f"/readyz while PostgreSQL was down: {down_status}"
        assert readyz(server)[0] == 200


def test_broker_restart_during_ingest_loses_nothing(city_db_url, own_broker, tmp_path):
    devices = lamp_ids(city_db_url)
    with serving(tmp_path, city_db_url, own_broker.url) as server:
        pub = Publisher(own_broker.url, devices, seconds=8).start()
        time.sleep(2.5)
        own_broker.stop()  # SIGTERM: mosquitto writes its persistence file
        time.sleep(1.0)
        own_broker.start()
        expected = pub.finish()
        wait_stored(city_db_url, expected, server)
        assert readyz(server)[0] == 200


def test_server_sigkill_mid_ingest_loses_nothing(city_db_url, mosquitto, tmp_path):
    """The broker keeps what the killed server had not acknowledged (acknowledge after
    commit, persistent session): its successor, same client id, stores all of it."""
    devices = lamp_ids(city_db_url)
    client_id = "ioc-fault-kill-" + uuid.uuid4().hex[:6]
    with serving(tmp_path, city_db_url, mosquitto.url, client_id) as first:
        pub = Publisher(mosquitto.url, devices, seconds=8).start()
        time.sleep(3.0)
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(10)
        killed_at = stored(city_db_url)[0]
    with serving(tmp_path, city_db_url, mosquitto.url, client_id) as second:
        expected = pub.finish()
        assert 0 < killed_at < expected, "the kill should land mid-ingest"
        wait_stored(city_db_url, expected, second)


def test_read_only_database_pauses_ingest_and_resumes(own_pg, own_city, mosquitto, tmp_path):
    devices = lamp_ids(own_city)
    admin = own_pg.url()

    def read_only(on: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("set default_transaction_read_only = off")
            if on:
                conn.execute("alter system set default_transaction_read_only = on")
            else:
                conn.execute("alter system reset default_transaction_read_only")
            conn.execute("select pg_reload_conf()")

    with serving(tmp_path, own_city, mosquitto.url) as server:
        bearer = token(own_city)
        try:
            read_only(True)
            pub = Publisher(mosquitto.url, devices, seconds=4).start()
            body = wait_not_ready(server, "the read-only database")
            assert "not writable" in body["checks"]["ingest"], body
            assert metric(server, bearer, "ioc_database_writable") == 0
            time.sleep(2.0)  # ingest holds while the database refuses writes
        finally:
            read_only(False)
        expected = pub.finish()
        wait_stored(own_city, expected, server)
        assert readyz(server)[0] == 200
        assert metric(server, bearer, "ioc_database_writable") == 1


@pytest.fixture
def small_tablespace(own_pg, own_city, tmp_path):
    """Telemetry partitions moved to a tablespace on an 8 MiB tmpfs, so the disk fills."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs to fill a disk: run it as root (CI does)")
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        import pwd

        user = pwd.getpwnam("ioc")  # the unprivileged user the embedded PostgreSQL runs as
        os.chown(mnt, user.pw_uid, user.pw_gid)
        name = "small_" + uuid.uuid4().hex[:6]
        with psycopg.connect(own_pg.url(), autocommit=True) as conn:
            conn.execute(f"create tablespace {name} location '{mnt}'")
        with psycopg.connect(own_city, autocommit=True) as conn:
            parts = conn.execute("select inhrelid::regclass::text from pg_inherits "
                                 "where inhparent = 'telemetry'::regclass").fetchall()
            for (part,) in parts:
                conn.execute(f"alter table {part} set tablespace {name}")
            conn.execute(f"alter table telemetry set tablespace {name}")
        yield name
    finally:
        with suppress(psycopg.Error), psycopg.connect(own_city, autocommit=True) as conn:
            conn.execute("drop table if exists disk_filler")
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_pauses_ingest_and_resumes(own_city, small_tablespace, mosquitto, tmp_path):
    devices = lamp_ids(own_city)
    with serving(tmp_path, own_city, mosquitto.url) as server:
        with psycopg.connect(own_city, autocommit=True) as conn:
            conn.execute(f"create table disk_filler (x text) tablespace {small_tablespace}")
            with suppress(psycopg.errors.DiskFull):  # fill it to the last page
                for _ in range(10_000):
                    conn.execute("insert into disk_filler select repeat('x', 1000) "
                                 "from generate_series(1, 500)")
        pub = Publisher(mosquitto.url, devices, seconds=4).start()
        body = wait_not_ready(server, "the full disk")
        assert "No space left" in body["checks"]["ingest"], body
        time.sleep(2.0)  # ingest holds while the disk is full
        with psycopg.connect(own_city, autocommit=True) as conn:
            conn.execute("drop table disk_filler")  # an operator frees space
        expected = pub.finish()
        wait_stored(own_city, expected, server)
        assert readyz(server)[0] == 200
