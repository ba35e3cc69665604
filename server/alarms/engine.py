"""The alarm engine: rules evaluated on committed batches, transitions persisted in order.

``on_batch`` (an ingest listener) runs the pure evaluator (:mod:`rules.engine`) on each
committed batch, synchronously and quickly, and queues what changed; one persister task
stores each transition in its own transaction (the alarm row, an ``alarm_events`` row,
the notifications through :func:`server.notify.enqueue`), then publishes the alarm to the
websocket hub. One timer task fires on/off delays and stale-data deadlines at their time,
ends timed shelving, and releases chattering alarms once quiet. Operators' actions (the
API) go through :meth:`AlarmEngine.act`: the same lifecycle functions, the same
transaction shape, the alarm row locked so they never race the persister.

Restart: the open alarms are put back into the evaluator, then the latest state of every
device (``device_state``, and the recent telemetry rate rules need) is replayed without
emitting, and only then are due conditions fired. A condition whose alarm is already
stored raises nothing, so nothing fires twice; one whose transition was lost with the
previous process is raised now.

Rules come from the ``[rules] paths`` files (re-read on change) and the ``rules`` table
(the API); both are evaluated alike. File rules are mirrored into the table (``source``
``file:<path>``) so the API lists every rule in one place.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from aiohttp import web
from prometheus_client import Counter, Histogram

from rules import lifecycle as lc
from rules.devices import DeviceRow, DeviceTable
from rules.engine import RuleEngine
from rules.evaluator import Batch, MetricInfo, Transition
from rules.models import CORRELATING_KINDS, Rule, RuleError, parse_rule, rule_document
from server import keys, notify
from server.alarms.rulefiles import RuleFiles
from server.http.problems import Problem
from server.ingest.downtime import NONE as NO_DOWNTIME
from server.ingest.downtime import Downtime
from server.runtime.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

SYSTEM = "rules"  # the actor of the engine's own transitions
DEVICE_SIGNATURE_SQL = "select count(*), coalesce(max(key), 0), max(updated_at) from devices"
DEVICE_CHECK_S = 30.0
RULES_SIGNATURE_SQL = "select count(*), max(updated_at) from rules where source = 'api'"

ALARM_COLUMNS = (
    "a.id, a.rule, a.device, a.severity, a.priority, a.state, a.active, a.shelved_until, "
    "a.suppressed, a.out_of_service, a.chattering, a.raised_at, a.acked_at, a.acked_by, "
    "a.cleared_at, a.closed_at, a.value, a.message, a.incident, a.assigned_crew, a.work_state, "
    "a.dedup_key, a.updated_at"
)
ALARM_SELECT = f"""
select {ALARM_COLUMNS},
       ST_AsGeoJSON(coalesce(a.geom, d.geom), 7)::json as geometry,
       coalesce((select array_agg(c.device order by c.device) from alarms c
                 where c.incident = a.id), '{{}}') as children
from alarms a left join devices d on d.id = a.device
"""

INSERT_SQL = """
with n as (select nextval(pg_get_serial_sequence('alarms', 'id')) as id)
insert into alarms (id, rule, device, severity, priority, state, active, shelved_until,
                    suppressed, out_of_service, raised_at, value, message, geom, incident,
                    dedup_key)
select n.id, $1, $2, $3, $4, 'active_unacked', true, $5, $6, $7, $8, $9, $10,
       case when $11::float8 is null then null else ST_SetSRID(ST_MakePoint($11, $12), 4326) end,
       $13, $1 || ':' || $2 || ':' || n.id
