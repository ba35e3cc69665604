"""Modbus gateways from the settings, polled by the server into the real database."""

from __future__ import annotations

import math

import psycopg

from adapters.modbus.simulator import SimulatedGateway
from server.settings import ModbusGateway, ModbusUnit
from tests.helpers import running, wait_for


def rows(url, sql, *args):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


async def test_cabinet_and_pressure_units_polled_into_telemetry(city_db_url, make_settings,
                                                                token_for):
    cab, ps = (rows(city_db_url, "select min(id) from devices where kind = %s", k)[0][0]
               for k in ("lighting_cabinet", "pressure_sensor"))
    gw = SimulatedGateway()
    gw.add_unit(1, "eastron_sdm630", {"voltage_l1_v": 231.5, "power_w": 1800.0})
    gw.add_unit(2, "keller_series30", {"pressure_bar": math.nan, "temperature_c": 24.0})
    async with gw:
        gateway = ModbusGateway(name="gw-test", host=gw.host, port=gw.port, timeout_s=0.3, units=[
            ModbusUnit(device=cab, unit=1, profile="eastron_sdm630", interval_s=0.3),
            ModbusUnit(device=ps, unit=2, profile="keller_series30", interval_s=0.3),
        ])
        settings = make_settings(city_db_url, mqtt_url=None, modbus={"gateways": [gateway]})
        viewer = {"Authorization": f"Bearer {await token_for(city_db_url, 'viewer')}"}
        state_sql = ("select s.status, s.values, s.quality from device_state s "
                     "join devices d on d.key = s.device_key where d.id = %s")
        async with running(settings) as client:
            await wait_for(lambda: rows(city_db_url, state_sql, ps)
                           and rows(city_db_url, state_sql, cab))
            status, values, _ = rows(city_db_url, state_sql, cab)[0]
            assert status == "online"
            assert abs(values["voltage_l1_v"] - 231.5) < 1e-3
            _, values, quality = rows(city_db_url, state_sql, ps)[0]
            # NaN from a failed channel: stored with its quality, never a number on the map
            assert values["pressure_bar"] is None and quality["pressure_bar"] != 0
            assert values["temperature_c"] == 24.0
            gw.silent.add(2)  # the pressure sensor stops answering
            await wait_for(lambda: rows(city_db_url, state_sql, ps)[0][0] == "offline", 10)
            assert rows(city_db_url, state_sql, cab)[0][0] == "online"
            # The gateway on /metrics: its link, its polls and failures, its units by state.
            text = await (await client.get("/metrics", headers=viewer)).text()
            metrics = dict(line.rsplit(" ", 1) for line in text.splitlines()
                           if line.startswith("ioc_modbus"))
            assert metrics['ioc_modbus_gateway_connected{gateway="gw-test"}'] == "1.0"
            assert float(metrics['ioc_modbus_gateway_polls_total{gateway="gw-test"}']) >= 2
            assert float(metrics['ioc_modbus_gateway_poll_failures_total{gateway="gw-test"}']) >= 1
            assert metrics['ioc_modbus_units{gateway="gw-test",state="offline"}'] == "1.0"
            assert metrics['ioc_modbus_units{gateway="gw-test",state="online"}'] == "1.0"
