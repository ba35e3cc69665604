"""OGC API – Features and Tiles at /ogc against the synthetic city in a real PostGIS: the
documents, paging, bbox, datetime, CRS (axis order, reprojection checked with pyproj),
tiles identical to the XYZ ones, and bad input answered 400/404 naming the parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mapbox_vector_tile
import morecantile
import pytest
from pyproj import Transformer

from server.http.app import create_app
from tests.helpers import aexecute, aq

PROBLEM = "application/problem+json"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"


@pytest.fixture
async def api(aiohttp_client, city_db_url, make_settings, token_for):
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    client.token = await token_for(city_db_url, "viewer")
    client.url = city_db_url
    return client


def auth(api, **extra):
    return {"Authorization": f"Bearer {api.token}", **extra}


async def get_json(api, path, params=None, mtype="application/json", **headers):
    resp = await api.get(path, params=params, headers=auth(api, **headers))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].split(";")[0] == mtype.split(";")[0]
    return resp, await resp.json(content_type=None)


async def problem(api, path, params, status, field):
    resp = await api.get(path, params=params, headers=auth(api))
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body = await resp.json()
    assert body["field"] == field and body["detail"], body
    return body


def rel(doc, name, mtype=None):
    found = [lk for lk in doc["links"] if lk["rel"] == name and (mtype is None or lk["type"] == mtype)]
    assert found, f"no {name} link in {doc['links']}"
    return found[0]["href"]


async def test_landing_conformance_and_api_definition(api):
    _, landing = await get_json(api, "/ogc")
    assert rel(landing, "service-desc", "application/vnd.oai.openapi+json;version=3.0").endswith("/ogc/api")
    assert "/ogc/api" in rel(landing, "service-doc", "text/html")
    assert "/ogc/conformance" in rel(landing, "conformance")
    assert "/ogc/collections" in rel(landing, "data", "application/json")

    _, conf = await get_json(api, "/ogc/conformance")
    for cls in ("ogcapi-features-1/1.0/conf/core", "ogcapi-features-1/1.0/conf/geojson",
                "ogcapi-features-1/1.0/conf/oas30", "ogcapi-features-1/1.0/conf/html",
                "ogcapi-features-2/1.0/conf/crs", "ogcapi-tiles-1/1.0/conf/core"):
        assert f"http://www.opengis.net/spec/{cls}" in conf["conformsTo"]

    resp, oas = await get_json(api, "/ogc/api", mtype="application/vnd.oai.openapi+json;version=3.0")
    assert resp.headers["Content-Type"] == "application/vnd.oai.openapi+json;version=3.0"
    assert oas["openapi"].startswith("3.0") and oas["servers"][0]["url"].endswith("/ogc")
    limit = oas["components"]["parameters"]["limit"]["schema"]  # where QGIS reads the page size
    assert limit["default"] == 100 and limit["maximum"] == 10_000
    # every path of the document is served (collectionId filled in with a kind)
    for path in oas["paths"]:
        if "{tileMatrix}" in path or "{featureId}" in path:
            continue
        url = "/ogc" + path.replace("{collectionId}", "camera").replace("{tileMatrixSetId}",
                                                                        "WebMercatorQuad")
        assert (await api.get(url.rstrip("/") or "/ogc", headers=auth(api))).status == 200, url


async def test_html_by_accept_header_or_f(api):
    browser = "text/html,application/xhtml+xml,*/*;q=0.8"
    resp = await api.get("/ogc/collections", headers=auth(api, Accept=browser))
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "<table>" in page and "streetlight" in page
    resp = await api.get("/ogc/collections/camera/items", params={"f": "html", "limit": "2"},
                         headers=auth(api))
    assert resp.content_type == "text/html" and "CAM-" in await resp.text()
    # GDAL's Accept gets JSON; f wins over Accept
    gdal = "application/geo+json, application/json"
    resp = await api.get("/ogc/collections", headers=auth(api, Accept=gdal))
    assert resp.content_type == "application/json"
    resp = await api.get("/ogc/collections", params={"f": "json"}, headers=auth(api, Accept="text/html"))
    assert resp.content_type == "application/json"
    await problem(api, "/ogc/collections", {"f": "xml"}, 400, "f")


async def test_collections_are_the_device_kinds_with_their_extent(api):
    kinds = {r[0] for r in await aq(api.url, "select distinct kind from devices")}
    _, doc = await get_json(api, "/ogc/collections")
    by_id = {c["id"]: c for c in doc["collections"]}
    assert kinds <= set(by_id)
    (w, s, e, n), = await aq(api.url, "select ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) from "
                                      "(select ST_Extent(geom) b from devices where kind = 'camera') x")
    assert by_id["camera"]["extent"]["spatial"]["bbox"][0] == pytest.approx([w, s, e, n])
    _, cam = await get_json(api, "/ogc/collections/camera")
    assert cam["id"] == "camera" and cam["itemType"] == "feature"
    assert CRS84 in cam["crs"] and EPSG + "3857" in cam["crs"] and cam["storageCrs"] == CRS84
    items = rel(cam, "items", "application/geo+json")
    assert items.split("?")[0].endswith("/ogc/collections/camera/items")
    await problem(api, "/ogc/collections/nosuchkind", None, 404, "collectionId")
    await problem(api, "/ogc/collections/nosuchkind/items", None, 404, "collectionId")


async def test_paging_follows_next_links_through_every_feature_once(api):
    total = (await aq(api.url, "select count(*) from devices where kind = 'camera'"))[0][0]
    seen: list[str] = []
    url, params = "/ogc/collections/camera/items", {"limit": "50"}
    pages = 0
    while url:
        _, page = await get_json(api, url, params, mtype="application/geo+json")
        pages += 1
        assert page["numberMatched"] == total and page["numberReturned"] == len(page["features"])
        seen += [f["id"] for f in page["features"]]
        # QGIS follows only a next link typed application/geo+json, and counts by numberMatched
        nxt = [lk["href"] for lk in page["links"]
               if lk["rel"] == "next" and lk["type"] == "application/geo+json"]
        if pages > 1:
            assert any(lk["rel"] == "prev" for lk in page["links"])
        url, params = (nxt[0].split(str(api.make_url("")), 1)[1], None) if nxt else (None, None)
        assert pages < 20
    assert len(seen) == len(set(seen)) == total and pages == -(-total // 50)
    _, default = await get_json(api, "/ogc/collections/streetlight/items", mtype="application/geo+json")
    assert default["numberReturned"] == 100  # the default limit
    for bad in ("0", "10001", "-1", "ten", "1.5"):
        await problem(api, "/ogc/collections/camera/items", {"limit": bad}, 400, "limit")
    await problem(api, "/ogc/collections/camera/items", {"offset": "x"}, 400, "offset")
    await problem(api, "/ogc/collections/camera/items", {"colour": "red"}, 400, "colour")


async def test_bbox_selects_what_postgis_selects(api):
    box = (105.83, 21.58, 105.85, 21.60)
    _, fc = await get_json(api, "/ogc/collections/streetlight/items",
                           {"bbox": ",".join(map(str, box)), "limit": "10000"}, mtype="application/geo+json")
    expected = {r[0] for r in await aq(
        api.url, "select id from devices where kind = 'streetlight' and "
                 "ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))", *box)}
    assert expected and {f["id"] for f in fc["features"]} == expected and fc["numberMatched"] == len(expected)
    # the same box as EPSG:4326 (latitude first) and as EPSG:3857 selects the same devices
    lat_first = f"{box[1]},{box[0]},{box[3]},{box[2]}"
    _, fc4326 = await get_json(api, "/ogc/collections/streetlight/items",
                               {"bbox": lat_first, "bbox-crs": EPSG + "4326", "limit": "10000"},
                               mtype="application/geo+json")
    assert {f["id"] for f in fc4326["features"]} == expected
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = to_merc.transform(box[0], box[1])
    x1, y1 = to_merc.transform(box[2], box[3])
    _, fc3857 = await get_json(api, "/ogc/collections/streetlight/items",
                               {"bbox": f"{x0},{y0},{x1},{y1}", "bbox-crs": EPSG + "3857", "limit": "10000"},
                               mtype="application/geo+json")
    assert {f["id"] for f in fc3857["features"]} == expected
    for bad in ("1,2,3", "a,b,c,d", "105.85,21.58,105.83,21.60", "0,0,200,10", "nan,0,1,1"):
        await problem(api, "/ogc/collections/streetlight/items", {"bbox": bad}, 400, "bbox")
    await problem(api, "/ogc/collections/streetlight/items",
                  {"bbox": "0,0,1,1", "bbox-crs": "EPSG:999999"}, 400, "bbox-crs")
    lamps = (await aq(api.url, "select count(*) from devices where kind = 'streetlight'"))[0][0]
    for crs in ("EPSG:3857", "EPSG:3405"):  # larger than the projection's domain: all of it
        _, fc = await get_json(api, "/ogc/collections/streetlight/items",
                               {"bbox": "-1e300,-1e300,1e300,1e300", "bbox-crs": crs},
                               mtype="application/geo+json")
        assert fc["numberMatched"] == lamps
    await problem(api, "/ogc/collections/streetlight/items",  # UTM 48N's domain ends at 23.4° N
                  {"bbox": "500000,9000000,510000,9100000", "bbox-crs": "EPSG:3405"}, 400, "bbox")


async def test_datetime_filters_on_last_seen(api):
    ids = [r[0] for r in await aq(api.url, "select id from devices where kind = 'camera' "
                                           "order by id limit 3")]
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    for i, dev in enumerate(ids):
        await aexecute(api.url, "insert into device_state (device_key, last_seen, status) "
                                "select key, %s, 'online' from devices where id = %s "
                                "on conflict (device_key) do update set last_seen = excluded.last_seen",
                       t0 + timedelta(hours=i), dev)

    async def matching(value):
        _, fc = await get_json(api, "/ogc/collections/camera/items", {"datetime": value},
                               mtype="application/geo+json")
        return sorted(f["id"] for f in fc["features"])

    assert await matching("2026-12-01T09:00:00Z") == [ids[1]]
    assert await matching("2026-12-01T16:00:00+07:00") == [ids[1]]  # the same instant
    assert await matching("2026-12-01T08:30:00Z/2026-12-01T10:00:00Z") == ids[1:]
    assert await matching("../2026-12-01T09:00:00Z") == ids[:2]
    assert await matching("2026-12-01T09:00:00Z/..") == ids[1:]
    assert await matching("2026-12-01") == ids
    assert await matching("../..") == ids  # devices never heard from have no time
    assert await matching("2026-12-02/..") == []
    for bad in ("yesterday", "2026-12-01T09:00:00", "2026-12-02T00:00:00Z/2026-12-01T00:00:00Z",
                "2026-13-01", "a/b/c", "", "..", "0000-01-01T00:00:00Z", "2026-12-01T09:00:00+25:00"):
        await problem(api, "/ogc/collections/camera/items", {"datetime": bad}, 400, "datetime")


async def test_crs_reprojects_with_the_crs_axis_order(api):
    dev, lon, lat = (await aq(api.url, "select id, ST_X(geom), ST_Y(geom) from devices "
                                       "where kind = 'camera' order by id limit 1"))[0]
    path = f"/ogc/collections/camera/items/{dev}"
    resp, feat = await get_json(api, path, mtype="application/geo+json")
    assert resp.headers["Content-Crs"] == f"<{CRS84}>"
    assert feat["geometry"]["coordinates"] == pytest.approx([lon, lat], abs=1e-6)
    resp, feat = await get_json(api, path, {"crs": EPSG + "4326"}, mtype="application/geo+json")
    assert resp.headers["Content-Crs"] == f"<{EPSG}4326>"
    assert feat["geometry"]["coordinates"] == pytest.approx([lat, lon], abs=1e-6)  # latitude first
    resp, feat = await get_json(api, path, {"crs": EPSG + "3857"}, mtype="application/geo+json")
    assert feat["geometry"]["coordinates"] == pytest.approx(
        list(Transformer.from_crs(4326, 3857, always_xy=True).transform(lon, lat)), abs=0.01)
    assert "crs" not in feat["geometry"]

    _, cam = await get_json(api, "/ogc/collections/camera")
    vn2000 = [c for c in cam["crs"] if c in (EPSG + "3405", EPSG + "9213")]
    in_catalogue = (await aq(api.url, "select count(*) from spatial_ref_sys "
                                      "where srid in (3405, 9213)"))[0][0]
    assert len(vn2000) == in_catalogue >= 1, "PostGIS has a VN-2000 grid for the city; it is offered"
    code = int(vn2000[0].rsplit("/", 1)[1])
    resp, fc = await get_json(api, "/ogc/collections/camera/items", {"crs": vn2000[0], "limit": "1"},
                              mtype="application/geo+json")
    assert resp.headers["Content-Crs"] == f"<{vn2000[0]}>"
    # PostGIS's VN-2000 datum shift (towgs84) and PROJ's agree to a metre
    assert fc["features"][0]["geometry"]["coordinates"] == pytest.approx(
        list(Transformer.from_crs(4326, code, always_xy=True).transform(lon, lat)), abs=1.0)
    await problem(api, path, {"crs": "EPSG:2154"}, 400, "crs")


async def test_one_feature_and_its_errors(api):
    _, feat = await get_json(api, "/ogc/collections/camera/items/CAM-0001", mtype="application/geo+json")
    assert feat["id"] == "CAM-0001" and feat["properties"]["kind"] == "camera"
    assert "adapter_config" not in feat["properties"]
    assert rel(feat, "collection").split("?")[0].endswith("/ogc/collections/camera")
    await problem(api, "/ogc/collections/camera/items/NOPE-1", None, 404, "featureId")
    # a NUL is refused for every path parameter (server/http/validate.py: input_middleware)
    await problem(api, "/ogc/collections/camera/items/a%00b", None, 400, "featureId")
    await problem(api, "/ogc/collections/camera/items/" + "x" * 300, None, 404, "featureId")
    # a device of another kind is not a feature of this collection
    await problem(api, "/ogc/collections/streetlight/items/CAM-0001", None, 404, "featureId")


async def test_a_token_is_needed(api):
    for path in ("/ogc", "/ogc/collections/camera/items", "/ogc/tileMatrixSets"):
        resp = await api.get(path)
        assert resp.status == 401 and resp.content_type == PROBLEM


async def test_tiles_are_the_xyz_tiles_row_before_column(api):
    _, sets = await get_json(api, "/ogc/tileMatrixSets")
    assert [t["id"] for t in sets["tileMatrixSets"]] == ["WebMercatorQuad"]
    _, tms = await get_json(api, "/ogc/tileMatrixSets/WebMercatorQuad")
    assert morecantile.TileMatrixSet.model_validate(tms).id == "WebMercatorQuad"  # a valid TMS 2.0

    _, lists = await get_json(api, "/ogc/collections/streetlight/tiles")
    tileset_url = rel(lists["tilesets"][0], "self")
    assert lists["tilesets"][0]["dataType"] == "vector"
    _, tileset = await get_json(api, tileset_url.split(str(api.make_url("")), 1)[1])
    template = rel(tileset, "item", "application/vnd.mapbox-vector-tile")
    assert template.endswith(
        "/ogc/collections/streetlight/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}")
    limits = {lim["tileMatrix"]: lim for lim in tileset["tileMatrixSetLimits"]}
    z16 = limits["16"]
    assert z16["minTileCol"] < z16["maxTileCol"]  # the city spans several tiles

    lon, lat = (await aq(api.url, "select ST_X(geom), ST_Y(geom) from devices where id = 'SL-000001'"))[0]
    tile = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 16)
    assert tile.x != tile.y
    path = template.split(str(api.make_url("")), 1)[1]
    ogc = await api.get(path.format(tileMatrix=16, tileRow=tile.y, tileCol=tile.x), headers=auth(api))
    assert ogc.status == 200 and ogc.content_type == "application/vnd.mapbox-vector-tile"
    xyz = await api.get(f"/tiles/streetlight/16/{tile.x}/{tile.y}.mvt", headers=auth(api))
    body = await ogc.read()
    assert body == await xyz.read() and ogc.headers["ETag"] == xyz.headers["ETag"]
    ids = {f["properties"]["id"] for f in mapbox_vector_tile.decode(body)["streetlight"]["features"]}
    assert "SL-000001" in ids
    # the dataset's tiles hold a layer per collection
    data = await api.get(f"/ogc/tiles/WebMercatorQuad/16/{tile.y}/{tile.x}", headers=auth(api))
    assert "streetlight" in mapbox_vector_tile.decode(await data.read())

    base = "/ogc/collections/streetlight/tiles"
    await problem(api, f"{base}/WorldCRS84Quad/16/1/1", None, 404, "tileMatrixSetId")
    await problem(api, f"{base}/WebMercatorQuad/x/1/1", None, 400, "tileMatrix")
    await problem(api, f"{base}/WebMercatorQuad/25/1/1", None, 404, "tileMatrix")
    await problem(api, f"{base}/WebMercatorQuad/2/4/1", None, 404, "tileRow")
    await problem(api, f"{base}/WebMercatorQuad/2/1/-1", None, 400, "tileCol")
    await problem(api, "/ogc/collections/nope/tiles/WebMercatorQuad/2/1/1", None, 404, "collectionId")
