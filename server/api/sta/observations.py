"""Observations: readings read through the history's one read path (raw and compressed
alike), then filtered, ordered and paged by the same compiled SQL as every other entity set,
run over the points passed in as arrays (``unnest($1…$5)``, model.OBSERVATIONS).

What to read is narrowed first: the path (``Datastreams('SL-1~power_w')/Observations``) and
the filter's top-level ``and`` terms (``phenomenonTime ge …``, ``Datastream/@iot.id eq …``)
give the devices, metrics and time range (which starts no earlier than the first stored day).
A range estimated to hold at most :data:`WHOLE` readings is read at once. Ordered by time
(the default, or ``$orderby=phenomenonTime [desc]``), larger ranges are read in windows from
the ordered end, each sized from the estimate to hold about what the page needs, so
``$top=1`` of years of readings reads one window. Any other order, or ``$count=true``, reads
the whole range at once: up to :data:`MAX_READ` readings, else a 400 asking for a narrower
range. No request reads more than :data:`MAX_SCAN` readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from server.api.sta.filter import Cmp, Lit, Logic, Node, Path
from server.api.sta.model import OBSERVATIONS, SEP, from_unix_us
from server.api.sta.sql import canonical
from server.errors import Invalid
from server.store import history
from server.store.compress import Points

MAX_READ = 200_000  # readings read by one query
MAX_SCAN = 2_000_000  # readings read by one request, over all its windows
WHOLE = 20_000  # a range estimated to hold no more is read at once, whatever the order
FIRST = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE = timedelta(days=1)  # the open end of a range: now plus this (devices' clocks run fast)
TICK = timedelta(microseconds=1)
POINT_PARAMS = 5  # $1…$5 of OBSERVATIONS.source


# ---------------------------------------------------------------- the one telemetry read
async def read_points(conn: asyncpg.Connection, frm: datetime, to: datetime,
                      device_keys: list[int] | None, metric_ids: list[int] | None, *,
                      estimate: bool = False) -> Points | int:
    """THE telemetry read of the SensorThings API: the readings in [frm, to) of those
    devices and metrics (None: all), raw and compressed alike, or (``estimate``) about how
    many there are. Everything here reads through this function."""
    if estimate:
        return await history.count_points(conn, frm, to, device_keys, metric_ids)
    return await history.read_points(conn, frm, to, device_keys, metric_ids)


# ---------------------------------------------------------------- what to read
@dataclass(slots=True)
class Scope:
    devices: set[str] | None = None
    metrics: set[str] | None = None
    frm: datetime = FIRST
    to: datetime | None = None
    empty: bool = False

    def only_devices(self, ids: set[str]) -> None:
        self.devices = ids if self.devices is None else self.devices & ids

    def only_metrics(self, names: set[str]) -> None:
        self.metrics = names if self.metrics is None else self.metrics & names

    def only_datastreams(self, ids: set[str]) -> None:
        pairs = [i.rsplit(SEP, 1) for i in ids if SEP in i]
        if len(pairs) < len(ids) and not pairs:
            self.empty = True
        self.only_devices({p[0] for p in pairs})
        self.only_metrics({p[1] for p in pairs})

    def only_observation(self, oid: str) -> None:
        parts = oid.rsplit(SEP, 2)
        if len(parts) != 3 or not parts[2].isdigit() or len(parts[2]) > 18:
            self.empty = True
            return
        try:
            at = from_unix_us(int(parts[2]))
            end = at + TICK
        except OverflowError:  # after 9999: no such reading
            self.empty = True
            return
        self.only_devices({parts[0]})
        self.only_metrics({parts[1]})
        self.frm, self.to = max(self.frm, at), min(self.to or end, end)


def linked(link: str, values: list[str]) -> Scope:
    """The scope of a navigation into Observations (model: Datastreams' or a feature's)."""
    scope = Scope()
    if link == "d.id":
        scope.only_devices(set(values))
    else:
        scope.only_datastreams(set(values))
    return scope


_FLIP = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge", "eq": "eq", "ne": "ne"}


def narrow(scope: Scope, node: Node | None) -> Scope:
    """Narrow ``scope`` by the filter's top-level ``and`` terms that pin a time, a
    datastream, a device or a metric (the compiled filter still applies to what is read)."""
    if node is None:
        return scope
    terms = node.items if isinstance(node, Logic) and node.op == "and" else (node,)
    for term in terms:
        if not isinstance(term, Cmp):
            continue
        op, path, lit = term.op, term.left, term.right
        if isinstance(path, Lit) and isinstance(lit, Path):
            op, path, lit = _FLIP[op], lit, path
        if not (isinstance(path, Path) and isinstance(lit, Lit)):
            continue
        name = canonical(path.parts)
        if name in ("phenomenonTime", "resultTime") and lit.type == "time":
            t: datetime = lit.value
            after = t + TICK if t < datetime.max.replace(tzinfo=UTC) - TICK else t
            if op in ("gt", "ge", "eq"):
                scope.frm = max(scope.frm, after if op == "gt" else t)
            if op in ("lt", "le", "eq"):
                end = t if op == "lt" else after
                scope.to = end if scope.to is None else min(scope.to, end)
        elif op == "eq" and lit.type == "text":
            if name in ("Datastream/@iot.id",):
                scope.only_datastreams({lit.value})
            elif name in ("Datastream/Thing/@iot.id", "Datastream/Thing/name",
                          "FeatureOfInterest/@iot.id", "FeatureOfInterest/name"):
                scope.only_devices({lit.value})
            elif name in ("Datastream/ObservedProperty/@iot.id", "Datastream/ObservedProperty/name"):
                scope.only_metrics({lit.value})
            elif name == "@iot.id":
                scope.only_observation(lit.value)
    return scope


async def _keys(conn: asyncpg.Connection, scope: Scope) -> tuple[list[int] | None, list[int] | None]:
    keys = mids = None
    if scope.devices is not None:
        keys = [r[0] for r in await conn.fetch(
            "select key from devices where id = any($1::text[]) order by key", list(scope.devices))]
    if scope.metrics is not None:
        mids = [r[0] for r in await conn.fetch(
            "select id from metrics where name = any($1::text[]) order by id", list(scope.metrics))]
    return keys, mids


# ---------------------------------------------------------------- reading a page
@dataclass(slots=True)
class Page:
    rows: list[Any]
    total: int | None
    more: bool


def _too_much(n: int, limit: int) -> Invalid:
    return Invalid(
        f"this request would read about {n:,} observations (at most {limit:,} are read at once); "
        "narrow it with a time range, e.g. $filter=phenomenonTime ge 2026-12-01T00:00:00Z and "
        "phenomenonTime lt 2026-12-02T00:00:00Z, or a Datastream, or order by phenomenonTime "
        "without $count", field="$filter")


def _args(points: Points, params: list[Any]) -> list[Any]:
    return [points.device.tolist(), points.metric.tolist(), points.ts.tolist(),
            points.value.tolist(), points.quality.tolist(), *params[POINT_PARAMS:]]


async def _run(conn: asyncpg.Connection, points: Points, where: str, params: list[Any],
               order: str, offset: int, limit: int) -> list[Any]:
    args = _args(points, params)
    n = len(args)
    return await conn.fetch(
        f"select {OBSERVATIONS.columns} from {OBSERVATIONS.source} where {where} "
        f"order by {order} offset ${n + 1}::bigint limit ${n + 2}::bigint", *args, offset, limit)


async def _count(conn: asyncpg.Connection, points: Points, where: str, params: list[Any]) -> int:
    return await conn.fetchval(f"select count(*) from {OBSERVATIONS.source} where {where}",
                               *_args(points, params))


async def _earliest(conn: asyncpg.Connection) -> datetime:
    """A time before every stored reading: the first day of the segments or of the row
    store's partitions (from the catalogue: no scan)."""
    days = [await conn.fetchval("select min(day) from telemetry_segments")]
    first = await conn.fetchval(
        """select min(substr(c.relname, 12)) from pg_inherits i join pg_class c on c.oid = i.inhrelid
           where i.inhparent = 'telemetry'::regclass and c.relname ~ '^telemetry_p[0-9]{8}$'""")
    if first:
        days.append(datetime.strptime(first, "%Y%m%d").date())
    days = [d for d in days if d is not None]
    if not days:
        return datetime.now(UTC)
    d = min(days)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


