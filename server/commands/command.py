"""One command on its way to a device, and how its delivery ended.

Shared by the service (which queues commands), the transports (which carry them and
answer an :class:`Outcome`) and the journal (which writes both down).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.vocab import CommandState

__all__ = ["ADAPTER", "MODBUS", "MQTT", "Command", "Outcome", "utcnow"]

# The routes a command can take; each names one transport (and labels metrics and audit).
MQTT, MODBUS, ADAPTER = "mqtt", "modbus", "adapter"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False, slots=True)
class Command:
    id: uuid.UUID
    device: str
    name: str
    args: dict[str, Any]
    actor: str
    expires_at: datetime
    route: str
    group: uuid.UUID | None = None
    sent_at: datetime | None = None  # set once published / written


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery ended: a final state, what the device answered, and why it failed."""

    state: CommandState
    result: Any = None
    error: str | None = None

    @classmethod
    def succeeded(cls, result: Any = None) -> Outcome:
        return cls(CommandState.SUCCEEDED, result)

    @classmethod
    def failed(cls, error: str | None, result: Any = None) -> Outcome:
        return cls(CommandState.FAILED, result, error)

    @classmethod
    def expired(cls, error: str) -> Outcome:
        return cls(CommandState.EXPIRED, None, error)
