"""The server's enumerations, each defined once: roles, command states, device statuses,
and (re-exported from ``rules/``) alarm severities and states.

Each is a :class:`~enum.StrEnum`: members compare equal to, serialise as, and bind in SQL
as their values, so the database's check constraints, the API's JSON and the OpenAPI
document all read from here.
"""

from __future__ import annotations

from enum import StrEnum

from rules.vocab import AlarmState, Severity, severity_of_rank_sql, severity_rank_sql

__all__ = ["AlarmState", "CommandState", "DeviceStatus", "Role", "Severity",
           "severity_of_rank_sql", "severity_rank_sql", "values"]


class Role(StrEnum):
    """Least to most: each role's rights include the ones above it, except ``crew``, which
    sees only its own crew's work."""

    VIEWER = "viewer"
    CREW = "crew"
    OPERATOR = "operator"
    INTEGRATOR = "integrator"
    ADMIN = "admin"


class CommandState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self in (CommandState.SUCCEEDED, CommandState.FAILED, CommandState.EXPIRED)


class DeviceStatus(StrEnum):
    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The plain values, in order (for a check constraint, a ``choices=`` or a schema enum)."""
    return tuple(m.value for m in enum)
