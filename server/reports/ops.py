"""The operators' and crews' side of citizens' reports (issue 14, point 6 and the crew's part
of point 4): the view the websocket and the API share, live updates through the hub, merging
two reports, notifying the responsible unit, the service-level (SLA) escalation, the KPIs.

Who sees what over the websocket (the same rules as ``GET /api/v1/reports``): operators and
admins get the whole report; viewers and integrators the report without the reporter's
contact; a crew token only the reports assigned to its crew (with the contact: it has to
call the citizen back), and one last message when a report stops being theirs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from server.http.jsonutil import dumps
from server.notify import routing
from server.notify.outbox import WAKE_CHANNEL
from server.notify.routing import Recipient
from server.reports import OPEN

logger = logging.getLogger(__name__)

OP_SQL = """select r.id, r.code, r.category, r.status, r.ward, r.unit, r.crew, r.description, r.contact,
                   r.device, r.alarm_id, r.reporters, r.created_at, r.updated_at, r.resolved_at, r.sla_due,
                   ST_X(r.geom) as lon, ST_Y(r.geom) as lat
            from reports r"""
CONTACT_ROLES = frozenset({"operator", "admin"})
SLA_NOTE = "service level missed"


def view(r) -> dict[str, Any]:
    """A report as operators see it (the API's list and the websocket's ``report`` message)."""
    return {"id": r["id"], "code": r["code"], "category": r["category"], "status": r["status"],
            "ward": r["ward"], "unit": r["unit"], "crew": r["crew"], "description": r["description"],
            "contact": r["contact"], "device": r["device"], "alarm": r["alarm_id"],
            "reporters": r["reporters"], "lon": r["lon"], "lat": r["lat"],
            "created_at": r["created_at"].isoformat(), "updated_at": r["updated_at"].isoformat(),
            "resolved_at": r["resolved_at"].isoformat() if r["resolved_at"] else None,
            "sla_due": r["sla_due"].isoformat()}


def for_role(report: dict[str, Any], role: str, crew: str | None) -> dict[str, Any] | None:
    """What one principal may see of a report: None when nothing, else the report (without
    the contact for those who may not read it)."""
    if role == "crew":
        if crew is None or report.get("crew") != crew:
            return None
        return report
    if role in CONTACT_ROLES:
        return report
    return {k: v for k, v in report.items() if k != "contact"}


async def fetch(conn, rid: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(OP_SQL + " where r.id = $1", rid)
    return view(row) if row else None


def publish(app, report: dict[str, Any], *, previous_crew: str | None = None) -> None:
    """Send a report's new state to the open consoles (after the transaction committed)."""
    from server import keys
    hub = app.get(keys.HUB)
    if hub is not None:
        hub.publish_report(report, previous_crew=previous_crew)


# ---------------------------------------------------------------- merging
async def merge(conn, source: dict[str, Any], into: int, actor: str,
                note: str | None = None) -> dict[str, Any]:
    """Fold report ``source`` into report ``into`` (in the caller's transaction), as intake
    merges a second report of the same problem: its tracking codes, photos and reporters move
    to the kept report, which records who merged what and when; the merged row goes."""
    target = await conn.fetchrow("select id, status, alarm_id, device from reports where id = $1 "
                                 "for update", into)
    if target is None:
        return {}
    await conn.execute("update report_codes set report_id = $2 where report_id = $1", source["id"], into)
    await conn.execute("update report_photos set report_id = $2 where report_id = $1", source["id"], into)
    await conn.execute(
        "update reports set reporters = reporters + $2, updated_at = now(), "
        "alarm_id = coalesce(alarm_id, $3), device = coalesce(device, $4) where id = $1",
        into, source["reporters"], source["alarm"], source["device"])
    # the merged report's own history stays readable on the kept one
    await conn.execute(
        "update report_events set report_id = $2, "
        "note = '[#' || $1::bigint || '] ' || coalesce(note, status) where report_id = $1",
        source["id"], into)
    await conn.execute(
        "insert into report_events (report_id, status, note, by) values ($1, $2, $3, $4)",
        into, target["status"],
        f"report #{source['id']} merged into this one ({source['reporters']} more reporter(s))"
        + (f": {note}" if note else ""), actor)
    await conn.execute("delete from reports where id = $1", source["id"])
    return await fetch(conn, into)


