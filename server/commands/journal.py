"""The command rows: written when a command is accepted, then its status changes.

Status changes and their audit entries are written in batches (one UPDATE … FROM unnest and
one INSERT per flush), so a group command costs the database a few statements per flush,
not three per lamp. A change is applied only to an open row (``pending`` or ``sent``): a
final state is never overwritten.

Once a flush has committed, its changes go to the ``listeners`` (the websocket hub relays
them to the maps watching, see :meth:`server.live.hub.Hub.publish_commands`) as one list of
``{"device", "command", "group", "status", "at", "result", "error"}``, so a map that then
reads the group from the API sees the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg

from server.commands.command import Command, Outcome
from server.store.audit import AuditEntry, audit_many
from server.vocab import CommandState, DeviceStatus

__all__ = ["COMMAND_COLS", "Journal", "created_entry", "insert_command", "insert_group",
           "open_commands"]

logger = logging.getLogger(__name__)

FLUSH_LINGER_S = 0.05  # status changes gathered into one write
COMMAND_COLS = ("id, device, name, args, status, group_id, requested_by, created_at, sent_at, "
                "finished_at, expires_at, result, error")
OPEN = f"('{CommandState.PENDING}', '{CommandState.SENT}')"


class Journal:
    """Batched status changes and audit entries, written by one task."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._changes: dict[uuid.UUID, dict[str, Any]] = {}
        self._audit: list[AuditEntry] = []
        self._events: list[dict[str, Any]] = []
        # Called with each committed flush's changes (see the module docstring); never awaited.
        self.listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.failing = False

    def sent(self, cmd: Command) -> None:
        self.note(cmd.id, status=CommandState.SENT, sent_at=cmd.sent_at)
        self._event(cmd, CommandState.SENT, cmd.sent_at)

    def finished(self, cmd: Command, outcome: Outcome, at: Any) -> None:
        """The command's final state, and its audit entry (``command.<state>``)."""
        self.note(cmd.id, status=outcome.state, finished_at=at, result=outcome.result,
                  error=outcome.error)
        self._event(cmd, outcome.state, at, outcome.result, outcome.error)
        details: dict[str, Any] = {"command": str(cmd.id), "name": cmd.name, "args": cmd.args,
                                   "route": cmd.route}
        if cmd.group:
            details["group"] = str(cmd.group)
        if outcome.result is not None:
            details["result"] = outcome.result
        if outcome.error:
            details["error"] = outcome.error
        self.audit(AuditEntry(cmd.actor, f"command.{outcome.state}", cmd.device, str(cmd.id),
                              details))

    def _event(self, cmd: Command, status: str, at: Any, result: Any = None,
               error: str | None = None) -> None:
        if self.listeners:
            self._events.append({"device": cmd.device, "command": str(cmd.id),
                                 "group": str(cmd.group) if cmd.group else None, "status": str(status),
                                 "at": at, "result": result, "error": error})

    def note(self, cmd_id: uuid.UUID, **fields: Any) -> None:
        self._changes.setdefault(cmd_id, {}).update(fields)
        self._dirty.set()

    def audit(self, entry: AuditEntry) -> None:
        self._audit.append(entry)
        self._dirty.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="commands.journal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:  # the pool may be gone: what is lost is re-derived at the next start
            logger.exception("could not write the last command status changes")

    async def _run(self) -> None:
        delay = 0.5
        while True:
            await self._dirty.wait()
            await asyncio.sleep(FLUSH_LINGER_S)
            try:
                await self.flush()
            except Exception:  # supervision boundary: keep the changes, retry with backoff
                if not self.failing:
                    logger.exception("command status changes could not be written; retrying")
                self.failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                if self.failing:
                    logger.info("command status changes are written again")
                self.failing, delay = False, 0.5

    async def flush(self) -> None:
        self._dirty.clear()
        changes, self._changes = self._changes, {}
        entries, self._audit = self._audit, []
        events, self._events = self._events, []
        if not changes and not entries:
            self._tell(events)
            return
        ids = list(changes)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if ids:
                    await conn.execute(
                        f"""update commands c set status = u.status,
                               sent_at = coalesce(u.sent_at, c.sent_at),
                               finished_at = coalesce(u.finished_at, c.finished_at),
                               result = coalesce(u.result, c.result),
                               error = coalesce(u.error, c.error)
                           from unnest($1::uuid[], $2::text[], $3::timestamptz[],
                                       $4::timestamptz[], $5::jsonb[], $6::text[])
                                as u(id, status, sent_at, finished_at, result, error)
                           where c.id = u.id and c.status in {OPEN}""",
                        ids, [changes[i]["status"] for i in ids],
                        [changes[i].get("sent_at") for i in ids],
                        [changes[i].get("finished_at") for i in ids],
                        [changes[i].get("result") for i in ids],
                        [changes[i].get("error") for i in ids],
                    )
                await audit_many(conn, entries)
        except BaseException:
            for cmd_id, old in changes.items():  # put back under anything newer
                self._changes[cmd_id] = {**old, **self._changes.get(cmd_id, {})}
            self._audit[:0] = entries
            self._events[:0] = events
            self._dirty.set()
            raise
        self._tell(events)

    def _tell(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        for listener in self.listeners:
            try:
                listener(events)
            except Exception:  # a listener's bug must not lose the next flush
                logger.exception("command listener %r failed", listener)


def created_entry(cmd: Command, device_status: str) -> AuditEntry:
    details = {"command": str(cmd.id), "name": cmd.name, "args": cmd.args, "route": cmd.route,
               "device_status": device_status, "expires_at": cmd.expires_at.isoformat()}
    if cmd.group:
        details["group"] = str(cmd.group)
    return AuditEntry(cmd.actor, "command.create", cmd.device, str(cmd.id), details)


async def insert_command(conn: asyncpg.Connection, cmd: Command, device_status: str) -> asyncpg.Record:
    """One accepted command's row and its ``command.create`` entry, in one transaction."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""insert into commands (id, device, name, args, requested_by, expires_at)
                values ($1, $2, $3, $4, $5, $6) returning {COMMAND_COLS}""",
            cmd.id, cmd.device, cmd.name, cmd.args, cmd.actor, cmd.expires_at)
        await audit_many(conn, [created_entry(cmd, device_status)])
    return row


