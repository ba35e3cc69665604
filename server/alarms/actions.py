"""Operators' (and crews') actions on one alarm: acknowledge, shelve, unshelve, out of
service, assign, comment, work (with the crew's note and photo), close and reopen.

The same lifecycle functions (:mod:`rules.lifecycle`) and the same transaction shape as
the engine's own transitions, the alarm row locked so an action never races the
persister. What does not apply raises the domain's errors (:mod:`server.errors`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from rules import lifecycle as lc
from server.alarms.writes import AlarmWriter, Published
from server.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from server.store.audit import audit
from server.vocab import Role


def domain_error(err: lc.LifecycleError) -> DomainError:
    """A refused lifecycle action as the domain's error."""
    if isinstance(err, lc.BadArgument):
        return Invalid(err.message)
    return Conflict(err.message)


class Actions:
    def __init__(self, pool: asyncpg.Pool, writer: AlarmWriter, rules_settings,
                 published: Published) -> None:
        self.pool = pool
        self.writer = writer
        self.settings = rules_settings
        self.published = published

    async def act(self, alarm_id: int, action: str, principal, body: dict[str, Any]) -> dict[str, Any]:
        """Apply ``action`` to alarm ``alarm_id`` and return the alarm as stored. Role checks
        are the caller's; a crew may only touch alarms assigned to it."""
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self.writer.lock(conn, alarm_id)
            if row is None:
                raise NotFound(f"no alarm with id {alarm_id}")
            if principal.role == Role.CREW and row["assigned_crew"] != principal.crew:
                raise Forbidden(f"alarm {alarm_id} is not assigned to your crew "
                                f"({principal.crew or 'none'})")
            reason = body.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise Invalid("reason must be text")
            try:
                change = await self._change(conn, row, action, principal, body, now)
            except lc.LifecycleError as err:
                raise domain_error(err) from None
            if reason and not change.reason:
                change.reason = reason
            if action == "work":  # the crew's note and photo, in the alarm's history
                if body.get("note"):
                    change.reason = body["note"]
                    change.details["note"] = body["note"]
                if body.get("photo"):
                    change.details["photo"] = body["photo"]
            try:
                alarm = await self.writer.write(conn, row, change, principal.actor, now)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"alarm {alarm_id} cannot be reopened: its rule has opened a newer "
                               f"alarm on {row['device']}; work on that one") from None
            if action in ("close", "reopen"):
                await audit(conn, principal.actor, f"alarm.{action}", device=row["device"],
                            target=str(alarm_id), details={"reason": change.reason})
        self.published(alarm, event=change.event)
        return alarm

    async def _change(self, conn, row, action: str, principal, body, now) -> lc.Change:
        match action:
            case "ack":
                return lc.acknowledge(row, actor=principal.actor, now=now)
            case "shelve":
                return lc.shelve(row, minutes=body.get("minutes"),
                                 max_minutes=self.settings.shelve_max_minutes, now=now,
                                 reason=body.get("reason"))
            case "unshelve":
                return lc.unshelve(row, now=now, reason=body.get("reason"))
            case "out_of_service":
                return lc.out_of_service(row, enabled=body.get("enabled", True),
                                         reason=body.get("reason"))
            case "assign":
                crew = body.get("crew")
                if not isinstance(crew, str) or not crew:
                    raise lc.BadArgument("send {\"crew\": \"<crew id>\"}")
                if not await conn.fetchval("select exists(select 1 from crews where id = $1)", crew):
                    raise lc.BadArgument(f"no crew {crew!r}; GET /api/v1/crews lists them")
                return lc.assign(row, crew=crew)
            case "comment":
                return lc.comment(row, text=body.get("text"))
            case "work":
                return lc.work(row, state=body.get("state"))
            case "close":
                return lc.close(row, actor=principal.actor, now=now)
            case "reopen":
                return lc.reopen(row, now=now)
        raise ValueError(action)
