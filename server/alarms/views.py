"""An alarm as the API, the websocket hub and the notifier show it."""

from __future__ import annotations

from typing import Any

import asyncpg

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


def alarm_json(row: Any) -> dict[str, Any]:
    """A row of :data:`ALARM_SELECT` as JSON."""
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
