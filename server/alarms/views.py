"""An alarm as the API, the websocket hub and the notifier show it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

ALARM_COLUMNS = (
    "a.id, a.rule, a.device, a.severity, a.priority, a.state, a.active, a.shelved_until, "
    "a.suppressed, a.out_of_service, a.chattering, a.raised_at, a.acked_at, a.acked_by, "
    "a.cleared_at, a.closed_at, a.value, a.message, a.context, a.incident, a.assigned_crew, a.work_state, "
    "a.dedup_key, a.updated_at"
)
ALARM_SELECT = f"""
select {ALARM_COLUMNS},
       ST_AsGeoJSON(coalesce(a.geom, d.geom), 7)::json as geometry,
       coalesce((select array_agg(c.device order by c.device) from alarms c
                 where c.incident = a.id), '{{}}') as children
from alarms a left join devices d on d.id = a.device
"""


# What "open" means on badges, panels and roll-ups (ISA-18.2): not closed, and not taken out
# of the operator's view by shelving or out of service. Such an alarm is still open in its
# lifecycle (GET /alarms lists it, state=open) but does not count. The console's twin is
# countsAsOpen in static/js/alarms.js.
def counts_as_open_sql(alias: str = "a", at: str = "now()") -> str:
    return (f"({alias}.state <> 'closed' and not coalesce({alias}.shelved_until > {at}, false) "
            f"and not {alias}.out_of_service)")


def counts_as_open(alarm: Any, at: datetime) -> bool:
    shelved = alarm.get("shelved_until")
    return (alarm.get("state") != "closed" and not (shelved is not None and shelved > at)
            and not alarm.get("out_of_service"))


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
        "message": r["message"], "context": r.get("context"), "geometry": geometry,
        "children": list(r.get("children") or []), "incident": r["incident"],
        "assigned_crew": r["assigned_crew"], "work_state": r["work_state"],
        "dedup_key": r["dedup_key"], "updated_at": r["updated_at"],
    }


async def fetch_alarm(conn: asyncpg.Connection, alarm_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(ALARM_SELECT + " where a.id = $1", alarm_id)
    return alarm_json(row) if row is not None else None
