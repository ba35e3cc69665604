"""Group command targets drawn on a map: devices along a road segment or a drawn line (with a
buffer in metres) and inside a polygon, checked against PostGIS's own answer; bad shapes are
400s that name the field and change nothing."""

from __future__ import annotations

from tests.helpers import aq, auth, running


async def _preview(client, token: str, target: dict) -> tuple[int, dict]:
    resp = await client.post("/api/v1/commands/preview", headers=auth(token),
                             json={"target": target, "name": "set_dim", "args": {"level": 40}})
    return resp.status, await resp.json()


async def test_road_line_and_polygon_targets(city_db_url, make_settings, token_for):
    token = await token_for(city_db_url, "operator")
    [(road, line)] = await aq(city_db_url, """
        select r.id, ST_AsGeoJSON(r.geom) from devices r where r.kind = 'road_segment'
        order by (select count(*) from devices l where l.kind = 'streetlight'
                  and ST_DWithin(l.geom::geography, r.geom::geography, 30)) desc, r.id limit 1""")
    along = "select id from devices where kind = 'streetlight' and ST_DWithin(geom::geography, " \
            "(select geom from devices where id = %s)::geography, %s) order by id"
    near30 = [r[0] for r in await aq(city_db_url, along, road, 30.0)]
    near80 = [r[0] for r in await aq(city_db_url, along, road, 80.0)]
    assert near30 and len(near80) > len(near30)  # the city has lamps along its roads
    [(lon, lat)] = await aq(city_db_url, "select ST_X(geom), ST_Y(geom) from devices "
                                         "where kind = 'streetlight' order by id limit 1")
    d = 0.002
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d],
            [lon - d, lat + d], [lon - d, lat - d]]
    square = {"type": "Polygon", "coordinates": [ring]}
    inside = [r[0] for r in await aq(
        city_db_url, "select id from devices where kind = 'streetlight' and "
                     "ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326)) order by id",
        lon - d, lat - d, lon + d, lat + d)]
    async with running(make_settings(city_db_url)) as client:
        status, p = await _preview(client, token, {"road": road, "within_m": 30})
        assert status == 200 and p["devices"] == near30 and p["count"] == len(near30), p
        status, p = await _preview(client, token, {"road": road})  # 30 m by default
        assert status == 200 and p["devices"] == near30
        status, p = await _preview(client, token, {"geometry": orjson_loads(line), "within_m": 80})
        assert status == 200 and p["devices"] == near80
        status, p = await _preview(client, token, {"geometry": square})
        assert status == 200 and p["devices"] == inside and inside
        ward = (await aq(city_db_url, "select ward from devices where id = %s", inside[0]))[0][0]
        status, p = await _preview(client, token, {"geometry": square, "ward": ward})
        assert status == 200 and 0 < p["count"] <= len(inside)

        bad = [
            ({"road": "RS-NOPE"}, "target.road"),
            ({"road": inside[0]}, "target.road"),  # a lamp is not a road segment
            ({"road": road, "within_m": -1}, "within_m"),
            ({"road": road, "within_m": 5000}, "within_m"),
            ({"geometry": orjson_loads(line)}, "target.within_m"),  # a line needs a buffer
            ({"geometry": {"type": "Point", "coordinates": [lon, lat]}}, "target.geometry"),
            ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}, "target.geometry"),
            ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 95], [1, 1], [0, 0]]]}},
             "target.geometry"),
            ({"geometry": square, "road": road}, "not both"),
            ({"within_m": 10}, "within_m"),
        ]
        for target, words in bad:
            status, p = await _preview(client, token, target)
            assert status == 400 and words in (p["detail"] + str(p.get("errors", ""))), (target, p)
            assert p.get("errors") is None or any(words.split(".")[-1] in e["field"] for e in p["errors"]) \
                or words == "not both", p
    assert (await aq(city_db_url, "select count(*) from commands"))[0][0] == 0


def orjson_loads(text: str) -> dict:
    import orjson
    return orjson.loads(text)
