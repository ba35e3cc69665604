"""The alarm vocabulary, defined once: severities and ISA-18.2 alarm states.

``rules/`` is the innermost package that needs them, so they live here; the server, the
tiles and the API import them from here (the server's other enumerations are in
``server/vocab.py``). Each is a :class:`~enum.StrEnum`, so a member is its own JSON and SQL
value (``Severity.CRITICAL == "critical"``).
"""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    """Worst first: the order of definition is the rank (0 = worst)."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}
SEVERITIES: tuple[str, ...] = tuple(s.value for s in Severity)  # worst first


class AlarmState(StrEnum):
    """ISA-18.2's states of an alarm (shelved and out of service are flags beside them)."""

    ACTIVE_UNACKED = "active_unacked"
    ACTIVE_ACKED = "active_acked"
    RTN_UNACKED = "rtn_unacked"
    CLOSED = "closed"


def severity_rank_sql(column: str = "severity") -> str:
    """A SQL expression ranking ``column`` worst first (0 = critical), for ``order by``."""
    whens = " ".join(f"when '{s.value}' then {s.rank}" for s in Severity)
    return f"case {column} {whens} else {len(Severity)} end"


def severity_of_rank_sql(rank_expr: str) -> str:
    """The inverse: a SQL expression naming the severity of a rank (NULL when none)."""
    names = ", ".join(f"'{s.value}'" for s in Severity)
    return f"(array[{names}])[{rank_expr} + 1]"
