"""Closed days of telemetry rewritten as compressed segments, in the same database.

A segment is one device x metric x UTC day (``telemetry_segments``), its points encoded
column by column:

* timestamps (microseconds) as delta-of-delta, zigzagged: one-minute readings are all zeros;
* values as integers when every value of the segment is a decimal with at most
  :data:`MAX_DECIMALS` places (what devices send: 230.4, 0.125), delta-encoded; otherwise
  the float64 bits XOR'd with the previous value's (Gorilla's idea);
* qualities run-length encoded (runs of 0 are the rule).

Format 2 (written since the map at a past instant had to be as fast compressed as raw):
the points in blocks of :data:`BLOCK`, each block's timestamp and value words byte-shuffled
(the mostly-zero high bytes together) and compressed as a zstd frame of its own; before the
frames a plain head: the header, the qualities, a checkpoint per block boundary (the
decoder's state just before the block: timestamp, its delta, the value's running integer
or bits) and where each frame ends. The newest reading at or before an instant then reads
the head in place, counts the checkpoints before the instant and decompresses one block,
instead of the whole day: :func:`latest_upto` does so for many segments at once, the heads
as numpy arrays and the blocks' arithmetic as the rows of one matrix; a block where nothing
changes (all zeros: regular times, one value) is known by its frame and not decompressed.
Format 1 (one zstd frame of the whole day, no checkpoints) is still read; the next fold of
its day rewrites it.

Beside its data, a segment row keeps its newest reading in plain columns (``ts_last``,
``last_value``, ``last_quality``, written with the data in the same COPY): the map at an
instant after the segment's end reads them and decodes nothing (server/store/history.py's
``latest_in_segments``). Segments written before migration 0017 were filled by it; a row
left NULL is decoded.

Decoding gives back exactly the same timestamps, value bits and qualities.

The job (:func:`compress_due`) takes each closed day that still has rows in the row store
and, one transaction per range of devices: deletes that range's rows of the day *returning
them* (so exactly the rows it folds are the rows it removes, whatever ingest does
meanwhile), merges them with the range's existing segments, and writes the segments anew.
Killed at any point, a range is either entirely folded or entirely untouched: nothing is
lost, nothing is stored twice, and running again continues. When a day's partition is
empty it is truncated (not dropped: the ingest writer keeps a partition for late data).
Readings that arrive later for a compressed day land in the row store; reads merge them
(server/store/history.py) and the next run folds them in. A timestamp in both places keeps
the segment's value: the row store keeps the first write of a (device, metric, ts) too.
"""

from __future__ import annotations

import itertools
import logging
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import asyncpg
import numpy as np
import zstandard

logger = logging.getLogger(__name__)

FORMAT = 2  # 1: without checkpoints (read, never written)
BLOCK = 128  # points between checkpoints: a lookup decodes at most this many per segment
MAX_DECIMALS = 6
ZSTD_LEVEL = 9  # segments are written once and read often: spend a little more on ratio
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's binary timestamps count from here
US = 1_000_000
UNIX_OFFSET_US = 946_684_800 * US  # from PG_EPOCH's microseconds to Unix ones
DAY_US = 86_400 * US
COMPRESS_LOCK = 0x10C_0002  # pg_advisory_lock key: one compression run at a time
CHUNK_ROWS = 1_000_000  # points folded per transaction (about 100 MB of memory)

_HEADER = struct.Struct("<BBBxII")  # format, value mode, decimals, -, points, quality runs
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # format 1 is one plain zstd frame
_BLOCK_BYTES = 16 * BLOCK  # a block's 8 byte planes of timestamps and 8 of values
_XOR, _DECIMAL = 0, 1
_SCALES = [10.0 ** k for k in range(MAX_DECIMALS + 1)]
# Format 2's frames go without zstd's magic number (4 bytes, a dozen times a segment) and
# checksum; their content size stays (the decompressor needs it).
_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    ZSTD_LEVEL, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_checksum=False,
    write_content_size=True)
_zstd = threading.local()  # zstd contexts are not thread-safe: lookups decode in worker threads


def _cctx() -> zstandard.ZstdCompressor:
    if not hasattr(_zstd, "c"):
        _zstd.c = zstandard.ZstdCompressor(compression_params=_PARAMS)
    return _zstd.c


def _dctx() -> zstandard.ZstdDecompressor:
    if not hasattr(_zstd, "d"):
        _zstd.d = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    return _zstd.d


def _dctx_v1() -> zstandard.ZstdDecompressor:
    if not hasattr(_zstd, "d1"):
        _zstd.d1 = zstandard.ZstdDecompressor()
    return _zstd.d1



