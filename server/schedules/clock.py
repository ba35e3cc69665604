"""The scheduler's time: the wall clock, or one a test sets by hand.

The scheduler asks :meth:`Clock.now` what time it is and sleeps with
:meth:`Clock.sleep_until`, never with ``asyncio.sleep`` of its own, so a test can drive a
whole night of steps in milliseconds with a :class:`ManualClock` (``app[keys.SCHEDULE_CLOCK]``
set before the app starts) instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "ManualClock"]


class Clock:
    """The wall clock (UTC)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime, wake: asyncio.Event) -> None:
        """Until ``when`` or until ``wake`` is set, whichever comes first."""
        delay = (when - self.now()).total_seconds()
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)


class ManualClock(Clock):
    """A clock that moves only when told to (:meth:`set`, :meth:`advance`); sleepers wake
    when it passes their time."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when
        self._moved.set()

    def advance(self, **delta: float) -> datetime:
        self.set(self._now + timedelta(**delta))
        return self._now

    async def sleep_until(self, when: datetime, wake: asyncio.Event) -> None:
        while self._now < when and not wake.is_set():
            self._moved.clear()
            waits = [asyncio.ensure_future(self._moved.wait()), asyncio.ensure_future(wake.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
