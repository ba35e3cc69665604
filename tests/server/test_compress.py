"""Compressed telemetry: the codec, the job's crash safety, and reads that do not notice.

The property tests write the same random series for two devices, compress one of them and
compare every answer (raw points, buckets of every aggregate, latest-at, rollups) between
the two, before and after late readings (some repeating a compressed timestamp) and after
the next run folds them in.
"""

from __future__ import annotations

import asyncio
import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import asyncpg
import numpy as np
import psycopg
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.ingest.writer import MAX_MAGNITUDE
from server.live import past
from server.store import compress, history
from server.store.compress import Points, decode, encode
from server.store.history import AGGS, bucket_partials, latest_at, read_points

D0 = datetime(2026, 11, 20, tzinfo=UTC)
NOW = D0 + timedelta(days=10)
A, B, M = 1, 2, 7  # A is compressed, B stays in the row store; one metric
US = 1_000_000

# what ingest stores: finite, within ±MAX_MAGNITUDE (server/ingest/writer.py)
finite = st.floats(-MAX_MAGNITUDE, MAX_MAGNITUDE, allow_nan=False, allow_infinity=False, width=64)
decimal = st.integers(-10**7, 10**7).map(lambda i: i / 10)
values = st.one_of(decimal, finite, st.sampled_from([0.0, -0.0, 1.0]))


# ---------------------------------------------------------------- the codec alone
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**50, 2**50), st.one_of(values, st.just(float("nan"))),
                          st.integers(-3, 3)), max_size=300),
       st.booleans())
def test_codec_round_trips_bit_for_bit(rows, regular):
    rows.sort(key=lambda r: r[0])
    ts = np.array([r[0] for r in rows], np.int64)
    if regular:
        ts = np.arange(len(rows), dtype=np.int64) * 60 * US + 123
    v = np.array([r[1] for r in rows], np.float64)
    q = np.array([r[2] for r in rows], np.int16)
    t2, v2, q2 = decode(encode(ts, v, q))
    assert np.array_equal(t2, ts) and np.array_equal(q2, q)
    assert np.array_equal(v2.view(np.uint64), v.view(np.uint64))


def _v1(ts: np.ndarray, v: np.ndarray, q: np.ndarray) -> bytes:
    """A segment as format 1 wrote it (no checkpoints): still read."""
    dod = np.diff(np.diff(ts, prepend=0), prepend=0)
    bits = v.view(np.int64)
    starts = compress.group_starts(q)
    runs = np.diff(starts, append=len(ts)).astype(np.uint32)
    body = b"".join((compress._HEADER.pack(1, compress._XOR, 0, len(ts), len(starts)),
                     compress._shuffle(compress._zigzag(dod)),
                     compress._shuffle(bits ^ np.concatenate(([0], bits[:-1]))),
                     q[starts].astype("<i2").tobytes(), runs.tobytes()))
    return zstandard.ZstdCompressor(level=9).compress(body)


segment_rows = st.lists(st.tuples(st.integers(0, 2 * 86_400 * US), values, st.sampled_from([0, 0, 0, 1, 2])),
                        min_size=1, max_size=3 * compress.BLOCK + 5, unique_by=lambda r: r[0])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(segment_rows, st.booleans(), st.booleans()), min_size=1, max_size=6),
       st.lists(st.integers(-US, 2 * 86_400 * US + US), min_size=1, max_size=5), st.data())
def test_latest_upto_is_a_search_of_the_decoded_segments(segments, limits, data):
    """The map at a past instant decodes one block per segment: the same reading as a full
    decode and a search, on both sides of each checkpoint, for either format, for regular
    series (whose blocks' timestamps are computed, not decoded) and irregular ones."""
    series = []
    for rows, old, regular in segments:
        series.append(_series(rows, old, regular))
        ts = series[-1][0]
        limits += [int(t) + d for t in data.draw(st.lists(st.sampled_from(ts.tolist()), max_size=3))
                   for d in (-1, 0)]
    for limit in limits:
        with patch.object(compress, "_MATRIX_ROWS", 4):  # more segments than that: in parts
            found, ts, v, q = compress.latest_upto([s[3] for s in series], limit)
        for i, (t0, v0, q0, _) in enumerate(series):
            j = int(np.searchsorted(t0, limit, side="right")) - 1
            assert found[i] == (j >= 0)
            if j >= 0:
                assert (ts[i], q[i]) == (t0[j], q0[j])
                assert v[i].view(np.uint64) == v0[j].view(np.uint64)