# ---------------------------------------------------------------- the codec
def _shuffle(words: np.ndarray) -> bytes:
    return words.view(np.uint8).reshape(-1, 8).T.tobytes()


def _unshuffle(buf: bytes | memoryview, n: int) -> np.ndarray:
    return np.frombuffer(buf, np.uint8, 8 * n).reshape(8, n).T.copy().view(np.int64).ravel()


def _zigzag(x: np.ndarray) -> np.ndarray:
    return (x << 1) ^ (x >> 63)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    sign = z & 1
    np.negative(sign, out=sign)
    out = (z.view(np.uint64) >> np.uint64(1)).view(np.int64)
    out ^= sign
    return out


def _decimals(v: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(k, v x 10^k as int64) if every value is exactly a k-decimal number, else None."""
    bits = v.view(np.uint64)
    for k, scale in enumerate(_SCALES):
        with np.errstate(invalid="ignore", over="ignore"):
            q = np.rint(v * scale)
            if not np.all(np.abs(q) < 2.0 ** 53):  # also False for NaN and infinities
                return None
            qi = q.astype(np.int64)  # via int64 as decode() goes: -0.0 comes back as 0.0
            if np.array_equal((qi.astype(np.float64) / scale).view(np.uint64), bits):
                return k, qi
    return None


def encode(ts: np.ndarray, value: np.ndarray, quality: np.ndarray) -> bytes:
    """One segment: ``ts`` int64 microseconds (ascending), ``value`` float64, ``quality`` int16."""
    n = len(ts)
    delta = np.diff(ts, prepend=0)
    dod = np.diff(delta, prepend=0)
    dec = _decimals(value)
    if dec is not None:
        mode, k, state = _DECIMAL, dec[0], dec[1]
        words = _zigzag(np.diff(state, prepend=0))
    else:
        mode, k, state = _XOR, 0, value.view(np.int64)
        words = state ^ np.concatenate(([0], state[:-1]))
    starts = group_starts(quality)
    runs = np.diff(starts, append=n).astype(np.uint32)
    # after the last point of each block but the last: what decoding the next block needs
    last = np.arange(BLOCK - 1, n - 1, BLOCK)
    checkpoints = np.stack([ts[last], delta[last], state[last]], axis=1).astype("<i8")
    blocks = -(-n // BLOCK)
    cols = np.zeros((blocks, 2, BLOCK), np.int64)  # the last block padded with zeros
    cols[:, 0].flat[:n] = _zigzag(dod)
    cols[:, 1].flat[:n] = words
    # byte planes within each block: the mostly-zero high bytes of the words lie together
    planes = cols.view(np.uint8).reshape(blocks, 2, BLOCK, 8).transpose(0, 1, 3, 2)
    cctx = _cctx()
    frames = [cctx.compress(b) for b in planes.reshape(blocks, _BLOCK_BYTES)]
    ends = np.cumsum([len(f) for f in frames]).astype("<u4")
    # the head stays uncompressed: a lookup reads it in place, then decompresses one block
    return b"".join((_HEADER.pack(FORMAT, mode, k, n, len(starts)),
                     quality[starts].astype("<i2").tobytes(), runs.tobytes(),
                     checkpoints.tobytes(), ends.tobytes(), *frames))


def _checkpoints(n):
    """How many checkpoints a segment of ``n`` points holds (one per block after the first);
    ``n`` an int or an array of them."""
    return np.maximum(0, (n - 1) // BLOCK)


def _layout(n, r):
    """Offsets in a format-2 segment of the qualities, the checkpoints, the block frames'
    ends and the block frames (``n`` points, ``r`` quality runs: ints or arrays of them)."""
    q_at = _HEADER.size
    cp_at = q_at + 6 * r
    ends_at = cp_at + 24 * _checkpoints(n)
    return q_at, cp_at, ends_at, ends_at + 4 * -(-n // BLOCK)


def _words(planes: np.ndarray) -> np.ndarray:
    """(blocks, 2, 8, BLOCK) byte planes → (blocks, 2, BLOCK) int64 words."""
    m = len(planes)
    return np.ascontiguousarray(planes.transpose(0, 1, 3, 2)).view(np.int64).reshape(m, 2, BLOCK)


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts int64 µs, value float64, quality int16) of one segment."""
    if data[:4] == _ZSTD_MAGIC:
        return _decode_v1(memoryview(_dctx_v1().decompress(data)))
    fmt, mode, k, n, r = _HEADER.unpack_from(data)
    if fmt != FORMAT:
        raise ValueError(f"unknown telemetry segment format {fmt}")
    q_at, _, ends_at, at = _layout(n, r)
    blocks = -(-n // BLOCK)
    ends = np.frombuffer(data, "<u4", blocks, ends_at).tolist()
    view = memoryview(data)
    dctx = _dctx()
    body = b"".join(dctx.decompress(view[at + a:at + b]) for a, b in itertools.pairwise([0, *ends]))
    w = _words(np.frombuffer(body, np.uint8).reshape(blocks, 2, 8, BLOCK))
    ts = np.cumsum(np.cumsum(_unzigzag(w[:, 0].ravel()[:n])))
    words = w[:, 1].ravel()[:n]
    if mode == _DECIMAL:
        value = np.cumsum(_unzigzag(words)).astype(np.float64) / _SCALES[k]
    else:
        value = np.bitwise_xor.accumulate(words).view(np.float64)
    quality = np.repeat(np.frombuffer(data, "<i2", r, q_at),
                        np.frombuffer(data, "<u4", r, q_at + 2 * r)).astype(np.int16)
    return ts, value, quality


def _decode_v1(body: memoryview) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Format 1: one zstd frame, the columns' byte planes over the whole segment."""
    fmt, mode, k, n, r = _HEADER.unpack_from(body)
    if fmt != 1:
        raise ValueError(f"unknown telemetry segment format {fmt}")
    at = _HEADER.size
    ts = np.cumsum(np.cumsum(_unzigzag(_unshuffle(body[at:], n))))
    at += 8 * n
    words = _unshuffle(body[at:], n)
    at += 8 * n
    if mode == _DECIMAL:
        value = np.cumsum(_unzigzag(words)).astype(np.float64) / _SCALES[k]
    else:
        value = np.bitwise_xor.accumulate(words).view(np.float64)
    qv = np.frombuffer(body[at:], "<i2", r)
    runs = np.frombuffer(body[at + 2 * r:], "<u4", r)
    quality = np.repeat(qv, runs).astype(np.int16)
    return ts, value, quality


_MATRIX_ROWS = 512  # blocks decoded as one matrix: its work arrays (~2 MB) stay in the cache
_MAGIC_LE = int.from_bytes(_ZSTD_MAGIC, "little")


def _at(buf: np.ndarray, offsets: np.ndarray, dtype: str) -> np.ndarray:
    """The little-endian numbers of ``dtype`` at byte ``offsets`` of ``buf`` (any alignment)."""
    size = np.dtype(dtype).itemsize
    return buf[offsets[:, None] + np.arange(size)].view(dtype).ravel()


_ZERO_FRAME = _cctx().compress(bytes(_BLOCK_BYTES))  # a block of zeros, as encode() writes it
_ZERO_BYTES = np.frombuffer(_ZERO_FRAME, np.uint8)


def latest_upto(segments: list[bytes], limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                            np.ndarray]:
    """For each segment, its newest reading with ``ts <= limit`` (µs): ``(found, ts, value,
    quality)``, arrays in the segments' order (``found`` False: every reading is later).

    The same answer as searching :func:`decode`'s output, for a fraction of the work: the
    heads of all segments are read in place as numpy arrays (header, checkpoints' timestamps
    counted against ``limit``, frame ends), the one block holding each answer decompressed,
    and the blocks decoded together, from their checkpoints, as the rows of a matrix. No
    Python work per segment but the decompression call (a state?at= over a city reads one
    segment per device and metric: the loop per segment was most of its time).
    """
    lens = np.fromiter(map(len, segments), np.int64, len(segments))
    off = np.zeros(len(segments), np.int64)
    np.cumsum(lens[:-1], out=off[1:])
    return _latest_upto_in(b"".join(segments), off, lens, limit)


def _latest_upto_in(whole: bytes, off: np.ndarray, lens: np.ndarray,
                   limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`latest_upto` of the segments at byte offsets ``off`` (``lens`` bytes each) of
    ``whole`` (the segments laid end to end)."""
    count = len(off)
    found = np.zeros(count, bool)
    out_ts = np.zeros(count, np.int64)
    out_v = np.zeros(count, np.float64)
    out_q = np.zeros(count, np.int16)
    if not count:
        return found, out_ts, out_v, out_q
    buf = np.frombuffer(whole, np.uint8)
    v1 = _at(buf, off, "<u4") == _MAGIC_LE
    for i in np.flatnonzero(v1).tolist():  # format 1: the whole segment (one zstd frame)
        t, v, q = decode(whole[off[i]:off[i] + lens[i]])
        j = int(np.searchsorted(t, limit, side="right")) - 1
        if j >= 0:
            found[i], out_ts[i], out_v[i], out_q[i] = True, t[j], v[j], q[j]
    idx = np.flatnonzero(~v1)
    if not len(idx):
        return found, out_ts, out_v, out_q
    off = off[idx]
    if np.any(buf[off] != FORMAT):
        raise ValueError(f"unknown telemetry segment format {set(buf[off].tolist()) - {FORMAT}}")
    mode, k = buf[off + 1].astype(np.int64), buf[off + 2].astype(np.int64)
    n, r = _at(buf, off + 4, "<u4").astype(np.int64), _at(buf, off + 8, "<u4").astype(np.int64)
    q_at, cp_at, ends_at, at = (off + x for x in _layout(n, r))
    cps = _checkpoints(n)
    # the block holding the answer: how many checkpoints (ascending) are at or before limit
    owner = np.repeat(np.arange(len(idx)), cps)
    nth = np.arange(len(owner)) - np.repeat(np.cumsum(cps) - cps, cps)
    b = np.bincount(owner, weights=_at(buf, cp_at[owner] + 24 * nth, "<i8") <= limit,
                    minlength=len(idx)).astype(np.int64)
    # the decoder's state before that block: its checkpoint (none before the first block)
    has = np.flatnonzero(b > 0)
    t0, d0, s0 = (np.zeros(len(idx), np.int64) for _ in range(3))
    start = at.copy()
    prev = cp_at[has] + 24 * (b[has] - 1)
    t0[has], d0[has], s0[has] = (_at(buf, prev + 8 * f, "<i8") for f in range(3))
    start[has] += _at(buf, ends_at[has] + 4 * (b[has] - 1), "<u4")
    end = at + _at(buf, ends_at + 4 * b, "<u4")
    size = np.minimum(BLOCK, n - b * BLOCK)
    first = b * BLOCK
    ok = np.zeros(len(idx), bool)
    ts = np.zeros(len(idx), np.int64)
    value = np.zeros(len(idx), np.float64)
    index = np.zeros(len(idx), np.int64)
    # A block where nothing changes (regular timestamps, the same value: a lamp by day) is
    # all zeros, whose frame is known: answered from its checkpoint, not decompressed.
    still = (end - start == len(_ZERO_FRAME)) & (b > 0)
    maybe = np.flatnonzero(still)
    if len(maybe):
        still[maybe] = (buf[start[maybe, None] + np.arange(len(_ZERO_FRAME))] == _ZERO_BYTES).all(axis=1)
    z = np.flatnonzero(still)
    if len(z):
        jz, ts[z] = _on_grid(t0[z], d0[z], size[z], limit)
        index[z] = first[z] + jz
        ok[z] = True  # after a checkpoint: at least the checkpoint's own point
        value[z] = np.where(mode[z] == _DECIMAL, s0[z].astype(np.float64) / np.array(_SCALES)[k[z]],
                            s0[z].view(np.float64))
    rest = np.flatnonzero(~still)
    view = memoryview(whole)
    frames = [view[a:e] for a, e in zip(start[rest].tolist(), end[rest].tolist(), strict=True)]
    dctx = _dctx()
    for c in range(0, len(rest), _MATRIX_ROWS):
        part = rest[c:c + _MATRIX_ROWS]
        blocks = b"".join(map(dctx.decompress, frames[c:c + _MATRIX_ROWS]))
        ok[part], ts[part], value[part], index[part] = _latest_in_blocks(
            blocks, t0[part], d0[part], s0[part], mode[part], k[part], size[part], first[part],
            limit)
    found[idx], out_ts[idx], out_v[idx] = ok, ts, value
    # qualities: one run (the rule) is read in place; several are searched
    one = r == 1
    out_q[idx[one]] = _at(buf, q_at[one], "<i2")
    for s in np.flatnonzero(~one & ok).tolist():
        qv = np.frombuffer(whole, "<i2", r[s], q_at[s])
        ends = np.cumsum(np.frombuffer(whole, "<u4", r[s], q_at[s] + 2 * r[s]))
        out_q[idx[s]] = qv[int(np.searchsorted(ends, index[s], side="right"))]
    return found, out_ts, out_v, out_q


def _on_grid(t0: np.ndarray, d0: np.ndarray, size: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """In blocks whose timestamps are t0 + d0, t0 + 2 d0, … (``size`` of them): the index of
    the newest at or before ``limit`` and its timestamp (index -1: the checkpoint's own point,
    at t0)."""
    j = np.minimum((limit - t0) // d0 - 1, size - 1)
    return j, t0 + (j + 1) * d0


def _latest_in_blocks(blocks: bytes, t0: np.ndarray, d0: np.ndarray, s0: np.ndarray,
                      mode: np.ndarray, k: np.ndarray, size: np.ndarray, first: np.ndarray,
                      limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One block of each of many segments, decoded together: per block its newest point at
    or before ``limit``, else the checkpoint's own point (the one just before the block).
    ``t0, d0, s0``: the state before each block (timestamp, its delta, the value's integer or
    bits); ``size``: its points; ``first``: its first point's index in the segment.
    Returns (found, ts, value, index in the segment: -1 when nothing is that old)."""
    m = len(t0)
    planes = np.frombuffer(blocks, np.uint8).reshape(m, 2, 8, BLOCK)
    j = np.empty(m, np.int64)  # the newest point at or before limit in the block, or -1
    out_ts = np.empty(m, np.int64)
    # A regular block (every delta-of-delta 0: one-minute readings, the rule) after a
    # checkpoint needs no decoding of its timestamps: they are t0 + d0, t0 + 2 d0, ...
    regular = (d0 > 0) & ~planes[:, 0].reshape(m, 8 * BLOCK).any(axis=1)
    reg = np.flatnonzero(regular)
    if len(reg):
        j[reg], out_ts[reg] = _on_grid(t0[reg], d0[reg], size[reg], limit)
    irr = np.flatnonzero(~regular)
    if len(irr):
        words = np.ascontiguousarray(planes[irr, 0].transpose(0, 2, 1)).view(np.int64)
        ts = np.cumsum(_unzigzag(words.reshape(len(irr), BLOCK)), axis=1)
        ts += d0[irr, None]
        ts = np.cumsum(ts, axis=1, out=ts)
        ts += t0[irr, None]
        ts[np.arange(BLOCK)[None, :] >= size[irr, None]] = np.iinfo(np.int64).max  # the padding
        ji = np.count_nonzero(ts <= limit, axis=1) - 1
        j[irr] = ji
        out_ts[irr] = np.where(ji >= 0, ts[np.arange(len(irr)), np.maximum(ji, 0)], t0[irr])
    # (m, BLOCK): the values' words of every block
    w = np.ascontiguousarray(planes[:, 1].transpose(0, 2, 1)).view(np.int64).reshape(m, BLOCK)
    at = np.maximum(j, 0)
    dec = mode == _DECIMAL
    state = s0.copy()
    d_rows = np.flatnonzero(dec & (j >= 0))
    if len(d_rows):
        acc = np.cumsum(_unzigzag(w[d_rows]), axis=1)[np.arange(len(d_rows)), at[d_rows]]
        state[d_rows] += acc
    x_rows = np.flatnonzero(~dec & (j >= 0))
    if len(x_rows):
        bits = np.bitwise_xor.accumulate(w[x_rows], axis=1)[np.arange(len(x_rows)), at[x_rows]]
        state[x_rows] ^= bits
    value = state.view(np.float64).copy()
    value[dec] = state[dec].astype(np.float64) / np.array(_SCALES)[k[dec]]
    index = first + j  # j = -1: the checkpoint's point (index first - 1), none if first = 0
    return index >= 0, out_ts, value, index


# ---------------------------------------------------------------- points in bulk
# COPY ... (format binary) of (device_key int4, metric_id int2, ts timestamptz, value float8,
# quality int2): every row is 46 bytes, so numpy reads them without a Python loop.
ROW = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("device", ">i4"), ("l2", ">i4"), ("metric", ">i2"),
                ("l3", ">i4"), ("ts", ">i8"), ("l4", ">i4"), ("value", ">f8"), ("l5", ">i4"),
                ("quality", ">i2")])
COPY_HEADER = 19  # signature (11), flags (4), header extension length (4)


@dataclass
class Points:
    """Readings as columns; ``ts`` in microseconds since 2000-01-01 UTC (PostgreSQL's)."""

    device: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    metric: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))
    ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    value: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    quality: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))

    def __len__(self) -> int:
        return len(self.ts)

    def rows(self) -> list[tuple[int, int, datetime, float, int]]:
        """(device_key, metric_id, ts, value, quality) tuples, ts as an aware datetime."""
        return [(d, m, from_us(t), v, q) for d, m, t, v, q in zip(
            self.device.tolist(), self.metric.tolist(), self.ts.tolist(), self.value.tolist(),
            self.quality.tolist(), strict=True)]

    def take(self, idx) -> Points:
        return Points(self.device[idx], self.metric[idx], self.ts[idx], self.value[idx],
                      self.quality[idx])

    @staticmethod
    def concat(parts: list[Points]) -> Points:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return Points()
        return Points(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("device", "metric", "ts", "value", "quality")))


