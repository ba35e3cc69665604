"""The tile service: catalogue, layer versions, the tile cache and one query per tile.

Invalidation: a layer's version is read from the database (devices of a kind: count and
latest ``updated_at``; open alarms: count, latest update and id; wards and roads: count and
when the city was seeded; the kinds table: a digest of its rows), at most once per
``version_check_s`` and in the background, so no request waits for it. A cached tile is
served only while its layer's version is unchanged and it has not expired; the versions are
read from the database rather than counted in memory, so several server processes agree on
them. Tiles with live content (alarms, status counts) also expire after ``live_ttl_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Hashable
from typing import Any

import asyncpg

from tiles import catalogue, sql
from tiles.cache import Entry, TileCache
from tiles.catalogue import CONFIG_VERSION, Layer
from tiles.config import TilesSettings

logger = logging.getLogger(__name__)

WORLD = (-180.0, -85.0511287798066, 180.0, 85.0511287798066)
BASEMAP_TTL_S = 86_400.0

_KINDS = """
select k.kind, k.label_en, k.label_vi, p.points
from kinds k left join (
  select kind, bool_and(GeometryType(geom) in ('POINT', 'MULTIPOINT')) as points
  from devices group by kind
) p on p.kind = k.kind
order by k.kind"""

_VERSIONS = """
select 'kind:' || kind as k, count(*) as n, max(updated_at)::text as t from devices group by kind
union all
select 'alarms', count(*), max(updated_at)::text || '/' || coalesce(max(id), 0) from alarms
  where state in ('active_unacked', 'active_acked', 'rtn_unacked')
