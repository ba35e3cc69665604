"""The audit log: who did what, to which device, when."""

from __future__ import annotations

from typing import Any

import asyncpg


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
