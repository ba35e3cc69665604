"""Alarm notifications: outbox, channels (webhook, SMTP, crew feed), routing, escalation.

Stub: issue 4 fills it in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web


async def enqueue(conn: asyncpg.Connection, alarm: dict[str, Any], event: str) -> None:
    """Queue the notifications of one alarm transition, inside the caller's transaction."""


async def notify_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