from n
on conflict (rule, device) where state <> 'closed' do nothing
returning *
"""
# ``on conflict``: another server process (scale-out) opened this alarm after our select
# found none. The insert waits for its transaction, then returns no row; the transition is
# applied to that alarm instead, in the same transaction, so it is raised once.

# Columns an action may change (anything else in a Change is a programming error).
UPDATABLE = frozenset({"state", "active", "severity", "value", "message", "cleared_at",
                       "closed_at", "acked_at", "acked_by", "shelved_until", "suppressed",
                       "out_of_service", "chattering", "incident", "assigned_crew", "work_state"})


def alarm_json(row: Any) -> dict[str, Any]:
    """An alarm as the API, the websocket hub and the notifier show it (a row of
    :data:`ALARM_SELECT`)."""
    r = dict(row)
    geometry = r.get("geometry")
    return {
        "id": r["id"], "rule": r["rule"], "device": r["device"], "severity": r["severity"],
        "priority": r["priority"], "state": r["state"], "active": r["active"],
        "shelved_until": r["shelved_until"], "suppressed": r["suppressed"],
        "out_of_service": r["out_of_service"], "chattering": r["chattering"],
        "raised_at": r["raised_at"], "acked_at": r["acked_at"], "acked_by": r["acked_by"],
        "cleared_at": r["cleared_at"], "closed_at": r["closed_at"], "value": r["value"],
        "message": r["message"], "geometry": geometry,
        "children": list(r.get("children") or []), "incident": r["incident"],
        "assigned_crew": r["assigned_crew"], "work_state": r["work_state"],
        "dedup_key": r["dedup_key"], "updated_at": r["updated_at"],
    }


async def fetch_alarm(conn: asyncpg.Connection, alarm_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(ALARM_SELECT + " where a.id = $1", alarm_id)
    return alarm_json(row) if row is not None else None


async def load_device_table(conn: asyncpg.Connection) -> DeviceTable:
    rows = await conn.fetch(
        """select d.key, d.id, d.kind, d.parent, d.ward,
                  ST_X(ST_PointOnSurface(d.geom)) as lon, ST_Y(ST_PointOnSurface(d.geom)) as lat,
                  coalesce(d.expected_interval_s, k.expected_interval_s) as interval_s
           from devices d join kinds k on k.kind = d.kind""")
    return DeviceTable.build([
        DeviceRow(r["key"], r["id"], r["kind"], r["lon"], r["lat"], r["parent"], r["ward"],
                  float(r["interval_s"])) for r in rows])


_KEY, _METRIC, _TS, _VALUE, _QUALITY = (itemgetter(i) for i in range(5))


def committed_batch(core: RuleEngine, rows: list[tuple]) -> Batch:
    """Ingest's committed rows (key, metric id, ts, value, quality, received) as a Batch."""
    n = len(rows)
    if not n:
        return Batch.empty()
    keys = np.fromiter(map(_KEY, rows), np.int64, n)
    mids = np.fromiter(map(_METRIC, rows), np.int64, n)
    vals = np.fromiter(map(_VALUE, rows), np.float64, n)
    quality = np.fromiter(map(_QUALITY, rows), np.int64, n)
    # The readings of one message share one datetime object and sit side by side:
    # convert each run once (datetime.timestamp is most of this function's cost).
    stamps = list(map(_TS, rows))
    ids = np.fromiter(map(id, stamps), np.int64, n)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    firsts = np.fromiter(map(datetime.timestamp, [stamps[i] for i in starts.tolist()]),
                         np.float64, len(starts))
    ts = np.repeat(firsts, np.diff(np.r_[starts, n]))
    return core.batch(keys, mids, ts, vals, quality)


def _message(rule: Rule, device: str, t: Transition) -> str:
    """The rule's message template filled in, or the evaluator's own text."""
    if not rule.message:
        return t.text
    try:
        return rule.message.format(device=device, value=t.value, rule=rule.id, text=t.text)
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        return f"{t.text} (message template of rule {rule.id} failed: {err!r})"


def restored_level(rule: Rule, severity: str, value: float | None) -> int:
    """The signed level an open alarm stands for (the evaluator's own encoding)."""
    v = value if value is not None and math.isfinite(value) else None
    kind = rule.kind
    if kind == "threshold":
        db = rule.deadband
        high = rule.above is not None and (rule.below is None or v is None or v > rule.above - db)
        if high:
            return 2 if rule.high_high is not None and v is not None and v > rule.high_high - db else 1
        return -2 if rule.low_low is not None and v is not None and v < rule.low_low + db else -1
    if kind == "rate_of_change":
        return 1 if rule.above is not None and (rule.below is None or (v or 0) > 0) else -1
    if kind == "lighting_schedule":
        return 1 if (v or 0) >= 0.5 else -1
    return 1


