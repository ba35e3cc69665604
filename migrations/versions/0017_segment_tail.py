"""telemetry_segments.last_value, last_quality: each segment's newest reading (with ts_last)
in plain columns, so the map at an instant after a segment's end reads it without decoding

Revision ID: 0017_segment_tail
Revises: 0016_rule_history
Create Date: 2026-12-05 16:40:00

Segments written before this revision are filled in here, a day at a time, by decoding
them (server/store/compress.py's format, read without importing the server: a migration
must not change when the code does; the newest reading of a segment is its last one, so
the fill decodes only what it needs). A segment left NULL is still answered, by decoding.
"""

import struct
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0017_segment_tail'
down_revision: str | None = '0016_rule_history'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tail(data: bytes) -> tuple[float, int]:
    """The last reading's value and quality of a segment of either format."""
    import numpy as np
    import zstandard

    if data[:4] == b"\x28\xb5\x2f\xfd":  # format 1: one zstd frame of the whole segment
        body = zstandard.ZstdDecompressor().decompress(data)
        _, mode, k, n, r = struct.unpack_from("<BBBxII", body)
        at = 12 + 8 * n
        words = body[at:at + 8 * n]
        qv = struct.unpack_from(f"<{r}h", body, at + 8 * n)
        value = _value(np.frombuffer(words, np.uint8).reshape(8, n).T.copy().view(np.int64).ravel(),
                       mode, k)
        return value, qv[-1]
    _, mode, k, n, r = struct.unpack_from("<BBBxII", data)
    cps = max(0, (n - 1) // 128)
    blocks = -(-n // 128)
    cp_at = 12 + 6 * r
    ends_at = cp_at + 24 * cps
    at = ends_at + 4 * blocks
    ends = struct.unpack_from(f"<{blocks}I", data, ends_at)
    start = ends[-2] if blocks > 1 else 0
    dctx = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    planes = np.frombuffer(dctx.decompress(data[at + start:at + ends[-1]]), np.uint8).reshape(2, 8, 128)
    words = planes[1].T.copy().view(np.int64).ravel()[:n - 128 * (blocks - 1)]
    state = struct.unpack_from("<q", data, cp_at + 24 * (cps - 1) + 16)[0] if cps else 0
    if mode == 1:  # decimals: running sum of zigzagged deltas from the checkpoint
        z = words.view(np.uint64)
        deltas = (z >> np.uint64(1)).view(np.int64) ^ -(words & 1)
        return float(state + int(deltas.sum())) / 10.0 ** k, struct.unpack_from("<h", data, 12 + 2 * (r - 1))[0]
    bits = np.int64(state) ^ np.bitwise_xor.reduce(words)
    return float(np.array([bits]).view(np.float64)[0]), struct.unpack_from("<h", data, 12 + 2 * (r - 1))[0]


def _value(words, mode: int, k: int) -> float:
    """Format 1's last value from all its value words."""
    import numpy as np

    if mode == 1:
        z = words.view(np.uint64)
        return float(int(((z >> np.uint64(1)).view(np.int64) ^ -(words & 1)).sum())) / 10.0 ** k
    return float(np.array([np.bitwise_xor.reduce(words)]).view(np.float64)[0])


def upgrade() -> None:
    op.add_column('telemetry_segments', sa.Column('last_value', sa.Float(), nullable=True))
    op.add_column('telemetry_segments', sa.Column('last_quality', sa.SmallInteger(), nullable=True))
    conn = op.get_bind()
    days = [r[0] for r in conn.execute(sa.text("select distinct day from telemetry_segments order by 1"))]
    for day in days:
        rows = conn.execute(sa.text("select device_key, metric_id, data from telemetry_segments "
                                    "where day = :day"), {"day": day}).fetchall()
        tails = []
        for key, metric, data in rows:
            value, quality = _tail(bytes(data))
            tails.append({"k": key, "m": metric, "day": day, "v": value, "q": quality})
        if tails:
            conn.execute(sa.text("update telemetry_segments set last_value = :v, last_quality = :q "
                                 "where device_key = :k and metric_id = :m and day = :day"), tails)


def downgrade() -> None:
    op.drop_column('telemetry_segments', 'last_quality')
    op.drop_column('telemetry_segments', 'last_value')
