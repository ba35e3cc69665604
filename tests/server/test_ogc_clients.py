"""/ogc read by clients no one here wrote: GDAL (Debian's gdal-bin, scripts/setup-system.sh)
through its OAPIF driver and its MVT driver, and owslib (PyPI, the dev extras).

The server is the real app on a real socket (aiohttp's test server); GDAL runs as a child
process and owslib in a worker thread, so the event loop keeps serving them.
"""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest
from owslib.ogcapi.features import Features
from yarl import URL

from server.http.app import create_app
from tests.helpers import aq

BOX = (105.83, 21.58, 105.85, 21.60)


@pytest.fixture
async def live(aiohttp_client, city_db_url, make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    client.token = await token_for(city_db_url, "viewer")
    client.url = city_db_url
    client.landing = str(client.make_url("/ogc"))
    return client


async def gdal(live, tool: str, *args: str) -> str:
    exe = shutil.which(tool)
    assert exe, f"{tool} is missing: GDAL comes with gdal-bin (make system)"
    proc = await asyncio.create_subprocess_exec(
        exe, "--config", "GDAL_HTTP_HEADERS", f"Authorization: Bearer {live.token}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, (err + out).decode()[-3000:]
    return out.decode()


async def in_box(live, kind: str) -> set[str]:
    return {r[0] for r in await aq(
        live.url, "select id from devices where kind = %s and "
                  "ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))", kind, *BOX)}


async def test_gdal_oapif_lists_layers_and_pages_through_a_bbox(live):
    listing = await gdal(live, "ogrinfo", "-ro", "-so", f"OAPIF:{live.landing}")
    layers = set(re.findall(r"^\d+: (\w+)", listing, re.M))
    kinds = {r[0] for r in await aq(live.url, "select distinct kind from devices")}
    assert kinds <= layers, listing

    summary = await gdal(live, "ogrinfo", "-ro", "-so", f"OAPIF:{live.landing}", "camera")
    total = (await aq(live.url, "select count(*) from devices where kind = 'camera'"))[0][0]
    assert f"Feature Count: {total}" in summary  # numberMatched
    assert "Geometry: Point" in summary
    # GDAL's OGCAPI driver on a collection reads its items (through OAPIF) too
    ogcapi = await gdal(live, "ogrinfo", "-ro", "-so", "-oo", "API=ITEMS",
                        f"OGCAPI:{live.landing}/collections/camera", "camera")
    assert f"Feature Count: {total}" in ogcapi

    # A page of 7 cannot hold the box's lamps: GDAL must follow the next links to get them all.
    expected = await in_box(live, "streetlight")
    assert len(expected) > 20
    out = await gdal(live, "ogrinfo", "-ro", "-al", "-q", "-oo", "PAGE_SIZE=7",
                     "-spat", *map(str, BOX), f"OAPIF:{live.landing}", "streetlight")
    got = re.findall(r"^\s+id \(String\) = (\S+)$", out, re.M)
    assert len(got) == len(set(got)) and set(got) == expected


async def test_gdal_reads_a_vector_tile_from_the_tileset_template(live):
    headers = {"Authorization": f"Bearer {live.token}"}
    resp = await live.get("/ogc/collections/streetlight/tiles/WebMercatorQuad", headers=headers)
    meta = await resp.json()
    template = next(lk["href"] for lk in meta["links"]
                    if lk["rel"] == "item" and lk["type"] == "application/vnd.mapbox-vector-tile")
    limits = next(lim for lim in meta["tileMatrixSetLimits"] if lim["tileMatrix"] == "16")
    row, col = limits["minTileRow"], limits["minTileCol"]
    while True:  # the first tile of the city's top row that holds lamps
        url = template.format(tileMatrix=16, tileRow=row, tileCol=col)
        if (await live.get(URL(url).path_qs, headers=headers)).status == 200:
            break
        col += 1
        assert col <= limits["maxTileCol"], "no tile of the top row holds a lamp"
    # GDAL's MVT driver places the features by X (column), Y (row) and Z: they land where the
    # lamps are only if the tile at {tileRow}/{tileCol} is the tile of that row and column.
    # (/vsicurl?url=…&use_head=no: a name ending in …/16/28738/52034 is taken for a path in a
    # directory of tiles, so the URL must not end the name.)
    out = await gdal(live, "ogrinfo", "-ro", "-al", "-q", "-oo", f"X={col}", "-oo", f"Y={row}", "-oo", "Z=16",
                     f"MVT:/vsicurl?url={url}&use_head=no")
    points = re.findall(r"^\s+id \(String\) = (\S+)\n(?:.*\n)*?\s+POINT \(([\d.]+) ([\d.]+)\)", out, re.M)
    assert points, out
    for dev, x, y in points[:20]:
        (mx, my), = await aq(live.url, "select ST_X(p), ST_Y(p) from (select ST_Transform(geom, 3857) p "
                                       "from devices where id = %s) d", dev)
        assert abs(float(x) - mx) < 5 and abs(float(y) - my) < 5, (dev, x, y, mx, my)


async def test_owslib_reads_conformance_collections_and_items(live):
    expected = await in_box(live, "camera")

    def read() -> tuple[dict, dict, dict, dict]:
        api = Features(live.landing, headers={"Authorization": f"Bearer {live.token}"})
        return (api.conformance(), api.collections(),
                api.collection_items("camera", bbox=list(BOX), limit=1000),
                api.collection_items("camera", limit=5))

    conformance, collections, boxed, first = await asyncio.to_thread(read)
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in conformance["conformsTo"]
    assert "camera" in {c["id"] for c in collections["collections"]}
    assert {f["id"] for f in boxed["features"]} == expected and boxed["numberMatched"] == len(expected)
    assert first["numberReturned"] == 5 and any(lk["rel"] == "next" for lk in first["links"])
