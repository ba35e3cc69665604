"""The alarm write queue: what the engine, the timers and rule reloads hand the persister.

Items are small frozen dataclasses: a transition of the rule engine to store, an alarm to
close (its rule went away), a timed shelving that ran out, a chattering alarm quiet for a
whole window. The persister removes an item only once it is stored, so an empty queue
means everything is.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from rules.evaluator import Transition


@dataclass(frozen=True, slots=True)
class StoreTransition:
    """A transition of the rule engine (raise, update, clear, suppress, release)."""

    transition: Transition


@dataclass(frozen=True, slots=True)
class CloseAlarm:
    """An alarm whose rule went away (removed, disabled, no longer selecting it)."""

    alarm_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ExpireShelf:
    alarm_id: int


@dataclass(frozen=True, slots=True)
class EndChattering:
    """A chattering alarm held active, quiet for a whole window: store its clear."""

    rule: str
    device: str


Item = StoreTransition | CloseAlarm | ExpireShelf | EndChattering


class WriteQueue:
    """Items waiting for the persister, oldest first."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._queued = asyncio.Event()
        self._emptied = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> None:
        self._items.append(item)
        self._queued.set()

    def put_transitions(self, transitions: Iterable[Transition]) -> None:
        n = len(self._items)
        self._items.extend(StoreTransition(t) for t in transitions)
        if len(self._items) > n:
            self._queued.set()

    async def head(self) -> Item:
        """The oldest item, left in the queue; waits for one."""
        while not self._items:
            self._emptied.set()
            self._queued.clear()
            await self._queued.wait()
        return self._items[0]

    def done(self) -> None:
        self._items.popleft()

    async def drained(self) -> None:
        while self._items:
            self._emptied.clear()
            await self._emptied.wait()
