"""Device history through one read path, whatever tier holds the points.

:func:`read_points` is the only way points are read back: it merges the row store
(``telemetry``) with the compressed segments of closed days (``telemetry_segments``,
server/store/compress.py) inside one snapshot, a timestamp held by both keeping the
segment's value (the row store keeps a (device, metric, ts)'s first write too). The
history API, rule backtests, the rollups and :func:`latest_at` all read through it, so
their answers do not depend on whether a day has been compressed yet.

Buckets of an hour or more are answered from the rollups where they are complete (whole
days from ``telemetry_daily`` when the bucket is whole days, whole hours from
``telemetry_hourly``) and from points for the rest (the part before the first whole hour,
hours not rolled up yet, hours that received late readings since). Every source gives
partial aggregates (n, sum, min, max, last) merged per bucket, so a bucket that straddles
sources is still exact. :func:`rollup` writes the rollups and folds late readings in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta

import asyncpg
import numpy as np

from server.errors import Invalid
from server.store.compress import (
    US,
    Points,
    copy_points,
    decode_segments,
    from_us,
    group_starts,
    latest_upto,
    merge,
    to_us,
)

logger = logging.getLogger(__name__)

AGGS = ("avg", "min", "max", "sum", "count", "last")
DURATION_RE = re.compile(r"^(\d+)(s|m|h|d)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_RAW = 100_000
MAX_BUCKETS = 100_000
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # buckets align to UTC midnight

def parse_time(raw: str | None, name: str) -> datetime | None:
    if raw is None or raw == "":
        return None
    text = raw.replace("Z", "+00:00")
    if "T" in text and text.count(" ") == 1:
        text = text.replace(" ", "+")  # an unescaped '+' offset arrives as a space in a query
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return datetime.fromtimestamp(float(text) / 1000, UTC)
        ts = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise Invalid(f"{name} must be an RFC 3339 time (2026-11-22T10:00:00Z) or epoch "
                          f"milliseconds, got {raw!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def parse_duration(raw: str, name: str = "bucket") -> timedelta:
    m = DURATION_RE.match(raw or "")
    if not m or int(m.group(1)) == 0:
        raise Invalid(f"{name} must be a duration like 1m, 5m, 1h or 1d, got {raw!r}")
    return timedelta(seconds=int(m.group(1)) * UNITS[m.group(2)])



HOUR = 3600 * US
DAY = 86_400 * US
ROLLUP_LOCK = 0x10C_0001  # pg_advisory_lock key of the rollup job
ROLLUP_LAG = timedelta(minutes=2)  # an hour is rolled up this long after it ends
ROLLUP_HOURS_PER_ROUND = 24  # a long outage catches up a day per round
DIRTY_HOURS_PER_ROUND = 48
LOOKUP_ROWS = 4096  # segments fetched and looked up at once by latest_in_segments (~4 MB)
ROLLUP_DEVICES = 5_000  # devices read at once by the rollup (~2 M readings an hour at 1/min)


# ---------------------------------------------------------------- the one read path
@contextlib.asynccontextmanager
async def snapshot(conn: asyncpg.Connection):
    """One snapshot for the statements inside: a compression committing between reading
    the row store and reading the segments would otherwise show its points twice or not at
    all. Inside a caller's transaction, that transaction's snapshot is used."""
    if conn.is_in_transaction():
        yield
        return
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        yield


def _filters(device_keys: Sequence[int] | range | None, metric_ids: Sequence[int] | None,
             first: int) -> tuple[str, list]:
    """SQL conditions from $``first`` on: a list of device keys, or a range of them."""
    sql, args = "", []
    if isinstance(device_keys, range):
        args += [device_keys.start, device_keys.stop]
        sql += f" and device_key >= ${first}::bigint and device_key < ${first + 1}::bigint"
    elif device_keys is not None:
        args.append([int(k) for k in device_keys])
        sql += f" and device_key = any(${first}::int[])"
    if metric_ids is not None:
        args.append([int(m) for m in metric_ids])
        sql += f" and metric_id = any(${first + len(args) - 1}::smallint[])"
    return sql, args


def _day(us: int) -> date:
    return from_us(us).date()


async def read_points(conn: asyncpg.Connection, frm: datetime, to: datetime,
                      device_keys: Sequence[int] | range | None = None,
                      metric_ids: Sequence[int] | None = None, *,
                      limit: int | None = None) -> Points:
    """Every reading in [frm, to) of those devices (keys, or a range of keys) and metrics
    (None: all), raw and compressed alike, one per (device, metric, ts), sorted by
    (device, metric, ts).

    ``limit`` (for one series) keeps the first ``limit`` readings.
    """
    lo, hi = to_us(frm), to_us(to)
    if hi <= lo:
        return Points()
    where, args = _filters(device_keys, metric_ids, 3)
    raw_sql = ("select device_key, metric_id, ts, value, quality from telemetry "
               f"where ts >= $1 and ts < $2{where} order by device_key, metric_id, ts")
    if limit is not None:
        raw_sql += f" limit {int(limit)}"
    seg_where, seg_args = _filters(device_keys, metric_ids, 5)
    async with snapshot(conn):
        raw = await copy_points(conn, raw_sql, frm, to, *args)
        segs = await conn.fetch(
            "select device_key, metric_id, data from telemetry_segments "
            f"where day >= $1 and day <= $2 and ts_last >= $3 and ts_first < $4{seg_where} "
            "order by device_key, metric_id, day",
            _day(lo), _day(hi - 1), frm, to, *seg_args)
    if segs:
        packed = decode_segments(segs)
        packed = packed.take((packed.ts >= lo) & (packed.ts < hi))
        raw = merge(packed, raw)
    if limit is not None and len(raw) > limit:
        raw = raw.take(slice(0, limit))
    return raw


async def count_points(conn: asyncpg.Connection, frm: datetime, to: datetime,
                       device_keys: Sequence[int] | None = None,
                       metric_ids: Sequence[int] | None = None) -> int:
    """About how many readings :func:`read_points` would return, without reading them: the
    row store's count and the overlapping share of each segment (for limits)."""
    where, args = _filters(device_keys, metric_ids, 3)
    seg_where, seg_args = _filters(device_keys, metric_ids, 5)
    async with snapshot(conn):
        raw = await conn.fetchval(
            f"select count(*) from telemetry where ts >= $1 and ts < $2{where}", frm, to, *args)
        packed = await conn.fetchval(
            "select coalesce(sum(case when ts_last = ts_first then n else ceil(n * extract(epoch from "
            "least(ts_last, $4) - greatest(ts_first, $3)) / extract(epoch from ts_last - ts_first)) "
            "end), 0)::bigint from telemetry_segments "
            f"where day >= $1 and day <= $2 and ts_last >= $3 and ts_first < $4{seg_where}",
            _day(to_us(frm)), _day(to_us(to) - 1), frm, to, *seg_args)
    return raw + packed