class AlarmEngine:
    def __init__(self, pool: asyncpg.Pool, settings, directory, hub=None, metrics=None,
                 downtime: Downtime = NO_DOWNTIME) -> None:
        self.pool = pool
        self.downtime = downtime
        self.settings = settings
        self.rules_settings = settings.rules
        self.directory = directory
        self.hub = hub
        base = Path(settings.config).parent if settings.config else Path.cwd()
        self.files = RuleFiles(self.rules_settings.paths, base)
        self.core: RuleEngine | None = None
        self.sources: dict[str, str] = {}  # rule id -> "api" | "file:<path>"
        self.rule_errors: list[str] = []
        self._queue: deque[tuple] = deque()
        self._queued = asyncio.Event()
        self._emptied = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._shelves: list[tuple[float, int]] = []  # heap of (shelved until, alarm id)
        self._held: dict[tuple[str, str], float] = {}  # chattering alarms held active
        self._activations: dict[tuple[str, str], deque[float]] = {}
        self._device_sig: tuple | None = None
        self._dir_version = getattr(directory, "version", None)
        self._device_check_at = 0.0
        self._rules_sig: tuple | None = None
        self._reload_lock = asyncio.Lock()
        # Figures for the benchmark and /metrics.
        self.eval_seconds = 0.0
        self.batches = 0
        self.latencies: deque[float] = deque(maxlen=100_000)  # reading -> alarm committed, s
        self.lateness: deque[float] = deque(maxlen=100_000)  # timer fired after its deadline, s
        self._m_transitions = self._m_latency = self._m_lateness = self._m_evals = None
        if metrics is not None:
            r = metrics.registry
            self._m_evals = Counter("ioc_rule_evaluations", "Device-rule evaluations", registry=r)
            self._m_transitions = Counter("ioc_alarm_transitions",
                                          "Alarm transitions stored, by event", ["event"], registry=r)
            self._m_latency = Histogram(
                "ioc_alarm_latency_seconds", "Reading (device time) to alarm transition committed",
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
            self._m_lateness = Histogram(
                "ioc_alarm_timer_lateness_seconds", "Rule timers fired after their deadline",
                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            table = await load_device_table(conn)
            self._device_sig = tuple(await conn.fetchrow(DEVICE_SIGNATURE_SQL))
        metrics = {m.name: MetricInfo(m.id, m.is_bool) for m in self.directory.metrics.values()}
        self.core = RuleEngine(table, metrics)
        self.files.scan()
        await self.reload_rules(initial=True)
        self._tasks = [
            asyncio.create_task(self._persist_loop(), name="alarms.persist"),
            asyncio.create_task(self._timer_loop(), name="alarms.timers"),
            asyncio.create_task(self._watch_loop(), name="alarms.watch"),
        ]

    async def stop(self, drain_timeout: float = 5.0) -> None:
        if self._queue:
            try:
                async with asyncio.timeout(drain_timeout):
                    await self.drained()
            except TimeoutError:
                logger.warning("stopping with %d alarm transitions unstored; the next start "
                               "re-derives them from the stored state", len(self._queue))
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def drained(self) -> None:
        """Wait until every queued transition is stored (tests, shutdown). The persister
        removes an item only once it is stored, so an empty queue means all are."""
        while self._queue:
            self._emptied.clear()
            await self._emptied.wait()

    # ------------------------------------------------------------------ listeners
    def on_batch(self, committed) -> None:
        """An ingest listener: evaluate the committed batch; never blocks the writer."""
        core = self.core
        if core is None or (not committed.rows and not committed.status):
            return
        t0 = time.perf_counter()
        before = core.evaluations
        out: list[Transition] = []
        if committed.rows:
            out = core.evaluate(committed_batch(core, committed.rows))
        if committed.status:
            st = committed.status
            out += core.status(np.array([s[0] for s in st], dtype=np.int64),
                               np.array([s[1] == "online" for s in st]),
                               np.array([s[2].timestamp() for s in st]),
                               np.array([bool(s[3]) for s in st]))
        self.eval_seconds += time.perf_counter() - t0
        self.batches += 1
        if self._m_evals is not None:
            self._m_evals.inc(core.evaluations - before)
        self._submit(out)
        self._timer_wake.set()  # a new delay may be due before the timer's current sleep ends

    def on_status(self, changes: list[tuple[int, str]]) -> None:
        """Status changes from the staleness scan: an 'offline' counts like a link's."""
        if self.core is None:
            return
        off = [(k, s) for k, s in changes if s in ("offline", "online")]
        if not off:
            return
        now = time.time()
        out = self.core.status(np.array([k for k, _ in off], dtype=np.int64),
                               np.array([s == "online" for _, s in off]),
                               np.full(len(off), now), np.zeros(len(off), dtype=bool))
        self._submit(out)

    def _submit(self, transitions: Iterable[Transition]) -> None:
        n = 0
        for t in transitions:
            self._queue.append(("t", t))
            n += 1
        if n:
            self._queued.set()

    # ------------------------------------------------------------------ persisting
    async def _persist_loop(self) -> None:
        delay = 0.1
        while True:
            if not self._queue:
                self._emptied.set()
                self._queued.clear()
                await self._queued.wait()
                continue
            item = self._queue[0]
            try:
                await self._persist(item)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.exceptions.CannotConnectNowError, asyncpg.ReadOnlySQLTransactionError,
                    asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
                    # another server process opened the same alarm a moment before: retry
                    # finds its row and the transition becomes a no-op
                    asyncpg.UniqueViolationError) as err:
                logger.warning("storing an alarm transition failed (%s); retrying in %.1f s",
                               err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:  # supervision boundary: one bad transition must not stop the rest
                logger.exception("alarm transition %r could not be stored; dropped", item)
            self._queue.popleft()

    async def _persist(self, item: tuple) -> None:
        what = item[0]
        if what == "t":
            await self._store_transition(item[1])
        elif what == "close":
            await self._close(item[1], item[2])
        elif what == "unshelve":
            await self._expire_shelf(item[1])
        elif what == "quiet":
            await self._end_chattering(item[1], item[2])

    def _device_id(self, key: int) -> str | None:
        table = self.core.table
        slot = table.slot(key)
        return table.ids[slot] if slot >= 0 else None

    async def _store_transition(self, t: Transition) -> None:
        rule = self.core.rules.get(t.rule)
        device = self._device_id(t.device)
        if rule is None or device is None:
            return  # the rule was removed, or the device deleted, since
        now = datetime.now(UTC)
        at = datetime.fromtimestamp(min(t.ts, now.timestamp()), UTC)
        published: dict[str, Any] | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "select * from alarms where rule = $1 and device = $2 and state <> 'closed' "
                "for update", t.rule, device)
            message = _message(rule, device, t)
            details = {"level": t.level, **t.details}
            if t.event == "raise":
                # Raised again while held active for chattering: an activation all the same.
                activation = self._held.pop((rule.id, device), None) is not None
                if row is None:
                    published = await self._insert(conn, rule, device, t, at, message, details)
                    if published is None:  # opened by another process meanwhile
                        row = await conn.fetchrow(
                            "select * from alarms where rule = $1 and device = $2 "
                            "and state <> 'closed' for update", t.rule, device)
                        if row is None:  # and already closed again: the persister retries
                            raise asyncpg.UniqueViolationError(
                                f"alarm {rule.id}/{device} opened and closed by another process")
                if published is not None:
                    alarm_id, activation = published["id"], True
                elif row is not None:
                    alarm_id = row["id"]
                    change = lc.raised(row, severity=t.severity, value=t.value, message=message,
                                       now=now)
                    if change is not None:
                        change.details |= details
                        published = await self._write(conn, row, change, SYSTEM, now)
                        activation = activation or change.event == "raised"
                if activation:
                    published = await self._chatter(conn, alarm_id, rule.id, device, now,
                                                    published)
            elif t.event == "update" and row is not None:
                change = lc.raised(row, severity=t.severity, value=t.value, message=message, now=now)
                if change is not None:
                    change.details |= details
                    published = await self._write(conn, row, change, SYSTEM, now)
            elif t.event == "clear" and row is not None:
                if row["chattering"] and row["active"]:
                    # Held active until it has been quiet for the chatter window (ISA-18.2:
                    # a chattering alarm is handled, not re-announced every few seconds).
                    self._held[(rule.id, device)] = time.time() + self.rules_settings.chatter_window_s
                    self._timer_wake.set()
                    return
                change = lc.cleared(row, value=t.value, message=message, now=now)
                if change is not None:
                    change.details |= details
                    published = await self._write(conn, row, change, SYSTEM, now)
            elif t.event == "suppress" and row is not None and not row["suppressed"]:
                incident = await self._incident_id(conn, t)
                change = lc.Change("suppressed", {"suppressed": True, "incident": incident},
                                   notify="suppressed", reason=f"part of incident {incident}",
                                   details={"incident": incident, "incident_rule": t.incident_rule})
                published = await self._write(conn, row, change, SYSTEM, now)
            elif t.event == "release" and row is not None and row["suppressed"]:
                change = lc.Change("unsuppressed", {"suppressed": False},
                                   notify="raised" if row["active"] else None,
                                   reason=t.text, details={"incident_rule": t.incident_rule})
                published = await self._write(conn, row, change, SYSTEM, now)
        if published is not None:
            self._published(published, t)

    def _published(self, alarm: dict[str, Any], t: Transition | None = None,
                   event: str | None = None) -> None:
        if self.hub is not None:
            self.hub.publish_alarm(alarm)
        if t is not None and t.event in ("raise", "clear"):
            lat = time.time() - t.ts
            self.latencies.append(lat)
            if self._m_latency is not None:
                self._m_latency.observe(lat)
        if self._m_transitions is not None:
            self._m_transitions.labels(event or (t.event if t else "action")).inc()
        until = alarm.get("shelved_until")
        if until is not None and alarm.get("state") != "closed":
            heapq.heappush(self._shelves, (until.timestamp(), alarm["id"]))
            self._timer_wake.set()

    async def _incident_id(self, conn: asyncpg.Connection, t: Transition) -> int | None:
        if t.incident_rule is None or t.incident_device is None:
            return None
        dev = self._device_id(t.incident_device)
        return await conn.fetchval(
            "select id from alarms where rule = $1 and device = $2 and state <> 'closed'",
            t.incident_rule, dev)

    async def _insert(self, conn, rule: Rule, device: str, t: Transition, at: datetime,
                      message: str, details: dict[str, Any]) -> dict[str, Any] | None:
        """The new alarm, or None when another process has just opened it."""
        # Shelving and out-of-service belong to the alarm point (rule, device), not to one
        # occurrence: a new occurrence inherits them from the last one.
        prev = await conn.fetchrow(
            "select shelved_until, out_of_service from alarms where rule = $1 and device = $2 "
            "order by id desc limit 1", rule.id, device)
        now = datetime.now(UTC)
        shelved = prev["shelved_until"] if prev and prev["shelved_until"] and \
            prev["shelved_until"] > now else None
        oos = bool(prev and prev["out_of_service"])
        incident = await self._incident_id(conn, t)
        lon, lat = t.point if t.point else (None, None)
        row = await conn.fetchrow(
            INSERT_SQL, rule.id, device, t.severity, rule.priority_level, shelved,
            incident is not None, oos, at, t.value, message, lon, lat, incident)
        if row is None:
            return None
        if incident is not None:
            details["incident"] = incident
        details["annunciated"] = lc.annunciated(row, now)
        await self._event(conn, row["id"], "raised", SYSTEM, None, details)
        alarm = await fetch_alarm(conn, row["id"])
        return await self._notify(conn, alarm, "raised")

    async def _chatter(self, conn, alarm_id: int, rule_id: str, device: str, now: datetime,
                       published: dict[str, Any] | None) -> dict[str, Any] | None:
        """Count an activation; flag the alarm chattering at N within the window."""
        n = self._activation((rule_id, device))
        if n < self.rules_settings.chatter_count:
            return published
        row = await conn.fetchrow("select * from alarms where id = $1", alarm_id)
        if row["chattering"]:
            return published
        change = lc.Change("chattering", {"chattering": True},
                           reason=f"{n} activations within {self.rules_settings.chatter_window_s:.0f} s; "
                                  "held active until quiet",
                           details={"activations": n, "window_s": self.rules_settings.chatter_window_s})
        return await self._write(conn, row, change, SYSTEM, now)

    def _activation(self, key: tuple[str, str]) -> int:
        now = time.time()
        window = self.rules_settings.chatter_window_s
        seen = self._activations.setdefault(key, deque(maxlen=64))
        seen.append(now)
        while seen and seen[0] < now - window:
            seen.popleft()
        if len(self._activations) > 200_000:  # forget quiet points
            for k in [k for k, d in self._activations.items() if not d or d[-1] < now - window]:
                del self._activations[k]
        return len(seen)

    async def _write(self, conn, row, change: lc.Change, actor: str, now: datetime,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply a change to a locked alarm row, record it, queue its notifications."""
        updates = dict(change.updates)
        bad = set(updates) - UPDATABLE
        if bad:
            raise ValueError(f"not alarm columns one may change: {sorted(bad)}")
        if updates:
            cols = list(updates)
            sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
            await conn.execute(f"update alarms set {sets}, updated_at = now() where id = $1",
                               row["id"], *[updates[c] for c in cols])
        details = dict(change.details)
        if change.event == "raised":
            details["annunciated"] = lc.annunciated({**dict(row), **updates}, now)
        await self._event(conn, row["id"], change.event, actor, change.reason, details)
        alarm = await fetch_alarm(conn, row["id"])
        if change.notify is not None:
            alarm = await self._notify(conn, alarm, change.notify)
        return alarm

    async def _notify(self, conn, alarm: dict[str, Any], event: str) -> dict[str, Any]:
        updates = await notify.enqueue(conn, alarm, event)
        if updates:
            alarm.update(updates)
        return alarm

    @staticmethod
    async def _event(conn, alarm_id: int, event: str, actor: str, reason: str | None,
                     details: dict[str, Any]) -> None:
        await conn.execute(
            "insert into alarm_events (alarm_id, event, actor, reason, details) "
            "values ($1, $2, $3, $4, $5)", alarm_id, event, actor, reason, details)

    async def _close(self, alarm_id: int, reason: str) -> None:
        """Close an alarm whose rule went away (removed, disabled, no longer selecting it)."""
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("select * from alarms where id = $1 for update", alarm_id)
            if row is None or row["state"] == "closed":
                return
            change = lc.Change("closed", {"state": "closed", "active": False, "closed_at": now,
                                          "cleared_at": row["cleared_at"] or now},
                               notify="closed", reason=reason)
            alarm = await self._write(conn, row, change, SYSTEM, now)
        self._published(alarm, event="closed")

    async def _expire_shelf(self, alarm_id: int) -> None:
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("select * from alarms where id = $1 for update", alarm_id)
            if row is None or row["shelved_until"] is None or row["shelved_until"] > now \
                    or row["state"] == "closed":
                return
            alarm = await self._write(conn, row, lc.unshelve(row, now=now, expired=True), SYSTEM, now)
        self._published(alarm, event="unshelved")

    async def _end_chattering(self, rule_id: str, device: str) -> None:
        """Quiet for a whole window: store the clear it was held for, drop the flag."""
        key = self._key_of(device)
        if key is not None and self.core.level(rule_id, key) != 0:
            return  # active again: stays held
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "select * from alarms where rule = $1 and device = $2 and state <> 'closed' "
                "for update", rule_id, device)
            if row is None:
                return
            await self._write(conn, row, lc.Change("chattering", {"chattering": False},
                                                   reason="quiet again", details={"ended": True}),
                              SYSTEM, now)
            row = await conn.fetchrow("select * from alarms where id = $1", row["id"])
            change = lc.cleared(row, value=row["value"], message=f"{row['message']} (cleared after "
                                "chattering)", now=now)
            alarm = await self._write(conn, row, change, SYSTEM, now) if change else \
                await fetch_alarm(conn, row["id"])
        self._published(alarm, event="cleared")

    def _key_of(self, device: str) -> int | None:
        slot = self.core.table.slot_of_id.get(device)
        return int(self.core.table.keys[slot]) if slot is not None else None

    # ------------------------------------------------------------------ operator actions
    async def act(self, alarm_id: int, action: str, principal, body: dict[str, Any]) -> dict[str, Any]:
        """An operator's (or a crew's) action on one alarm; raises Problem when it does not
        apply. Role checks are the caller's; a crew may only touch alarms assigned to it."""
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("select * from alarms where id = $1 for update", alarm_id)
            if row is None:
                raise Problem(404, f"no alarm with id {alarm_id}")
            if principal.role == "crew" and row["assigned_crew"] != principal.crew:
                raise Problem(403, f"alarm {alarm_id} is not assigned to your crew "
                                   f"({principal.crew or 'none'})")
            reason = body.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise Problem(400, "reason must be text")
            try:
                change = await self._change(conn, row, action, principal, body, now)
            except lc.LifecycleError as err:
                raise Problem(err.status, err.message) from None
            if reason and not change.reason:
                change.reason = reason
            alarm = await self._write(conn, row, change, principal.actor, now)
        self._published(alarm, event=change.event)
        return alarm

    async def _change(self, conn, row, action: str, principal, body, now) -> lc.Change:
        if action == "ack":
            return lc.acknowledge(row, actor=principal.actor, now=now)
        if action == "shelve":
            return lc.shelve(row, minutes=body.get("minutes"),
                             max_minutes=self.rules_settings.shelve_max_minutes, now=now,
                             reason=body.get("reason"))
        if action == "unshelve":
            return lc.unshelve(row, now=now, reason=body.get("reason"))
        if action == "out_of_service":
            return lc.out_of_service(row, enabled=body.get("enabled", True), reason=body.get("reason"))
        if action == "assign":
            crew = body.get("crew")
            if not isinstance(crew, str) or not crew:
                raise lc.LifecycleError(400, "send {\"crew\": \"<crew id>\"}")
            if not await conn.fetchval("select exists(select 1 from crews where id = $1)", crew):
                raise lc.LifecycleError(400, f"no crew {crew!r}; GET /api/v1/crews lists them")
            return lc.assign(row, crew=crew)
        if action == "comment":
            return lc.comment(row, text=body.get("text"))
        if action == "work":
            return lc.work(row, state=body.get("state"))
        raise ValueError(action)

    # ------------------------------------------------------------------ timers
    async def _timer_loop(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # supervision boundary: timers must keep running
                logger.exception("alarm timers failed; retrying")
                await asyncio.sleep(1.0)

    async def _tick(self) -> None:
        now = time.time()
        deadline = min(self.core.next_deadline(), now + 1.0)
        if self._shelves:
            deadline = min(deadline, self._shelves[0][0])
        if self._held:
            deadline = min(deadline, min(self._held.values()))
        if deadline > now:
            self._timer_wake.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
            # that lands as the event fires, and this loop then never stops.
            try:
                async with asyncio.timeout(deadline - now):
                    await self._timer_wake.wait()
            except TimeoutError:
                pass
        now = time.time()
        due = self.core.next_deadline()
        if due <= now:
            fired = self.core.fire(now)
            if fired:
                late = now - due
                self.lateness.append(late)
                if self._m_lateness is not None:
                    self._m_lateness.observe(late)
                self._submit(fired)
        while self._shelves and self._shelves[0][0] <= now:
            _, alarm_id = heapq.heappop(self._shelves)
            self._queue.append(("unshelve", alarm_id))
            self._queued.set()
        for key, until in list(self._held.items()):
            if until <= now:
                del self._held[key]
                self._queue.append(("quiet", *key))
                self._queued.set()

    # ------------------------------------------------------------------ rules and devices
    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rules_settings.reload_interval_s)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # supervision boundary: try again next round
                logger.warning("alarm engine refresh failed: %s", err)

    async def refresh(self) -> None:
        """Follow device changes and rule changes (files, other processes' API writes)."""
        async with self.pool.acquire() as conn:
            # This process's device changes show in the directory's version at once; other
            # processes' in the table's signature, checked less often (a scan of devices).
            now = time.monotonic()
            version = getattr(self.directory, "version", None)
            if version != self._dir_version or now >= self._device_check_at:
                self._device_check_at = now + DEVICE_CHECK_S
                dev_sig = tuple(await conn.fetchrow(DEVICE_SIGNATURE_SQL))
                if dev_sig != self._device_sig or version != self._dir_version:
                    table = await load_device_table(conn)
                    self._device_sig, self._dir_version = dev_sig, version
                    self.core.set_table(table)
            rules_sig = tuple(await conn.fetchrow(RULES_SIGNATURE_SQL))
        files_changed = self.files.scan()
        if files_changed or rules_sig != self._rules_sig:
            await self.reload_rules()

    async def reload_rules(self, initial: bool = False) -> None:
        """Install the current rules; start the changed ones from the stored state."""
        async with self._reload_lock, self.pool.acquire() as conn:
            self._rules_sig = tuple(await conn.fetchrow(RULES_SIGNATURE_SQL))
            file_rules, errors = self.files.rules()
            sources = {r.id: src for r, src in file_rules}
            rules = [r for r, _ in file_rules]
            for rec in await conn.fetch("select id, document, enabled from rules where source = 'api' "
                                        "order by id"):
                if rec["id"] in sources:
                    errors.append(f"rule {rec['id']!r} from the API is shadowed by the one in "
                                  f"{sources[rec['id']][5:]}")
                    continue
                try:
                    rule = parse_rule(rec["document"] | {"enabled": rec["enabled"]},
                                      source="rules table")
                except RuleError as err:
                    errors += err.errors
                    continue
                sources[rule.id] = "api"
                rules.append(rule)
            old_rules = dict(self.core.rules)
            # Gather everything the fresh rules need before touching the evaluator, so no
            # batch is evaluated against half-installed rules.
            valid, plan_errors = self.core.plan(rules)
            fresh_ids = list(valid) if initial else \
                [rid for rid, r in valid.items() if old_rules.get(rid) != r]
            fresh_ids += [r.id for r in valid.values()
                          if r.members and r.members[0] in fresh_ids and r.id not in fresh_ids]
            state = await self._stored_state(conn, fresh_ids, valid)
            await self._mirror_files(conn, file_rules)
            # From here on no awaits until the transitions are queued.
            changes = self.core.set_rules(rules)
            self.sources = sources
            self.rule_errors = errors + plan_errors
            for e in plan_errors:
                logger.error("rules: %s", e)
            fresh = set(changes.fresh) | (set(self.core.rules) if initial else set())
            closing = self._apply_state(state, fresh, initial)
            for rid in changes.removed:
                closing += [(aid, f"rule {rid} was removed or disabled") for aid in
                            state["open_by_rule"].get(rid, [])]
            for aid, reason in closing:
                self._queue.append(("close", aid, reason))
            self._submit(self.core.fire(time.time()))
            if closing:
                self._queued.set()
            if changes or initial:
                logger.info("rules: %d active (%s)", len(self.core.rules),
                            ", ".join(f"{len(v)} {k}" for k, v in (
                                ("added", changes.added), ("changed", changes.changed),
                                ("removed", changes.removed)) if v) or "unchanged")
            self._timer_wake.set()

    async def _stored_state(self, conn, fresh: list[str], valid: dict[str, Rule]) -> dict[str, Any]:
        """Open alarms of the fresh and removed rules, latest device state, recent telemetry."""
        removed = [rid for rid in self.core.rules if rid not in valid]
        members = [valid[rid].members[0] for rid in fresh if valid[rid].members]
        opened = await conn.fetch(
            """select a.id, a.rule, a.device, d.key, a.severity, a.active, a.raised_at, a.value,
                       a.incident, ST_X(a.geom) as lon, ST_Y(a.geom) as lat
                from alarms a left join devices d on d.id = a.device
                where a.state <> 'closed' and a.rule = any($1::text[])
                order by a.id""", fresh + removed + members)
        shelves = await conn.fetch(
            "select id, shelved_until from alarms where shelved_until is not null "
            "and state <> 'closed'")
        metric_ids = sorted({self.core.metrics[r.metric].id for r in valid.values()
                             if r.id in fresh and getattr(r, "metric", None)})
        needs_all = any(valid[r].kind in ("stale", "fault") for r in fresh)
        states = []
        if fresh:
            states = await conn.fetch(
                """select device_key, values, times, quality, last_seen, status, status_changed_at
                   from device_state""")
        history = []
        for r in valid.values():
            if r.id in fresh and r.kind == "rate_of_change":
                history.append((r.id, await conn.fetch(
                    """select device_key, metric_id, ts, value, quality from telemetry
                       where metric_id = $1 and ts > now() - make_interval(secs => $2)
                       order by ts""", self.core.metrics[r.metric].id, r.window * 1.5)))
        return {"open": opened, "shelves": shelves, "states": states, "history": history,
                "metric_ids": metric_ids, "all_metrics": needs_all,
                "open_by_rule": _group(opened)}

    def _apply_state(self, state: dict[str, Any], fresh: set[str],
                     initial: bool = False) -> list[tuple[int, str]]:
        """Restore open alarms into the fresh rules and replay the stored readings."""
        core = self.core
        closing: list[tuple[int, str]] = []
        incidents: dict[int, tuple[str, int, tuple | None]] = {}
        # Correlators starting afresh relearn the open alarms of their (unchanged) members.
        learners: dict[str, list] = {}
        for c in core.correlators.values():
            if c.rule.id in fresh:
                learners.setdefault(c.rule.member, []).append(c)
        for a in state["open"]:
            rule = core.rules.get(a["rule"])
            if rule is None:
                continue
            if rule.kind in CORRELATING_KINDS:
                if rule.id in fresh:
                    point = (a["lon"], a["lat"]) if a["lon"] is not None else None
                    incidents[a["id"]] = (rule.id, a["key"], point)
                continue
            if a["key"] is None:
                if rule.id in fresh:
                    closing.append((a["id"], f"device {a['device']} no longer exists"))
                continue
            since = a["raised_at"].timestamp()
            magnitude = abs(a["value"]) if a["value"] is not None else 1.0
            if rule.id in fresh:
                ev = core.evaluators.get(rule.id)
                slot = core.table.slot(a["key"])
                if ev is not None and (slot < 0 or ev.local[slot] < 0):
                    closing.append((a["id"], f"rule {rule.id} no longer selects {a['device']}"))
                    continue
                if a["active"]:
                    core.restore(rule.id, a["key"], restored_level(rule, a["severity"], a["value"]),
                                 since, magnitude)
            elif a["active"]:
                for c in learners.get(rule.id, []):
                    c.restore_member(a["key"], since, magnitude)
        for aid, (rid, key, point) in incidents.items():
            if key is None:
                closing.append((aid, "its device no longer exists"))
                continue
            members = [a["key"] for a in state["open"] if a["incident"] == aid and a["active"]
                       and a["key"] is not None]
            core.restore_incident(rid, key, members, point)
        if state["shelves"]:
            self._shelves = [(r["shelved_until"].timestamp(), r["id"]) for r in state["shelves"]]
            heapq.heapify(self._shelves)
        for rid, rows in state["history"]:
            if rows:
                core.replay(self._rows_batch([(r["device_key"], r["metric_id"], r["ts"].timestamp(),
                                               r["value"], r["quality"]) for r in rows]), only=[rid])
        if state["states"]:
            # Rules on any metric (stale, fault without one) need every metric's latest.
            wanted = set(state["metric_ids"])
            by_name = {name: m for name, m in core.metrics.items()
                       if state["all_metrics"] or m.id in wanted}
            rows = []
            seen_keys, seen_ts, off = [], [], []
            for s in state["states"]:
                key = s["device_key"]
                values, times, quality = s["values"], s["times"], s["quality"]
                for name, t in times.items():
                    m = by_name.get(name)
                    if m is not None:
                        v = values.get(name)
                        v = 0.0 if v is None else float(v)
                        rows.append((key, m.id, t / 1000.0, v, int(quality.get(name, 0))))
                if s["last_seen"] is not None:
                    seen_keys.append(key)
                    seen_ts.append(s["last_seen"].timestamp())
                if s["status"] == "offline":
                    changed = s["status_changed_at"] or s["last_seen"]
                    off.append((key, changed.timestamp() if changed else time.time()))
            if rows:
                core.replay(self._rows_batch(rows), only=fresh)
            # At start, the server's own downtime is not the devices' silence (server/ingest/downtime.py).
            grace = self.downtime.seconds if initial else 0.0
            for rid in fresh:
                ev = core.evaluators.get(rid)
                if ev is not None and ev.rule.kind == "stale" and seen_keys:
                    ev.seen(np.array(seen_keys, dtype=np.int64), np.array(seen_ts), grace=grace)
            if off:
                keys = np.array([k for k, _ in off], dtype=np.int64)
                slots = core.table.slots(keys)
                ok = slots >= 0
                for rid in fresh:
                    ev = core.evaluators.get(rid)
                    if ev is not None and ev.rule.kind == "fault":
                        ev.on_status(slots[ok], np.zeros(int(ok.sum()), dtype=bool),
                                     np.array([t for _, t in off])[ok],
                                     np.zeros(int(ok.sum()), dtype=bool), emit=False)
        return closing

    def _rows_batch(self, rows: list[tuple]) -> Batch:
        a = np.array(rows, dtype=np.float64).reshape(-1, 5)
        return self.core.batch(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2],
                               a[:, 3], a[:, 4].astype(np.int64))

    async def _mirror_files(self, conn, file_rules: list[tuple[Rule, str]]) -> None:
        """File rules into the rules table (source file:<path>), so the API lists them."""
        ids = [r.id for r, _ in file_rules]
        async with conn.transaction():
            await conn.execute("delete from rules where source like 'file:%' and not id = any($1::text[])",
                               ids)
            for r, src in file_rules:
                doc = rule_document(r)
                await conn.execute(
                    """insert into rules (id, kind, document, source, enabled) values ($1,$2,$3,$4,$5)
                       on conflict (id) do update set kind = excluded.kind, document = excluded.document,
                           source = excluded.source, enabled = excluded.enabled,
                           updated_at = case when rules.document = excluded.document
                                              and rules.source = excluded.source
                                             then rules.updated_at else now() end
                       where rules.source <> 'api'""",
                    r.id, r.kind, doc, src, r.enabled)


def _group(rows) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r["rule"], []).append(r["id"])
    return out


async def alarms_ctx(app: web.Application) -> AsyncIterator[None]:
    """The rule engine; ingest (started after this) hands it every committed batch."""
    engine = AlarmEngine(app[keys.DB], app[keys.SETTINGS], app[keys.DIRECTORY],
                         hub=app.get(keys.HUB), metrics=app.get(keys.METRICS),
                         downtime=app.get(keys.DOWNTIME, NO_DOWNTIME))
    await engine.start()
    app[keys.ALARMS] = engine
    try:
        yield
    finally:
        await engine.stop()
