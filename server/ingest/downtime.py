"""How long nobody was listening before this server started.

Devices cannot be heard while the server is down, so that silence is not theirs: after a
two-hour outage, counting it would mark every device offline and raise a stale alarm for
each at the first scan (937 alarms at once in the demo: an alarm flood, ISA-18.2). Measured
once at start, before ingest stores anything: the newest reading of any device marks when
listening stopped (readings stamped ahead of the database's clock, by a fast device clock,
do not count). The staleness scan (``server/ingest/maintenance.py``) and the stale rules
(``server/alarms/reload.py``) add it to the deadlines of devices not heard since the start; the
silence before the outage still counts. A process starting beside running ones measures
almost nothing, as it should.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from server import keys

_SQL = "select now() as now, max(last_seen) filter (where last_seen <= now()) as newest from device_state"


@dataclass(frozen=True, slots=True)
class Downtime:
    started: datetime  # when this process started listening
    seconds: float = 0.0  # how long nobody listened before that


NONE = Downtime(datetime.min.replace(tzinfo=UTC))


async def measure(conn: asyncpg.Connection) -> Downtime:
    row = await conn.fetchrow(_SQL)
    if row["newest"] is None:
        return Downtime(row["now"])
    return Downtime(row["now"], max((row["now"] - row["newest"]).total_seconds(), 0.0))


async def downtime_ctx(app: web.Application) -> AsyncIterator[None]:
    async with app[keys.DB].acquire() as conn:
        app[keys.DOWNTIME] = await measure(conn)
    yield
