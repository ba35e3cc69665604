"""Escalation: an alarm nobody acknowledged in time goes one level up, and again.

An alarm is due when it is still ``active_unacked`` (not shelved, suppressed or out of
service) and its severity's deadline (``notify.escalation.ack_minutes``) has passed since
the latest of: raised, last escalated, unshelved, (re)assigned, and, for alarms quiet hours
may defer, the end of the last quiet window (nobody was told before then, so nobody can
be late). During quiet hours those alarms do not escalate at all. An acknowledgement
changes the state, which is all it takes to stop it.

The level reached is the ``level`` of the alarm's latest ``escalated`` event (the assigned
crew's ``escalation_level`` before that), so nothing else needs storing and a restart
resumes where it was. Two servers never escalate one alarm twice: due alarms are locked
``FOR UPDATE SKIP LOCKED`` and checked again by a fresh statement before anything is
written, in the transaction that writes the event and the notifications.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg

from server.notify import routing
from server.notify.outbox import Enqueuer
from server.notify.quiet import QuietWindow
from server.settings import NotifySettings

logger = logging.getLogger(__name__)

SELECT_ALARM = """
    select a.id, a.rule, a.device, a.severity, a.priority, a.state, a.shelved_until, a.suppressed,
           a.out_of_service, a.raised_at, a.acked_at, a.acked_by, a.cleared_at, a.value, a.message,
           ST_AsGeoJSON(a.geom)::jsonb as geometry,
           coalesce((select array_agg(c.id order by c.id) from alarms c where c.incident = a.id),
                    '{}') as children,
           a.assigned_crew, a.work_state, a.incident, a.dedup_key
    from alarms a where a.id = $1
"""

# $1/$2 severities and deadline seconds, $3 max level, $4 inside quiet hours now,
# $5 lowest priority number quiet hours defer, $6 end of the last quiet window, $7 ids or null.
_DUE = """
    select a.id, coalesce(esc.level, c.escalation_level, 1) as level, d.secs
    from alarms a
    join unnest($1::text[], $2::float8[]) as d(severity, secs) on d.severity = a.severity
    left join crews c on c.id = a.assigned_crew
    left join lateral (
        select (e.details->>'level')::int as level from alarm_events e
        where e.alarm_id = a.id and e.event = 'escalated' order by e.id desc limit 1
    ) esc on true
    where a.state = 'active_unacked' and not a.suppressed and not a.out_of_service
      and (a.shelved_until is null or a.shelved_until <= now())
      and coalesce(esc.level, c.escalation_level, 1) < $3
      and not ($4 and a.severity <> 'critical' and a.priority >= $5)
      and greatest(
            a.raised_at,
            (select max(e.at) from alarm_events e
             where e.alarm_id = a.id and e.event in ('escalated', 'unshelved', 'assigned')),
            case when a.severity <> 'critical' and a.priority >= $5 then $6::timestamptz end
          ) + make_interval(secs => d.secs) <= now()
      and ($7::bigint[] is null or a.id = any($7::bigint[]))
    order by a.raised_at, a.id
    limit 200
"""


class Escalator:
    def __init__(self, pool: asyncpg.Pool, settings: NotifySettings, enqueuer: Enqueuer,
                 metrics) -> None:
        self.pool = pool
        self.settings = settings
        self.enqueuer = enqueuer
        self.metrics = metrics
        self.quiet = QuietWindow.from_settings(settings.quiet_hours)
        self.scans = 0  # completed scans (tests wait on it instead of on the clock)

    async def run(self) -> None:
        interval = self.settings.escalation.check_interval_s
        while True:
            try:
                await self.scan()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
                logger.warning("escalation scan failed (%s); retrying in %.0f s", err, interval)
            self.scans += 1
            await asyncio.sleep(interval)

    def _args(self, ids: list[int] | None) -> tuple[Any, ...]:
        esc = self.settings.escalation
        now = datetime.now(UTC)
        severities = list(esc.ack_minutes)
        return (severities, [esc.ack_minutes[s] * 60.0 for s in severities], esc.max_level,
                self.quiet.contains(now), self.quiet.min_priority, self.quiet.last_end(now), ids)

    async def scan(self) -> int:
        """Escalate every due alarm once; returns how many were escalated."""
        if not self.settings.escalation.ack_minutes:
            return 0
        escalated = 0
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await conn.fetch(_DUE + " for update of a skip locked", *self._args(None))
            if not locked:
                return 0
            # A fresh statement sees what committed while we waited (another server's
            # escalation of the same alarm, an acknowledgement): only still-due ones go on.
            rows = await conn.fetch(_DUE, *self._args([r["id"] for r in locked]))
            for row in rows:
                await self._escalate(conn, row)
                escalated += 1
        return escalated

    async def _escalate(self, conn: asyncpg.Connection, row: asyncpg.Record) -> None:
        s = self.settings
        record = await conn.fetchrow(SELECT_ALARM, row["id"])
        alarm = dict(record)
        level = row["level"]
        recipients: list[routing.Recipient] = []
        why: list[str] = []
        target_level = level + 1
        # The next level that has anybody, so an empty level costs no extra deadline.
        for lvl in range(level + 1, s.escalation.max_level + 1):
            recipients, why = await routing.escalation_targets(conn, s, alarm, lvl)
            if recipients:
                target_level = lvl
                break
        minutes = row["secs"] / 60.0
        reason = f"not acknowledged within {minutes:g} min"
        details = {"level": target_level, "from_level": level, "targets": why,
                   "ack_minutes": minutes}
        await conn.execute(
            "insert into alarm_events (alarm_id, event, actor, reason, details) "
            "values ($1, 'escalated', 'notifier', $2, $3)", alarm["id"], reason, details)
        await self.enqueuer.enqueue(conn, alarm, "escalated", recipients=recipients,
                                    details={"escalation_level": target_level, "reason": reason})
        self.metrics.alarm_escalations.labels(str(target_level)).inc()
        if recipients:
            logger.warning("alarm %s (%s on %s) %s: escalated to level %d: %s", alarm["id"],
                           alarm["severity"], alarm["device"], reason, target_level, ", ".join(why))
        else:
            logger.warning("alarm %s (%s on %s) %s: nobody at escalation levels %d-%d (no available "
                           "crew of that escalation_level, no notify.escalation.contacts)",
                           alarm["id"], alarm["severity"], alarm["device"], reason, level + 1,
                           s.escalation.max_level)
