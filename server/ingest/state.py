"""``device_state``: each device's latest value per metric, its status and when it was last
heard, upserted once per device per committed batch (what the map and the rules read
instead of scanning telemetry).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from server.ingest.directory import Directory

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def latest_by_device(
    rows: list[tuple], directory: Directory
) -> dict[int, dict[str, tuple[int, float | bool | None, int]]]:
    """Per device and metric, the newest (epoch ms, display value, quality) in ``rows``.

    A reading of bad quality shows as null: never a number on the map.
    """
    names = directory.metric_names
    bools = directory.bool_metric_ids
    out: dict[int, dict[str, tuple[int, float | bool | None, int]]] = {}
    last_ts, ms, one_ms = None, 0, timedelta(milliseconds=1)
    for key, mid, ts, value, quality, _ in rows:
        if ts is not last_ts:  # the readings of one message share their timestamp
            last_ts, ms = ts, (ts - EPOCH) // one_ms
        per = out.get(key)
        if per is None:
            per = out[key] = {}
        name = names[mid]
        cur = per.get(name)
        if cur is None or ms >= cur[0]:
            per[name] = (ms, None if quality else (value == 1.0 if mid in bools else value),
                         quality)
    return out


# The latest state, per device and metric: the value with the newest device timestamp.
# When every value of the batch is at least as new as anything stored (devices report in
# order: the usual case) a plain jsonb merge is right; only otherwise does ioc_newer()
# compare metric by metric. The comparison reads the row under its lock (an UPDATE re-reads
# a row another writer changed meanwhile), so two server processes writing one device can
# never move its state backwards. Measured for 500 devices × 5 metrics (fsync on): 28.8 ms
# with ioc_newer() for every row, 14.6 ms like this, 10.7 ms for a plain UPDATE of state
# merged in Python from a cache (not worth a second copy of every device's state in memory).
# Rows not there yet (a device's first reading) are inserted; the join skips devices deleted
# since validation instead of failing the batch on the foreign key.
UPSERT_STATE_SQL = """
with u as (
    select u.k, u.v, u.t, u.q,
           timestamptz 'epoch' + u.newest * interval '1 millisecond' as newest,
           timestamptz 'epoch' + u.oldest * interval '1 millisecond' as oldest
    from jsonb_to_recordset(convert_from($1::bytea, 'UTF8')::jsonb)
         as u(k int, v jsonb, t jsonb, q jsonb, newest bigint, oldest bigint)
), updated as (
    update device_state s set
        values = case when u.oldest >= s.last_seen then s.values || u.v
                      else s.values || ioc_newer(s.times, u.t, u.v) end,
        quality = case when u.oldest >= s.last_seen then s.quality || u.q
                       else s.quality || ioc_newer(s.times, u.t, u.q) end,
        times = case when u.oldest >= s.last_seen then s.times || u.t
                     else s.times || ioc_newer(s.times, u.t, u.t) end,
        last_seen = greatest(s.last_seen, u.newest),
        status = 'online',
        status_changed_at = case when s.status = 'online' then s.status_changed_at else now() end,
        updated_at = now(),
        next_check = coalesce(s.next_check, now())
    from u
    where s.device_key = u.k
    returning s.device_key
)
insert into device_state as s (device_key, values, times, quality, last_seen, status,
                               status_changed_at, updated_at, next_check)
select u.k, u.v, u.t, u.q, u.newest, 'online', now(), now(), now()
from u
join devices d on d.key = u.k
where u.k not in (select device_key from updated)
on conflict (device_key) do update set
    values = s.values || ioc_newer(s.times, excluded.times, excluded.values),
    quality = s.quality || ioc_newer(s.times, excluded.times, excluded.quality),
    times = s.times || ioc_newer(s.times, excluded.times, excluded.times),
    last_seen = greatest(s.last_seen, excluded.last_seen),
    status = 'online',
    status_changed_at = case when s.status = 'online' then s.status_changed_at else now() end,
    updated_at = now(),
    next_check = coalesce(s.next_check, now())
"""


async def upsert_state(conn: asyncpg.Connection, states) -> None:
    """One statement for all devices of the batch; per metric, the newer timestamp wins.

    The batch goes as one JSON document (one ``orjson.dumps``, passed as bytes) rather
    than as jsonb[] arrays, which asyncpg encodes element by element through Python (3 µs
    per device). ``next_check`` is set when
    the device was not watched (first reading, back from offline): the staleness scan then
    computes its deadline.
    """
    doc = []
    for k in sorted(states):  # a fixed lock order: concurrent writers cannot deadlock
        v, t, q = {}, {}, {}
        for m, (when, shown, qual) in states[k].items():
            v[m] = shown
            t[m] = when
            q[m] = qual
        stamps = t.values()
        doc.append({"k": k, "v": v, "t": t, "q": q, "newest": max(stamps), "oldest": min(stamps)})
    await conn.execute(UPSERT_STATE_SQL, orjson.dumps(doc))


async def apply_status(conn: asyncpg.Connection, status) -> None:
    """Connectivity reported by the protocol (last will, Modbus unit silent)."""
    latest: dict[int, tuple[str, datetime]] = {}
    for key, st, ts, _retained in status:
        cur = latest.get(key)
        if cur is None or ts >= cur[1]:
            latest[key] = (st, ts)
    keys = sorted(latest)
    await conn.execute(
        """
        insert into device_state as s (device_key, status, status_changed_at, updated_at)
        select u.k, u.st, u.ts, now()
        from unnest($1::int[], $2::text[], $3::timestamptz[]) as u(k, st, ts)
        join devices d on d.key = u.k  -- deleted since validation: skip, do not fail the batch
        on conflict (device_key) do update set
            status = excluded.status,
            status_changed_at = case when s.status = excluded.status then s.status_changed_at
                                     else excluded.status_changed_at end,
            updated_at = now(),
            -- offline devices are not watched; online ones are, from the next scan on
            next_check = case when excluded.status = 'offline' then null
                              else coalesce(s.next_check, now()) end
        """,
        keys, [latest[k][0] for k in keys], [latest[k][1] for k in keys],
    )
