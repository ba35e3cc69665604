"""The domain's errors: what went wrong, in words a person can act on, and nothing of HTTP.

Services (alarms, commands, registry, …) raise these; :mod:`server.http.problems` maps
each class to its status and renders it as ``application/problem+json`` in one place, so a
handler never catches one to re-raise it as another. Extra keyword arguments travel into
the problem document as members (``field``, ``errors``, ``current_state``, …).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class; ``detail`` is the sentence shown to the person who asked."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    """The thing named does not exist (or the asker may not know that it does)."""


class Invalid(DomainError):
    """The request cannot be carried out as given: a field is wrong (``field=`` names it;
    ``errors=`` lists several)."""


class Conflict(DomainError):
    """The request is valid but clashes with the current state (an alarm already closed,
    an id already taken)."""


class Forbidden(DomainError):
    """The asker's role or crew does not allow this."""


class Unavailable(DomainError):
    """A dependency is away or full; try again after ``retry_after_s`` seconds."""

    def __init__(self, detail: str, *, retry_after_s: int | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_s = retry_after_s
