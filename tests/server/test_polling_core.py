"""The time-keeping both pollers share (server/polling/core.py), on its own.

The pollers' own tests (test_modbus_poller.py, adapters/test_polling_supervisor.py) show it
at work against a simulated gateway and a fake adapter; these pin its rules down.
"""

from __future__ import annotations

import asyncio
import logging
import random

import numpy as np

from server.polling.core import (
    Availability,
    Delivery,
    Grid,
    Labelled,
    Streak,
    backoff,
    describe,
    wait_until,
)


def test_grid_counts_the_slots_a_slow_poll_skipped():
    grid = Grid(interval=1.0)
    grid.start(10.0)
    assert grid.next_slot(10.2) == 0 and grid.deadline == 11.0  # on time
    assert grid.next_slot(13.5) == 2 and grid.deadline == 14.0  # slots 12 and 13 overrun
    grid.retry_at(20.3)
    assert grid.next_slot(20.4) == 0 and grid.deadline == 21.0  # a retry is no overrun
    grid.forgive(25.0)  # the link was down: those slots were not the poller's to keep
    assert grid.next_slot(25.1) == 0 and grid.deadline == 26.0


def test_backoff_doubles_up_to_the_cap_with_jitter():
    rng = random.Random(1)
    for attempt, full in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 60.0), (500, 60.0)]:
        delays = [backoff(rng, 1.0, attempt, 60.0) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full
        assert max(delays) - min(delays) > full / 4  # jittered, not fixed


def test_availability_changes_state_once_each_way():
    up = Availability(offline_after=2.0)
    up.last_success = 0.0
    assert not up.expired(1.9) and up.expired(2.0)
    assert up.lost() is True and up.lost() is False  # one change, then none
    assert not up.expired(100.0) and up.expires_at == float("inf")
    assert up.succeeded(5.0) is False  # it was offline: announce it is back
    assert up.succeeded(6.0) is True and up.expires_at == 8.0


def test_a_streak_is_logged_at_its_start_and_end_and_a_bug_once():
    s = Streak()
    assert s.fail("timeout") is True and s.fail("timeout") is False
    assert s.first_bug() is True and s.first_bug() is False
    assert s.last_error == "timeout" and s.failures == 2
    assert s.succeed() is True and s.succeed() is False
    assert s.first_bug() is True  # a new streak may log its bug again


def test_errors_read_as_plain_text():
    assert describe(ValueError(f"reading {np.float64(105.85)} out of range")) == \
        "reading 105.85 out of range"
    assert describe(TimeoutError()) == "no answer in time"
    assert describe(ConnectionResetError()) == "ConnectionResetError"


async def test_wait_until_expires_what_runs_out_on_the_way():
    loop = asyncio.get_running_loop()
    now = loop.time()
    soon, later = Availability(0.05, online=True), Availability(10.0, online=True)
    soon.last_success = later.last_success = now
    expired: list[tuple[float, list[Availability]]] = []

    async def expire(gone: list[Availability]) -> None:
        for a in gone:
            a.lost()
        expired.append((loop.time(), gone))

    await wait_until(now + 0.15, lambda: [a for a in (soon, later) if a.watched], expire)
    assert loop.time() >= now + 0.15
    assert len(expired) == 1 and expired[0][1] == [soon]
    assert now + 0.05 <= expired[0][0] < now + 0.15
    assert later.online is True


async def test_a_failing_sink_is_logged_once_and_its_recovery_once(caplog):
    caplog.set_level(logging.INFO, logger="test.polling")
    failing = True
    stored: list[list[int]] = []

    async def sink(batch):
        if failing:
            raise ConnectionRefusedError("database down")
        stored.append(list(batch))

    deliver = Delivery(sink, Labelled(logging.getLogger("test.polling"), "modbus[gw-a]", gateway="gw-a"))
    for i in range(3):
        await deliver([i])
    failing = False
    await deliver([3])
    await deliver([])  # nothing to store: the sink is not called
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["modbus[gw-a]: storing 1 items failed (database down); dropping items until "
                     "it works again", "modbus[gw-a]: storing works again"]
    assert not caplog.records[0].exc_info  # an I/O failure: no traceback
    assert caplog.records[0].gateway == "gw-a"
    assert stored == [[3]]


async def test_a_sink_bug_keeps_its_traceback(caplog):
    async def sink(batch):
        raise KeyError("device")

    await Delivery(sink, Labelled(logging.getLogger("test.polling"), "adapter[acme]"))([1])
    [record] = caplog.records
    assert record.exc_info and record.exc_info[0] is KeyError
    assert record.getMessage() == ("adapter[acme]: storing 1 items failed ('device'); dropping "
                                   "items until it works again")
