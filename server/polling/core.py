"""What every poller does with time, the same for Modbus units and third-party adapters.

* :class:`Grid`: polls on absolute deadlines ``phase + k × interval`` (wake-up jitter never
  accumulates); a slow poll or sink skips the slots it overran (counted, not made up in a
  burst); a retry moves the deadline off the grid until the next success.
* :func:`backoff`: capped exponential delay, jittered between half and all of it.
* :class:`Availability`: online until nothing has succeeded for ``offline_after`` seconds;
  the caller tells the sink (and logs one line) when a transition method says it changed.
* :class:`Streak`: consecutive failures, so a failure is logged once when a streak starts
  and once when it ends, and a bug's traceback once per streak.
* :func:`wait_until`: sleep to a deadline, waking on the way for availabilities that expire.
* :class:`Delivery`: the awaited sink (backpressure), whose failures never end polling and
  are logged once per streak.
* :func:`describe`: an error as one plain line (no ``repr`` of numpy scalars, no traceback).

The pollers keep their own counters (``GatewayStats``, ``AdapterStats``): they are exported
to ``/metrics`` under different names and meanings, which are part of the contract.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Availability", "Delivery", "Grid", "Labelled", "Streak", "backoff", "describe",
           "wait_until"]


def backoff(rng: random.Random, base: float, attempt: int, cap: float) -> float:
    """``base × 2^attempt`` capped at ``cap``, jittered between half and all of it (so
    pollers that failed together do not retry together)."""
    return min(cap, base * 2 ** min(attempt, 30)) * rng.uniform(0.5, 1.0)


def describe(err: BaseException) -> str:
    """One plain line for a log or ``last_error``: the message, or the class when it has none."""
    text = str(err)
    if isinstance(err, TimeoutError | asyncio.TimeoutError) and not text:
        return "no answer in time"
    return text or type(err).__name__


@dataclass(slots=True)
class Grid:
    """A schedule on absolute deadlines ``phase + k × interval``."""

    interval: float
    phase: float = 0.0  # loop time of slot 0
    deadline: float = 0.0  # the next poll, loop time
    on_grid: bool = True  # deadline is a slot (not a retry)

    def start(self, phase: float) -> None:
        self.phase = self.deadline = phase
        self.on_grid = True

    def next_slot(self, now: float) -> int:
        """Move to the first slot after ``now``; returns the slots skipped since the deadline
        (overruns: the poll or the sink took longer than an interval)."""
        k = math.floor((now - self.phase) / self.interval) + 1
        skipped = 0
        if self.on_grid:
            skipped = max(0, k - round((self.deadline - self.phase) / self.interval) - 1)
        self.deadline, self.on_grid = self.phase + k * self.interval, True
        return skipped

    def retry_at(self, when: float) -> None:
        """A retry off the grid; the next success puts the schedule back on it."""
        self.deadline, self.on_grid = when, False

    def forgive(self, now: float) -> None:
        """Slots missed while the poller could not poll at all (link down) are not overruns."""
        if self.deadline < now:
            self.on_grid = False


@dataclass(slots=True)
class Availability:
    """Online until nothing succeeded for ``offline_after`` seconds.

    ``online`` is ``None`` until known; a poller that does not announce its first success
    starts it at ``True``. The transition methods return whether the state changed: that is
    when the sink is told and one line is logged.
    """

    offline_after: float
    online: bool | None = None
    last_success: float = 0.0  # loop time; the start time until the first success

    @property
    def watched(self) -> bool:
        return self.online is not False

    @property
    def expires_at(self) -> float:
        return self.last_success + self.offline_after if self.watched else math.inf

    def expired(self, now: float) -> bool:
        return self.watched and now >= self.last_success + self.offline_after

    def succeeded(self, at: float) -> bool | None:
        """Record a success; returns the state before it (``True``: nothing changed)."""
        before, self.online, self.last_success = self.online, True, at
        return before

    def lost(self) -> bool:
        """Mark it offline; ``True`` if it was not already."""
        changed, self.online = self.online is not False, False
        return changed


@dataclass(slots=True)
class Streak:
    """Consecutive failures of one thing polled."""

    failures: int = 0
    last_error: str = ""
    bug_logged: bool = False

    def fail(self, error: str) -> bool:
        """Count a failure; ``True`` if it starts a streak (log it)."""
        first = self.failures == 0
        self.failures += 1
        self.last_error = error
        return first

    def first_bug(self) -> bool:
        """``True`` once per streak: a bug's traceback is logged once, not at every retry."""
        first, self.bug_logged = not self.bug_logged, True
        return first

    def succeed(self) -> bool:
        """End the streak; ``True`` if there was one (log the recovery)."""
        ended = self.failures > 0
        self.failures, self.last_error, self.bug_logged = 0, "", False
        return ended


A = TypeVar("A", bound=Availability)


async def wait_until(deadline: float, watched: Callable[[], Iterable[A]],
                     expire: Callable[[list[A]], Awaitable[None]]) -> None:
    """Sleep until ``deadline``; on the way, hand ``expire`` the availabilities whose time
    runs out before it (at a tie the poll comes first: its answer may keep them online)."""
    loop = asyncio.get_running_loop()
    while (now := loop.time()) < deadline:
        soon = [a for a in watched() if a.expires_at < deadline]
        if not soon:
            await asyncio.sleep(deadline - now)
            continue
        await asyncio.sleep(max(0.0, min(a.expires_at for a in soon) - now))
        now = loop.time()
        if gone := [a for a in soon if a.expired(now)]:
            await expire(gone)


class Delivery:
    """The awaited sink of one poller: it may block (backpressure: polling waits), and its
    failures are logged once per streak and never end polling."""

    def __init__(self, sink: Callable[[Sequence[Any]], Awaitable[None]],
                 log: logging.LoggerAdapter) -> None:
        self.sink, self.log = sink, log
        self.failing = False

    async def __call__(self, batch: Sequence[Any]) -> None:
        if not batch:
            return
        try:
            await self.sink(batch)
        except Exception as err:  # supervision boundary: ingest trouble must not stop polling
            if not self.failing:
                # Ingest says why itself; a traceback here only helps for a bug.
                expected = isinstance(err, OSError | TimeoutError | ConnectionError)
                self.log.error("storing %d items failed (%s); dropping items until it works "
                               "again", len(batch), describe(err), exc_info=not expected)
            self.failing = True
        else:
            if self.failing:
                self.log.info("storing works again")
            self.failing = False


class Labelled(logging.LoggerAdapter):
    """Prefixes every line with what it concerns (``modbus[gw-a] PS-1:``,
    ``adapter[acme]:``) and adds the labels as ``extra`` fields for structured handlers."""

    def __init__(self, logger: logging.Logger, prefix: str, **labels: Any) -> None:
        super().__init__(logger, labels)
        self.prefix = prefix

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return f"{self.prefix}: {msg}", kwargs