def parse_copy(buf: bytes) -> Points:
    n = (len(buf) - COPY_HEADER - 2) // ROW.itemsize
    if n <= 0:
        return Points()
    rows = np.frombuffer(buf, ROW, n, COPY_HEADER)
    return Points(rows["device"].astype(np.int32), rows["metric"].astype(np.int16),
                  rows["ts"].astype(np.int64), rows["value"].astype(np.float64),
                  rows["quality"].astype(np.int16))


async def copy_points(conn: asyncpg.Connection, query: str, *args) -> Points:
    """Run ``query`` (selecting device_key, metric_id, ts, value, quality) through binary COPY."""
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await conn.copy_from_query(query, *args, output=sink, format="binary")
    return parse_copy(b"".join(chunks))


def to_us(at: datetime) -> int:
    d = at - PG_EPOCH
    return (d.days * 86_400 + d.seconds) * US + d.microseconds


def from_us(us: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=int(us))


def group_starts(*keys: np.ndarray) -> np.ndarray:
    """Indices where any of ``keys`` (sorted together) changes, starting with 0."""
    n = len(keys[0])
    if n == 0:
        return np.empty(0, np.int64)
    change = np.zeros(n, bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def merge(first: Points, second: Points) -> Points:
    """Both sets sorted by (device, metric, ts), one reading per key; ``first`` wins a tie."""
    if not len(second):
        return first
    if not len(first):
        return second
    both = Points.concat([first, second])
    tier = np.concatenate([np.zeros(len(first), np.int8), np.ones(len(second), np.int8)])
    order = np.lexsort((tier, both.ts, both.metric, both.device))
    p = both.take(order)
    return p.take(group_starts(p.device, p.metric, p.ts))


def sort_unique(p: Points) -> Points:
    order = np.lexsort((p.ts, p.metric, p.device))
    p = p.take(order)
    return p.take(group_starts(p.device, p.metric, p.ts))


def decode_segments(rows) -> Points:
    """Records of (device_key, metric_id, data) → their points, in the records' order."""
    parts = []
    for r in rows:
        ts, value, quality = decode(r["data"])
        n = len(ts)
        parts.append(Points(np.full(n, r["device_key"], np.int32),
                            np.full(n, r["metric_id"], np.int16), ts, value, quality))
    return Points.concat(parts)


def encode_points(p: Points, day: date) -> list[tuple]:
    """Sorted points of one day → ``telemetry_segments`` records, one per device x metric."""
    starts = group_starts(p.device, p.metric)
    ends = np.append(starts[1:], len(p))
    out = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        ts = p.ts[s:e]
        out.append((int(p.device[s]), int(p.metric[s]), day, e - s, from_us(ts[0]), from_us(ts[-1]),
                    encode(ts, p.value[s:e], p.quality[s:e]), float(p.value[e - 1]),
                    int(p.quality[e - 1])))
    return out


# ---------------------------------------------------------------- the job
# last_value, last_quality: the reading at ts_last, for lookups after the segment's end
SEGMENT_COLS = ("device_key", "metric_id", "day", "n", "ts_first", "ts_last", "data", "last_value",
                "last_quality")


@dataclass
class Report:
    days: list[date] = field(default_factory=list)
    points: int = 0  # readings moved out of the row store
    segments: int = 0  # segments written
    seconds: float = 0.0
    encode_seconds: float = 0.0  # of which encoding (CPU only)


def closed_before(now: datetime, compress_after_days: int) -> date:
    """Days strictly before this one are closed and due."""
    return (now - timedelta(days=compress_after_days)).date()


async def due_days(conn: asyncpg.Connection, before: date) -> list[date]:
    """Closed days whose partition still holds rows (from the catalogue, then one probe each)."""
    parts = await conn.fetch(
        """select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
           where i.inhparent = 'telemetry'::regclass and c.relname ~ '^telemetry_p[0-9]{8}$'
           order by 1""")
    days = []
    for r in parts:
        day = datetime.strptime(r["relname"][11:], "%Y%m%d").date()
        if day < before and await conn.fetchval(f'select exists (select 1 from "{r["relname"]}")'):
            days.append(day)
    return days


async def compress_due(conn: asyncpg.Connection, now: datetime | None = None, *,
                       compress_after_days: int = 1, device_keys: list[int] | None = None,
                       chunk_rows: int = CHUNK_ROWS,
                       fail_at: Callable[[str], None] | None = None) -> Report:
    """Compress every closed day that has rows in the row store (``ioc compress``).

    ``device_keys`` limits it to those devices (tests compare them with others left raw);
    ``fail_at(step)`` is called between steps and may raise (tests of crash safety).
    """
    now = now or datetime.now(UTC)
    report = Report()
    t0 = time.perf_counter()
    got = await conn.fetchval("select pg_try_advisory_lock($1)", COMPRESS_LOCK)
    if not got:
        logger.info("compression: another run holds the lock; skipped")
        return report
    try:
        for day in await due_days(conn, closed_before(now, compress_after_days)):
            await _compress_day(conn, day, report, device_keys, chunk_rows, fail_at)
            report.days.append(day)
    finally:
        await conn.execute("select pg_advisory_unlock($1)", COMPRESS_LOCK)
    report.seconds = time.perf_counter() - t0
    if report.points:
        logger.info("compression: %d points of %s into %d segments in %.1f s", report.points,
                    ", ".join(map(str, report.days)), report.segments, report.seconds)
    return report


async def _ranges(conn: asyncpg.Connection, part: str, chunk_rows: int,
                  device_keys: list[int] | None) -> list[tuple[int, int]]:
    """Device key ranges [lo, hi) holding about ``chunk_rows`` of the partition each (the
    first and last open-ended), or one per key of ``device_keys``."""
    if device_keys is not None:
        keys = sorted(set(device_keys))
        return [(k, k + 1) for k in keys]
    lo, hi = await conn.fetchrow(f'select min(device_key), max(device_key) from "{part}"')
    if lo is None:
        return []
    # rows: the planner's count, or from the size (never analysed: ~70 bytes a row)
    rows = await conn.fetchval("select greatest(reltuples, relpages * 8192 / 70.0, 1) from pg_class "
                               "where relname = $1", part)
    per_key = max(rows / (hi - lo + 1), 1.0)
    step = max(1, int(chunk_rows / per_key))
    edges = [-2**31, *range(lo + step, hi + 1, step), 2**31]
    return list(itertools.pairwise(edges))


PACKED = np.dtype([("device", "<i4"), ("metric", "<i2"), ("ts", "<i8"), ("value", "<f8"),
                   ("quality", "<i2")])


class _Spill:
    """One pass over a partition (a COPY of all of it), its rows sorted out by device key
    range into a file per range: the heap is read once, whatever the number of ranges, and
    memory holds one COPY chunk at a time."""

    def __init__(self, ranges: list[tuple[int, int]], directory: str) -> None:
        self.edges = np.array([r[0] for r in ranges] + [ranges[-1][1]], np.int64)
        self.paths = [f"{directory}/{i}.rows" for i in range(len(ranges))]
        self.files = [open(p, "wb") for p in self.paths]
        self.counts = [0] * len(ranges)
        self.pending = b""
        self.started = False

    async def sink(self, chunk: bytes) -> None:
        buf = self.pending + chunk
        at = 0
        if not self.started:
            if len(buf) < COPY_HEADER:
                self.pending = buf
                return
            at, self.started = COPY_HEADER, True
        n = (len(buf) - at) // ROW.itemsize
        self.pending = buf[at + n * ROW.itemsize:]  # a part row, or the trailer at the end
        if not n:
            return
        rows = np.frombuffer(buf, ROW, n, at)
        packed = np.empty(n, PACKED)
        for f in PACKED.names:
            packed[f] = rows[f]
        which = np.searchsorted(self.edges, packed["device"], side="right") - 1
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(self.files) + 1))
        packed = packed[order]
        for i in np.flatnonzero(np.diff(bounds)):
            packed[bounds[i]:bounds[i + 1]].tofile(self.files[i])
            self.counts[i] += int(bounds[i + 1] - bounds[i])

    def close(self) -> None:
        for f in self.files:
            f.close()

    def points(self, i: int) -> Points:
        rows = np.fromfile(self.paths[i], PACKED)
        return Points(rows["device"].copy(), rows["metric"].copy(), rows["ts"].copy(),
                      rows["value"].copy(), rows["quality"].copy())


