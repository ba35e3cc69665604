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


# ---------------------------------------------------------------- lamp out
# One definition of a lamp that is *out* (a dark street a crew has to visit), used by the
# ward_stats tiles and by /api/v1/wards/summary (now and ``?at=``): the lamp is offline,
# reports a lamp or driver fault, or has an open alarm (any state but closed, suppressed or
# shelved included: a dark feeder's lamps are out even when their alarms are suppressed
# under the feeder's). A lamp that is off in daylight is not out.
LAMP_FAULTS: tuple[str, ...] = ("lamp_fault", "driver_fault")


def lamp_out_sql(status: str = "s.status", values: str = "s.values", alarmed: str = "false") -> str:
    """A SQL boolean: the lamp of ``status``/``values`` (device_state columns) is out;
    ``alarmed``: a SQL boolean saying the lamp has an open alarm."""
    faults = " or ".join(f"{values}->>'{f}' = 'true'" for f in LAMP_FAULTS)
    return f"({status} = 'offline' or {faults} or coalesce({alarmed}, false))"


def lamp_out(status: str | None, values: dict, alarmed: bool) -> bool:
    """The same in Python (the roll-up at a past instant)."""
    return status == "offline" or any(values.get(f) is True for f in LAMP_FAULTS) or alarmed
