"""The persister: one task storing the write queue's items (:mod:`server.alarms.queue`)
in order, each in its own transaction, retried while the database is away.

A transition locks the open alarm of its (rule, device), or inserts one, and applies the
lifecycle change (:mod:`rules.lifecycle`) through :class:`~server.alarms.writes.AlarmWriter`;
it also counts activations and flags chattering alarms, which the timers then hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import asyncpg

from rules import lifecycle as lc
from rules.engine import RuleEngine
from rules.evaluator import Transition
from rules.models import Rule
from rules.vocab import AlarmState
from server.alarms.queue import CloseAlarm, EndChattering, ExpireShelf, Item, StoreTransition, WriteQueue
from server.alarms.timers import Timers
from server.alarms.views import fetch_alarm
from server.alarms.writes import SYSTEM, AlarmWriter, Published
from server.store.catalog import METRICS

logger = logging.getLogger(__name__)



# Errors that pass: the database is away or busy, or another server process opened the
# same alarm a moment before (the retry finds its row and the transition is a no-op).
RETRIED = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
           asyncpg.exceptions.CannotConnectNowError, asyncpg.ReadOnlySQLTransactionError,
           asyncpg.DeadlockDetectedError, asyncpg.SerializationError, asyncpg.UniqueViolationError)

INSERT_SQL = """
with n as (select nextval(pg_get_serial_sequence('alarms', 'id')) as id)
insert into alarms (id, rule, device, severity, priority, state, active, shelved_until,
                    suppressed, out_of_service, raised_at, value, message, geom, incident,
                    dedup_key, context)
select n.id, $1, $2, $3, $4, 'active_unacked', true, $5, $6, $7, $8, $9, $10,
       case when $11::float8 is null then null else ST_SetSRID(ST_MakePoint($11, $12), 4326) end,
       $13, $1 || ':' || $2 || ':' || n.id, $14