async def latest_at(conn: asyncpg.Connection, at: datetime,
                    device_keys: Sequence[int] | None = None,
                    metric_ids: Sequence[int] | None = None, *,
                    lookback: timedelta = timedelta(days=1)) -> Points:
    """The latest reading at or before ``at`` of each device x metric (within
    ``lookback`` before it), of any quality, raw and compressed alike; sorted by
    (device, metric). For the map at a past instant (``GET /api/v1/state?at=``, replay)."""
    at_us = to_us(at)
    since = at - lookback
    where, args = _filters(device_keys, metric_ids, 3)
    seg_where, seg_args = _filters(device_keys, metric_ids, 5)
    async with snapshot(conn):
        raw = await copy_points(
            conn,
            "select distinct on (device_key, metric_id) device_key, metric_id, ts, value, "
            f"quality from telemetry where ts <= $1 and ts > $2{where} "
            "order by device_key, metric_id, ts desc", at, since, *args)
        segs = await conn.fetch(
            "select device_key, metric_id, data from telemetry_segments "
            f"where day >= $1 and day <= $2 and ts_first <= $3 and ts_last > $4{seg_where} "
            "order by device_key, metric_id, day desc",
            since.astimezone(UTC).date(), at.astimezone(UTC).date(), at, since, *seg_args)
    if not segs:
        return raw
    # the newest segment of each series: it has a reading at or before ``at`` (ts_first)
    newest = [r for i, r in enumerate(segs) if i == 0 or segs[i - 1]["device_key"] != r["device_key"]
              or segs[i - 1]["metric_id"] != r["metric_id"]]
    found, ts, val, qual = latest_upto([r["data"] for r in newest], at_us)
    found &= ts > to_us(since)
    packed = Points(np.array([r["device_key"] for r in newest], np.int32)[found],
                    np.array([r["metric_id"] for r in newest], np.int16)[found],
                    ts[found], val[found], qual[found])
    both = Points.concat([packed, raw])
    tier = np.concatenate([np.zeros(len(packed), np.int8), np.ones(len(raw), np.int8)])
    order = np.lexsort((tier, -both.ts, both.metric, both.device))
    both = both.take(order)
    return both.take(group_starts(both.device, both.metric))


