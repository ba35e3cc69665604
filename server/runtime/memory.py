"""Hand freed heap memory back to the OS, so a long-running server's RSS stays flat.

A soak (``bench/soak.py``: 3,000 msg/s for 30 minutes) showed the Python heap flat (68.7 MiB
traced by tracemalloc from minute 3 to minute 9) while RSS crept up by 24 MiB an hour. The
difference is glibc's malloc: the buffers that churn through ingest (MQTT payloads, COPY
data, JSON documents) are larger than pymalloc's 512-byte objects, and the pages glibc keeps
after freeing them stay resident. ``malloc_trim(0)`` releases the free pages of every arena
(MADV_DONTNEED), which glibc only does on its own at the top of the main heap.

Off where the C library is not glibc (musl, macOS): there ``malloc_trim`` does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

logger = logging.getLogger(__name__)

TRIM_EVERY_S = 60.0


def malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``, or None where there is no such function."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int

    def trim() -> int:
        return fn(0)

    return trim


async def _trim_loop(trim: Callable[[], int], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        trim()  # a few milliseconds; it holds malloc's lock, not the event loop for long


async def memory_ctx(app: web.Application) -> AsyncIterator[None]:
    trim = malloc_trim()
    if trim is None:
        logger.debug("no malloc_trim in this C library: freed heap pages stay with the process")
        yield
        return
    task = asyncio.create_task(_trim_loop(trim, TRIM_EVERY_S), name="memory.trim")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