from n
on conflict (rule, device) where state <> 'closed' do nothing
returning *
"""
# ``on conflict``: another server process (scale-out) opened this alarm after our select
# found none. The insert waits for its transaction, then returns no row; the transition is
# applied to that alarm instead, in the same transaction, so it is raised once.

OPEN_FOR_UPDATE = ("select * from alarms where rule = $1 and device = $2 and state <> 'closed' "
                   "for update")


def message_of(rule: Rule, device: str, t: Transition) -> str:
    """The rule's message template filled in, or the evaluator's own text."""
    if not rule.message:
        return t.text
    try:
        return rule.message.format(device=device, value=t.value, rule=rule.id, text=t.text)
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        return f"{t.text} (message template of rule {rule.id} failed: {err!r})"


UNITS = {m.name: m.unit for m in METRICS}
# Numbers the evaluators put in a transition's details that a message may quote.
QUOTED = ("limit", "rate_per_min", "window_s", "expected_interval_s", "last_seen", "offline",
          "children_total", "member_rule", "spread_m", "check", "schedule", "expected_level")


def context_of(rule: Rule, t: Transition) -> dict[str, Any]:
    """What the alarm is about, as data: clients word it in the operator's language from
    this (the English ``message`` stays for the API and the notifications)."""
    metric = t.details.get("metric") or getattr(rule, "metric", None)
    level = int(t.level)
    ctx: dict[str, Any] = {
        "rule_kind": rule.kind, "metric": metric, "unit": UNITS.get(metric) if metric else None,
        "value": t.value, "level": level, "event": t.event,
        # the side of the limit (threshold, rate of change): positive levels are above
        "direction": "above" if level > 0 else "below" if level < 0 else None,
    }
    ctx |= {k: t.details[k] for k in QUOTED if t.details.get(k) is not None}
    if t.event == "clear" and "limit" in ctx:
        ctx["direction"] = None  # back within the limit it had crossed
    return ctx


class Persister:
    def __init__(self, pool: asyncpg.Pool, core: RuleEngine, queue: WriteQueue, timers: Timers,
                 rules_settings, writer: AlarmWriter, published: Published) -> None:
        self.pool = pool
        self.core = core
        self.queue = queue
        self.timers = timers
        self.settings = rules_settings
        self.writer = writer
        self.published = published
        self._activations: dict[tuple[str, str], deque[float]] = {}

    async def run(self) -> None:
        delay = 0.1
        while True:
            item = await self.queue.head()
            try:
                await self.persist(item)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except RETRIED as err:
                logger.warning("storing the alarm write %s failed (%s); retrying in %.1f s",
                               self.describe(item), err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:  # supervision boundary: one bad transition must not stop the rest
                logger.exception("the alarm write %s could not be stored; dropped",
                                 self.describe(item))
            self.queue.done()

    def describe(self, item: Item) -> str:
        """The item in a log line: what it is and the rule and device it concerns, in plain
        values (never a dataclass repr full of numpy scalars)."""
        match item:
            case StoreTransition(t):
                device = self._device_id(t.device) or f"key {t.device}"
                return f"'{t.event}' of rule {t.rule} on {device}"
            case CloseAlarm(alarm_id, reason):
                return f"'close alarm {alarm_id}' ({reason})"
            case ExpireShelf(alarm_id):
                return f"'end the shelving of alarm {alarm_id}'"
            case EndChattering(rule, device):
                return f"'end chattering' of rule {rule} on {device}"
        return type(item).__name__

    async def persist(self, item: Item) -> None:
        match item:
            case StoreTransition(t):
                await self._store_transition(t)
            case CloseAlarm(alarm_id, reason):
                await self._close(alarm_id, reason)
            case ExpireShelf(alarm_id):
                await self._expire_shelf(alarm_id)
            case EndChattering(rule, device):
                await self._end_chattering(rule, device)
            case _:
                raise TypeError(f"not an alarm queue item: {item!r}")

    def _device_id(self, key: int) -> str | None:
        table = self.core.table
        slot = table.slot(key)
        return table.ids[slot] if slot >= 0 else None

    def _key_of(self, device: str) -> int | None:
        slot = self.core.table.slot_of_id.get(device)
        return int(self.core.table.keys[slot]) if slot is not None else None

    async def _store_transition(self, t: Transition) -> None:
        rule = self.core.rules.get(t.rule)
        device = self._device_id(t.device)
        if rule is None or device is None:
            return  # the rule was removed, or the device deleted, since
        now = datetime.now(UTC)
        at = datetime.fromtimestamp(min(t.ts, now.timestamp()), UTC)
        published: dict[str, Any] | None = None
        write = self.writer.write
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(OPEN_FOR_UPDATE, t.rule, device)
            message = message_of(rule, device, t)
            context = context_of(rule, t)
            details = {"level": t.level, **t.details}
            if t.event == "raise":
                # Raised again while held active for chattering: an activation all the same.
                activation = self.timers.release((rule.id, device))
                if row is None:
                    published = await self._insert(conn, rule, device, t, at, message, details)
                    if published is None:  # opened by another process meanwhile
                        row = await conn.fetchrow(OPEN_FOR_UPDATE, t.rule, device)
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
                        change.updates["context"] = context
                        published = await write(conn, row, change, SYSTEM, now)
                        activation = activation or change.event == "raised"
                if activation:
                    published = await self._chatter(conn, alarm_id, rule.id, device, now,
                                                    published)
            elif t.event == "update" and row is not None:
                change = lc.raised(row, severity=t.severity, value=t.value, message=message, now=now)
                if change is not None:
                    change.details |= details
                    change.updates["context"] = context
                    published = await write(conn, row, change, SYSTEM, now)
            elif t.event == "clear" and row is not None:
                if row["chattering"] and row["active"]:
                    # Held active until it has been quiet for the chatter window (ISA-18.2:
                    # a chattering alarm is handled, not re-announced every few seconds).
                    self.timers.hold((rule.id, device), time.time() + self.settings.chatter_window_s)
                    return
                change = lc.cleared(row, value=t.value, message=message, now=now)
                if change is not None:
                    change.details |= details
                    change.updates["context"] = context
                    published = await write(conn, row, change, SYSTEM, now)
            elif t.event == "suppress" and row is not None and not row["suppressed"]:
                incident = await self._incident_id(conn, t)
                change = lc.Change("suppressed", {"suppressed": True, "incident": incident},
                                   notify="suppressed", reason=f"part of incident {incident}",
                                   details={"incident": incident, "incident_rule": t.incident_rule})
                published = await write(conn, row, change, SYSTEM, now)
            elif t.event == "release" and row is not None and row["suppressed"]:
                change = lc.Change("unsuppressed", {"suppressed": False},
                                   notify="raised" if row["active"] else None,
                                   reason=t.text, details={"incident_rule": t.incident_rule})
                published = await write(conn, row, change, SYSTEM, now)
        if published is not None:
            self.published(published, t)

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
            incident is not None, oos, at, t.value, message, lon, lat, incident,
            context_of(rule, t))
        if row is None:
            return None
        if incident is not None:
            details["incident"] = incident
        details["annunciated"] = lc.annunciated(row, now)
        await self.writer.event(conn, row["id"], "raised", SYSTEM, None, details)
        alarm = await fetch_alarm(conn, row["id"])
        return await self.writer.notify(conn, alarm, "raised")

    async def _chatter(self, conn, alarm_id: int, rule_id: str, device: str, now: datetime,
                       published: dict[str, Any] | None) -> dict[str, Any] | None:
        """Count an activation; flag the alarm chattering at N within the window."""
        n = self._activation((rule_id, device))
        if n < self.settings.chatter_count:
            return published
        row = await conn.fetchrow("select * from alarms where id = $1", alarm_id)
        if row["chattering"]:
            return published
        window = self.settings.chatter_window_s
        change = lc.Change("chattering", {"chattering": True},
                           reason=f"{n} activations within {window:.0f} s; held active until quiet",
                           details={"activations": n, "window_s": window})
        return await self.writer.write(conn, row, change, SYSTEM, now)

    def _activation(self, key: tuple[str, str]) -> int:
        now = time.time()
        window = self.settings.chatter_window_s
        seen = self._activations.setdefault(key, deque(maxlen=64))
        seen.append(now)
        while seen and seen[0] < now - window:
            seen.popleft()
        if len(self._activations) > 200_000:  # forget quiet points
            for k in [k for k, d in self._activations.items() if not d or d[-1] < now - window]:
                del self._activations[k]
        return len(seen)

    async def _close(self, alarm_id: int, reason: str) -> None:
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self.writer.lock(conn, alarm_id)
            if row is None or row["state"] == AlarmState.CLOSED:
                return
            change = lc.Change("closed", {"state": AlarmState.CLOSED, "active": False,
                                          "closed_at": now, "cleared_at": row["cleared_at"] or now},
                               notify="closed", reason=reason)
            alarm = await self.writer.write(conn, row, change, SYSTEM, now)
        self.published(alarm, event="closed")

    async def _expire_shelf(self, alarm_id: int) -> None:
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self.writer.lock(conn, alarm_id)
            if row is None or row["shelved_until"] is None or row["shelved_until"] > now \
                    or row["state"] == AlarmState.CLOSED:
                return
            alarm = await self.writer.write(conn, row, lc.unshelve(row, now=now, expired=True),
                                            SYSTEM, now)
        self.published(alarm, event="unshelved")

    async def _end_chattering(self, rule_id: str, device: str) -> None:
        key = self._key_of(device)
        if key is not None and self.core.level(rule_id, key) != 0:
            return  # active again: stays held
        now = datetime.now(UTC)
        write = self.writer.write
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(OPEN_FOR_UPDATE, rule_id, device)
            if row is None:
                return
            await write(conn, row, lc.Change("chattering", {"chattering": False},
                                             reason="quiet again", details={"ended": True}),
                        SYSTEM, now)
            row = await conn.fetchrow("select * from alarms where id = $1", row["id"])
            change = lc.cleared(row, value=row["value"], message=f"{row['message']} (cleared after "
                                "chattering)", now=now)
            if change is not None and row["context"]:  # worded as a return to normal too
                change.updates["context"] = {**row["context"], "event": "clear", "direction": None}
            alarm = await write(conn, row, change, SYSTEM, now) if change else \
                await fetch_alarm(conn, row["id"])
        self.published(alarm, event="cleared")
