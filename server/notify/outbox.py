"""Enqueueing: an alarm transition becomes outbox rows, inside the caller's transaction.

The alarm engine calls :meth:`Enqueuer.enqueue` in the transaction that records the
transition, so a notification exists exactly when the transition does (the transactional
outbox): a rollback takes both back, a commit makes the rows visible to every worker, and
``pg_notify`` (delivered only on commit) wakes them at once.

One row per recipient, for the first channel of its chain; the rest of the chain travels in
the row's payload and becomes the next row only if that channel keeps failing. Every row
of one alarm carries the alarm's dedup key, so a receiver ties raise, acknowledge and
clear together (PagerDuty's ``dedup_key``; the e-mails share one thread).

Who is told, by event:
- raised, unshelved, assigned: the assigned crew (routed on raise if none) and the
  configured webhooks; escalated: the next level's crew and contacts, and the webhooks;
- acknowledged, cleared, closed: everyone told about this alarm before, plus the assigned
  crew, so nobody keeps an incident open that is over;
- comment, work: the configured webhooks only (integrations mirror the work order; crews
  see comments on their page);
- shelved, suppressed, out_of_service: nobody. While an alarm is shelved, suppressed or
  out of service it is not announced to anyone new; follow-ups still reach those already told.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from server.http.jsonutil import dumps
from server.notify import routing
from server.notify.quiet import QuietWindow
from server.notify.routing import Recipient
from server.settings import NOTIFY_EVENTS, NotifySettings

logger = logging.getLogger(__name__)

WAKE_CHANNEL = "ioc_notify_outbox"

ANNOUNCE = frozenset({"raised", "unshelved", "assigned", "escalated"})
FOLLOW_UP = frozenset({"acknowledged", "cleared", "closed"})
INTEGRATION_ONLY = frozenset({"comment", "work"})
SILENT = frozenset({"shelved", "suppressed", "out_of_service"})

_INSERT = """
    insert into notification_outbox
        (alarm_id, event, channel, target, dedup_key, payload, next_attempt_at)
    values ($1, $2, $3, $4, $5, $6, $7)
"""


def _as_datetime(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v).replace("Z", "+00:00"))


def silenced(alarm: dict[str, Any], now: datetime) -> bool:
    """Shelved, suppressed by design or out of service: evaluated, but not announced."""
    shelved_until = _as_datetime(alarm.get("shelved_until"))
    return bool(alarm.get("suppressed") or alarm.get("out_of_service")
                or (shelved_until is not None and shelved_until > now))


def dedup_key(alarm: dict[str, Any]) -> str:
    return alarm.get("dedup_key") or f"{alarm.get('rule')}:{alarm.get('device')}"


def body(alarm: dict[str, Any], event: str, now: datetime, details: dict[str, Any] | None) -> dict:
    """What receivers get: Standard Webhooks' recommended {type, timestamp, data} shape."""
    view = orjson.loads(dumps(alarm))  # datetimes and numpy values as plain JSON
    data = {"event": event, "dedup_key": dedup_key(alarm), "alarm": view}
    if details:
        data.update(orjson.loads(dumps(details)))
    return {"type": f"alarm.{event}", "timestamp": orjson.loads(dumps(now)), "data": data}


class Enqueuer:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self.quiet = QuietWindow.from_settings(settings.quiet_hours)

    async def enqueue(self, conn: asyncpg.Connection, alarm: dict[str, Any], event: str, *,
                      recipients: list[Recipient] | None = None,
                      details: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Queue the notifications of one alarm transition; route a new alarm to a crew.

        Returns ``{"assigned_crew": id}`` when it assigned the alarm (alarms.assigned_crew is
        set in this transaction, with an alarm_events row saying why), else None.
        """
        if event not in NOTIFY_EVENTS:
            raise ValueError(f"unknown alarm event {event!r}; events are {', '.join(NOTIFY_EVENTS)}")
        if event in SILENT:
            return None
        now = datetime.now(UTC)
        quiet = silenced(alarm, now)
        if event in ANNOUNCE and (quiet or alarm.get("state") == "closed"):
            return None
        result = None
        targets: list[Recipient] = []
        if event == "raised" and not alarm.get("assigned_crew"):
            found = await routing.route(conn, alarm)
            if found is not None:
                await self._assign(conn, alarm, found)
                alarm = {**alarm, "assigned_crew": found.crew}
                result = {"assigned_crew": found.crew}
            else:
                logger.warning("alarm %s on %s: no crew is available to route it to",
                               alarm.get("id"), alarm.get("device"))
        if event == "escalated":
            targets += recipients or []
        elif event in ANNOUNCE or (event in FOLLOW_UP and not quiet):
            if alarm.get("assigned_crew"):
                targets.append(Recipient("crew", alarm["assigned_crew"]))
        if event in FOLLOW_UP and alarm.get("id") is not None:
            targets += await self._told_before(conn, alarm["id"])
        if not quiet:
            targets += [Recipient("webhook", w.name) for w in self.settings.webhooks
                        if w.events is None or event in w.events]
        wanted = {w.name: w.events for w in self.settings.webhooks}
        targets = [r for r in targets
                   if r.kind != "webhook" or (wanted.get(r.key) is None or event in wanted[r.key])]
        due = now
        if self.quiet.defers(alarm):
            due = self.quiet.release_at(now) or now
        payload_body = body(alarm, event, now, details)
        key = dedup_key(alarm)
        rows = []
        for r in dict.fromkeys(targets):  # distinct, in order
            links = await routing.chain(conn, self.settings, r, event)
            if not links:
                logger.warning("alarm %s: %s has no channel to reach it by (contacts, or "
                               "notify.smtp for e-mail)", alarm.get("id"), r)
                continue
            (channel, target), rest = links[0], links[1:]
            payload = {"body": payload_body, "recipient": r.as_json(),
                       "fallback": [{"channel": c, "target": t} for c, t in rest]}
            rows.append((alarm.get("id"), event, channel, target, key, payload, due))
        if rows:
            await conn.executemany(_INSERT, rows)
            await conn.execute("select pg_notify($1, '')", WAKE_CHANNEL)
        return result

    async def _assign(self, conn: asyncpg.Connection, alarm: dict[str, Any], found) -> None:
        if alarm.get("id") is None:
            return
        await conn.execute(
            "update alarms set assigned_crew = $2, updated_at = now() "
            "where id = $1 and assigned_crew is null", alarm["id"], found.crew)
        details = {"crew": found.crew, "by": found.by}
        if found.metres is not None:
            details["distance_m"] = round(found.metres, 1)
        await conn.execute(
            "insert into alarm_events (alarm_id, event, actor, reason, details) "
            "values ($1, 'assigned', 'notifier', $2, $3)",
            alarm["id"], f"routed to {found.crew}: {found.why}", details)

    async def _told_before(self, conn: asyncpg.Connection, alarm_id: int) -> list[Recipient]:
        rows = await conn.fetch(
            "select distinct payload->'recipient' as r from notification_outbox "
            "where alarm_id = $1 and event <> all($2::text[])", alarm_id, list(INTEGRATION_ONLY))
        return [Recipient.from_json(r["r"]) for r in rows if r["r"]]
