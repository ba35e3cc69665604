"""The tile LRU and the pure parts of the tile service (no database)."""

from __future__ import annotations

import math

import morecantile
import pytest

from tiles import catalogue, sql
from tiles.cache import ENTRY_OVERHEAD, Entry, TileCache


def entry(n: int, version: int = 1, expires: float = math.inf) -> Entry:
    return Entry(b"x" * n, f'"{n}"', version, expires)


def test_lru_evicts_least_recently_used_within_the_byte_budget():
    cache = TileCache(max_bytes=8 * (1000 + ENTRY_OVERHEAD))
    for i in range(8):
        cache.put(i, entry(1000))
    assert cache.get(0, 1, now=0) is not None  # 0 becomes the most recent
    cache.put(8, entry(1000))
    assert cache.get(1, 1, now=0) is None, "the least recently used entry goes first"
    assert cache.get(0, 1, now=0) is not None
    assert cache.size <= cache.max_bytes
    assert len(cache) == 8


def test_entries_of_another_version_or_expired_are_dropped():
    cache = TileCache(max_bytes=1 << 20)
    cache.put("a", entry(10, version=1))
    assert cache.get("a", 2, now=0) is None
    assert len(cache) == 0 and cache.size == 0
    cache.put("b", entry(10, expires=5.0))
    assert cache.get("b", 1, now=4.9) is not None
    assert cache.get("b", 1, now=5.0) is None
    assert cache.size == 0


def test_a_tile_larger_than_an_eighth_of_the_cache_is_not_kept():
    cache = TileCache(max_bytes=8000)
    cache.put("small", entry(100))
    cache.put("huge", entry(5000))
    assert cache.get("huge", 1, now=0) is None
    assert cache.get("small", 1, now=0) is not None


@pytest.mark.parametrize("z,x,y", [(0, 0, 0), (1, 1, 0), (5, 31, 0), (12, 3252, 1796),
                                   (17, 104075, 57490), (18, 262143, 262143)])
def test_bounds_are_morecantiles_and_the_filter_box_covers_the_buffer(z, x, y):
    b = sql.bounds(z, x, y)
    tms = morecantile.tms.get("WebMercatorQuad")
    xy = tms.xy_bounds(morecantile.Tile(x, y, z))
    assert (b.left, b.bottom, b.right, b.top) == pytest.approx(tuple(xy), rel=0, abs=1e-6)
    ll = tms.bounds(morecantile.Tile(x, y, z))
    assert b.west < ll.left and b.east > ll.right and b.south < ll.bottom and b.north > ll.top
    # the margin is the buffer: 64/4096 of the tile's width on each side
    assert (ll.left - b.west) / (ll.right - ll.left) == pytest.approx(catalogue.BUFFER / catalogue.EXTENT)


def test_dense_point_kinds_aggregate_below_their_detail_zoom():
    layers = catalogue.build([("streetlight", "Streetlight", "Đèn đường", True),
                              ("water_pipe", "Water main", "Đường ống nước", False),
                              ("camera", "Camera", "Camera", True)])
    lamp, pipe, cam = layers["streetlight"], layers["water_pipe"], layers["camera"]
    assert lamp.aggregated(13) and not lamp.aggregated(14)
    assert lamp.live_at(13) and not lamp.live_at(14)
    assert not pipe.aggregated(0) and pipe.simplify()
    assert not cam.aggregated(0) and not cam.simplify()
    assert {"wards", "roads", "alarms", "ward_stats"} <= set(layers)
    q, args = sql.query(lamp, sql.bounds(12, 3252, 1796))
    assert q is sql.DEVICE_GRID and args[0] == "streetlight"
    q, _ = sql.query(lamp, sql.bounds(16, 52034, 28739))
    assert q is sql.DEVICE_POINTS
    q, _ = sql.query(pipe, sql.bounds(12, 3252, 1796))
    assert q is sql.DEVICE_SIMPLIFIED_PROPS
