"""Rules in: the ``[rules] paths`` files (re-read on change) and the ``rules`` table (the
API), evaluated alike; device changes followed. File rules are mirrored into the table
(``source`` ``file:<path>``) so the API lists every rule in one place.

A rule that starts afresh (at start, or new or changed since) starts from the stored
state: its open alarms, the latest state of every device and the recent telemetry rate
rules need are read here (:func:`read_snapshot`) and put back by the pure
:func:`rules.restore.restore`, which emits nothing; only then are due conditions fired. A
condition whose alarm is already stored raises nothing, so nothing fires twice; one whose
transition was lost with the previous process is raised now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from rules.devices import DeviceRow, DeviceTable
from rules.engine import RuleEngine
from rules.evaluator import Transition
from rules.models import Rule, RuleError, parse_rule, rule_document
from rules.restore import DeviceState, OpenAlarm, Snapshot, restore
from server.alarms.queue import CloseAlarm, WriteQueue
from server.alarms.rulefiles import RuleFiles
from server.alarms.timers import Timers
from server.ingest.downtime import Downtime
from server.store import rulehistory
from server.store.compress import UNIX_OFFSET_US
from server.store.history import read_points

logger = logging.getLogger(__name__)

DEVICE_SIGNATURE_SQL = "select count(*), coalesce(max(key), 0), max(updated_at) from devices"
DEVICE_CHECK_S = 30.0
RULES_SIGNATURE_SQL = "select count(*), max(updated_at) from rules where source = 'api'"


async def load_device_table(conn: asyncpg.Connection) -> DeviceTable:
    rows = await conn.fetch(
        """select d.key, d.id, d.kind, d.parent, d.ward,
                  ST_X(ST_PointOnSurface(d.geom)) as lon, ST_Y(ST_PointOnSurface(d.geom)) as lat,
                  coalesce(d.expected_interval_s, k.expected_interval_s) as interval_s
           from devices d join kinds k on k.kind = d.kind""")
    return DeviceTable.build([
        DeviceRow(r["key"], r["id"], r["kind"], r["lon"], r["lat"], r["parent"], r["ward"],
                  float(r["interval_s"])) for r in rows])


async def read_snapshot(conn: asyncpg.Connection, core: RuleEngine, fresh: list[str],
                        valid: dict[str, Rule]) -> Snapshot:
    """Open alarms of the fresh and removed rules, latest device state, recent telemetry."""
    removed = [rid for rid in core.rules if rid not in valid]
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
    metric_ids = frozenset(core.metrics[r.metric].id for r in valid.values()
                           if r.id in fresh and getattr(r, "metric", None))
    needs_all = any(valid[r].kind in ("stale", "fault") for r in fresh)
    states = []
    if fresh:
        states = await conn.fetch(
            """select device_key, values, times, quality, last_seen, status, status_changed_at
               from device_state""")
    history = []
    for r in valid.values():
        if r.id in fresh and r.kind == "rate_of_change":
            # through the history's read path: a long window may reach a compressed day
            now = datetime.now(UTC)
            p = await read_points(conn, now - timedelta(seconds=r.window * 1.5, microseconds=-1),
                                  now + timedelta(days=1), None, [core.metrics[r.metric].id])
            p = p.take(np.argsort(p.ts, kind="stable"))
            history.append((r.id, list(zip(p.device.tolist(), p.metric.tolist(),
                                           ((p.ts + UNIX_OFFSET_US) / 1e6).tolist(),
                                           p.value.tolist(), p.quality.tolist(), strict=True))))
    return Snapshot(
        open=[OpenAlarm(a["id"], a["rule"], a["device"], a["key"], a["severity"], a["active"],
                        a["raised_at"].timestamp(), a["value"], a["incident"],
                        (a["lon"], a["lat"]) if a["lon"] is not None else None) for a in opened],
        shelves=[(r["shelved_until"].timestamp(), r["id"]) for r in shelves],
        states=[DeviceState(s["device_key"], s["values"], s["times"], s["quality"],
                            _ts(s["last_seen"]), s["status"], _ts(s["status_changed_at"]))
                for s in states],
        history=history, metric_ids=metric_ids, all_metrics=needs_all)


def _ts(at) -> float | None:
    return at.timestamp() if at is not None else None


class RuleLoader:
    def __init__(self, pool: asyncpg.Pool, core: RuleEngine, files: RuleFiles, directory,
                 queue: WriteQueue, timers: Timers, submit: Callable[[Iterable[Transition]], None],
                 *, rules_settings, downtime: Downtime, device_sig: tuple | None) -> None:
        self.pool = pool
        self.core = core
        self.files = files
        self.directory = directory
        self.queue = queue
        self.timers = timers
        self.submit = submit
        self.settings = rules_settings
        self.downtime = downtime
        self.sources: dict[str, str] = {}  # rule id -> "api" | "file:<path>"
        self.rule_errors: list[str] = []
        self._device_sig = device_sig
        self._dir_version = getattr(directory, "version", None)
        self._device_check_at = 0.0
        self._rules_sig: tuple | None = None
        self._lock = asyncio.Lock()

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
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
            await self.reload()

    async def _read_rules(self, conn) -> tuple[list[tuple[Rule, str]], list[Rule], dict[str, str],
                                               list[str]]:
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
                rule = parse_rule(rec["document"] | {"enabled": rec["enabled"]}, source="rules table")
            except RuleError as err:
                errors += err.errors
                continue
            sources[rule.id] = "api"
            rules.append(rule)
        return file_rules, rules, sources, errors

    async def reload(self, initial: bool = False) -> None:
        """Install the current rules; start the changed ones from the stored state."""
        core = self.core
        async with self._lock, self.pool.acquire() as conn:
            self._rules_sig = tuple(await conn.fetchrow(RULES_SIGNATURE_SQL))
            file_rules, rules, sources, errors = await self._read_rules(conn)
            old_rules = dict(core.rules)
            # Gather everything the fresh rules need before touching the evaluator, so no
            # batch is evaluated against half-installed rules.
            valid, plan_errors = core.plan(rules)
            fresh_ids = list(valid) if initial else \
                [rid for rid, r in valid.items() if old_rules.get(rid) != r]
            fresh_ids += [r.id for r in valid.values()
                          if r.members and r.members[0] in fresh_ids and r.id not in fresh_ids]
            snapshot = await read_snapshot(conn, core, fresh_ids, valid)
            await self._mirror_files(conn, file_rules)
            # From here on no awaits until the transitions are queued.
            changes = core.set_rules(rules)
            self.sources = sources
            self.rule_errors = errors + plan_errors
            for e in plan_errors:
                logger.error("rules: %s", e)
            fresh = set(changes.fresh) | (set(core.rules) if initial else set())
            # At start, the server's own downtime is not the devices' silence
            # (server/ingest/downtime.py).
            restored = restore(core, snapshot, fresh, now=time.time(),
                               grace=self.downtime.seconds if initial else 0.0)
            if restored.shelves:
                self.timers.set_shelves(restored.shelves)
            closing = restored.closing
            open_by_rule = snapshot.open_by_rule()
            for rid in changes.removed:
                closing += [(aid, f"rule {rid} was removed or disabled")
                            for aid in open_by_rule.get(rid, [])]
            for aid, reason in closing:
                self.queue.put(CloseAlarm(aid, reason))
            self.submit(core.fire(time.time()))
            if changes or initial:
                logger.info("rules: %d active (%s)", len(core.rules),
                            ", ".join(f"{len(v)} {k}" for k, v in (
                                ("added", changes.added), ("changed", changes.changed),
                                ("removed", changes.removed)) if v) or "unchanged")
            self.timers.wake()

    @staticmethod
    async def _mirror_files(conn, file_rules: list[tuple[Rule, str]]) -> None:
        """File rules into the rules table (source file:<path>), so the API lists them."""
        ids = [r.id for r, _ in file_rules]
        async with conn.transaction():
            # what the table held, so each change lands in the rules' history as "file"
            stored = {rec["id"]: rec for rec in await conn.fetch(
                "select id, source, document from rules")}
            for rid, rec in stored.items():
                if rec["source"].startswith("file:") and rid not in ids:
                    await rulehistory.record(conn, rid, rulehistory.FILE_ACTOR, rec["source"],
                                             rec["document"], None)
            await conn.execute("delete from rules where source like 'file:%' and not id = any($1::text[])",
                               ids)
            for r, src in file_rules:
                old = stored.get(r.id)
                if old is None or old["source"] != "api":  # an API rule is not overwritten
                    await rulehistory.record(conn, r.id, rulehistory.FILE_ACTOR, src,
                                             old["document"] if old is not None else None,
                                             rule_document(r))
                await conn.execute(
                    """insert into rules (id, kind, document, source, enabled) values ($1,$2,$3,$4,$5)
                       on conflict (id) do update set kind = excluded.kind, document = excluded.document,
                           source = excluded.source, enabled = excluded.enabled,
                           updated_at = case when rules.document = excluded.document
                                              and rules.source = excluded.source
                                             then rules.updated_at else now() end
                       where rules.source <> 'api'""",
                    r.id, r.kind, rule_document(r), src, r.enabled)
