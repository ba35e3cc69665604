"""The alarm engine's one timer task: on/off delays and stale-data deadlines fired at
their time, timed shelving ended, chattering alarms released once quiet.

It sleeps until the earliest of the three, or until woken (a batch may have started a
delay due sooner); what falls due goes to the write queue.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable

from rules.engine import RuleEngine
from server.alarms.queue import EndChattering, ExpireShelf, WriteQueue

logger = logging.getLogger(__name__)


class Timers:
    def __init__(self, core: RuleEngine, queue: WriteQueue,
                 on_late: Callable[[float], None] | None = None) -> None:
        self.core = core
        self.queue = queue
        self.on_late = on_late  # how late a rule timer fired, s
        self._wake = asyncio.Event()
        self._shelves: list[tuple[float, int]] = []  # heap of (shelved until, alarm id)
        self._held: dict[tuple[str, str], float] = {}  # chattering alarms held active, until

    def wake(self) -> None:
        """Something may be due before the current sleep ends: look again."""
        self._wake.set()

    def shelved(self, until: float, alarm_id: int) -> None:
        heapq.heappush(self._shelves, (until, alarm_id))
        self._wake.set()

    def set_shelves(self, heap: list[tuple[float, int]]) -> None:
        """The shelved alarms as stored (a heap), replacing what was known."""
        self._shelves = heap

    def hold(self, key: tuple[str, str], until: float) -> None:
        """Keep a chattering (rule, device) alarm active until ``until`` unless raised again."""
        self._held[key] = until
        self._wake.set()

    def release(self, key: tuple[str, str]) -> bool:
        """Raised again while held: no longer held. True if it was."""
        return self._held.pop(key, None) is not None

    async def run(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # supervision boundary: timers must keep running
                logger.exception("alarm timers failed; retrying")
                await asyncio.sleep(1.0)

    async def _tick(self) -> None:
        now = time.time()
        deadline = min(self.core.next_deadline(), now + 1.0)
        if self._shelves:
            deadline = min(deadline, self._shelves[0][0])
        if self._held:
            deadline = min(deadline, min(self._held.values()))
        if deadline > now:
            self._wake.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
            # that lands as the event fires, and this loop then never stops.
            try:
                async with asyncio.timeout(deadline - now):
                    await self._wake.wait()
            except TimeoutError:
                pass
        now = time.time()
        due = self.core.next_deadline()
        if due <= now:
            fired = self.core.fire(now)
            if fired:
                if self.on_late is not None:
                    self.on_late(now - due)
                self.queue.put_transitions(fired)
        while self._shelves and self._shelves[0][0] <= now:
            _, alarm_id = heapq.heappop(self._shelves)
            self.queue.put(ExpireShelf(alarm_id))
        for key, until in list(self._held.items()):
            if until <= now:
                del self._held[key]
                self.queue.put(EndChattering(*key))
