"""The ingest pipeline: validate, queue (bounded), write in batches.

Producers (the MQTT session, HTTP push, pollers) call :meth:`Ingest.submit` with what an
adapter decoded. Validation is synchronous against the in-memory :class:`Directory`;
rejected readings become dead-letter rows with the reason and the raw payload, and the
good readings of the same message go on. The queue is bounded in readings: when the
database is slow or down, ``submit`` waits, so MQTT stops acknowledging and pollers slow
down, instead of memory growing. One writer task takes batches off the queue and commits
telemetry (COPY), dead letters and one ``device_state`` upsert per device per batch
(:mod:`server.ingest.state`) in one transaction; only then are the producers'
``on_commit`` callbacks (MQTT PUBACKs) run, in order.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter

import asyncpg

from adapters.sdk import DecodeError, Reading, StatusUpdate
from server.ingest.deadletters import DeadLetterCounter, kept
from server.ingest.directory import Directory
from server.ingest.state import apply_status, latest_by_device, upsert_state
from server.registry.devices import ID_RE
from server.runtime.metrics import Registry
from server.settings import IngestSettings

logger = logging.getLogger(__name__)

TELEMETRY_COLS = ("device_key", "metric_id", "ts", "value", "quality", "received_at")
DEAD_COLS = ("received_at", "source", "device_id", "topic", "field", "reason", "payload",
             "payload_size")

# The largest reading kept. Finite values near float8's limit (1e308) overflowed the rollups'
# sums and stopped the maintenance job; no meter, counter or sensor reports 1e15 of anything.
MAX_MAGNITUDE = 1e15


@dataclass(slots=True)
class Envelope:
    """What one producer call contributed: committed together, acknowledged together."""

    rows: list[tuple] = field(default_factory=list)
    dead: list[tuple] = field(default_factory=list)
    status: list[tuple[int, str, datetime, bool]] = field(default_factory=list)
    on_commit: Callable[[], None] | None = None

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.dead) + len(self.status)


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed batch, handed to listeners (rules, websocket hub) after the commit."""

    rows: list[tuple]
    status: list[tuple[int, str, datetime, bool]]
    states: dict[int, dict[str, tuple[int, float | bool | None, int]]]


@dataclass(frozen=True, slots=True)
class SubmitResult:
    accepted: int
    rejected: list[str]


@dataclass(slots=True)
class Inbound:
    """What one input (an MQTT message, an HTTP request, a poll) decoded, and whence it came:
    the source, topic and raw payload go with its dead letters."""

    items: Sequence[Reading | StatusUpdate]
    errors: Sequence[DecodeError] = ()
    source: str = "unknown"
    raw: bytes | None = None
    topic: str | None = None
    by_external_id: bool = False