# A day's segments that began before $2: those that also ended before it answer with their
# tail columns (TAIL), the others (holding the instant) bring their data to be looked up
# (DATA). Either the segments of the pairs $3, $4 or, when they are most of the day, every
# one (filtered here: one scan of the day instead of a join).
TAIL_SQL = """
select device_key, metric_id, ts_last, last_value, last_quality from telemetry_segments s
where s.day = $1 and s.ts_first < $2 and s.ts_last < $2 and s.last_quality is not null{pairs}
"""
DATA_SQL = """
select device_key, metric_id, data from telemetry_segments s
where s.day = $1 and s.ts_first < $2 and not (s.ts_last < $2 and s.last_quality is not null){pairs}
"""
WHOLE_DAY_SHARE = 0.5  # pairs at least this share of the day's segments: scan the whole day
OF_PAIRS = (" and exists (select from unnest($3::int[], $4::smallint[]) as p(k, m)"
            " where s.device_key = p.k and s.metric_id = p.m)")


def _pair_keys(device_keys, metric_ids) -> np.ndarray:
    return (np.asarray(device_keys, np.int64) << 16) | np.asarray(metric_ids, np.int64)


async def latest_in_segments(conn: asyncpg.Connection, device_keys: Sequence[int],
                             metric_ids: Sequence[int], day: datetime,
                             before: datetime) -> dict[tuple[int, int], tuple[datetime, float, int]]:
    """For each (device_keys[i], metric_ids[i]) pair, its newest compressed reading of the UTC
    ``day`` that is earlier than ``before``: ``{(key, metric): (ts, value, quality)}``. With
    the row store's newest of the same day (the later wins; a tie is the segment's), this is
    the day's answer of :func:`latest_at` pair by pair (server/live/past.py probes so).

    A segment that ended before ``before`` answers from its tail columns; one that holds
    the instant is looked up in its data (:func:`~server.store.compress.latest_upto`: one
    block decoded). The data comes in parts of :data:`LOOKUP_ROWS` through a cursor, each
    part decoded in a worker thread while the next one arrives: a whole city's lookup
    neither waits for all its segments nor holds the event loop while it decodes."""
    out: dict[tuple[int, int], tuple[datetime, float, int]] = {}
    limit = to_us(before) - 1
    wanted = np.unique(_pair_keys(device_keys, metric_ids))

    def keep(rows: list, filtered: bool) -> list:
        if filtered or not rows:
            return rows
        ok = np.isin(_pair_keys([r[0] for r in rows], [r[1] for r in rows]), wanted)
        return rows if ok.all() else [r for r, k in zip(rows, ok.tolist(), strict=True) if k]

    def lookup(rows: list, filtered: bool) -> None:
        rows = keep(rows, filtered)
        if not rows:
            return
        found, ts, value, quality = latest_upto([r[2] for r in rows], limit)
        for i, t, v, q in zip(np.flatnonzero(found).tolist(), ts[found].tolist(), value[found].tolist(),
                              quality[found].tolist(), strict=True):
            out[(rows[i][0], rows[i][1])] = (from_us(t), v, q)

    d = day.astimezone(UTC).date()
    async with snapshot(conn):  # a cursor lives in a transaction
        whole = len(wanted) >= WHOLE_DAY_SHARE * await conn.fetchval(
            "select count(*) from telemetry_segments where day = $1", d)
        pairs = "" if whole else OF_PAIRS
        args = (d, before) if whole else (d, before, [int(k) for k in device_keys],
                                          [int(m) for m in metric_ids])
        for k, m, t, v, q in keep(await conn.fetch(TAIL_SQL.format(pairs=pairs), *args), not whole):
            out[(k, m)] = (t, v, q)
        cursor = await conn.cursor(DATA_SQL.format(pairs=pairs), *args)
        decoding = None
        while True:
            rows = await cursor.fetch(LOOKUP_ROWS)
            if decoding is not None:
                await decoding
            if not rows:
                break
            decoding = asyncio.ensure_future(asyncio.to_thread(lookup, rows, not whole))
    return out


