"""Device commands: routing to the device's adapter, confirmation, expiry, group commands.

Stub: issue 6 fills it in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web


async def commands_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
