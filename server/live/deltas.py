"""State updates as the hub routes them: one :class:`Delta` per device, conflated per
metric when a client is behind (the newer timestamp wins).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. 2026-11-22T10:00:00.123Z."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------- one device's update
class Delta:
    """One device's change as a state message; its JSON is built once, however many
    clients it goes to. Never mutated once routed: merging makes a new one."""

    __slots__ = ("_frame", "device", "key", "status", "status_ms", "times", "ts_ms", "values")

    def __init__(self, key: int, device: str, ts_ms: int, status: str, status_ms: int,
                 values: dict[str, Any], times: dict[str, int]) -> None:
        self.key = key
        self.device = device
        self.ts_ms = ts_ms
        self.status = status
        self.status_ms = status_ms
        self.values = values
        self.times = times
        self._frame: bytes | None = None

    def frame(self) -> bytes:
        f = self._frame
        if f is None:
            f = self._frame = orjson.dumps({
                "type": "state", "device": self.device, "ts": iso_ms(self.ts_ms),
                "status": self.status, "values": self.values,
            })
        return f

    def merged(self, newer: Delta) -> Delta:
        """Both updates as one: per metric and for the status, the later timestamp wins
        (a late, out-of-order reading does not overwrite a newer one)."""
        values, times = dict(self.values), dict(self.times)
        for m, ms in newer.times.items():
            if ms >= times.get(m, -1):
                times[m] = ms
                values[m] = newer.values[m]
        if newer.status_ms >= self.status_ms:
            status, status_ms = newer.status, newer.status_ms
        else:
            status, status_ms = self.status, self.status_ms
        return Delta(self.key, self.device, max(self.ts_ms, newer.ts_ms), status, status_ms,
                     values, times)

    def as_wire(self) -> list[Any]:
        """The compact form in relay envelopes."""
        return [self.device, self.ts_ms, self.status, self.status_ms,
                {m: [self.times[m], v] for m, v in self.values.items()}]


def conflate(chunks: list[tuple[list[Delta], np.ndarray | None]]) -> tuple[list[Delta], int]:
    """Pending batches of deltas as one list, one delta per device; and how many merged."""
    if len(chunks) == 1:
        deltas, idx = chunks[0]
        return (deltas if idx is None else [deltas[i] for i in idx.tolist()]), 0
    out: dict[int, Delta] = {}
    merged = 0
    for deltas, idx in chunks:
        for d in (deltas if idx is None else [deltas[i] for i in idx.tolist()]):
            prev = out.get(d.key)
            if prev is None:
                out[d.key] = d
            else:
                out[d.key] = prev.merged(d)
                merged += 1
    return list(out.values()), merged


# ---------------------------------------------------------------- spatial index
