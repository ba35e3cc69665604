"""Every ``web.AppKey`` of the application, in one place (typed app state, no globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web

from server.settings import Settings

if TYPE_CHECKING:
    pass

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
TOKENS = web.AppKey("tokens", "TokenStore")
MQTT = web.AppKey("mqtt", "MqttLink | None")
INGEST = web.AppKey("ingest", "Ingest")
METRICS = web.AppKey("metrics", "Registry")
BACKGROUND = web.AppKey("background", "dict[str, Any]")
__all__ = ["BACKGROUND", "DB", "INGEST", "METRICS", "MQTT", "SETTINGS", "TOKENS", "Any"]