class Ingest:
    def __init__(self, pool: asyncpg.Pool, directory: Directory, settings: IngestSettings,
                 metrics: Registry) -> None:
        self.pool = pool
        self.directory = directory
        self.settings = settings
        self.metrics = metrics
        self.capacity = settings.queue_size
        self._queue: deque[Envelope] = deque()
        self._pending = 0  # readings queued or being written (not yet committed)
        self._queued = 0  # readings in the queue, not yet taken by the writer
        self._space = asyncio.Condition()
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._partitions: set[date] = set()
        self.listeners: list[Callable[[Committed], None]] = []
        self._received: dict[str, object] = {}
        self.last_error: str | None = None
        self.stop_drain_timeout = 10.0
        self.dead_counter = DeadLetterCounter(metrics, directory)
        metrics.queue_capacity.set(self.capacity)

    # ------------------------------------------------------------------ producers
    async def submit(
        self,
        items: Sequence[Reading | StatusUpdate],
        *,
        source: str,
        errors: Sequence[DecodeError] = (),
        raw: bytes | None = None,
        topic: str | None = None,
        on_commit: Callable[[], None] | None = None,
        by_external_id: bool = False,
    ) -> SubmitResult:
        """Validate and queue what one input decoded; ``on_commit`` runs after its commit."""
        results = await self.submit_many(
            [Inbound(items, errors, source, raw, topic, by_external_id)], on_commit=on_commit)
        return results[0]

    async def submit_many(self, inputs: Sequence[Inbound], *,
                          on_commit: Callable[[], None] | None = None) -> list[SubmitResult]:
        """:meth:`submit` for many inputs at once (the MQTT fast path: every message of a
        socket read), committed together: one device lookup, one queue entry and one
        ``on_commit`` for all of them."""
        now = datetime.now(UTC)
        external = [inp for inp in inputs if inp.by_external_id and inp.items]
        if external:
            await self._map_external(external)
        await self._fill_misses(inputs)
        env = Envelope(on_commit=on_commit)
        future = now + timedelta(seconds=self.settings.future_tolerance_s)
        oldest = now - timedelta(days=self.settings.retention_days)
        results: list[SubmitResult] = []
        received: dict[str, int] = {}
        reject = _Rejecter(self.metrics, env, now, self.dead_counter,
                           self.settings.dead_letter_max_kib * 1024)  # pointed at each input
        for inp in inputs:
            before = len(env.rows)
            reject.inp, reject.rejected = inp, []
            for err in inp.errors:
                reject(err.device_id, err.field, str(err))
            if inp.items:
                self._validate(inp.items, now, env, reject, future, oldest)
            accepted = len(env.rows) - before
            received[inp.source] = received.get(inp.source, 0) + accepted
            results.append(SubmitResult(accepted, reject.rejected))
        if env.size:
            await self._put(env)
        elif on_commit:
            on_commit()
        for source, n in received.items():
            counter = self._received.get(source)
            if counter is None:  # .labels() hashes and locks: once per source, not per message
                counter = self._received[source] = self.metrics.readings_received.labels(source)
            counter.inc(n)
        return results

    async def dead_letter(self, *, source: str, reason: str, raw: bytes | None = None,
                          topic: str | None = None, device_id: str | None = None,
                          fieldname: str | None = None,
                          on_commit: Callable[[], None] | None = None) -> None:
        """Store an input that could not be decoded at all."""
        await self.submit((), source=source, raw=raw, topic=topic, on_commit=on_commit,
                          errors=[DecodeError(reason, field=fieldname, device_id=device_id)])


    def _validate(self, items, now: datetime, env: Envelope, reject,
                  future: datetime | None = None, oldest: datetime | None = None) -> None:
        """Rows for the good readings, statuses for the status updates, ``reject`` the rest.

        This runs for every reading (50,000/s at full rate). The readings of one message
        share their device and timestamp, so both are looked up and checked once per run
        of equal ones, not once per reading.
        """
        directory = self.directory
        devices = directory.devices
        if future is None:
            future = now + timedelta(seconds=self.settings.future_tolerance_s)
        if oldest is None:
            oldest = now - timedelta(days=self.settings.retention_days)
        rows = env.rows
        isfinite = math.isfinite
        last_id, dev, allowed = None, None, {}
        last_ts, ts, ts_problem = None, now, None
        for it in items:
            device_id = it.device_id
            if device_id != last_id:
                last_id, dev = device_id, devices.get(device_id)
                if dev is not None:
                    allowed = directory.metrics_for(dev.kind)
            if dev is None:
                what = "metric" if isinstance(it, Reading) else "status"
                reject(device_id, getattr(it, "metric", None),
                       f"unknown device {device_id!r}: register it before sending {what}s")
                continue
            if type(it) is not Reading and isinstance(it, StatusUpdate):
                env.status.append((dev.key, "online" if it.online else "offline", it.ts,
                                   it.retained))
                continue
            name = it.metric
            metric = allowed.get(name)
            if metric is None:
                if name not in directory.metrics:
                    reject(device_id, name, f"unknown metric {name!r}")
                else:
                    reject(device_id, name,
                           f"metric {name!r} is not one a {dev.kind} reports (expected one of "
                           f"{', '.join(sorted(directory.kind_metrics.get(dev.kind) or ()))})")
                continue
            value, quality = it.value, int(it.quality)
            if quality == 0:  # Quality.OK
                if not isfinite(value):
                    reject(device_id, name, f"non-finite value {value!r}")
                    continue
                if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
                    reject(device_id, name, f"value {value!r} is beyond ±{MAX_MAGNITUDE:g}: no reading "
                                            "this server stores is that large (a wrong scale or register?)")
                    continue
                if metric.is_bool and value != 0.0 and value != 1.0:
                    reject(device_id, name, f"{name} is a boolean metric; got {value!r}")
                    continue
            elif not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # (NaN and ±inf fail it too)
                value = 0.0  # a faulty reading keeps its quality, never a NaN in the table
            if it.ts is not last_ts:
                last_ts = ts = it.ts
                if ts.tzinfo is None:
                    ts = ts.replace(tzinfo=UTC)
                if ts > future:
                    ts_problem = (f"timestamp {ts.isoformat()} is {(ts - now).total_seconds():.0f}"
                                  " s in the future (check the device clock)")
                elif ts < oldest:
                    ts_problem = (f"timestamp {ts.isoformat()} is older than the retention of "
                                  f"{self.settings.retention_days} days")
                else:
                    ts_problem = None
            if ts_problem is not None:
                reject(device_id, name, ts_problem)
                continue
            rows.append((dev.key, metric.id, ts, value, quality, now))

    async def _map_external(self, inputs: list[Inbound]) -> None:
        """Replace the protocol's ids (DevEUIs) by registry device ids, in place."""
        directory = self.directory
        misses = [it.device_id for inp in inputs for it in inp.items
                  if directory.resolve_external(it.device_id) is None]
        if misses:
            await self._with_conn(lambda c: directory.fill_misses(c, external=misses))
        for inp in inputs:
            out = []
            for it in inp.items:
                dev_id = directory.resolve_external(it.device_id)
                if dev_id is None:
                    dev_id = f"external:{it.device_id}"  # unknown: rejected with this name
                out.append(_with_device(it, dev_id))
            inp.items = out

    async def _fill_misses(self, inputs: Sequence[Inbound]) -> None:
        devices = self.directory.devices
        # An id no device can have (a NUL, a space, 200 characters) is unknown without a
        # query; sent to PostgreSQL, a NUL would fail the lookup on every retry.
        misses = {it.device_id for inp in inputs for it in inp.items
                  if it.device_id not in devices and ID_RE.fullmatch(it.device_id)}
        if misses:
            await self._with_conn(lambda c: self.directory.fill_misses(c, ids=misses))

    async def _with_conn(self, fn) -> None:
        delay = 0.1
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await fn(conn)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                logger.warning("device lookup failed (%s); retrying", err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def _put(self, env: Envelope) -> None:
        size = env.size
        async with self._space:
            await self._space.wait_for(
                lambda: self._pending == 0 or self._pending + size <= self.capacity
            )
            self._pending += size
        self._queue.append(env)
        self._queued += size
        self._ready.set()
        self.metrics.queue_depth.set(self._pending)

    # ------------------------------------------------------------------ writer
    async def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name="ingest.writer")

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Commit what is queued (within ``drain_timeout``), then stop the writer."""
        if self._task is None:
            return
        drain_timeout = self.stop_drain_timeout if drain_timeout is None else drain_timeout
        if self._pending:
            try:
                async with asyncio.timeout(drain_timeout), self._space:
                    await self._space.wait_for(lambda: self._pending == 0)
            except TimeoutError:
                logger.warning("stopping with %d readings uncommitted; their sources will "
                               "send them again (MQTT redelivers unacknowledged messages)",
                               self._pending)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    def health(self) -> str:
        if self.last_error:
            return f"database not writable ({self.last_error}); {self._pending} readings waiting"
        return "ok"

    @property
    def pending(self) -> int:
        return self._pending

    async def _take(self) -> list[Envelope]:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        await self._linger()
        batch, n = [], 0
        while self._queue and n < self.settings.batch_max:
            env = self._queue.popleft()
            batch.append(env)
            n += env.size
        self._queued -= n
        return batch

    async def _linger(self) -> None:
        """Wait at most ``linger_ms`` for ``batch_min`` readings, and not at all under load.

        A commit has a fixed cost (a round trip, the state upsert, an fsync), so a trickle of
        readings is gathered for a moment rather than committed one by one. Under load what
        queued during the previous commit is already a batch, and a fixed pause would only
        add to every reading's latency (the map's updates ride on these commits).
        """
        linger = self.settings.linger_ms / 1000
        if not linger or self._queued >= self.settings.batch_min:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + linger
        while self._queued < self.settings.batch_min:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._ready.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._ready.wait()
            except TimeoutError:
                return

    async def _writer(self) -> None:
        while True:
            batch = await self._take()
            delay = 0.1
            while True:
                try:
                    committed = await self._write(batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # supervision boundary: retry forever, lose nothing
                    if self.last_error is None:
                        logger.error("ingest commit failed, holding %d readings: %s",
                                     self._pending, err)
                    self.last_error = f"{type(err).__name__}: {err}"[:200]
                    self.metrics.writer_errors.inc()
                    self.metrics.db_writable.set(0)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            if self.last_error is not None:
                logger.info("ingest commits again")
                self.last_error = None
            self.metrics.db_writable.set(1)
            for env in batch:
                if env.on_commit:
                    env.on_commit()
            size = sum(e.size for e in batch)
            async with self._space:
                self._pending -= size
                self._space.notify_all()
            self.metrics.queue_depth.set(self._pending)
            for listener in self.listeners:
                try:
                    listener(committed)
                except Exception:
                    logger.exception("ingest listener %r failed", listener)

    async def _write(self, batch: list[Envelope]) -> Committed:
        rows = [r for e in batch for r in e.rows]
        dead = [d for e in batch for d in e.dead]
        status = [s for e in batch for s in e.status]
        t0 = time.perf_counter()
        states = latest_by_device(rows, self.directory)
        async with self.pool.acquire() as conn:
            await self._ensure_partitions(conn, rows)
            async with conn.transaction():
                inserted = await self._copy_telemetry(conn, rows) if rows else 0
                if states:
                    await upsert_state(conn, states)
                if status:
                    await apply_status(conn, status)
                if dead:
                    await conn.copy_records_to_table("dead_letters", records=dead,
                                                     columns=DEAD_COLS)
        self.metrics.commit_seconds.observe(time.perf_counter() - t0)
        self.metrics.batch_size.observe(len(rows))
        self.metrics.readings_stored.inc(inserted)
        self.metrics.readings_duplicate.inc(len(rows) - inserted)
        return Committed(rows, status, states)

    async def _ensure_partitions(self, conn: asyncpg.Connection, rows: list[tuple]) -> None:
        if not rows:
            return
        stamps = list(map(itemgetter(2), rows))  # C-level loops: this runs per reading
        lo = min(stamps).astimezone(UTC).date()
        hi = max(stamps).astimezone(UTC).date()
        day = lo
        while day <= hi:
            if day not in self._partitions:
                await conn.execute("select ioc_ensure_telemetry_partition($1)", day)
                self._partitions.add(day)
            day += timedelta(days=1)

    async def _copy_telemetry(self, conn: asyncpg.Connection, rows: list[tuple]) -> int:
        """COPY straight in; on a duplicate, stage and insert with ON CONFLICT DO NOTHING.

        Duplicates are rare (redeliveries after a restart), so the fast path is a plain
        COPY inside a savepoint and only a batch holding one pays for the staging table.
        """
        try:
            async with conn.transaction():
                await conn.copy_records_to_table("telemetry", records=rows,
                                                 columns=TELEMETRY_COLS)
            return len(rows)
        except asyncpg.UniqueViolationError:
            pass
        await conn.execute(
            "create temp table if not exists ioc_stage "
            "(like telemetry including defaults) on commit delete rows"
        )
        await conn.copy_records_to_table("ioc_stage", records=rows, columns=TELEMETRY_COLS)
        result = await conn.execute(
            f"insert into telemetry ({', '.join(TELEMETRY_COLS)}) "
            f"select {', '.join(TELEMETRY_COLS)} from ioc_stage on conflict do nothing"
        )
        return int(result.split()[-1])


class _Rejecter:
    """Turns a rejected part of an input into a dead-letter row and a message for the
    sender. One per :meth:`Ingest.submit_many` call, pointed at each input in turn (not a
    closure per message: making one cost more than validating the message's readings)."""

    __slots__ = ("by_device", "env", "inp", "max_bytes", "metrics", "now", "rejected", "stored")

    def __init__(self, metrics: Registry, env: Envelope, now: datetime,
                 by_device: DeadLetterCounter, max_bytes: int) -> None:
        self.metrics, self.env, self.now = metrics, env, now
        self.by_device, self.max_bytes = by_device, max_bytes
        self.inp: Inbound = Inbound(())
        self.stored: Inbound | None = None  # the input whose payload is kept already
        self.rejected: list[str] = []

    def __call__(self, device_id: str | None, fieldname: str | None, reason: str) -> None:
        inp = self.inp
        # The payload once per input, cut to max_bytes (server/ingest/deadletters.py).
        first = self.stored is not inp
        self.stored = inp
        raw = inp.raw if first else None
        self.env.dead.append((self.now, inp.source, _pg_text(device_id), _pg_text(inp.topic),
                              _pg_text(fieldname), _pg_text(reason), kept(raw, self.max_bytes),
                              None if raw is None else len(raw)))
        self.rejected.append(f"{device_id or '?'}.{fieldname}: {reason}" if fieldname else reason)
        self.metrics.dead_letters.labels(inp.source, _reason_label(reason)).inc()
        self.by_device.count(device_id, inp.source, inp.raw, first)


def _with_device(item, device_id: str):
    if isinstance(item, Reading):
        return Reading(device_id, item.metric, item.value, item.ts, item.quality)
    return StatusUpdate(device_id, item.online, item.ts, item.retained)


def _pg_text(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: one in a device id or topic would fail the whole
    batch's commit on every retry. Keep it visible, escaped (the raw payload keeps it)."""
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", "\\x00")


def _reason_label(reason: str) -> str:
    """A low-cardinality label for the dead-letter counter."""
    for key in ("unknown device", "unknown metric", "not one a", "non-finite", "boolean",
                "future", "retention", "JSON", "topic"):
        if key in reason:
            return key.replace(" ", "_").lower()
    return "invalid"