async def _compress_day(conn: asyncpg.Connection, day: date, report: Report,
                        device_keys: list[int] | None, chunk_rows: int,
                        fail_at: Callable[[str], None] | None) -> None:
    """Fold the day's row store into its segments, a range of devices per transaction.

    The whole day (the server's runs): the partition is read once (into a temporary file
    per range of devices), each range folded in a transaction of its own, and the partition
    truncated at the end if it holds exactly the rows folded (checked under a short
    exclusive lock of this partition only): no row is deleted one by one, so no WAL per
    row. Killed before the truncate, the folded rows are in both places; reads merge them as
    one, and the next run folds them again into the same segments.

    Some devices only (``device_keys``): their rows are deleted as they are folded.
    """
    part = f"telemetry_p{day:%Y%m%d}"
    step = fail_at or (lambda _: None)
    cols = "device_key, metric_id, ts, value, quality"
    ranges = await _ranges(conn, part, chunk_rows, device_keys)
    if not ranges:
        return
    if device_keys is not None:
        for k0, k1 in ranges:
            async with conn.transaction():
                raw = await copy_points(conn, f'delete from "{part}" where device_key >= $1 '
                                              f"and device_key < $2 returning {cols}", k0, k1)
                step("deleted")
                if len(raw):
                    await _fold(conn, day, raw, report, step)
        return
    with tempfile.TemporaryDirectory(prefix="ioc-compress-") as tmp:
        spill = _Spill(ranges, tmp)
        try:
            await conn.copy_from_query(f'select {cols} from "{part}"', output=spill.sink,
                                       format="binary")
        finally:
            spill.close()
        step("read")
        for i, n in enumerate(spill.counts):
            if n:
                async with conn.transaction():
                    await _fold(conn, day, spill.points(i), report, step)
        await _empty(conn, part, sum(spill.counts), step)