union all
select 'reports', count(*), max(updated_at)::text || '/' || coalesce(max(id), 0) from reports
union all
select 'wards', count(*), (select updated_at::text from ioc_meta where key = 'city') from wards
union all
select 'roads', count(*), (select updated_at::text from ioc_meta where key = 'city') from roads
union all
select 'kinds', count(*), md5(string_agg(kind || '|' || label_en || '|' || label_vi, ',' order by kind))
  from kinds"""

_EXTENT = {
    "kind": "select ST_Extent(geom) from devices where kind = $1",
    "wards": "select ST_Extent(geom) from wards",
    "roads": "select ST_Extent(geom) from roads",
    "ward_stats": "select ST_Extent(geom) from wards",
    "alarms": "select ST_Extent(geom) from devices",
    "reports": "select ST_Extent(geom) from wards",
}


def etag_of(data: bytes) -> str:
    # SHA-256 runs on the CPU's SHA extensions: twice as fast as BLAKE2b here (12 against
    # 21 µs for an average tile of 21 KiB, 108 against 199 µs for a dense one of 200 KiB).
    return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


class TileService:
    def __init__(self, pool: asyncpg.Pool, settings: TilesSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.layers: dict[str, Layer] = {}
        self.cache = TileCache(settings.cache_mb * 2**20)
        self.versions: dict[str, tuple] = {}
        self._checked = -math.inf
        self._check: asyncio.Task | None = None
        self._inflight: dict[Hashable, asyncio.Task] = {}
        self._extents: dict[str, tuple[Hashable, tuple[float, float, float, float]]] = {}
        self._check_failed = False
        self._folder: asyncio.Task | None = None

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            await self._read_versions(conn)
            await self._load_catalogue(conn)
        self._folder = asyncio.create_task(self._fold_grid(), name="tiles.grid.fold")

    async def _fold_grid(self) -> None:
        """Fold the grid's log into its counts now and then (see migration 0018_tile_grid):
        tiles read the log too, so this only keeps it short. One folder at a time across
        server processes (the function takes a try lock)."""
        failed = False
        while True:
            await asyncio.sleep(self.settings.grid_fold_s)
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute(sql.FOLD_GRID)
                if failed:
                    logger.info("tile grid folded again")
                    failed = False
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                if not failed:
                    logger.warning("cannot fold the tile grid's log: %s", err)
                    failed = True

    async def close(self) -> None:
        tasks = [t for t in (self._check, self._folder, *self._inflight.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.cache.clear()

    # ------------------------------------------------------------ catalogue and versions
    async def _load_catalogue(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(_KINDS)
        self.layers = catalogue.build((r["kind"], r["label_en"], r["label_vi"], r["points"]) for r in rows)

    async def _read_versions(self, conn: asyncpg.Connection) -> bool:
        """Read the versions; True when the kinds table (the catalogue) changed."""
        rows = await conn.fetch(_VERSIONS)
        versions = {r["k"]: (r["n"], r["t"]) for r in rows}
        catalogue_changed = versions.get("kinds") != self.versions.get("kinds")
        self.versions = versions
        self._checked = time.monotonic()
        return catalogue_changed

    async def _refresh(self) -> None:
        try:
            async with self.pool.acquire() as conn:
                if await self._read_versions(conn):
                    await self._load_catalogue(conn)
                    logger.info("tile layers reloaded: %s", ", ".join(sorted(self.layers)))
            if self._check_failed:
                logger.info("tile layer versions readable again")
                self._check_failed = False
        except (TimeoutError, OSError, asyncpg.PostgresError) as err:
            # Keep serving with the versions we have; try again after the interval.
            self._checked = time.monotonic()
            if not self._check_failed:
                logger.warning("cannot read tile layer versions: %s", err)
                self._check_failed = True

    def _maybe_refresh(self, now: float) -> None:
        if now - self._checked >= self.settings.version_check_s and (
            self._check is None or self._check.done()
        ):
            self._check = asyncio.create_task(self._refresh(), name="tiles.versions")

    def layer_version(self, layer: Layer, z: int) -> Hashable:
        v = self.versions
        if layer.source == "kind":
            own = v.get("kind:" + (layer.kind or ""))
            return (CONFIG_VERSION, own, v.get("alarms")) if layer.aggregated(z) else (CONFIG_VERSION, own)
        if layer.source in ("wards", "roads"):
            return (CONFIG_VERSION, v.get(layer.source))
        # alarms and ward_stats depend on alarms, wards and where every device is
        return (CONFIG_VERSION, tuple(sorted(v.items())))

    def max_age(self, layer: Layer, z: int) -> int:
        if layer.live_at(z):
            return math.ceil(self.settings.live_ttl_s)
        return self.settings.max_age_s

    def _ttl(self, layer: Layer, z: int) -> float:
        if layer.live_at(z):
            return self.settings.live_ttl_s
        if layer.source == "kind":
            return self.settings.detail_ttl_s
        return BASEMAP_TTL_S

    # ------------------------------------------------------------ tiles
    async def tile(self, layer: Layer, z: int, x: int, y: int, crew: str | None = None) -> Entry:
        """The encoded tile (possibly empty) from the cache or from one query; ``crew``: the
        tile a crew token sees, with its own crew's alarms only (None: every alarm)."""
        now = time.monotonic()
        self._maybe_refresh(now)
        version = self.layer_version(layer, z)
        if not layer.crew_scoped(z):
            crew = None
        key = (layer.id, z, x, y) if crew is None else (layer.id, z, x, y, crew)
        if self.cache.max_bytes:
            entry = self.cache.get(key, version, now)
            if entry is not None:
                return entry
        # Concurrent requests for one tile (several operators, a page reload) share one query;
        # the query runs in its own task so a client that goes away does not cancel it for the
        # others.
        task = self._inflight.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._render(layer, z, x, y, version, key, crew))
            self._inflight[key] = task
            task.add_done_callback(self._forget(key))
        return await asyncio.shield(task)

    def _forget(self, key: Hashable):
        def done(task: asyncio.Task) -> None:
            if self._inflight.get(key) is task:
                del self._inflight[key]
            if not task.cancelled():
                task.exception()  # the waiters see it; never "exception was never retrieved"

        return done

    async def _render(self, layer: Layer, z: int, x: int, y: int, version: Hashable,
                      key: Hashable, crew: str | None = None) -> Entry:
        t = sql.bounds(z, x, y)
        ttl = self._ttl(layer, z)
        async with self.pool.acquire() as conn:
            # A detail tile of a dense point kind that would list more devices than the bound
            # (a 1,000,000-lamp city at z14) holds grid cells with counts instead; its counts
            # are live, so it lives as long as the aggregate tiles do.
            statement, args, bounded = sql.tile_statement(layer, t, crew, self.settings.max_point_features)
            if bounded:
                dense, data = await conn.fetchrow(statement, *args)
                if dense:
                    ttl = self.settings.live_ttl_s
            else:
                data = await conn.fetchval(statement, *args)
        data = bytes(data or b"")
        entry = Entry(data, etag_of(data), version, time.monotonic() + ttl)
        if self.cache.max_bytes:
            self.cache.put(key, entry)
        return entry

    # ------------------------------------------------------------ metadata
    async def extent(self, layer: Layer) -> tuple[float, float, float, float]:
        """WGS 84 bounds of the layer's data (the world when it is empty)."""
        version = self.layer_version(layer, catalogue.MAXZOOM)
        hit = self._extents.get(layer.id)
        if hit and hit[0] == version:
            return hit[1]
        query = _EXTENT[layer.source]
        args: tuple[Any, ...] = (layer.kind,) if layer.source == "kind" else ()
        async with self.pool.acquire() as conn:
            box = await conn.fetchrow(
                "select ST_XMin(b) as w, ST_YMin(b) as s, ST_XMax(b) as e, ST_YMax(b) as n"
                f" from ({query}) as x(b)", *args)
        if box is None or box["w"] is None:
            bounds = WORLD
        else:
            bounds = (max(box["w"], WORLD[0]), max(box["s"], WORLD[1]),
                      min(box["e"], WORLD[2]), min(box["n"], WORLD[3]))
        self._extents[layer.id] = (version, bounds)
        return bounds
