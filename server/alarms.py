"""The alarm engine: evaluates rules on committed batches and persists alarm transitions.

Stub: issue 4 fills it in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web


async def alarms_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