async def _fold(conn: asyncpg.Connection, day: date, raw: Points, report: Report,
                step: Callable[[str], None]) -> None:
    """Rows of the day (any order) merged into the segments of their series."""
    t = time.perf_counter()
    raw = sort_unique(raw)
    starts = group_starts(raw.device, raw.metric)
    old = await conn.fetch(
        """delete from telemetry_segments s using unnest($2::int[], $3::smallint[]) as k(d, m)
           where s.day = $1 and s.device_key = k.d and s.metric_id = k.m
           returning s.device_key, s.metric_id, s.n, s.data""",
        day, raw.device[starts].tolist(), raw.metric[starts].tolist())
    t1 = time.perf_counter()
    old = sorted(old, key=lambda r: (r["device_key"], r["metric_id"]))
    merged = merge(decode_segments(old), raw)
    records = encode_points(merged, day)
    t2 = time.perf_counter()
    report.encode_seconds += (t1 - t) + (t2 - t1)
    step("encoded")
    await conn.copy_records_to_table("telemetry_segments", records=records, columns=SEGMENT_COLS)
    step("written")
    await _count(conn, "compressed_points", len(merged) - sum(r["n"] for r in old))
    step("counted")
    report.points += len(raw)
    report.segments += len(records)


async def _empty(conn: asyncpg.Connection, part: str, folded: int,
                 step: Callable[[str], None]) -> None:
    """Truncate the partition if it holds only the ``folded`` rows; rows that arrived
    meanwhile, or a lock not had within a second, leave it for the next run."""
    try:
        async with conn.transaction():
            await conn.execute("set local lock_timeout = '1s'")
            await conn.execute(f'lock table "{part}" in access exclusive mode')
            step("locked")
            left = await conn.fetchval(f'select count(*) from "{part}"')
            if left == folded:
                await conn.execute(f'truncate "{part}"')
                step("truncated")
            else:
                logger.info("compression: %s got %d readings meanwhile; folded next run", part,
                            left - folded)
    except asyncpg.LockNotAvailableError:
        logger.info("compression: %s busy; emptied next run", part)


async def _count(conn: asyncpg.Connection, key: str, delta: int) -> None:
    """A running total in ioc_meta, changed in the transaction that changes the data."""
    await conn.execute(
        """insert into ioc_meta (key, value, updated_at) values ($1, to_jsonb($2::bigint), now())
           on conflict (key) do update
           set value = to_jsonb(ioc_meta.value::bigint + $2::bigint), updated_at = now()""",
        key, delta)


async def drop_before(conn: asyncpg.Connection, cutoff: date) -> int:
    """Retention: segments of days before ``cutoff``."""
    async with conn.transaction():
        n = await conn.fetchval(
            "with d as (delete from telemetry_segments where day < $1 returning n) "
            "select coalesce(sum(n), 0)::bigint from d", cutoff)
        if n:
            await _count(conn, "compressed_points", -n)
    return n