# ---------------------------------------------------------------- notifications
def _body(report: dict[str, Any], event: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    data = {"event": event, "dedup_key": f"report:{report['id']}", "report": orjson.loads(dumps(report))}
    data.update(details or {})
    return {"type": f"report.{event}", "timestamp": orjson.loads(dumps(now)), "data": data}


async def notify(conn: asyncpg.Connection, settings, report: dict[str, Any], event: str,
                 recipients: list[Recipient], details: dict[str, Any] | None = None) -> int:
    """Queue notifications about a report in the alarm notifications' outbox (same channels,
    retries and fallbacks), inside the caller's transaction. Returns the rows queued."""
    targets = list(recipients) + [Recipient("webhook", w.name) for w in settings.webhooks
                                  if w.events is None or event in w.events]
    body = _body(report, event, details)
    rows = []
    for r in dict.fromkeys(targets):
        links = await routing.chain(conn, settings, r, event)
        if not links:
            logger.warning("report %s: %s has no channel to reach it by", report["id"], r)
            continue
        (channel, target), rest = links[0], links[1:]
        payload = {"body": body, "recipient": r.as_json(),
                   "fallback": [{"channel": c, "target": t} for c, t in rest]}
        rows.append((None, event, channel, target, body["data"]["dedup_key"], payload))
    if rows:
        await conn.executemany(
            "insert into notification_outbox (alarm_id, event, channel, target, dedup_key, payload) "
            "values ($1, $2, $3, $4, $5, $6)", rows)
        await conn.execute("select pg_notify($1, '')", WAKE_CHANNEL)
    return len(rows)


# ---------------------------------------------------------------- the service level
async def escalate_overdue(pool: asyncpg.Pool, settings, level: int = 2) -> list[dict[str, Any]]:
    """Every open report past its ``sla_due`` not escalated yet: an event on its timeline and
    notifications to its crew and the escalation contacts of ``level`` (once per report).
    Returns the reports escalated (for the live consoles)."""
    done = []
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            OP_SQL + """ where r.status = any($1::text[]) and r.sla_due < now()
              and not exists (select 1 from report_events e where e.report_id = r.id
                              and e.by = 'notifier' and e.note like $2 || '%')
              order by r.sla_due limit 200 for update of r skip locked""", list(OPEN), SLA_NOTE)
        for row in rows:
            report = view(row)
            late_h = (datetime.now(UTC) - row["sla_due"]).total_seconds() / 3600.0
            await conn.execute(
                "insert into report_events (report_id, status, note, by) values ($1, $2, $3, 'notifier')",
                row["id"], row["status"], f"{SLA_NOTE} (due {row['sla_due']:%Y-%m-%d %H:%M} UTC): escalated")
            recipients = [Recipient("contact", c.name) for c in routing.contacts_at(settings, level)]
            if row["crew"]:
                recipients.insert(0, Recipient("crew", row["crew"]))
            await notify(conn, settings, report, "escalated", recipients,
                         {"reason": SLA_NOTE, "hours_late": round(late_h, 2), "escalation_level": level})
            done.append(await fetch(conn, row["id"]))
    for r in done:
        logger.warning("report %s (%s in %s): %s; escalated", r["id"], r["category"], r["ward"], SLA_NOTE)
    return done


# ---------------------------------------------------------------- KPIs
KPI_SQL = """
select count(*) filter (where status = any($1::text[])) as open,
       count(*) filter (where status = any($1::text[]) and sla_due < now()) as overdue,
       count(*) filter (where status = 'resolved') as resolved,
       count(*) filter (where status = 'resolved' and resolved_at <= sla_due) as in_sla,
       percentile_cont(0.5) within group (order by extract(epoch from resolved_at - created_at))
           filter (where status = 'resolved') as median_s,
       (select count(*) filter (where stars >= 4)::float / nullif(count(*), 0) from report_ratings) as sat,
       (select count(*) from report_ratings) as ratings
from reports where ($2::text is null or crew = $2)
"""


async def kpis(conn, crew: str | None = None) -> dict[str, Any]:
    row = await conn.fetchrow(KPI_SQL, list(OPEN), crew)
    resolved = row["resolved"]
    return {"open": row["open"], "overdue": row["overdue"], "resolved": resolved,
            "within_sla_pct": round(100.0 * row["in_sla"] / resolved, 1) if resolved else None,
            "median_hours_to_resolve": (round(row["median_s"] / 3600.0, 2)
                                        if row["median_s"] is not None else None),
            "satisfaction_pct": (round(100.0 * row["sat"], 1)
                                 if row["sat"] is not None and crew is None else None),
            "ratings": row["ratings"] if crew is None else None}


async def sla_ctx(app) -> AsyncIterator[None]:
    """The service-level watch: beside the alarm escalation (the same switch, interval,
    contacts and channels), open reports past their ``sla_due`` are escalated once."""
    import asyncio

    from server import keys
    settings = app[keys.SETTINGS]
    esc = settings.notify.escalation

    async def watch() -> None:
        while True:
            try:
                for report in await escalate_overdue(app[keys.DB], settings.notify):
                    publish(app, report)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
                logger.warning("report service-level scan failed (%s); retrying", err)
            except Exception:  # a bug in one scan must not end the watch for good
                logger.exception("report service-level scan failed; retrying")
            await asyncio.sleep(esc.check_interval_s)

    task = asyncio.create_task(watch(), name="reports.sla") if esc.enabled else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as err:  # cancelled mid-query: asyncpg may say so in its own words
                logger.warning("report service-level scan stopped mid-query (%s)", err)
