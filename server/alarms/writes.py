"""The shape of every alarm write: a locked row, a lifecycle change applied to it, an
``alarm_events`` row, the notifications queued, all in the caller's transaction.

The persister (the engine's own transitions) and the operators' actions both write
through :class:`AlarmWriter`, so they record and notify alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from rules import lifecycle as lc
from server.alarms.views import fetch_alarm

SYSTEM = "rules"  # the actor of the engine's own transitions

# Columns a change may set (anything else in a Change is a programming error).
UPDATABLE = frozenset({"state", "active", "severity", "value", "message", "context", "cleared_at",
                       "closed_at", "acked_at", "acked_by", "shelved_until", "suppressed",
                       "out_of_service", "chattering", "incident", "assigned_crew", "work_state"})


class Enqueue(Protocol):
    """What the writer needs of the notifier (:class:`server.notify.Notifier`)."""

    def enqueue(self, conn: asyncpg.Connection, alarm: dict[str, Any],
                event: str) -> Awaitable[dict[str, Any] | None]: ...


# Called once a write has committed: the alarm as stored and the event it was.
Published = Callable[..., None]


class AlarmWriter:
    def __init__(self, notifier: Enqueue) -> None:
        self.notifier = notifier

    @staticmethod
    async def lock(conn: asyncpg.Connection, alarm_id: int) -> asyncpg.Record | None:
        return await conn.fetchrow("select * from alarms where id = $1 for update", alarm_id)

    async def write(self, conn: asyncpg.Connection, row: Any, change: lc.Change, actor: str,
                    now: datetime) -> dict[str, Any]:
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
        await self.event(conn, row["id"], change.event, actor, change.reason, details)
        alarm = await fetch_alarm(conn, row["id"])
        if change.notify is not None:
            alarm = await self.notify(conn, alarm, change.notify)
        return alarm

    async def notify(self, conn: asyncpg.Connection, alarm: dict[str, Any],
                     event: str) -> dict[str, Any]:
        updates = await self.notifier.enqueue(conn, alarm, event)
        if updates:
            alarm.update(updates)
        return alarm

    @staticmethod
    async def event(conn: asyncpg.Connection, alarm_id: int, event: str, actor: str,
                    reason: str | None, details: dict[str, Any]) -> None:
        await conn.execute(
            "insert into alarm_events (alarm_id, event, actor, reason, details) "
            "values ($1, $2, $3, $4, $5)", alarm_id, event, actor, reason, details)