def _series(rows, old: bool, regular: bool):
    """(ts, v, q, segment) of hypothesis rows: sorted by time, on a one-minute grid when
    ``regular``, in format 1 when ``old``."""
    rows = sorted(rows, key=lambda r: r[0])
    ts = (rows[0][0] + np.arange(len(rows), dtype=np.int64) * 60 * US if regular
          else np.array([r[0] for r in rows], np.int64))
    v = np.array([r[1] for r in rows], np.float64)
    q = np.array([r[2] for r in rows], np.int16)
    return ts, v, q, (_v1(ts, v, q) if old else encode(ts, v, q))


def _migration(name: str):
    path = Path(__file__).resolve().parents[2] / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@settings(max_examples=150, deadline=None)
@given(segment_rows, st.booleans(), st.booleans())
def test_the_migration_fills_tails_as_decoding_reads_them(rows, old, regular):
    """Migration 0017 fills the tail columns of segments written before it (either format)
    with its own reader: the last reading's value and quality, bit for bit."""
    _, v, q, segment = _series(rows, old, regular)
    value, quality = _migration("0017_segment_tail")._tail(segment)
    assert (float(value).hex(), quality) == (float(v[-1]).hex(), q[-1])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3 * compress.BLOCK + 5), st.sampled_from([0.0, 230.4, -0.0, 1e300]),
       st.integers(0, 86_400 * US), st.data())
def test_a_block_where_nothing_changes_is_answered_from_its_checkpoint(n, value, limit, data):
    """A lamp by day: regular timestamps and one value, blocks of zeros recognised by their
    frame and not decompressed; the same answer as a decode and a search."""
    ts = 1000 + np.arange(n, dtype=np.int64) * 60 * US
    v = np.full(n, value)
    if data.draw(st.booleans()):  # a change in one block: the others stay still
        v[data.draw(st.integers(0, n - 1)):] = 7.5
    q = np.zeros(n, np.int16)
    q[data.draw(st.integers(0, n)):] = 2  # bad quality from some point on (or never)
    seg = encode(ts, v, q)
    found, t, val, qq = compress.latest_upto([seg, seg], limit)
    j = int(np.searchsorted(ts, limit, side="right")) - 1
    assert found.tolist() == [j >= 0] * 2
    if j >= 0:
        assert t.tolist() == [ts[j]] * 2 and qq.tolist() == [q[j]] * 2
        assert [float(x).hex() for x in val] == [float(v[j]).hex()] * 2


def test_a_still_block_is_not_decompressed():
    """The shortcut above is taken: a lamp's still last block costs no decompression, while
    one change in it does (the same answer either way is the test above)."""
    n = 3 * compress.BLOCK
    ts = 1000 + np.arange(n, dtype=np.int64) * 60 * US
    real = compress._dctx()
    calls = []

    class Counting:
        def decompress(self, frame):
            calls.append(len(frame))
            return real.decompress(frame)

    for changed, expected_calls in ((False, 0), (True, 1)):
        v = np.full(n, 230.4)
        if changed:
            v[-5:] = 7.5
        calls.clear()
        with patch.object(compress, "_dctx", Counting):
            found, _, val, _ = compress.latest_upto([encode(ts, v, np.zeros(n, np.int16))], int(ts[-1]))
        assert found.tolist() == [True] and float(val[0]).hex() == float(v[-1]).hex()
        assert len(calls) == expected_calls, (changed, calls)


