"""In-memory directory of devices, kinds and metrics for validating readings.

Validation runs for every reading, so it must not touch the database: this keeps
id → (key, kind), external id → id, and the metric catalogue in dictionaries. Misses
are looked up in one query per batch (a device created a moment ago, perhaps by another
server process) with a short negative cache. The devices API updates it directly; changes
made by other processes arrive through :meth:`Directory.refresh_if_changed`, which the
housekeeping job calls and which reloads only when the devices table has changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

NEGATIVE_TTL_S = 10.0
# Changes to the devices table by anyone: a row added or deleted, or one edited.
SIGNATURE_SQL = "select count(*), coalesce(max(key), 0), max(updated_at) from devices"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    key: int
    id: str
    kind: str
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class MetricInfo:
    id: int
    name: str
    is_bool: bool


class Directory:
    def __init__(self) -> None:
        self.devices: dict[str, DeviceInfo] = {}
        self.by_external: dict[str, str] = {}
        self.by_key: dict[int, DeviceInfo] = {}
        self.metrics: dict[str, MetricInfo] = {}
        self.metric_names: dict[int, str] = {}
        self.bool_metric_ids: frozenset[int] = frozenset()
        self._kind_metric_info: dict[str, dict[str, MetricInfo]] = {}
        self.kind_metrics: dict[str, frozenset[str] | None] = {}
        self._missing: dict[str, float] = {}
        self._signature: tuple | None = None
        # Bumped on every change, so readers with derived state (the hub's spatial index) know
        # when to rebuild it.
        self.version = 0

    async def refresh_if_changed(self, conn: asyncpg.Connection) -> bool:
        """Reload when devices were added, deleted or edited (by any process)."""
        if tuple(await conn.fetchrow(SIGNATURE_SQL)) == self._signature:
            return False
        await self.load(conn)
        return True

    async def load(self, conn: asyncpg.Connection) -> None:
        for _ in range(5):
            seen = self.version
            signature = tuple(await conn.fetchrow(SIGNATURE_SQL))
            metrics = await conn.fetch("select id, name, value_type from metrics")
            kinds = await conn.fetch("select kind, metrics from kinds")
            rows = await conn.fetch("select key, id, kind, external_id from devices")
            # This process changed a device (add/remove) while we were reading: what we
            # read may predate it, and installing it would undo the change. Read again.
            if self.version == seen:
                break
        self.metrics = {r["name"]: MetricInfo(r["id"], r["name"], r["value_type"] == "bool")
                        for r in metrics}
        self.metric_names = {m.id: m.name for m in self.metrics.values()}
        self.bool_metric_ids = frozenset(m.id for m in self.metrics.values() if m.is_bool)
        self._kind_metric_info = {}
        self.kind_metrics = {
            r["kind"]: frozenset(r["metrics"]) if r["metrics"] is not None else None for r in kinds
        }
        devices, ext = {}, {}
        for r in rows:
            devices[r["id"]] = DeviceInfo(r["key"], r["id"], r["kind"], r["external_id"])
            if r["external_id"]:
                ext[r["external_id"].lower()] = r["id"]
        self.devices, self.by_external = devices, ext
        self.by_key = {d.key: d for d in devices.values()}
        self._missing.clear()
        self._signature = signature
        self.version += 1

    def get(self, device_id: str) -> DeviceInfo | None:
        return self.devices.get(device_id)

    def metrics_for(self, kind: str) -> dict[str, MetricInfo]:
        """The metrics a device of ``kind`` may report, by name (every known metric when the
        kind does not declare its own). Built once per kind and catalogue load."""
        got = self._kind_metric_info.get(kind)
        if got is None:
            allowed = self.kind_metrics.get(kind)
            got = self.metrics if allowed is None else {
                n: m for n, m in self.metrics.items() if n in allowed}
            self._kind_metric_info[kind] = got
        return got

    def resolve_external(self, external_id: str) -> str | None:
        return self.by_external.get(external_id.lower())

    async def fill_misses(
        self, conn: asyncpg.Connection, ids: Iterable[str] = (), external: Iterable[str] = ()
    ) -> None:
        """Look up ids (or external ids) not in the directory, at most once per TTL each."""
        now = time.monotonic()
        want = [i for i in set(ids) if i not in self.devices and self._missing.get(i, 0) < now]
        want_ext = [e.lower() for e in set(external)
                    if e.lower() not in self.by_external and self._missing.get("ext:" + e.lower(), 0) < now]
        if not want and not want_ext:
            return
        rows = await conn.fetch(
            "select key, id, kind, external_id from devices "
            "where id = any($1::text[]) or lower(external_id) = any($2::text[])",
            want, want_ext,
        )
        for r in rows:
            self.add(r["key"], r["id"], r["kind"], r["external_id"])
        for i in want:
            if i not in self.devices:
                self._missing[i] = now + NEGATIVE_TTL_S
        for e in want_ext:
            if e not in self.by_external:
                self._missing["ext:" + e] = now + NEGATIVE_TTL_S
        if len(self._missing) > 100_000:
            self._missing.clear()

    def add(self, key: int, device_id: str, kind: str, external_id: str | None) -> None:
        self.remove(device_id)  # its kind or external id may have changed
        info = DeviceInfo(key, device_id, kind, external_id)
        self.devices[device_id] = info
        self.by_key[key] = info
        if external_id:
            self.by_external[external_id.lower()] = device_id
        self._missing.pop(device_id, None)
        self.version += 1

    def remove(self, device_id: str) -> None:
        info = self.devices.pop(device_id, None)
        if info:
            self.by_key.pop(info.key, None)
            self.version += 1
            if info.external_id:
                self.by_external.pop(info.external_id.lower(), None)

    async def sync(self, conn: asyncpg.Connection, ids: Iterable[str]) -> None:
        """Bring these devices up to date after this process changed them."""
        ids = list(ids)
        rows = await conn.fetch(
            "select key, id, kind, external_id from devices where id = any($1::text[])", ids)
        for device_id in ids:
            self.remove(device_id)
        for r in rows:
            self.add(r["key"], r["id"], r["kind"], r["external_id"])
