"""The ISA-18.2 alarm lifecycle as pure functions: an alarm row and an action in, the
column changes and the event to record out (or a :class:`LifecycleError`).

States (CONTRACT): ``active_unacked`` → ``active_acked`` (ack) → ``closed`` (return to
normal); ``active_unacked`` → ``rtn_unacked`` (return to normal) → ``closed`` (ack);
``rtn_unacked`` → ``active_unacked`` (re-alarm). Orthogonal to the state, each its own
flag as in OPC UA Part 9: shelved (timed, with a maximum), suppressed by design (part of
an incident), out of service. An alarm nobody was shown (suppressed, shelved or out of
service) closes when it returns to normal: there is nothing for an operator to
acknowledge. The work order (``work_state``) is separate from the acknowledgement.

Closing and reopening by hand (the crew loop, issue 18): an operator closes an open alarm
once the condition has returned to normal or the assigned crew has finished its work;
closing also acknowledges it. Reopening a closed alarm makes it unacknowledged again, in the
state its condition was last known in (``active_unacked`` if still active, else
``rtn_unacked``, which the next acknowledgement closes), with its work open again: it needs
an operator's attention as a new annunciation would. A point (rule, device) has at most one
open alarm, so a closed alarm whose point has opened a newer one cannot be reopened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rules.vocab import AlarmState, Severity

WORK_STATES = ("open", "acknowledged", "in_progress", "done")


class LifecycleError(Exception):
    """An action refused; the subclass says why, the server decides how to answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotApplicable(LifecycleError):
    """The action does not apply to the alarm as it is now (closed, already acknowledged):
    a conflict with its state."""


class BadArgument(LifecycleError):
    """An argument of the action is missing or wrong (minutes, enabled, state, text)."""


@dataclass(slots=True)
class Change:
    event: str  # recorded in alarm_events
    updates: dict[str, Any] = field(default_factory=dict)
    notify: str | None = None  # the event handed to the notifier, None: not notified
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _more_severe(a: str, b: str) -> bool:
    return Severity(a).rank < Severity(b).rank


def is_shelved(alarm: Mapping[str, Any], now: datetime) -> bool:
    until = alarm.get("shelved_until")
    return until is not None and until > now


def annunciated(alarm: Mapping[str, Any], now: datetime) -> bool:
    """Shown to operators: not suppressed, shelved or out of service."""
    return not (alarm.get("suppressed") or alarm.get("out_of_service") or is_shelved(alarm, now))


def _open(alarm: Mapping[str, Any], what: str) -> None:
    if alarm["state"] == AlarmState.CLOSED:
        raise NotApplicable(f"alarm {alarm['id']} is closed; {what} applies to open alarms")


# ---------------------------------------------------------------- the process condition
def raised(alarm: Mapping[str, Any], *, severity: str, value: float | None, message: str,
           now: datetime) -> Change | None:
    """The condition is active (again, or more severe) on an open alarm."""
    updates: dict[str, Any] = {"value": value, "message": message}
    if alarm["active"]:
        if severity == alarm["severity"]:
            return None  # already raised: a replay or a redelivery
        if not _more_severe(severity, alarm["severity"]):
            return Change("severity", updates | {"severity": severity},
                          details={"from": alarm["severity"], "to": severity})
        # More severe: a re-alarm, to be acknowledged again (ISA-18.2).
        return Change("raised", updates | {"severity": severity, "state": AlarmState.ACTIVE_UNACKED},
                      notify="raised", details={"from": alarm["severity"], "to": severity})
    return Change("raised", updates | {"severity": severity, "state": AlarmState.ACTIVE_UNACKED,
                                       "active": True, "cleared_at": None},
                  notify="raised", details={"again": True})


def cleared(alarm: Mapping[str, Any], *, value: float | None, message: str,
            now: datetime) -> Change | None:
    """The condition returned to normal."""
    if not alarm["active"]:
        return None
    updates: dict[str, Any] = {"active": False, "cleared_at": now, "value": value,
                               "message": message}
    if alarm["state"] == AlarmState.ACTIVE_ACKED or not annunciated(alarm, now):
        updates |= {"state": AlarmState.CLOSED, "closed_at": now}
    else:
        updates["state"] = AlarmState.RTN_UNACKED
    return Change("cleared", updates, notify="cleared")


# ---------------------------------------------------------------- operators' actions
def acknowledge(alarm: Mapping[str, Any], *, actor: str, now: datetime) -> Change:
    state = alarm["state"]
    if state == AlarmState.ACTIVE_ACKED:
        raise NotApplicable(f"alarm {alarm['id']} is already acknowledged "
                                f"(by {alarm['acked_by']})")
    _open(alarm, "acknowledging")
    updates: dict[str, Any] = {"acked_at": now, "acked_by": actor}
    if state == AlarmState.RTN_UNACKED:
        updates |= {"state": AlarmState.CLOSED, "closed_at": now}
    else:
        updates["state"] = AlarmState.ACTIVE_ACKED
    return Change("acknowledged", updates, notify="acknowledged")


