"""The alarm write queue's typed items: what the persister matches on, in order."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from rules.evaluator import Transition
from server.alarms.queue import CloseAlarm, EndChattering, ExpireShelf, StoreTransition, WriteQueue


def test_items_are_frozen_values_the_persister_can_match():
    close = CloseAlarm(7, "rule r was removed or disabled")
    assert close == CloseAlarm(7, "rule r was removed or disabled") and close != ExpireShelf(7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        close.alarm_id = 8  # type: ignore[misc]
    seen = []
    for item in (close, ExpireShelf(3), EndChattering("r", "PS-1")):
        match item:
            case CloseAlarm(alarm_id, reason):
                seen.append(("close", alarm_id, reason))
            case ExpireShelf(alarm_id):
                seen.append(("unshelve", alarm_id))
            case EndChattering(rule, device):
                seen.append(("quiet", rule, device))
    assert seen == [("close", 7, "rule r was removed or disabled"), ("unshelve", 3),
                    ("quiet", "r", "PS-1")]


async def test_the_queue_keeps_order_and_drains_only_when_each_item_is_done():
    queue = WriteQueue()
    t = Transition("r", 101, "raise", 1, 0.0)
    queue.put(ExpireShelf(1))
    queue.put_transitions([t])
    queue.put_transitions([])
    assert len(queue) == 2
    drained = asyncio.create_task(queue.drained())
    assert await queue.head() == ExpireShelf(1)
    assert await queue.head() == ExpireShelf(1)  # left in the queue until done
    queue.done()
    assert await queue.head() == StoreTransition(t)
    await asyncio.sleep(0)
    assert not drained.done()
    queue.done()
    waiting = asyncio.create_task(queue.head())  # empty: sets "emptied", then waits
    await asyncio.wait_for(drained, 5)
    assert not waiting.done()
    queue.put(CloseAlarm(2, "gone"))
    assert await asyncio.wait_for(waiting, 5) == CloseAlarm(2, "gone")
