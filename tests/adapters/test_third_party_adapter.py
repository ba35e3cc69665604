"""A third-party adapter package, pip-installed, found through its entry point, ingests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from adapters.registry import discover
from server.mqtt.link import parse_mqtt_url
from tests.helpers import aq
from tests.sample_adapter.tests.acme_cloud import AcmeCloud

SAMPLE = Path(__file__).resolve().parent.parent / "sample_adapter"


def _install(target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(SAMPLE)],
        check=True,
    )


async def test_installed_adapter_is_discovered_and_ingests(tmp_path, monkeypatch, city_db_url,
                                                           make_settings, mosquitto):
    from tests.helpers import running, wait_connected, wait_for

    _install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry = discover()
    assert registry.classes["acme_lamp"].__module__ == "acme_ioc"
    assert {"mqtt", "chirpstack", "acme_lamp"} <= set(registry.classes)

    [(dev,)] = await aq(city_db_url, "update devices set external_id = 'ACME-0042' where id = "
                                     "(select min(id) from devices where kind = 'streetlight') returning id")
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


def bind_meters(url: str, serial_prefix: str) -> list[str]:
    """Bind two water meters to acme_meter, as ``{serial_prefix}-0`` and ``-1``."""
    with psycopg.connect(url) as conn:
        meters = [r[0] for r in conn.execute(
            "select id from devices where kind = 'water_meter' order by id limit 2").fetchall()]
        for i, dev in enumerate(meters):
            conn.execute("update devices set adapter = 'acme_meter', adapter_config = %s "
                         "where id = %s", (f'{{"meter": "{serial_prefix}-{i}"}}', dev))
    return meters


async def start_cloud(make_settings, url: str) -> tuple[AcmeCloud, object]:
    """The ACME cloud stand-in, started, and settings that poll it every 0.2 s."""
    cloud = AcmeCloud()
    base_url = await cloud.start()
    return cloud, make_settings(url, mqtt_url=None, adapters={
        "acme_meter": {"base_url": base_url, "api_key": "k-123", "interval_s": 0.2}})


async def test_installed_polling_adapter_is_supervised(tmp_path, monkeypatch, city_db_url,
                                                      make_settings, token_for):
    """acme_meter (a PollingAdapter in the sample package) polls a real HTTP API for the
    devices bound to it; the server schedules it, stores its readings, and applies the
    error tree: an outage takes the meters offline until the API is back, refused
    credentials take them offline without hammering the API, a configuration error stops
    the adapter."""
    from tests.helpers import running, wait_for

    _install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry = discover()
    assert "acme_meter" in registry.polling_adapters()

    meters = bind_meters(city_db_url, "M")
    cloud, settings = await start_cloud(make_settings, city_db_url)
    viewer = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}

    def rows(dev):
        with psycopg.connect(city_db_url) as conn:
            return conn.execute("select count(*) from telemetry t join devices d "
                                "on d.key = t.device_key where d.id = %s", (dev,)).fetchone()[0]

    def status(dev):
        with psycopg.connect(city_db_url) as conn:
            got = conn.execute("select s.status from device_state s join devices d "
                               "on d.key = s.device_key where d.id = %s", (dev,)).fetchone()
        return got[0] if got else None

    try:
        async with running(settings) as client:
            from server.keys import ADAPTERS

            supervisor = client.app[ADAPTERS]
            await wait_for(lambda: all(rows(d) >= 4 for d in meters))  # 2 metrics × 2 polls
            assert all(status(d) == "online" for d in meters)
            text = await (await client.get("/metrics", headers=viewer)).text()
            metrics = dict(line.rsplit(" ", 1) for line in text.splitlines()
                           if line.startswith("ioc_adapter"))
            assert metrics['ioc_adapter_up{adapter="acme_meter"}'] == "1.0"
            assert float(metrics['ioc_adapter_readings_total{adapter="acme_meter"}']) >= 8
            assert metrics['ioc_adapter_devices{adapter="acme_meter"}'] == "2.0"

            cloud.mode = "down"  # transient: offline after two intervals, then back
            await wait_for(lambda: all(status(d) == "offline" for d in meters))
            assert supervisor.stats()["acme_meter"].state == "retrying"
            text = await (await client.get("/metrics", headers=viewer)).text()
            assert 'ioc_adapter_up{adapter="acme_meter"} 0.0' in text
            assert 'ioc_adapter_state{adapter="acme_meter",state="retrying"} 1.0' in text
            cloud.mode = "ok"
            before = rows(meters[0])
            await wait_for(lambda: all(status(d) == "online" for d in meters)
                           and rows(meters[0]) > before)

            cloud.mode = "unauthorized"  # offline at once; not asked again for minutes
            await wait_for(lambda: all(status(d) == "offline" for d in meters))
            assert supervisor.stats()["acme_meter"].state == "auth_failed"
            asked = cloud.requests
            await asyncio.sleep(1.0)  # five intervals
            assert cloud.requests == asked

        cloud.mode = "gone"  # a configuration error stops the adapter
        async with running(settings) as client:
            supervisor = client.app[ADAPTERS]
            await wait_for(lambda: supervisor.stats()["acme_meter"].state == "stopped")
            asked = cloud.requests
            await asyncio.sleep(1.0)  # the point: five intervals pass without a request
            assert cloud.requests == asked
            assert "base_url" in supervisor.stats()["acme_meter"].last_error
    finally:
        await cloud.stop()


async def test_a_bad_adapter_section_stops_startup(tmp_path, monkeypatch, city_db_url,
                                                   make_settings):
    from server.polling.adapters import StartupError
    from tests.helpers import running

    _install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    settings = make_settings(city_db_url, mqtt_url=None,
                             adapters={"acme_meter": {"base_url": "ftp://x", "api_key": "k"}})
    with pytest.raises(StartupError, match=r"\[adapters.acme_meter\].*base_url"):
        async with running(settings):
            pass


async def test_commands_to_a_polling_adapters_devices_go_through_its_write(
        tmp_path, monkeypatch, city_db_url, make_settings, token_for):
    """A device bound to a third-party polling adapter that implements ``write`` takes
    commands over the HTTP API: the write runs between polls, its read-back is the result,
    the adapter's ConfigError fails the command with its reason, and an outage is retried
    once and then fails with the adapter's message."""
    from tests.helpers import auth, running, until_status

    _install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    meters = bind_meters(city_db_url, "V")
    cloud, settings = await start_cloud(make_settings, city_db_url)
    cloud.no_valve.add("V-1")
    token = await token_for(city_db_url, "operator")

    async def command(client, dev, args):
        resp = await client.post(f"/api/v1/devices/{dev}/commands", headers=auth(token),
                                 json={"name": "set_valve", "args": args})
        assert resp.status == 202, await resp.text()
        return await until_status(client, token, (await resp.json())["id"],
                                  "succeeded", "failed", "expired")

    try:
        async with running(settings) as client:
            done = await command(client, meters[0], {"open": False})
            assert done["status"] == "succeeded", done
            assert done["result"] == {"valve_open": False}
            assert cloud.valves == {"V-0": False}

            done = await command(client, meters[1], {"open": False})
            assert done["status"] == "failed"
            assert "no remote valve" in done["error"] and "acme_meter" in done["error"]

            resp = await client.post(f"/api/v1/devices/{meters[0]}/commands", headers=auth(token),
                                     json={"name": "reboot", "args": {}})
            assert resp.status == 400  # the catalogue: a water meter cannot be rebooted

            cloud.mode = "down"
            done = await command(client, meters[0], {"open": True})
            assert done["status"] == "failed"
            assert "HTTP 503" in done["error"]
            assert cloud.valves == {"V-0": False}
    finally:
        await cloud.stop()