def test_a_regular_decimal_series_takes_about_a_byte_a_point():
    rng = np.random.default_rng(7)
    ts = np.arange(1440, dtype=np.int64) * 60 * US
    v = np.round(100 + 1.5 * rng.standard_normal(1440), 1)
    assert len(encode(ts, v, np.zeros(1440, np.int16))) < 1.5 * 1440


# ---------------------------------------------------------------- against the database
async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute("truncate telemetry, telemetry_segments, telemetry_hourly, telemetry_daily, "
                       "telemetry_dirty")
    await conn.execute("delete from ioc_meta where key in ('rollup_through', 'compressed_points')")
    for d in range(4):
        await conn.execute("select ioc_ensure_telemetry_partition($1)", (D0 + timedelta(days=d)).date())


async def _insert(conn: asyncpg.Connection, rows, keys=(A, B)) -> None:
    recs = [(k, M, D0 + timedelta(microseconds=t), v, q) for k in keys for t, v, q in rows]
    async with conn.transaction():
        await conn.execute("create temp table if not exists stage (like telemetry including defaults) "
                           "on commit drop")
        await conn.copy_records_to_table("stage", records=recs,
                                         columns=("device_key", "metric_id", "ts", "value", "quality"))
        await conn.execute("insert into telemetry select * from stage on conflict do nothing")


def _same(pa: Points, pb: Points) -> None:
    assert np.array_equal(pa.device, np.full(len(pa), A)) and np.array_equal(pb.device, np.full(len(pb), B))
    assert np.array_equal(pa.ts, pb.ts) and np.array_equal(pa.quality, pb.quality)
    assert np.array_equal(pa.value.view(np.uint64), pb.value.view(np.uint64))


async def _compare(conn: asyncpg.Connection, queries) -> None:
    for lo, span, bucket_s, limit in queries:
        frm = D0 + timedelta(seconds=lo)
        to = frm + timedelta(seconds=span)
        _same(await read_points(conn, frm, to, [A], [M], limit=limit),
              await read_points(conn, frm, to, [B], [M], limit=limit))
        _same(await latest_at(conn, to, [A], [M]), await latest_at(conn, to, [B], [M]))
        assert await _past_latest(conn, to, A) == await _past_latest(conn, to, B)
        ra, rb = [await history.readings_between(conn, frm, to, [k], limit) for k in (A, B)]
        assert [r[1:] for r in ra] == [r[1:] for r in rb]
        pa, tier_a = await bucket_partials(conn, A, M, frm, to, timedelta(seconds=bucket_s))
        pb, tier_b = await bucket_partials(conn, B, M, frm, to, timedelta(seconds=bucket_s))
        assert tier_a == tier_b
        assert pa.b.tolist() == pb.b.tolist()
        for agg in AGGS:
            assert np.array_equal(np.array(pa.values(agg)), np.array(pb.values(agg)), equal_nan=True), agg


async def _past_latest(conn: asyncpg.Connection, at: datetime, key: int) -> dict:
    """What the map at ``at`` (server/live/past.py) reads of one series: its newest reading,
    probed day by day through the row store and the segments."""
    hi = at + timedelta(microseconds=1)
    lo = at.replace(hour=0, minute=0, second=0, microsecond=0)
    answers = []
    for share in (0.0, float("inf")):  # the whole day's segments filtered, or the pair's joined
        with patch.object(history, "WHOLE_DAY_SHARE", share):
            got = await past._latest_by_day(conn, {}, [key], [M], lo, hi)
        answers.append({m: (ts, v.hex(), q) for m, (ts, v, q) in got.get(key, {}).items()})
    assert answers[0] == answers[1]
    return answers[0]


async def _tails_agree(conn: asyncpg.Connection) -> None:
    """Each segment's tail columns are its last reading, bit for bit."""
    for r in await conn.fetch("select ts_last, last_value, last_quality, data from telemetry_segments"):
        ts, v, q = decode(r["data"])
        assert (compress.to_us(r["ts_last"]), r["last_quality"]) == (ts[-1], q[-1])
        assert r["last_value"].hex() == float(v[-1]).hex()


