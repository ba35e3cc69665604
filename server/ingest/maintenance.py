"""Periodic upkeep: telemetry partitions ahead and retention, device staleness, rollups."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import asyncpg

from server.ingest import deadletters
from server.ingest.directory import Directory
from server.ingest.downtime import NONE as NO_DOWNTIME
from server.ingest.downtime import Downtime
from server.settings import IngestSettings, StorageSettings
from server.store import compress as compressor
from server.store import history

logger = logging.getLogger(__name__)

# A device is stale after missing 3 reporting intervals, offline after 10.
STALE_INTERVALS = 3
OFFLINE_INTERVALS = 10
# Rows one scan looks at, at most: after an outage of everything a backlog is worked off in
# rounds of this size, one after the other, instead of one huge transaction.
SCAN_LIMIT = 50_000

# Only devices whose ``next_check`` has come, through its partial index: at 1,000,000
# streetlights (5-minute interval) a scan every 5 s updates the ~10,000 rows due (240 ms),
# where reading every online device took 1.6 s. For each: still fresh → next_check moves
# to the moment it would go stale (the writer never touches next_check of a watched
# device, so a reading stays a HOT update);
# stale or offline → the status changes. The update re-checks that status and last_seen
# are what the scan read: a reading committed meanwhile wins, and the device is looked at
# again next round.
# Devices not heard since this server started listening ($4) get its downtime ($5 s) added
# to their deadlines: nobody could hear them then (server/ingest/downtime.py).
STATUS_SQL = """
with due as (
    select s.device_key, s.status, s.last_seen,
           make_interval(secs => coalesce(d.expected_interval_s, k.expected_interval_s)) as iv,
           case when s.last_seen < $4 then make_interval(secs => $5) else interval '0' end as grace
    from device_state s
    join devices d on d.key = s.device_key
    join kinds k on k.kind = d.kind
    where s.next_check <= now()
    order by s.next_check
    limit $3
), decided as (
    select device_key, status, last_seen, iv, grace,
           case when status not in ('online', 'stale') or last_seen is null then status
                when last_seen + grace < now() - $2::int * iv then 'offline'
                when last_seen + grace < now() - $1::int * iv then 'stale'
                else status end as new_status
    from due
)
update device_state s set
    status = d.new_status,
    status_changed_at = case when d.new_status <> d.status then now() else s.status_changed_at end,
    updated_at = case when d.new_status <> d.status then now() else s.updated_at end,
    next_check = case when d.last_seen is null then null
                      when d.new_status = 'online' then d.last_seen + d.grace + $1::int * d.iv
                      when d.new_status = 'stale' then d.last_seen + d.grace + $2::int * d.iv
                      else null end
from decided d
where s.device_key = d.device_key
  and s.status = d.status and s.last_seen is not distinct from d.last_seen
returning s.device_key, s.status, d.new_status <> d.status as changed
"""

NESTED_LOOPS_ONLY = "set local enable_hashjoin = off; set local enable_mergejoin = off"

class Maintenance:
    def __init__(self, pool: asyncpg.Pool, directory: Directory, settings: IngestSettings,
                 *, status_every_s: float = 5.0, housekeeping_every_s: float = 60.0,
                 downtime: Downtime = NO_DOWNTIME, storage: StorageSettings | None = None) -> None:
        self.pool = pool
        self.storage = storage or StorageSettings()
        self.downtime = downtime
        self.directory = directory
        self.settings = settings
        self.status_every_s = status_every_s
        self.housekeeping_every_s = housekeeping_every_s
        self._tasks: list[asyncio.Task] = []
        # Told of every status change the scan makes: [(device_key, new_status), ...].
        self.status_listeners: list[Callable[[list[tuple[int, str]]], None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(self.status_every_s, self.update_status),
                                name="maintenance.status"),
            asyncio.create_task(self._loop(self.housekeeping_every_s, self.housekeeping),
                                name="maintenance.housekeeping"),
            # First five minutes after start (at most): a start-up is busy enough.
            asyncio.create_task(self._loop(self.storage.compress_every_s, self.compress,
                                           first_after=min(self.storage.compress_every_s, 300.0)),
                                name="maintenance.compress"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def _loop(self, every: float, job, first_after: float = 0.0) -> None:
        await asyncio.sleep(first_after)
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # supervision boundary: try again next round
                logger.warning("maintenance job %s failed: %s", job.__name__, err)
            await asyncio.sleep(every)

    async def update_status(self) -> list[tuple[int, str]]:
        """Mark devices stale or offline whose deadline passed; tell the listeners."""
        changes: list[tuple[int, str]] = []
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                # Index lookups by primary key for the few due rows: costed on its own, the
                # planner hashes all of devices and device_state instead (1,000,000 devices,
                # ~10,000 due: 410 ms that way, 240 ms this way; the old full scan 1.6 s).
                await conn.execute(NESTED_LOOPS_ONLY)
                rows = await conn.fetch(STATUS_SQL, STALE_INTERVALS, OFFLINE_INTERVALS,
                                        SCAN_LIMIT, self.downtime.started, self.downtime.seconds)
            changes += [(r["device_key"], r["status"]) for r in rows if r["changed"]]
            if len(rows) < SCAN_LIMIT:
                break
        if changes:
            for listener in self.status_listeners:
                try:
                    listener(changes)
                except Exception:
                    logger.exception("status listener %r failed", listener)
        return changes

    async def housekeeping(self) -> None:
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn:
            for d in range(-1, self.settings.partitions_ahead_days + 1):
                await conn.execute("select ioc_ensure_telemetry_partition($1)",
                                   (now + timedelta(days=d)).date())
            cutoff = now - timedelta(days=self.storage.raw_retention_days)
            dropped = await conn.fetchval("select ioc_drop_telemetry_partitions($1)", cutoff)
            dropped_points = await compressor.drop_before(conn, cutoff.date())
            if dropped or dropped_points:
                logger.info("retention: dropped %d telemetry partition(s) and %d compressed "
                            "points before %s", dropped, dropped_points, cutoff.date())
            await history.expire(conn, now, hourly_days=self.storage.hourly_retention_days,
                                 daily_days=self.storage.daily_retention_days)
            await deadletters.expire(conn, now, self.settings.dead_letter_retention_days)
            await self.directory.refresh_if_changed(conn)
            await self.rollup(conn, now)

    async def compress(self) -> compressor.Report:
        """Closed days into compressed segments (also ``ioc compress``)."""
        async with self.pool.acquire() as conn:
            return await compressor.compress_due(
                conn, compress_after_days=self.storage.compress_after_days)

    async def rollup(self, conn: asyncpg.Connection, now: datetime) -> list[datetime]:
        """Hourly and daily rollups of the hours due and of those that got late readings."""
        hourly = self.storage.hourly_retention_days
        return await history.rollup(
            conn, now, raw_cutoff=now - timedelta(days=self.storage.raw_retention_days),
            hourly_cutoff=now - timedelta(days=hourly) if hourly else None)