async def readings_between(conn: asyncpg.Connection, after: datetime, upto: datetime,
                           device_keys: Sequence[int], limit: int | None = None) -> list[tuple]:
    """Readings with ``after < ts <= upto`` of those devices, raw and compressed alike, in
    time order (then device, metric), at most ``limit``: (device_key, metric_id, ts, value,
    quality) tuples. For replay (server/live/replay.py)."""
    tick = timedelta(microseconds=1)
    p = await read_points(conn, after + tick, upto + tick, device_keys)
    p = p.take(np.lexsort((p.metric, p.device, p.ts)))
    if limit is not None:
        p = p.take(slice(0, limit))
    return p.rows()


# ---------------------------------------------------------------- aggregates
class Partials:
    """Per (device, metric, bucket): n, sum, min, max and the last value, as columns."""

    FIELDS = ("device", "metric", "b", "n", "s", "lo", "hi", "last_ts", "last")

    def __init__(self, device, metric, b, n, s, lo, hi, last_ts, last) -> None:
        self.device, self.metric, self.b, self.n, self.s = device, metric, b, n, s
        self.lo, self.hi, self.last_ts, self.last = lo, hi, last_ts, last

    @classmethod
    def of_points(cls, p: Points, bucket_us: int) -> Partials:
        """Good-quality readings only, bucketed from 2000-01-01 UTC (UTC midnights)."""
        p = p.take(p.quality == 0)
        b = p.ts - p.ts % bucket_us
        starts = group_starts(p.device, p.metric, b)
        last = np.append(starts[1:], len(p)) - 1
        if not len(starts):
            return cls(*(np.empty(0, dt) for dt in (np.int32, np.int16, np.int64, np.int64,
                                                     np.float64, np.float64, np.float64,
                                                     np.int64, np.float64)))
        with np.errstate(over="ignore", invalid="ignore"):  # sums of huge values: inf, as floats do
            s = np.add.reduceat(p.value, starts)
        return cls(p.device[starts], p.metric[starts], b[starts], np.diff(np.append(starts, len(p))),
                   s, np.minimum.reduceat(p.value, starts), np.maximum.reduceat(p.value, starts),
                   p.ts[last], p.value[last])

    @classmethod
    def of_rows(cls, rows, start: str, bucket_us: int) -> Partials:
        """Rollup rows (hourly or daily), rebucketed."""
        def col(name, dt):
            return np.array([r[name] for r in rows], dt)
        t = np.array([to_us(r[start]) for r in rows], np.int64)
        return cls(col("device_key", np.int32), col("metric_id", np.int16), t - t % bucket_us,
                   col("n", np.int64), col("sum", np.float64), col("min", np.float64),
                   col("max", np.float64), np.array([to_us(r["last_ts"]) for r in rows], np.int64),
                   col("last_value", np.float64))

    @classmethod
    def combine(cls, parts: list[Partials]) -> Partials:
        cat = [np.concatenate([getattr(p, f) for p in parts]) for f in cls.FIELDS]
        c = cls(*cat)
        # by time of the last value within a bucket (stable: a tie keeps the sources' order),
        # so a bucket's last partial holds its last value; the same partials always sum alike
        order = np.lexsort((c.last_ts, c.b, c.metric, c.device))
        c = cls(*(getattr(c, f)[order] for f in cls.FIELDS))
        starts = group_starts(c.device, c.metric, c.b)
        if len(starts) == len(c.b):
            return c
        last_idx = np.append(starts[1:], len(c.b)) - 1
        with np.errstate(over="ignore", invalid="ignore"):
            s = np.add.reduceat(c.s, starts)
        return cls(c.device[starts], c.metric[starts], c.b[starts], np.add.reduceat(c.n, starts),
                   s, np.minimum.reduceat(c.lo, starts), np.maximum.reduceat(c.hi, starts),
                   c.last_ts[last_idx], c.last[last_idx])

    def values(self, agg: str) -> list:
        if agg == "avg":
            with np.errstate(over="ignore", invalid="ignore"):
                return (self.s / self.n).tolist()
        if agg == "count":
            return self.n.tolist()
        return {"min": self.lo, "max": self.hi, "sum": self.s, "last": self.last}[agg].tolist()