def shelve(alarm: Mapping[str, Any], *, minutes: Any, max_minutes: int, now: datetime,
           reason: str | None) -> Change:
    _open(alarm, "shelving")
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
        raise BadArgument("minutes must be a positive number (how long to shelve)")
    if minutes > max_minutes:
        raise BadArgument(f"shelving is limited to {max_minutes} minutes; "
                          f"asked for {minutes:g}")
    until = now + timedelta(minutes=float(minutes))
    return Change("shelved", {"shelved_until": until}, notify="shelved", reason=reason,
                  details={"minutes": minutes, "until": until.isoformat()})


def unshelve(alarm: Mapping[str, Any], *, now: datetime, reason: str | None = None,
             expired: bool = False) -> Change:
    if alarm.get("shelved_until") is None or (not expired and not is_shelved(alarm, now)):
        raise NotApplicable(f"alarm {alarm['id']} is not shelved")
    return Change("unshelved", {"shelved_until": None}, notify="unshelved",
                  reason=reason or ("the shelving time ran out" if expired else None))


def out_of_service(alarm: Mapping[str, Any], *, enabled: Any, reason: str | None) -> Change:
    if not isinstance(enabled, bool):
        raise BadArgument("enabled must be true (take out of service) or false (return)")
    _open(alarm, "out of service")
    if bool(alarm["out_of_service"]) == enabled:
        raise NotApplicable(f"alarm {alarm['id']} is "
                            f"{'already' if enabled else 'not'} out of service")
    return Change("out_of_service", {"out_of_service": enabled}, notify="out_of_service",
                  reason=reason, details={"enabled": enabled})


def assign(alarm: Mapping[str, Any], *, crew: str) -> Change:
    _open(alarm, "assigning")
    if alarm.get("assigned_crew") == crew:
        raise NotApplicable(f"alarm {alarm['id']} is already assigned to {crew}")
    updates: dict[str, Any] = {"assigned_crew": crew}
    if alarm.get("work_state") in (None, "done"):
        updates["work_state"] = "open"
    return Change("assigned", updates, notify="assigned",
                  details={"crew": crew, "previous": alarm.get("assigned_crew")})


def work(alarm: Mapping[str, Any], *, state: Any) -> Change:
    if state not in WORK_STATES:
        raise BadArgument(f"state must be one of {', '.join(WORK_STATES)}; got {state!r}")
    if alarm.get("assigned_crew") is None:
        raise NotApplicable(f"alarm {alarm['id']} has no crew assigned: assign it first")
    if alarm.get("work_state") == state:
        raise NotApplicable(f"the work on alarm {alarm['id']} is already {state}")
    return Change("work", {"work_state": state}, notify="work",
                  details={"from": alarm.get("work_state"), "to": state})


def comment(alarm: Mapping[str, Any], *, text: Any) -> Change:
    if not isinstance(text, str) or not text.strip():
        raise BadArgument("send {\"text\": \"...\"}: a comment needs some text")
    if len(text) > 4000:
        raise BadArgument("a comment is at most 4000 characters")
    return Change("comment", {}, notify="comment", reason=text.strip())


def close(alarm: Mapping[str, Any], *, actor: str, now: datetime) -> Change:
    """An operator closes an open alarm: the condition is over or the crew's work is done."""
    _open(alarm, "closing")
    if alarm["active"] and alarm.get("work_state") != "done":
        raise NotApplicable(f"alarm {alarm['id']} is still active and no crew has finished work on "
                            "it: acknowledge or shelve it, or close it once the work is done")
    updates: dict[str, Any] = {"state": AlarmState.CLOSED, "closed_at": now}
    if alarm.get("acked_at") is None:
        updates |= {"acked_at": now, "acked_by": actor}
    return Change("closed", updates, notify="closed",
                  details={"from": alarm["state"], "active": bool(alarm["active"]),
                           "work_state": alarm.get("work_state")})


def reopen(alarm: Mapping[str, Any], *, now: datetime) -> Change:
    """An operator reopens a closed alarm: unacknowledged again, its work open again."""
    if alarm["state"] != AlarmState.CLOSED:
        raise NotApplicable(f"alarm {alarm['id']} is not closed (it is {alarm['state']})")
    state = AlarmState.ACTIVE_UNACKED if alarm["active"] else AlarmState.RTN_UNACKED
    updates: dict[str, Any] = {"state": state, "closed_at": None, "acked_at": None, "acked_by": None}
    if alarm.get("assigned_crew") is not None:
        updates["work_state"] = "open"
    return Change("reopened", updates, notify="raised",
                  details={"to": str(state), "closed_at": alarm["closed_at"].isoformat()
                           if alarm.get("closed_at") else None})
