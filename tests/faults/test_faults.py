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
import time
import uuid
from contextlib import suppress

import psycopg
import pytest

from server.cli.embedded import EmbeddedMosquitto, EmbeddedPostgres, free_port
from server.registry.seed import seed_city
from server.store import migrate
from tests.faults.helpers import (
    Publisher,
    lamp_ids,
    metric,
    readyz,
    serving,
    stored,
    token,
    wait_not_ready,
    wait_stored,
)

pytestmark = pytest.mark.slow


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


# ---------------------------------------------------------------- the faults
def test_postgres_restart_during_ingest_loses_nothing(own_pg, own_city, mosquitto, tmp_path):
    devices = lamp_ids(own_city)
    with serving(tmp_path, own_city, mosquitto.url) as server:
        pub = Publisher(mosquitto.url, devices, seconds=8).start()
        pub.wait_sent(2.0)
        own_pg.stop()
        down_status = readyz(server)
        pub.wait_sent(2.0)
        own_pg.start()
        expected = pub.finish()
        wait_stored(own_city, expected, server)
        assert down_status[0] == 503, f"/readyz while PostgreSQL was down: {down_status}"
        assert readyz(server)[0] == 200


def test_broker_restart_during_ingest_loses_nothing(city_db_url, own_broker, tmp_path):
    devices = lamp_ids(city_db_url)
    with serving(tmp_path, city_db_url, own_broker.url) as server:
        pub = Publisher(own_broker.url, devices, seconds=8).start()
        pub.wait_sent(2.5)
        own_broker.stop()  # SIGTERM: mosquitto writes its persistence file
        time.sleep(1.0)  # the point: the broker stays away a while
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
        pub.wait_sent(3.0)
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
            time.sleep(2.0)  # the point: ingest holds while the database refuses writes
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
        time.sleep(2.0)  # the point: ingest holds while the disk is full
        with psycopg.connect(own_city, autocommit=True) as conn:
            conn.execute("drop table disk_filler")  # an operator frees space
        expected = pub.finish()
        wait_stored(own_city, expected, server)
        assert readyz(server)[0] == 200