async def _rollups(conn: asyncpg.Connection, table: str, key: int) -> list[tuple]:
    start = "hour" if table == "telemetry_hourly" else "day"
    return [tuple(r) for r in await conn.fetch(
        f"select {start}, n, sum, min, max, last_ts, last_value from {table} "
        f"where device_key = $1 order by 1", key)]


async def _roll(conn: asyncpg.Connection) -> None:
    while await history.rollup(conn, D0 + timedelta(days=3)):
        pass


series = st.lists(st.tuples(st.integers(0, 2 * 86_400 * US - 1), values,
                            st.sampled_from([0, 0, 0, 0, 1, 2])), max_size=120)
minute_series = st.lists(st.tuples(st.integers(0, 2 * 1440 - 1).map(lambda m: m * 60 * US), decimal,
                                   st.sampled_from([0, 0, 0, 1])), max_size=120)
queries = st.lists(st.tuples(st.integers(-3600, 2 * 86_400), st.integers(1, 3 * 86_400),
                             st.sampled_from([60, 420, 3600, 7200, 86_400]),
                             st.sampled_from([None, 1, 7, 50])), min_size=1, max_size=4)


@pytest.fixture
def run_db(db_url):
    """Runs a coroutine against the test database on a connection of its own."""
    def run(fn, *args):
        async def go():
            conn = await asyncpg.connect(db_url)
            try:
                return await fn(conn, *args)
            finally:
                await conn.close()
        return asyncio.run(go())
    return run


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(series, minute_series), series, queries)
def test_reads_are_the_same_raw_and_compressed(run_db, rows, late, qs):
    async def check(conn):
        await _reset(conn)
        await _insert(conn, rows)
        await _roll(conn)
        report = await compress.compress_due(conn, NOW, device_keys=[A])
        assert report.points == len({r[0] for r in rows})
        assert await conn.fetchval("select count(*) from telemetry where device_key = $1", A) == 0
        await _tails_agree(conn)
        await _compare(conn, qs)
        # late readings, in the row store beside A's segments; some repeat a stored time
        await _insert(conn, late + [(t, v + 1.0, 1 - q % 2) for t, v, q in rows[::3]])
        await _compare(conn, qs)
        await _roll(conn)
        assert await _rollups(conn, "telemetry_hourly", A) == await _rollups(conn, "telemetry_hourly", B)
        assert await _rollups(conn, "telemetry_daily", A) == await _rollups(conn, "telemetry_daily", B)
        await _compare(conn, qs)  # buckets of whole hours now come from the rollups
        await compress.compress_due(conn, NOW, device_keys=[A])  # folds the late ones in
        assert await conn.fetchval("select count(*) from telemetry where device_key = $1", A) == 0
        n = await conn.fetchval("select coalesce(sum(n), 0) from telemetry_segments")
        assert n == await conn.fetchval("select count(*) from telemetry where device_key = $1", B)
        assert n == await conn.fetchval("select (value #>> '{}')::bigint from ioc_meta "
                                        "where key = 'compressed_points'") or n == 0
        await _tails_agree(conn)
        await _compare(conn, qs)
    run_db(check)


# The server's runs (whole days, the partition truncated at the end) and runs for some devices
# (their rows deleted as they are folded), each failing at every step in turn.
STEPS = [(step, None) for step in ("read", "encoded", "written", "counted", "locked", "truncated")]
STEPS += [(step, [A, B, 3, 4]) for step in ("deleted", "encoded", "written", "counted")]


