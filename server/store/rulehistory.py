"""The history of every rule: who changed it, when, and the document before and after.

Rows are written in the transaction of the change (an API write, or the rule files'
mirror into the ``rules`` table), so the history never shows a change that did not
happen. A change is named by what it did: ``create``, ``delete``, ``enable`` and
``disable`` (only ``enabled`` changed) or ``update``. :func:`diff` lists the changed
fields by dotted path (``select.kind``), which is what a reader wants to see first.
"""

from __future__ import annotations

from typing import Any

import asyncpg

__all__ = ["FILE_ACTOR", "action_of", "diff", "read", "record"]

FILE_ACTOR = "file"
MAX_LISTED = 500

def action_of(before: dict | None, after: dict | None) -> str | None:
    """What a change did, or None when nothing changed."""
    if before is None and after is None:
        return None
    if before is None:
        return "create"
    if after is None:
        return "delete"
    if before == after:
        return None
    rest_b = {k: v for k, v in before.items() if k != "enabled"}
    rest_a = {k: v for k, v in after.items() if k != "enabled"}
    if rest_b == rest_a:
        return "enable" if after.get("enabled", True) else "disable"
    return "update"


def _flatten(doc: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(doc, dict) and doc:
        for k, v in doc.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = doc  # lists are values: [1, 3, 4] → [1, 4] reads best whole


def diff(before: dict | None, after: dict | None) -> list[dict[str, Any]]:
    """The changed fields, ``[{"field", "before", "after"}]``; a field absent on one side
    (a create, a delete, an option added) has null there."""
    b: dict[str, Any] = {}
    a: dict[str, Any] = {}
    if before is not None:
        _flatten(before, "", b)
    if after is not None:
        _flatten(after, "", a)
    out = []
    for field in [*b, *(k for k in a if k not in b)]:
        old, new = b.get(field), a.get(field)  # absent reads as null: no change between them
        if old != new:
            out.append({"field": field, "before": old, "after": new})
    return out


async def record(conn: asyncpg.Connection, rule_id: str, actor: str, source: str,
                 before: dict | None, after: dict | None) -> str | None:
    """One change, if anything changed; returns its action."""
    action = action_of(before, after)
    if action is None:
        return None
    await conn.execute(
        "insert into rule_history (rule_id, actor, action, source, before, after) "
        "values ($1, $2, $3, $4, $5, $6)", rule_id, actor, action, source, before, after)
    return action


async def read(conn: asyncpg.Connection, rule_id: str, limit: int = MAX_LISTED) -> list[dict]:
    """The rule's changes, newest first."""
    rows = await conn.fetch(
        "select id, at, actor, action, source, before, after from rule_history "
        "where rule_id = $1 order by id desc limit $2", rule_id, limit)
    return [{"id": r["id"], "at": r["at"], "by": r["actor"], "action": r["action"],
             "source": r["source"], "before": r["before"], "after": r["after"],
             "changes": diff(r["before"], r["after"])} for r in rows]
