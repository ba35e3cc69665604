"""Which devices a viewport sees: every device's position and kind in numpy arrays indexed by
device key, so one batch is routed to all clients with a few array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import numpy as np


class SpatialIndex:
    """Every device's bounding box (WGS 84) and kind code, in arrays indexed by device key.

    Device keys are a dense identity column, so an array lookup is the map from key to
    position; a key with no device has NaN bounds (NaN compares false: never routed).
    """

    def __init__(self) -> None:
        self.minx = self.miny = self.maxx = self.maxy = np.full(0, np.nan)
        self.kind = np.full(0, -1, np.int16)
        self.kinds: dict[str, int] = {}
        self.version = -1

    @property
    def size(self) -> int:
        return len(self.kind)

    def kind_code(self, kind: str) -> int:
        return self.kinds.get(kind, -1)

    async def load(self, conn: asyncpg.Connection, version: int) -> None:
        kinds = [r["kind"] for r in await conn.fetch("select kind from kinds order by kind")]
        codes = {k: i for i, k in enumerate(kinds)}
        top = await conn.fetchval("select coalesce(max(key), 0) from devices")
        size = top + 1
        minx, miny = np.full(size, np.nan), np.full(size, np.nan)
        maxx, maxy = np.full(size, np.nan), np.full(size, np.nan)
        kind = np.full(size, -1, np.int16)
        # A server-side cursor in chunks: a million devices never sit in memory as Records.
        async with conn.transaction():
            cur = await conn.cursor(
                "select key, kind, ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) "
                "from (select key, kind, geom::box2d as b from devices) t")
            while rows := await cur.fetch(50_000):
                k = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                k_ok = k < size  # a device added since max(key) was read: next refresh
                box = np.array([(r[2], r[3], r[4], r[5]) for r in rows], np.float64)[k_ok]
                k = k[k_ok]
                minx[k], miny[k], maxx[k], maxy[k] = box[:, 0], box[:, 1], box[:, 2], box[:, 3]
                kc = [codes.setdefault(r[1], len(codes)) for r in rows]
                kind[k] = np.asarray(kc, np.int16)[k_ok]
        self.minx, self.miny, self.maxx, self.maxy, self.kind = minx, miny, maxx, maxy, kind
        self.kinds = codes
        self.version = version


# ---------------------------------------------------------------- clients
@dataclass(frozen=True, slots=True)
class Viewport:
    bbox: tuple[float, float, float, float] | None  # None: no devices (alarms only)
    kinds: tuple[str, ...]