@pytest.mark.parametrize(("step", "keys"), STEPS)
async def test_a_run_killed_at_any_step_loses_nothing_and_stores_nothing_twice(db_url, step, keys):
    rng = np.random.default_rng(3)
    rows = [(int(t), float(np.round(rng.normal(50, 5), 1)), int(rng.random() < 0.05))
            for t in rng.choice(3 * 86_400 * US, 3000, replace=False)]
    conn = await asyncpg.connect(db_url)
    try:
        await _reset(conn)
        await _insert(conn, rows, keys=(A, B, 3, 4))
        await conn.execute("analyze telemetry")  # row estimates: the job sizes its chunks by them
        before = await read_points(conn, D0, D0 + timedelta(days=4))
        calls = []

        def fail(at: str) -> None:  # the second time (a second range, or the second day)
            calls.append(at)
            if at == step and calls.count(step) == 2:
                raise RuntimeError("killed")

        with pytest.raises(RuntimeError, match="killed"):
            await compress.compress_due(conn, NOW, device_keys=keys, chunk_rows=1000, fail_at=fail)
        half = await read_points(conn, D0, D0 + timedelta(days=4))
        assert await conn.fetchval("select count(*) from telemetry_segments") > 0  # some are in
        assert await conn.fetchval("select count(*) from telemetry") > 0  # the rest is not
        report = await compress.compress_due(conn, NOW, device_keys=keys, chunk_rows=1000)
        assert report.days[-1] == (D0 + timedelta(days=2)).date()
        after = await read_points(conn, D0, D0 + timedelta(days=4))
        assert await conn.fetchval("select count(*) from telemetry") == 0
        assert await conn.fetchval("select sum(n) from telemetry_segments") == len(before)
        assert await conn.fetchval("select (value #>> '{}')::bigint from ioc_meta "
                                   "where key = 'compressed_points'") == len(before)
        for got in (half, after):
            assert np.array_equal(got.ts, before.ts) and np.array_equal(got.device, before.device)
            assert np.array_equal(got.value, before.value) and np.array_equal(got.quality, before.quality)
        # a day whose partition is empty afterwards is truncated, not dropped (late data lands)
        assert await conn.fetchval("select to_regclass('telemetry_p20261120') is not null")
        assert (await compress.compress_due(conn, NOW, device_keys=keys)).points == 0  # idempotent
    finally:
        await conn.close()


async def test_readings_arriving_during_a_run_are_kept(db_url):
    """A reading for a range already folded: the partition is not truncated, reads see it,
    and the next run folds it."""
    conn = await asyncpg.connect(db_url)
    try:
        await _reset(conn)
        await _insert(conn, [(m * 60 * US, float(m), 0) for m in range(1440)], keys=(A, B))
        await conn.execute("analyze telemetry")  # two ranges: A's, then B's (one read)

        def sneak(at: str) -> None:  # once the day is read, from another connection
            if at == "read" and sneak.calls == 0:
                with psycopg.connect(db_url, autocommit=True) as other:
                    other.execute("insert into telemetry (device_key, metric_id, ts, value) "
                                  "values (%s, %s, %s, 7.5)", (A, M, D0 + timedelta(seconds=30)))
            sneak.calls += int(at == "read")
        sneak.calls = 0

        report = await compress.compress_due(conn, NOW, chunk_rows=1000, fail_at=sneak)
        assert report.points == 2 * 1440
        assert await conn.fetchval("select count(*) from telemetry") == 2 * 1440 + 1  # not truncated
        points = await read_points(conn, D0, D0 + timedelta(days=1), [A])
        assert len(points) == 1441 and points.value[0] == 0.0 and points.value[1] == 7.5
        await compress.compress_due(conn, NOW)
        assert await conn.fetchval("select count(*) from telemetry") == 0
        assert await conn.fetchval("select sum(n) from telemetry_segments") == 2 * 1440 + 1
        again = await read_points(conn, D0, D0 + timedelta(days=1), [A])
        assert np.array_equal(again.ts, points.ts) and np.array_equal(again.value, points.value)
    finally:
        await conn.close()


