"""An in-memory LRU of encoded tiles, bounded in bytes, with a version and an expiry per entry."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

# Bookkeeping per entry beyond the tile bytes (key tuple, entry object, dict slot): counted so
# that a cache of many empty tiles stays within its budget too.
ENTRY_OVERHEAD = 200


@dataclass(slots=True)
class Entry:
    data: bytes
    etag: str
    version: Hashable
    expires: float  # monotonic time


class TileCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, version: Hashable, now: float) -> Entry | None:
        """The entry if it is of ``version`` and not expired; a stale entry is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry.version != version or entry.expires <= now:
            self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: Hashable, entry: Entry) -> None:
        cost = len(entry.data) + ENTRY_OVERHEAD
        if cost > self.max_bytes // 8:
            return  # one huge tile must not flush the whole cache
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.size += cost
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self.size -= len(entry.data) + ENTRY_OVERHEAD
