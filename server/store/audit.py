"""The audit log: who did what, to which device, when, and how it ended.

Rows are written in the same transaction as the change they record (a device created, a
command accepted), so the log never claims what did not happen. Actions are dotted,
``<object>.<verb>``: ``device.create``, ``device.update``, ``device.delete``,
``token.create``, ``token.revoke``, ``command.create``, ``command.denied``,
``command.succeeded``, ``command.failed``, ``command.expired``, ``command_group.create``.
A filter on ``command`` matches every ``command.*`` action.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

__all__ = ["AuditEntry", "AuditQuery", "audit", "audit_many", "query"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    device: str | None = None
    target: str | None = None
    details: dict[str, Any] | None = None


async def audit(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    *,
    device: str | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "insert into audit_log (actor, action, device, target, details) values ($1,$2,$3,$4,$5)",
        actor, action, device, target, details or {},
    )


async def audit_many(conn: asyncpg.Connection, entries: Sequence[AuditEntry]) -> None:
    """Many entries in one statement (a group command's thousands of outcomes)."""
    if not entries:
        return
    await conn.execute(
        """insert into audit_log (actor, action, device, target, details)
           select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[])""",
        [e.actor for e in entries], [e.action for e in entries], [e.device for e in entries],
        [e.target for e in entries], [e.details or {} for e in entries],
    )


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Newest first; ``after`` is the id of the last entry of the previous page."""

    actor: str | None = None
    device: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    limit: int = 100


async def query(conn: asyncpg.Connection, q: AuditQuery) -> tuple[list[dict[str, Any]], bool]:
    """The page of entries matching ``q`` and whether more follow."""
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if q.actor:
        # Actors are stored as "name (role)"; the name alone finds them too.
        where.append(f"(actor = {arg(q.actor)} or starts_with(actor, {arg(q.actor + ' (')}))")
    if q.device:
        where.append(f"device = {arg(q.device)}")
    if q.action:
        where.append(f"(action = {arg(q.action)} or starts_with(action, {arg(q.action + '.')}))")
    if q.since:
        where.append(f"at >= {arg(q.since)}")
    if q.until:
        where.append(f"at < {arg(q.until)}")
    if q.after is not None:
        where.append(f"id < {arg(q.after)}")
    sql = "select id, at, actor, action, device, target, details from audit_log"
    if where:
        sql += " where " + " and ".join(where)
    sql += f" order by id desc limit {arg(q.limit + 1)}"
    rows = await conn.fetch(sql, *args)
    return [dict(r) for r in rows[: q.limit]], len(rows) > q.limit
