"""Lighting schedules: dimming profiles assigned to wards, cabinets or groups of lamps, sent
as commands when each step starts, and checked by the ``lighting_schedule`` rule.

    rules/schedules.py  (pure) the profile document, step times at each lamp, exceptions
    runner              the scheduler: who follows what, each step commanded exactly once
    energy              what the lamps used beside all night at 100 %
    clock               the scheduler's time (a test sets it by hand)

The API is server/api/schedules.py (``/api/v1/schedules``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from server import keys
from server.schedules.runner import Scheduler

__all__ = ["Scheduler", "schedules_ctx"]


async def schedules_ctx(app: web.Application) -> AsyncIterator[None]:
    """The scheduler, after the command service it sends through and the alarm engine whose
    lighting rule it tells which lamps follow which schedule."""
    scheduler = Scheduler(app[keys.DB], app[keys.SETTINGS].schedules, app[keys.COMMANDS],
                          alarms=app.get(keys.ALARMS), clock=app.get(keys.SCHEDULE_CLOCK))
    app[keys.SCHEDULES] = scheduler
    await scheduler.start()
    try:
        yield
    finally:
        await scheduler.stop()
