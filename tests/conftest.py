"""Session-wide real services: one PostgreSQL+PostGIS cluster and one mosquitto.

The schema is built once by running the migrations into a template database; each test
that needs a database gets a fresh copy of it (``CREATE DATABASE … TEMPLATE``, ~100 ms),
so tests never see each other's rows and the cluster starts only once per session.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from server.cli.embedded import EmbeddedMosquitto, EmbeddedPostgres
from server.http.auth import create_token_sync
from server.settings import Settings
from server.store import migrate

TEMPLATE = "ioc_template"
CITY_TEMPLATE = "ioc_city_template"
CITY_LAMPS = 600


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory):
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), fast_unsafe=True)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def template_db(pg_cluster: EmbeddedPostgres) -> str:
    url = pg_cluster.create_database(TEMPLATE)
    migrate.upgrade(url)
    return TEMPLATE


def _fresh_copy(pg: EmbeddedPostgres, template: str):
    """A database cloned from ``template`` for one test, dropped after it."""
    name = "t_" + uuid.uuid4().hex[:12]
    yield pg.create_database(name, template=template)
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def db_url(pg_cluster: EmbeddedPostgres, template_db: str):
    """A fresh, migrated, empty database for this test."""
    yield from _fresh_copy(pg_cluster, template_db)


@pytest.fixture(scope="session")
def city_template(pg_cluster: EmbeddedPostgres, template_db: str) -> str:
    from server.registry.seed import seed_city

    url = pg_cluster.create_database(CITY_TEMPLATE, template=template_db)
    seed_city(url, streetlights=CITY_LAMPS, seed=7)
    return CITY_TEMPLATE


@pytest.fixture
def city_db_url(pg_cluster: EmbeddedPostgres, city_template: str):
    """A fresh database holding a small synthetic city (600 streetlights, seed 7)."""
    yield from _fresh_copy(pg_cluster, city_template)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory):
    broker = EmbeddedMosquitto(tmp_path_factory.mktemp("mqtt"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session", autouse=True)
def data_directory(tmp_path_factory) -> Iterator[Path]:
    """The session's own data directory (IOC_DATA_DIR): photos and anything else a server or
    an ``ioc`` command keeps there land in it, never in the user's ~/.local/share/ioc."""
    path = tmp_path_factory.mktemp("ioc-data")
    before = os.environ.get("IOC_DATA_DIR")
    os.environ["IOC_DATA_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("IOC_DATA_DIR", None)
    else:
        os.environ["IOC_DATA_DIR"] = before


@pytest.fixture
def make_settings(mosquitto: EmbeddedMosquitto):
    def make(database_url: str, **kw) -> Settings:
        kw.setdefault("mqtt_url", mosquitto.url)
        kw.setdefault("mqtt_client_id", "ioc-test-" + uuid.uuid4().hex[:8])
        return Settings(database_url=database_url, **kw)

    return make


@pytest.fixture
def token_for():
    """``await token_for(url, role)`` → a bearer token stored in that database, written from
    a worker thread so the test's event loop (and the server running in it) never blocks."""

    async def make(url: str, role: str, crew: str | None = None) -> str:
        return await asyncio.to_thread(create_token_sync, url, role, f"test-{role}", crew)

    return make


def clear_retained(broker: EmbeddedMosquitto, settle_s: float = 0.3) -> int:
    """Delete every retained message on ``broker``; returns how many there were."""
    import time

    import paho.mqtt.client as mqtt

    retained: set[str] = set()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id="retained-sweeper-" + uuid.uuid4().hex[:6])
    client.on_message = lambda c, u, msg: retained.add(msg.topic) if msg.retain else None
    client.connect(broker.host, broker.port)
    client.subscribe("#", qos=0)
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        client.loop(0.05)
    infos = [client.publish(topic, b"", qos=1, retain=True) for topic in sorted(retained)]
    deadline = time.monotonic() + 10
    while not all(i.is_published() for i in infos) and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    return len(retained)


@pytest.fixture(autouse=True)
def _broker_without_leftovers(request: pytest.FixtureRequest):
    """The session broker is shared: a retained status one test left ("online", a last
    will) would reach the next test's server as news about its devices. Sweep them."""
    yield
    if "mosquitto" in request.fixturenames:
        clear_retained(request.getfixturevalue("mosquitto"))


@pytest.fixture(autouse=True)
def _no_leftover_threads():
    """Fail a test that leaves non-daemon threads running (an unclosed client, a server)."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate()
                if t not in before and t.is_alive() and not t.daemon]
    for t in leftover:
        t.join(timeout=2)
    leftover = [t for t in leftover if t.is_alive()]
    assert not leftover, f"threads left running: {leftover}"


def pytest_collection_modifyitems(config, items):
    # Ordering: fast pure tests first, process-level tests last.
    items.sort(key=lambda it: 1 if it.get_closest_marker("slow") else 0)

