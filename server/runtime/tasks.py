"""Stopping the tasks a component owns, reliably."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Sequence[asyncio.Task], *, again_after_s: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until every one has finished, cancelling again any that is
    still running after ``again_after_s``.

    Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives as its awaitable
    completes (fixed in 3.12), and pymodbus awaits every reply through it: one in some
    hundred stops of a poller at 200 polls/s left a gateway task polling on and the server's
    shutdown waiting forever (bench/modbus.py found it).
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after_s)
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            logger.error("task %s ended with %r", t.get_name(), t.exception())