async def insert_group(conn: asyncpg.Connection, group: uuid.UUID, name: str,
                       args: dict[str, Any], target: dict[str, Any], skipped: list[dict[str, str]],
                       actor: str, cmds: Sequence[Command], statuses: Mapping[str, str],
                       summary: AuditEntry) -> None:
    """A group's row, its commands' rows (one statement) and their audit entries."""
    async with conn.transaction():
        created = await conn.fetchval(
            """insert into command_groups (id, name, args, target, requested_by, total, skipped)
               values ($1, $2, $3, $4, $5, $6, $7) returning created_at""",
            group, name, args, target, actor, len(cmds), skipped)
        await conn.execute(
            """insert into commands (id, device, name, args, group_id, requested_by, expires_at,
                                     created_at)
               select u.id, u.device, $3, $4, $5, $6, u.expires_at, $7
               from unnest($1::uuid[], $2::text[], $8::timestamptz[]) as u(id, device, expires_at)""",
            [c.id for c in cmds], [c.device for c in cmds], name, args, group,
            actor, created, [c.expires_at for c in cmds])
        await audit_many(conn, [summary, *(created_entry(c, statuses[c.device]) for c in cmds)])


async def open_commands(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The commands left pending or sent (by a restart), oldest first, with their device's
    adapter, whether it still exists and its status."""
    cols = ", ".join("c." + c.strip() for c in COMMAND_COLS.split(","))
    return await conn.fetch(
        f"""select {cols}, d.adapter, d.id is not null as known,
                   coalesce(s.status, '{DeviceStatus.UNKNOWN}') as device_status
            from commands c
            left join devices d on d.id = c.device
            left join device_state s on s.device_key = d.key
            where c.status in {OPEN} order by c.created_at, c.id""")