async def page(conn: asyncpg.Connection, scope: Scope, where: str, params: list[Any],
               order: str, time_desc: bool | None, skip: int, top: int, count: bool) -> Page:
    """One page of observations: ``where``/``order`` compiled with ``params`` (whose first
    :data:`POINT_PARAMS` are placeholders for the points). ``time_desc`` says the order starts
    with the time (True: newest first), None that it does not."""
    keys, mids = await _keys(conn, scope)
    to = scope.to or datetime.now(UTC) + FUTURE
    if scope.empty or keys == [] or mids == [] or to <= scope.frm:
        return Page([], 0 if count else None, False)
    frm = max(scope.frm, await _earliest(conn))
    if to <= frm:
        return Page([], 0 if count else None, False)
    total_estimate = (await read_points(conn, frm, to, keys, mids, estimate=True)
                      if keys is not None else None)
    if time_desc is None or count or (total_estimate is not None and total_estimate <= WHOLE):
        # the whole range at once: any order, an exact count
        n = total_estimate if total_estimate is not None else await read_points(
            conn, frm, to, keys, mids, estimate=True)
        if n > MAX_READ:
            raise _too_much(n, MAX_READ)
        points = await read_points(conn, frm, to, keys, mids)
        rows = await _run(conn, points, where, params, order, skip, top + 1)
        total = await _count(conn, points, where, params) if count else None
        return Page(rows[:top], total, len(rows) > top)
    return await _windowed(conn, frm, to, keys, mids, where, params, order, time_desc, skip, top,
                           total_estimate)


