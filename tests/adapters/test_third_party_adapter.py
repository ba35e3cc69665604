"""A third-party adapter package, pip-installed, found through its entry point, ingests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiomqtt
import psycopg

from adapters.registry import discover
from server.mqtt import parse_mqtt_url

SAMPLE = Path(__file__).resolve().parent.parent / "sample_adapter"


def _install(target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(SAMPLE)],
        check=True,
    )


async def test_installed_adapter_is_discovered_and_ingests(tmp_path, monkeypatch, city_db_url,
                                                           make_settings, mosquitto):
    from tests.server.test_ingest import running, wait_connected, wait_for

    _install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry = discover()
    assert registry.classes["acme_lamp"].__module__ == "acme_ioc"
    assert {"mqtt", "chirpstack", "acme_lamp"} <= set(registry.classes)

    with psycopg.connect(city_db_url) as conn:
        dev = conn.execute("update devices set external_id = 'ACME-0042' where id = "
                           "(select min(id) from devices where kind = 'streetlight') returning id"
                           ).fetchone()[0]
    async with running(make_settings(city_db_url)) as client:
        await wait_connected(client)
        async with aiomqtt.Client(**parse_mqtt_url(mosquitto.url), identifier="acme-pub") as pub:
            await pub.publish("acme/ACME-0042/state", b"power=41.5;on=1;dim=70", qos=1)
            await pub.publish("acme/ACME-0042/state", b"power=abc", qos=1)

        def stored():
            with psycopg.connect(city_db_url) as conn:
                n = conn.execute("select count(*) from telemetry t join devices d "
                                 "on d.key = t.device_key where d.id = %s", (dev,)).fetchone()[0]
                dead = conn.execute("select reason from dead_letters").fetchall()
            return n == 3 and dead and dead

        dead = await wait_for(stored)
    assert "is not a number" in dead[0][0]
