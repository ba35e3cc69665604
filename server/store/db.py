"""The asyncpg pool (the hot path's driver) and its codecs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import orjson
from aiohttp import web

from server import keys

logger = logging.getLogger(__name__)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10,
                      reset: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
                      application_name: str = "ioc-server") -> asyncpg.Pool:
    """A pool; ``reset`` replaces asyncpg's reset round trip on release (None keeps it)."""
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=reset,
        command_timeout=60,
        # jit off: PostGIS functions carry high planner costs, so a 80 ms tile query over
        # 50,000 lamps crosses jit_above_cost and spends 0.3-0.8 s compiling (tiles/sql.py).
        server_settings={"application_name": application_name, "timezone": "UTC", "jit": "off"},
    )


async def db_pool(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    if not settings.database_url:
        raise RuntimeError("IOC_DATABASE_URL is not set")
    pool = await create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    app[keys.DB] = pool
    try:
        yield
    finally:
        await pool.close()
