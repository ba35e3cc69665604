"""Device history: raw points or time buckets, from raw telemetry and hourly rollups.

Buckets of an hour or more are answered from ``telemetry_hourly`` for the hours the
rollup job has finished and from raw telemetry only for the recent rest, so a year at
1-hour buckets reads ~8,760 rollup rows instead of millions of raw points. Both sources
return partial aggregates (n, sum, min, max, last) that are merged per bucket, so a
bucket that straddles the boundary is still exact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import asyncpg

from server.errors import Invalid

AGGS = ("avg", "min", "max", "sum", "count", "last")
DURATION_RE = re.compile(r"^(\d+)(s|m|h|d)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_RAW = 100_000
MAX_BUCKETS = 100_000
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # buckets align to UTC midnight

RAW_PARTIALS = """
select date_bin($4, ts, $5) as b, count(*) as n, sum(value) as s, min(value) as lo,
       max(value) as hi, max(ts) as last_ts, (array_agg(value order by ts desc))[1] as last
from telemetry
where device_key = $1 and metric_id = $2 and ts >= $3 and ts < $6 and quality = 0
group by 1
"""

HOURLY_PARTIALS = """
select date_bin($4, hour, $5) as b, sum(n)::bigint as n, sum(sum) as s, min(min) as lo,
       max(max) as hi, max(last_ts) as last_ts,
       (array_agg(last_value order by last_ts desc))[1] as last
from telemetry_hourly
where device_key = $1 and metric_id = $2 and hour >= $3 and hour < $6
group by 1
"""


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


async def rollup_boundary(conn: asyncpg.Connection) -> datetime | None:
    value = await conn.fetchval("select value from ioc_meta where key = 'rollup_through'")
    return datetime.fromisoformat(value) if value else None


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
    body = {"device": dev_id, "metric": metric, "from": frm, "to": to}
    if not bucket_raw:
        limit = int(query.get("limit", 10_000))  # 1..MAX_RAW: HistoryQuery checks it
        rows = await conn.fetch(
            "select ts, value, quality from telemetry where device_key = $1 and metric_id = $2 "
            "and ts >= $3 and ts < $4 order by ts limit $5", key, metric_id, frm, to, limit)
        body["points"] = [[r["ts"], r["value"] if r["quality"] == 0 else None] for r in rows]
        body["truncated"] = len(rows) == limit
        return body
    bucket = parse_duration(bucket_raw)
    if (to - frm) / bucket > MAX_BUCKETS:
        raise Invalid(f"that range holds more than {MAX_BUCKETS} buckets; use a larger bucket")
    partials: list = []
    boundary = frm
    if bucket % timedelta(hours=1) == timedelta(0):
        through = await rollup_boundary(conn)
        if through:
            boundary = max(frm, min(through, to).replace(minute=0, second=0, microsecond=0))
            if boundary > frm:
                partials += await conn.fetch(HOURLY_PARTIALS, key, metric_id, frm, bucket,
                                             ORIGIN, boundary)
    if boundary < to:
        partials += await conn.fetch(RAW_PARTIALS, key, metric_id, boundary, bucket, ORIGIN, to)
    body.update(bucket=bucket_raw, agg=agg, points=_merge(partials, agg))
    return body


def _merge(partials, agg: str) -> list[list]:
    acc: dict[datetime, list] = {}
    for r in partials:
        cur = acc.get(r["b"])
        if cur is None:
            acc[r["b"]] = [r["n"], r["s"], r["lo"], r["hi"], r["last_ts"], r["last"]]
            continue
        cur[0] += r["n"]
        cur[1] += r["s"]
        cur[2] = min(cur[2], r["lo"])
        cur[3] = max(cur[3], r["hi"])
        if r["last_ts"] > cur[4]:
            cur[4], cur[5] = r["last_ts"], r["last"]
    out = []
    for b in sorted(acc):
        n, s, lo, hi, _, last = acc[b]
        value = {"avg": s / n if n else None, "min": lo, "max": hi, "sum": s, "count": n,
                 "last": last}[agg]
        out.append([b, value])
    return out