async def rollup_boundary(conn: asyncpg.Connection) -> datetime | None:
    value = await conn.fetchval("select value #>> '{}' from ioc_meta where key = 'rollup_through'")
    return datetime.fromisoformat(value) if value else None


def _floor(us: int, unit: int) -> int:
    return us - us % unit


def _ceil(us: int, unit: int) -> int:
    return -((-us) // unit) * unit


async def bucket_partials(conn: asyncpg.Connection, key: int, metric_id: int, frm: datetime,
                          to: datetime, bucket: timedelta) -> tuple[Partials, str]:
    """Buckets of one series from the coarsest complete tier (and points for the rest)."""
    bucket_us = to_us(ORIGIN + bucket)
    lo, hi = to_us(frm), to_us(to)
    parts: list[Partials] = []
    covered: list[tuple[int, int]] = []  # [start, end) intervals answered by rollups
    tier = "raw"
    async with snapshot(conn):
        through = await rollup_boundary(conn) if bucket_us % HOUR == 0 else None
        if through is not None:
            end = min(hi, to_us(through))
            dirty = {to_us(r["hour"]) for r in await conn.fetch(
                "select hour from telemetry_dirty where hour >= $1 and hour < $2",
                from_us(_floor(lo, DAY)), from_us(_ceil(end, DAY)))}
            days: list[int] = []
            if bucket_us % DAY == 0:
                dirty_days = {_floor(h, DAY) for h in dirty}
                days = [d for d in range(_ceil(lo, DAY), _floor(end, DAY), DAY) if d not in dirty_days]
            day_set = set(days)
            hours = [h for h in range(_ceil(lo, HOUR), _floor(end, HOUR), HOUR)
                     if h not in dirty and _floor(h, DAY) not in day_set]
            if days:
                rows = await conn.fetch(
                    "select device_key, metric_id, day, n, sum, min, max, last_ts, last_value "
                    "from telemetry_daily where device_key = $1 and metric_id = $2 "
                    "and day >= $3 and day < $4 order by day",
                    key, metric_id, from_us(days[0]), from_us(days[-1] + DAY))
                rows = [r for r in rows if to_us(r["day"]) in day_set]
                parts.append(Partials.of_rows(rows, "day", bucket_us))
                covered += [(d, d + DAY) for d in days]
                tier = "daily"
            if hours:
                hour_set = set(hours)
                rows = await conn.fetch(
                    "select device_key, metric_id, hour, n, sum, min, max, last_ts, last_value "
                    "from telemetry_hourly where device_key = $1 and metric_id = $2 "
                    "and hour >= $3 and hour < $4 order by hour",
                    key, metric_id, from_us(hours[0]), from_us(hours[-1] + HOUR))
                rows = [r for r in rows if to_us(r["hour"]) in hour_set]
                parts.append(Partials.of_rows(rows, "hour", bucket_us))
                covered += [(h, h + HOUR) for h in hours]
                tier = "hourly" if tier == "raw" else tier
        for a, b in _gaps(lo, hi, covered):
            points = await read_points(conn, from_us(a), from_us(b), [key], [metric_id])
            parts.append(Partials.of_points(points, bucket_us))
    if not parts:
        parts.append(Partials.of_points(Points(), bucket_us))
    return Partials.combine(parts), tier


def _gaps(lo: int, hi: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, at = [], lo
    for a, b in sorted(covered):
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < hi:
        out.append((at, hi))
    return out


async def history_query(conn: asyncpg.Connection, key: int, dev_id: str,
                        query: Mapping[str, str]) -> dict:
    metric = query.get("metric")
    if not metric:
        raise Invalid("metric is required, e.g. ?metric=power_w")
    metric_id = await conn.fetchval("select id from metrics where name = $1", metric)
    if metric_id is None:
        raise Invalid(f"unknown metric {metric!r}")
    now = datetime.now(UTC)
    to = parse_time(query.get("to"), "to") or now
    frm = parse_time(query.get("from"), "from") or to - timedelta(days=1)
    if frm >= to:
        raise Invalid("from must be before to")
    bucket_raw, agg = query.get("bucket"), query.get("agg", "avg")
    if agg not in AGGS:
        raise Invalid(f"agg must be one of {', '.join(AGGS)}, got {agg!r}")
    body: dict = {"device": dev_id, "metric": metric, "from": frm, "to": to}
    if not bucket_raw:
        limit = int(query.get("limit", 10_000))  # 1..MAX_RAW: HistoryQuery checks it
        p = await read_points(conn, frm, to, [key], [metric_id], limit=limit)
        body["points"] = [[from_us(t), v if q == 0 else None]
                          for t, v, q in zip(p.ts.tolist(), p.value.tolist(), p.quality.tolist(),
                                             strict=True)]
        body["truncated"] = len(p) == limit
        body["tier"] = "raw"
        return body
    bucket = parse_duration(bucket_raw)
    if (to - frm) / bucket > MAX_BUCKETS:
        raise Invalid(f"that range holds more than {MAX_BUCKETS} buckets; use a larger bucket")
    partials, tier = await bucket_partials(conn, key, metric_id, frm, to, bucket)
    body.update(bucket=bucket_raw, agg=agg, tier=tier,
                points=[[from_us(b), v] for b, v in zip(partials.b.tolist(), partials.values(agg),
                                                        strict=True)])
    return body


# ---------------------------------------------------------------- rollups
HOURLY_COLS = ("device_key", "metric_id", "hour", "n", "sum", "min", "max", "last_ts", "last_value")

UPSERT_HOURLY = """
insert into telemetry_hourly as h select * from ioc_hourly_stage
on conflict (device_key, metric_id, hour) do update set
    n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
    last_ts = excluded.last_ts, last_value = excluded.last_value
"""

# Whole UTC days from their hours, summed in hour order so that the same hours always give
# the same bits (a daily bucket may differ from the sum of its hourly ones in the last bit).
DAILY_SQL = """
insert into telemetry_daily as d (device_key, metric_id, day, n, sum, min, max, last_ts, last_value)
select device_key, metric_id, date_bin('1 day', hour, timestamptz '2000-01-01 00:00:00+00'),
       sum(n), sum(sum order by hour), min(min), max(max), max(last_ts),
       (array_agg(last_value order by last_ts desc))[1]
from telemetry_hourly where hour >= $1 and hour < $1 + interval '1 day'
group by 1, 2, 3
on conflict (device_key, metric_id, day) do update set
    n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
    last_ts = excluded.last_ts, last_value = excluded.last_value
"""


async def rollup(conn: asyncpg.Connection, now: datetime, *,
                 raw_cutoff: datetime | None = None,
                 hourly_cutoff: datetime | None = None) -> list[datetime]:
    """Roll up whole hours since the last run, and again every hour that received late
    readings since (``telemetry_dirty``), then the days those hours belong to. At most
    :data:`ROLLUP_HOURS_PER_ROUND` new hours per round. Returns the hours rolled up.

    ``ioc_meta.rollup_through`` is the hour up to which rollups are complete; the history
    reads rollups before it (but not for marked hours) and points after it.
    """
    # One rollup at a time across processes: two that interleave read the same boundary
    # and can move it past hours neither rolled up.
    await conn.execute("select pg_advisory_lock($1)", ROLLUP_LOCK)
    try:
        return await _rollup(conn, now, raw_cutoff, hourly_cutoff)
    finally:
        await conn.execute("select pg_advisory_unlock($1)", ROLLUP_LOCK)


async def _rollup(conn: asyncpg.Connection, now: datetime, raw_cutoff: datetime | None,
                  hourly_cutoff: datetime | None) -> list[datetime]:
    now_hour = from_us(_floor(to_us(now - ROLLUP_LAG), HOUR))
    through = await rollup_boundary(conn)
    if through is None:
        first = await conn.fetchval(
            "select least((select min(ts) from telemetry), "
            "(select min(day)::timestamp at time zone 'UTC' from telemetry_segments))")
        through = from_us(_floor(to_us(first or now_hour), HOUR))
    end = min(now_hour, through + timedelta(hours=ROLLUP_HOURS_PER_ROUND))
    if raw_cutoff is not None:  # nothing left to recompute those from
        await conn.execute("delete from telemetry_dirty where hour < $1", raw_cutoff)
    dirty = [r["hour"] for r in await conn.fetch(
        "select hour from telemetry_dirty where hour < $1 order by hour limit $2",
        through, DIRTY_HOURS_PER_ROUND)]
    fresh = [through + timedelta(hours=i) for i in range(int((end - through) / timedelta(hours=1)))]
    chunks = await _key_ranges(conn)
    await conn.execute("create temp table if not exists ioc_hourly_stage "
                       "(like telemetry_hourly) on commit delete rows")
    for hour in dirty + fresh:
        # one snapshot for the mark, the row store and the segments (see snapshot())
        async with conn.transaction(isolation="repeatable_read"):
            # the mark goes first: a reading committed after this snapshot marks it again
            await conn.execute("delete from telemetry_dirty where hour = $1", hour)
            for keys in chunks:
                p = Partials.of_points(await read_points(conn, hour, hour + timedelta(hours=1), keys),
                                       HOUR)
                records = list(zip(p.device.tolist(), p.metric.tolist(), [hour] * len(p.b),
                                   p.n.tolist(), p.s.tolist(), p.lo.tolist(), p.hi.tolist(),
                                   map(from_us, p.last_ts.tolist()), p.last.tolist(), strict=True))
                if records:
                    await conn.copy_records_to_table("ioc_hourly_stage", records=records,
                                                     columns=HOURLY_COLS)
                    await conn.execute(UPSERT_HOURLY)
                    await conn.execute("truncate ioc_hourly_stage")
            if hour >= through:
                await conn.execute(
                    """insert into ioc_meta (key, value, updated_at)
                       values ('rollup_through', to_jsonb($1::text), now())
                       on conflict (key) do update set value = excluded.value, updated_at = now()""",
                    (hour + timedelta(hours=1)).isoformat())
    days = sorted({from_us(_floor(to_us(h), DAY)) for h in dirty + fresh})
    for day in days:
        if hourly_cutoff is not None and day < hourly_cutoff:
            continue  # its other hours are gone: summing what is left would lose them
        await conn.execute(DAILY_SQL, day)
    return dirty + fresh


async def _key_ranges(conn: asyncpg.Connection) -> list[range]:
    """Device key ranges of about :data:`ROLLUP_DEVICES` registered devices each, the first and
    last open-ended (readings of deleted devices too): an hour of a big city is read in parts."""
    lo, hi = await conn.fetchrow("select min(key), max(key) from devices")
    if lo is None:
        return [range(-2**31, 2**31)]
    cuts = list(range(lo + ROLLUP_DEVICES, hi + 1, ROLLUP_DEVICES))
    edges = [-2**31, *cuts, 2**31]
    return [range(a, b) for a, b in itertools.pairwise(edges)]


async def expire(conn: asyncpg.Connection, now: datetime, *, hourly_days: int,
                 daily_days: int) -> None:
    """Retention of the rollup tiers (0 days: kept forever)."""
    if hourly_days:
        await conn.execute("delete from telemetry_hourly where hour < $1",
                           now - timedelta(days=hourly_days))
    if daily_days:
        await conn.execute("delete from telemetry_daily where day < $1",
                           now - timedelta(days=daily_days))