async def _windowed(conn, frm: datetime, to: datetime, keys, mids, where: str, params: list[Any],
                    order: str, desc: bool, skip: int, top: int, estimate: int | None) -> Page:
    """Time-ordered pages read window by window from the ordered end: each window is sized
    to hold about what the page needs (from the estimate of the whole range, else an hour),
    grows while windows come back short and shrinks while one would hold too many."""
    want = max(2_000, 4 * (skip + top + 1))
    span = to - frm
    width = span * (want / estimate) if estimate else timedelta(hours=1)
    width = min(max(width, timedelta(seconds=1)), span)
    got: list[Any] = []
    left = skip  # matches still to skip
    scanned = 0
    edge = to if desc else frm  # how far the windows have come
    while (edge > frm) if desc else (edge < to):
        while True:
            lo, hi = ((edge - min(width, edge - frm), edge) if desc
                      else (edge, edge + min(width, to - edge)))
            n = await read_points(conn, lo, hi, keys, mids, estimate=True)
            if n <= MAX_READ or width <= timedelta(seconds=1):
                break
            width /= 4
        if n > MAX_READ:
            raise _too_much(n, MAX_READ)
        points = await read_points(conn, lo, hi, keys, mids)
        scanned += len(points)
        if scanned > MAX_SCAN:
            raise _too_much(scanned, MAX_SCAN)
        if len(points):
            matched = await _count(conn, points, where, params) if left else None
            if matched is not None and matched <= left:
                left -= matched
            else:
                got += await _run(conn, points, where, params, order, left, top + 1 - len(got))
                left = 0
                if len(got) > top:
                    break
        edge = lo if desc else hi
        if len(points) < want:
            width = min(width * 4, span)
    return Page(got[:top], None, len(got) > top)


def observation_scope(oid: str) -> Scope:
    scope = Scope()
    scope.only_observation(oid)
    return scope
