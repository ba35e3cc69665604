"""Dead letters: what the ingest refused, kept to be looked at, within bounds.

Anyone who can publish (a broken device, a misconfigured gateway, a stranger on an open
broker) can send garbage; what it costs the database is bounded:

- a dead letter keeps at most ``[ingest] dead_letter_max_kib`` KiB of the raw payload
  (``payload_size`` says how long it was), and only the first dead letter of an input keeps
  it: a message with 1,000 bad readings stores its payload once, not 1,000 times;
- dead letters older than ``[ingest] dead_letter_retention_days`` are deleted by the
  maintenance job, in bounded rounds.

Who sends garbage shows in /metrics: ``ioc_dead_letters_total{source, reason}``,
``ioc_dead_letter_bytes_total{source}`` (raw bytes received in refused inputs) and
``ioc_dead_letters_by_device_total{device}`` (a registered device's id; ``unregistered``
for ids not in the registry, which strangers choose freely, and ``other`` past
:data:`MAX_DEVICE_LABELS` devices, so the series stay bounded).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from server.ingest.directory import Directory
from server.runtime.metrics import Registry

MAX_DEVICE_LABELS = 1000
EXPIRE_ROUND = 50_000  # rows one delete removes: no transaction of millions


class DeadLetterCounter:
    """Counts dead letters by device with a bounded set of label values."""

    def __init__(self, metrics: Registry, directory: Directory) -> None:
        self.metrics = metrics
        self.directory = directory  # registered devices (its dict is replaced on reloads)
        self.labels: dict[str, object] = {}

    def count(self, device_id: str | None, source: str, raw: bytes | None, first: bool) -> None:
        if first and raw:
            self.metrics.dead_letter_bytes.labels(source).inc(len(raw))
        label = device_id if device_id is not None and device_id in self.directory.devices else (
            "unregistered" if device_id else "none")
        child = self.labels.get(label)
        if child is None:
            if len(self.labels) >= MAX_DEVICE_LABELS:
                label = "other"
                child = self.labels.get(label)
            if child is None:
                child = self.labels[label] = self.metrics.dead_letters_by_device.labels(label)
        child.inc()


def kept(raw: bytes | None, max_bytes: int) -> bytes | None:
    return raw if raw is None or len(raw) <= max_bytes else raw[:max_bytes]


async def expire(conn: asyncpg.Connection, now: datetime, days: int) -> int:
    """Delete dead letters received more than ``days`` days before ``now``; how many."""
    cutoff = now - timedelta(days=days)
    total = 0
    while True:
        n = int((await conn.execute(
            "delete from dead_letters where id in (select id from dead_letters "
            "where received_at < $1 order by received_at limit $2)", cutoff, EXPIRE_ROUND)
        ).split()[-1])
        total += n
        if n < EXPIRE_ROUND:
            return total
