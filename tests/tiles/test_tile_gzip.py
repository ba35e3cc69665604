"""Tiles are gzip-encoded for clients that accept it, compressed once and cached."""

from __future__ import annotations

import gzip

import mapbox_vector_tile

from tests.tiles.test_tiles import a_lamp, api, auth, db, start, tile_at  # noqa: F401 (fixtures)


async def test_tiles_are_gzipped_when_the_client_accepts_it(api, db):  # noqa: F811
    lamp = await a_lamp(db)
    z, x, y = tile_at(lamp["lon"], lamp["lat"], 15)
    url = f"/tiles/streetlight,roads,wards/{z}/{x}/{y}.mvt"

    plain = await api.get(url, headers={**auth(api), "Accept-Encoding": "identity"},
                          auto_decompress=False)
    assert plain.status == 200
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept-Encoding"
    raw = await plain.read()

    for _ in range(2):  # the second answer comes from the cache of compressed tiles
        resp = await api.get(url, headers={**auth(api), "Accept-Encoding": "gzip, deflate, br"},
                             auto_decompress=False)
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Vary"] == "Accept-Encoding"
        body = await resp.read()
        assert body[:2] == b"\x1f\x8b" and len(body) < len(raw)
        # compressed once: one gzip member whose content is the tile, not gzip of gzip
        assert gzip.decompress(body) == raw
        assert set(mapbox_vector_tile.decode(gzip.decompress(body))) == {"streetlight", "roads", "wards"}
    assert resp.headers["ETag"] != plain.headers["ETag"], "each encoding is its own representation"

    again = await api.get(url, auto_decompress=False, headers={
        **auth(api), "Accept-Encoding": "gzip", "If-None-Match": resp.headers["ETag"]})
    assert again.status == 304 and again.headers["Vary"] == "Accept-Encoding"

    refused = await api.get(url, headers={**auth(api), "Accept-Encoding": "gzip;q=0"},
                            auto_decompress=False)
    assert "Content-Encoding" not in refused.headers and await refused.read() == raw