async def test_late_readings_reach_the_hourly_and_daily_rollups(db_url):
    """A day backfilled after the rollup passed it: 24 hourly buckets, also from `from` off
    the hour (the readings before the first whole hour count)."""
    conn = await asyncpg.connect(db_url)
    try:
        await _reset(conn)
        await _insert(conn, [((2 * 86_400 + 1800) * US, 1.0, 0)], keys=(A,))  # one recent point
        await _roll(conn)
        assert await history.rollup_boundary(conn) == D0 + timedelta(days=3) - timedelta(hours=1)
        day = [(m * 60 * US, float(m), 0) for m in range(1440)]
        await _insert(conn, day, keys=(A,))  # day D0, long rolled up
        assert await conn.fetchval("select count(*) from telemetry_dirty") == 24
        # before the next rollup the marked hours are answered from the points
        parts, tier = await bucket_partials(conn, A, M, D0, D0 + timedelta(days=1), timedelta(hours=1))
        assert len(parts.b) == 24 and parts.n.tolist() == [60] * 24
        await _roll(conn)
        assert await conn.fetchval("select count(*) from telemetry_dirty") == 0
        assert len(await _rollups(conn, "telemetry_hourly", A)) == 25
        parts, tier = await bucket_partials(conn, A, M, D0, D0 + timedelta(days=1), timedelta(hours=1))
        assert tier == "hourly" and parts.n.tolist() == [60] * 24
        parts, tier = await bucket_partials(conn, A, M, D0, D0 + timedelta(days=2), timedelta(days=1))
        assert tier == "daily" and parts.n.tolist() == [1440] and parts.values("max") == [1439.0]
        frm = D0 + timedelta(minutes=30)
        parts, tier = await bucket_partials(conn, A, M, frm, D0 + timedelta(hours=3), timedelta(hours=1))
        assert tier == "hourly" and parts.n.tolist() == [30, 60, 60]
        assert parts.values("min") == [30.0, 60.0, 120.0]
        # compressed, then a late reading for it: both the segment and the rollups see it
        await compress.compress_due(conn, NOW)
        await _insert(conn, [(90 * US, 5000.0, 0)], keys=(A,))
        await _roll(conn)
        parts, _ = await bucket_partials(conn, A, M, D0, D0 + timedelta(hours=1), timedelta(hours=1))
        assert parts.n.tolist() == [61] and parts.values("max") == [5000.0]
        parts, _ = await bucket_partials(conn, A, M, D0, D0 + timedelta(days=1), timedelta(days=1))
        assert parts.n.tolist() == [1441]
        latest = await latest_at(conn, D0 + timedelta(minutes=1, seconds=45), [A])
        assert latest.rows() == [(A, M, D0 + timedelta(seconds=90), 5000.0, 0)]
    finally:
        await conn.close()


def test_ioc_compress_compresses_the_closed_days(db_url, monkeypatch, capsys):
    from server.cli.main import main
    from server.settings import choose_data_dir

    for name in ("IOC_CONFIG", "IOC_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IOC_DATABASE_URL", db_url)
    day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)

    async def load(conn):
        await conn.execute("select ioc_ensure_telemetry_partition($1)", day.date())
        await conn.copy_records_to_table("telemetry", records=[
            (A, M, day + timedelta(minutes=i), float(i), 0) for i in range(1440)],
            columns=("device_key", "metric_id", "ts", "value", "quality"))

    async def counts(conn):
        return (await conn.fetchval("select count(*) from telemetry"),
                await conn.fetchval("select sum(n) from telemetry_segments"))

    async def run():
        conn = await asyncpg.connect(db_url)
        try:
            await load(conn)
        finally:
            await conn.close()
    asyncio.run(run())
    try:
        assert main(["compress"]) == 0
        assert f"compressed {day.date()}: 1,440 points into 1 segments" in capsys.readouterr().out
        assert main(["compress"]) == 0
        assert "nothing to compress" in capsys.readouterr().out
    finally:
        choose_data_dir(None)

    async def check():
        conn = await asyncpg.connect(db_url)
        try:
            return await counts(conn)
        finally:
            await conn.close()
    assert asyncio.run(check()) == (0, 1440)
