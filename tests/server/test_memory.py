"""server/runtime/memory.py: freed heap pages go back to the OS."""

from __future__ import annotations

import platform

import psutil
import pytest

from server.runtime.memory import malloc_trim

glibc = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc, reason="malloc_trim is glibc's")
def test_malloc_trim_returns_freed_heap_pages():
    trim = malloc_trim()
    assert trim is not None
    me = psutil.Process()
    # 1 KiB objects come from malloc's heap (not pymalloc, not mmap); one in 64 is kept, so
    # the heap cannot shrink from its top and the freed pages sit in the middle.
    chunks = [bytes(1025) for _ in range(200_000)]
    keep = chunks[::64]  # held until after the trim
    del chunks
    before = me.memory_info().rss
    assert trim() == 1, "malloc_trim released nothing"
    after = me.memory_info().rss
    del keep
    assert after < before - 50 * 2**20, (before, after)
