"""Every ``web.AppKey`` of the application, in one place (typed app state, no globals).

Types are named as strings so this module imports nothing heavier than the settings.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web

from server.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
METRICS = web.AppKey("metrics", "Registry")
TOKENS = web.AppKey("tokens", "TokenStore")
DIRECTORY = web.AppKey("directory", "Directory")
INGEST = web.AppKey("ingest", "Ingest")
MQTT = web.AppKey("mqtt", "MqttLink | None")
MQTT_INGEST = web.AppKey("mqtt_ingest", "MqttIngest")
MODBUS = web.AppKey("modbus", "ModbusPoller")
ADAPTERS = web.AppKey("adapters", "AdapterSupervisor")
SIMULATOR = web.AppKey("simulator", "Simulator")
HUB = web.AppKey("hub", "Hub")
ALARMS = web.AppKey("alarms", "AlarmEngine")
NOTIFIER = web.AppKey("notifier", "Notifier")
COMMANDS = web.AppKey("commands", "CommandService")
TILES = web.AppKey("tiles", "TileService")
DOWNTIME = web.AppKey("downtime", "Downtime")
RATE_LIMITER = web.AppKey("rate_limiter", "RateLimiter")
SCHEDULES = web.AppKey("schedules", "Scheduler")
SCHEDULE_CLOCK = web.AppKey("schedule_clock", "Clock")  # set before start: a test's ManualClock
