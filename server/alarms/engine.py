"""The alarm engine: rules evaluated on committed batches, transitions persisted in order.

``on_batch`` (an ingest listener) runs the pure evaluator (:mod:`rules.engine`) on each
committed batch, synchronously and quickly, and queues what changed
(:mod:`server.alarms.queue`). The rest is wired here, each in its own module:

- :mod:`~server.alarms.persist`: one task stores each queued item in its own transaction
  (the alarm row, an ``alarm_events`` row, the notifications through the notifier), then
  the alarm is published to the websocket hub;
- :mod:`~server.alarms.timers`: one task fires on/off delays and stale-data deadlines at
  their time, ends timed shelving, releases chattering alarms once quiet;
- :mod:`~server.alarms.actions`: operators' actions, through the same lifecycle functions
  and transaction shape (:mod:`~server.alarms.writes`), the row locked;
- :mod:`~server.alarms.reload`: rules from files and the API, device changes, and the
  restore of the stored state at start (:func:`rules.restore.restore`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from aiohttp import web
from prometheus_client import Counter, Histogram

from rules.engine import RuleEngine
from rules.evaluator import Batch, MetricInfo, Transition
from rules.vocab import AlarmState
from server import keys
from server.alarms.actions import Actions
from server.alarms.persist import Persister
from server.alarms.queue import WriteQueue
from server.alarms.reload import DEVICE_SIGNATURE_SQL, RuleLoader, load_device_table
from server.alarms.rulefiles import RuleFiles
from server.alarms.timers import Timers
from server.alarms.writes import AlarmWriter, Enqueue
from server.ingest.downtime import NONE as NO_DOWNTIME
from server.ingest.downtime import Downtime
from server.runtime.tasks import cancel_and_wait
from server.vocab import DeviceStatus

logger = logging.getLogger(__name__)

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


class AlarmEngine:
    """Built by :func:`alarms_ctx`; the parts exist once :meth:`start` has read the devices."""

    def __init__(self, pool: asyncpg.Pool, settings, directory, notifier: Enqueue, hub=None,
                 metrics=None, downtime: Downtime = NO_DOWNTIME) -> None:
        self.pool = pool
        self.downtime = downtime
        self.settings = settings
        self.rules_settings = settings.rules
        self.directory = directory
        self.hub = hub
        self.writer = AlarmWriter(notifier)
        base = Path(settings.config).parent if settings.config else Path.cwd()
        self.files = RuleFiles(self.rules_settings.paths, base)
        self.core: RuleEngine | None = None
        self.timers: Timers | None = None
        self.loader: RuleLoader | None = None
        self.actions = Actions(pool, self.writer, self.rules_settings, self._published)
        self._queue = WriteQueue()
        self._tasks: list[asyncio.Task] = []
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
            device_sig = tuple(await conn.fetchrow(DEVICE_SIGNATURE_SQL))
        metrics = {m.name: MetricInfo(m.id, m.is_bool) for m in self.directory.metrics.values()}
        core = RuleEngine(table, metrics)
        timers = Timers(core, self._queue, on_late=self._late)
        persister = Persister(self.pool, core, self._queue, timers, self.rules_settings,
                              self.writer, self._published)
        self.loader = RuleLoader(self.pool, core, self.files, self.directory, self._queue, timers,
                                 self._submit, rules_settings=self.rules_settings,
                                 downtime=self.downtime, device_sig=device_sig)
        self.core, self.timers = core, timers
        self.files.scan()
        await self.loader.reload(initial=True)
        self._tasks = [
            asyncio.create_task(persister.run(), name="alarms.persist"),
            asyncio.create_task(timers.run(), name="alarms.timers"),
            asyncio.create_task(self.loader.watch(), name="alarms.watch"),
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
        """Wait until every queued transition is stored (tests, shutdown)."""
        await self._queue.drained()

    # ------------------------------------------------------------------ rules
    @property
    def rule_errors(self) -> list[str]:
        return self.loader.rule_errors if self.loader is not None else []

    @property
    def sources(self) -> dict[str, str]:
        """Rule id -> "api" | "file:<path>"."""
        return self.loader.sources if self.loader is not None else {}

    async def reload_rules(self) -> None:
        """Install the current rules (after an API write); changed ones restart from the
        stored state."""
        await self.loader.reload()

    async def refresh(self) -> None:
        await self.loader.refresh()

    # ------------------------------------------------------------------ operators
    async def act(self, alarm_id: int, action: str, principal, body: dict[str, Any]) -> dict[str, Any]:
        """An operator's (or a crew's) action on one alarm (:class:`~server.alarms.actions.Actions`)."""
        return await self.actions.act(alarm_id, action, principal, body)

    # ------------------------------------------------------------------ listeners
    def on_batch(self, committed) -> None:
        """An ingest listener: evaluate the committed batch; never blocks the writer."""
        core = self.core
        if core is None or (not committed.rows and not committed.status):
            return
        before = core.evaluations
        out: list[Transition] = []
        if committed.rows:
            out = core.evaluate(committed_batch(core, committed.rows))
        if committed.status:
            st = committed.status
            out += core.status(np.array([s[0] for s in st], dtype=np.int64),
                               np.array([s[1] == DeviceStatus.ONLINE for s in st]),
                               np.array([s[2].timestamp() for s in st]),
                               np.array([bool(s[3]) for s in st]))
        if self._m_evals is not None:
            self._m_evals.inc(core.evaluations - before)
        self._submit(out)
        self.timers.wake()  # a new delay may be due before the timer's current sleep ends

    def on_status(self, changes: list[tuple[int, str]]) -> None:
        """Status changes from the staleness scan: an 'offline' counts like a link's."""
        if self.core is None:
            return
        off = [(k, s) for k, s in changes if s in (DeviceStatus.OFFLINE, DeviceStatus.ONLINE)]
        if not off:
            return
        now = time.time()
        out = self.core.status(np.array([k for k, _ in off], dtype=np.int64),
                               np.array([s == DeviceStatus.ONLINE for _, s in off]),
                               np.full(len(off), now), np.zeros(len(off), dtype=bool))
        self._submit(out)

    def _submit(self, transitions: Iterable[Transition]) -> None:
        self._queue.put_transitions(transitions)

    # ------------------------------------------------------------------ after a commit
    def _published(self, alarm: dict[str, Any], t: Transition | None = None,
                   event: str | None = None) -> None:
        if self.hub is not None:
            self.hub.publish_alarm(alarm)
        if t is not None and t.event in ("raise", "clear"):
            lat = time.time() - t.ts
            if self._m_latency is not None:
                self._m_latency.observe(lat)
        if self._m_transitions is not None:
            self._m_transitions.labels(event or (t.event if t else "action")).inc()
        until = alarm.get("shelved_until")
        if until is not None and alarm.get("state") != AlarmState.CLOSED and self.timers is not None:
            self.timers.shelved(until.timestamp(), alarm["id"])

    def _late(self, late: float) -> None:
        if self._m_lateness is not None:
            self._m_lateness.observe(late)


async def alarms_ctx(app: web.Application) -> AsyncIterator[None]:
    """The rule engine; ingest (started after this) hands it every committed batch, and
    it hands each transition to the notifier (started before this)."""
    engine = AlarmEngine(app[keys.DB], app[keys.SETTINGS], app[keys.DIRECTORY],
                         app[keys.NOTIFIER], hub=app.get(keys.HUB), metrics=app.get(keys.METRICS),
                         downtime=app.get(keys.DOWNTIME, NO_DOWNTIME))
    await engine.start()
    app[keys.ALARMS] = engine
    try:
        yield
    finally:
        await engine.stop()
