"""Commands as the API shows them: one command, and a group with its counts and results."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from server.commands.journal import COMMAND_COLS
from server.vocab import CommandState

__all__ = ["COMMAND_COLS", "command_json", "fetch_command", "fetch_group"]


def command_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "device": row["device"], "name": row["name"], "args": row["args"],
        "status": row["status"], "group": str(row["group_id"]) if row["group_id"] else None,
        "requested_by": row["requested_by"], "created_at": row["created_at"],
        "sent_at": row["sent_at"], "finished_at": row["finished_at"],
        "expires_at": row["expires_at"], "result": row["result"], "error": row["error"],
    }


async def fetch_command(conn: asyncpg.Connection, cmd_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"select {COMMAND_COLS} from commands where id = $1", cmd_id)
    return command_json(row) if row else None


async def fetch_group(conn: asyncpg.Connection, group: uuid.UUID,
                      status: str | None = None) -> dict[str, Any] | None:
    g = await conn.fetchrow("select * from command_groups where id = $1", group)
    if g is None:
        return None
    counts = {str(s): 0 for s in CommandState}
    for r in await conn.fetch("select status, count(*) as n from commands where group_id = $1 "
                              "group by status", group):
        counts[r["status"]] = r["n"]
    sql = ("select id, device, status, result, error, sent_at, finished_at from commands "
           "where group_id = $1")
    args: list[Any] = [group]
    if status:
        sql += " and status = $2"
        args.append(status)
    rows = await conn.fetch(sql + " order by device", *args)
    return {
        "id": str(g["id"]), "name": g["name"], "args": g["args"], "target": g["target"],
        "requested_by": g["requested_by"], "created_at": g["created_at"], "total": g["total"],
        "counts": counts, "done": counts[CommandState.PENDING] + counts[CommandState.SENT] == 0,
        "results": [{"device": r["device"], "command": str(r["id"]), "status": r["status"],
                     "result": r["result"], "error": r["error"], "sent_at": r["sent_at"],
                     "finished_at": r["finished_at"]} for r in rows],
        "skipped": g["skipped"],
    }
