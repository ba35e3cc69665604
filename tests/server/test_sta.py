"""/sta/v1.1 (SensorThings API 1.1, read side) against the real stack, read by a client no
one here wrote: Fraunhofer IOSB's ``frost-sta-client`` (PyPI, the dev extras), in a worker
thread while the app serves it on a real socket.

The city's lamps get a day and a half of one-minute ``power_w`` readings, the first day
compressed (``telemetry_segments``) and the rest in the row store, so a day's Observations
come from both tiers through the history's one read path.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import frost_sta_client as fsc
import pytest
import requests
from frost_sta_client.service.auth_handler import AuthHandler
from yarl import URL

from server.http.app import create_app
from server.store import compress
from tests.fuzz.test_fuzz_sta import FIELDS_OF, generate_filter
from tests.helpers import aq

BOX = (105.83, 21.58, 105.85, 21.60)
D0 = datetime(2026, 11, 20, tzinfo=UTC)
MINUTES = 36 * 60  # D0 00:00 .. D0+1 12:00
ROOT = "/sta/v1.1"


class Bearer(AuthHandler):
    """frost-sta-client's auth hook (it hands ``add_auth_header()`` to requests as ``auth=``)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def add_auth_header(self):
        token = self.token

        def auth(req: requests.PreparedRequest) -> requests.PreparedRequest:
            req.headers["Authorization"] = f"Bearer {token}"
            return req

        return auth


def value_at(minute: int) -> float:
    return round(40 + (minute % 97) * 0.5, 1)


@pytest.fixture
async def live(aiohttp_client, city_db_url, make_settings, token_for):
    lamps = [r[0] for r in await aq(city_db_url, "select id from devices where kind = 'streetlight' "
                                                 "order by id limit 2")]
    conn = await asyncpg.connect(city_db_url)
    try:
        keys = [await conn.fetchval("select key from devices where id = $1", lamp) for lamp in lamps]
        metric = await conn.fetchval("select id from metrics where name = 'power_w'")
        for d in range(2):
            await conn.execute("select ioc_ensure_telemetry_partition($1)", (D0 + timedelta(days=d)).date())
        await conn.copy_records_to_table(
            "telemetry", columns=("device_key", "metric_id", "ts", "value", "quality"),
            records=[(k, metric, D0 + timedelta(minutes=m), value_at(m) + i, 0)
                     for i, k in enumerate(keys) for m in range(MINUTES)])
        report = await compress.compress_due(conn, D0 + timedelta(days=2), device_keys=keys)
        assert report.days == [D0.date()] and report.points == 2 * 1440
    finally:
        await conn.close()
    client = await aiohttp_client(create_app(make_settings(city_db_url, mqtt_url=None)))
    client.token = await token_for(city_db_url, "viewer")
    client.url = city_db_url
    client.lamps = lamps
    client.root = str(client.make_url(ROOT))
    return client


async def get(live, path: str, token: str | None = "viewer", **query):
    headers = {"Authorization": f"Bearer {live.token}"} if token else {}
    resp = await live.get(URL(ROOT + path, encoded=False).with_query(query or None), headers=headers)
    body = await resp.json(content_type=None)
    return resp.status, body


def service(live) -> fsc.SensorThingsService:
    return fsc.SensorThingsService(live.root, auth_handler=Bearer(live.token))


# ---------------------------------------------------------------- through frost-sta-client
async def test_frost_client_lists_the_things_in_a_bbox_across_pages(live):
    x0, y0, x1, y1 = BOX
    polygon = f"POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"
    expected = {r[0] for r in await aq(
        live.url, "select id from devices where ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))",
        *BOX)}
    assert len(expected) > 20

    def read() -> tuple[list, int | None]:
        things = (service(live).things().query()
                  .filter(f"geo.intersects(Locations/location, geography'{polygon}')")
                  .top(7).count().list())
        return [t for t in things], things.count  # iterating follows @iot.nextLink

    things, count = await asyncio.to_thread(read)
    ids = [t.id for t in things]
    assert len(ids) == len(set(ids)) and set(ids) == expected and count == len(expected)
    assert all(t.name == t.id for t in things)  # CONTRACT: a Thing's name is the device id


async def test_frost_client_reads_a_datastreams_observations_over_a_day(live):
    lamp = live.lamps[0]
    day = D0 + timedelta(hours=12)  # noon to noon: half compressed, half in the row store

    def read():
        svc = service(live)
        ds = svc.datastreams().find(f"{lamp}~power_w")
        obs = (ds.get_observations().query()
               .filter(f"phenomenonTime ge {day:%Y-%m-%dT%H:%M:%SZ} and "
                       f"phenomenonTime lt {day + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}")
               .orderby("phenomenonTime", "asc").top(500).list())
        return ds, [(o.phenomenon_time, o.result, o.id) for o in obs]

    ds, got = await asyncio.to_thread(read)
    assert ds.unit_of_measurement.symbol == "W" and ds.name == f"{lamp} power_w"
    assert len(got) == 1440
    for i, (at, result, oid) in enumerate(got):
        minute = 12 * 60 + i
        ts = D0 + timedelta(minutes=minute)
        assert datetime.fromisoformat(at) == ts and result == value_at(minute)
        assert oid == f"{lamp}~power_w~{int(ts.timestamp() * 1_000_000)}"


# ---------------------------------------------------------------- the resource paths
async def test_service_root_navigation_select_expand_count(live):
    lamp = live.lamps[0]
    status, root = await get(live, "")
    assert status == 200 and {v["name"] for v in root["value"]} >= {
        "Things", "Locations", "Datastreams", "ObservedProperties", "Sensors", "Observations"}

    status, thing = await get(live, f"/Things('{lamp}')", **{"$expand": "Datastreams($select=name)"})
    assert status == 200 and thing["@iot.id"] == lamp and thing["name"] == lamp
    assert thing["@iot.selfLink"].endswith(f"{ROOT}/Things('{lamp}')")
    names = {d["name"] for d in thing["Datastreams"]}
    assert f"{lamp} power_w" in names and all(set(d) == {"name"} for d in thing["Datastreams"])

    status, streams = await get(live, f"/Things('{lamp}')/Datastreams", **{"$count": "true"})
    assert status == 200 and streams["@iot.count"] == len(streams["value"]) == len(names)
    ds = next(d for d in streams["value"] if d["@iot.id"] == f"{lamp}~power_w")
    assert ds["unitOfMeasurement"]["symbol"] == "W"
    assert ds["observationType"].endswith("OM_Measurement")

    status, thing_of = await get(live, f"/Datastreams('{lamp}~power_w')/Thing", **{"$select": "id"})
    assert status == 200 and thing_of == {"@iot.id": lamp}
    status, sensor = await get(live, f"/Datastreams('{lamp}~power_w')/Sensor")
    assert status == 200 and sensor["@iot.id"] == "streetlight"
    status, prop = await get(live, f"/Datastreams('{lamp}~power_w')/ObservedProperty/name")
    assert status == 200 and prop == {"name": "power_w"}
    resp = await live.get(f"{ROOT}/Things('{lamp}')/name/$value",
                          headers={"Authorization": f"Bearer {live.token}"})
    assert resp.status == 200 and await resp.text() == lamp

    # the newest readings first, two to a page, with $count and the next page's link
    status, page = await get(live, f"/Datastreams('{lamp}~power_w')/Observations",
                             **{"$orderby": "phenomenonTime desc", "$top": "2", "$count": "true",
                                "$expand": "Datastream($select=id)"})
    assert status == 200 and page["@iot.count"] == MINUTES
    last = D0 + timedelta(minutes=MINUTES - 1)
    assert [datetime.fromisoformat(o["phenomenonTime"]) for o in page["value"]] == [
        last, last - timedelta(minutes=1)]
    assert page["value"][0]["Datastream"] == {"@iot.id": f"{lamp}~power_w"}
    nxt = URL(page["@iot.nextLink"])
    assert nxt.query["$skip"] == "2"
    resp = await live.get(nxt.path_qs, headers={"Authorization": f"Bearer {live.token}"})
    second = await resp.json()
    assert datetime.fromisoformat(second["value"][0]["phenomenonTime"]) == last - timedelta(minutes=2)

    # one observation by its id, from the compressed day
    oid = page["value"][0]["@iot.id"].rsplit("~", 1)[0] + f"~{int(D0.timestamp() * 1e6) + 60_000_000}"
    status, one = await get(live, f"/Observations('{oid}')")
    assert status == 200 and one["result"] == value_at(1)
    status, feature = await get(live, f"/Observations('{oid}')/FeatureOfInterest")
    assert status == 200 and feature["feature"]["type"] == "Point"

    # a Location, filtered by geometry, and its Things
    x0, y0, x1, y1 = BOX
    status, locs = await get(live, "/Locations", **{
        "$filter": f"geo.intersects(location, geography'POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, "
                   f"{x0} {y1}, {x0} {y0}))') and Things/name ge 'SL'", "$top": "3",
        "$expand": "Things($select=id)"})
    assert status == 200 and len(locs["value"]) == 3 and "@iot.nextLink" in locs
    assert all(loc["Things"] == [{"@iot.id": loc["@iot.id"]}] for loc in locs["value"])

    status, props = await get(live, "/ObservedProperties", **{"$filter": "name eq 'power_w'"})
    assert status == 200 and [p["@iot.id"] for p in props["value"]] == ["power_w"]

    # Observations filtered on their result, all datastreams of one Thing
    status, hot = await get(live, "/Observations", **{
        "$filter": f"Datastream/Thing/@iot.id eq '{lamp}' and result ge 88 and "
                   f"phenomenonTime lt {D0 + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}",
        "$count": "true", "$top": "1000"})
    assert status == 200
    expected = sum(1 for m in range(1440) if value_at(m) >= 88)
    assert hot["@iot.count"] == len(hot["value"]) == expected


async def test_bad_requests_are_400s_naming_the_parameter(live):
    cases = [
        ("/Things", {"$filter": "name eq"}, "$filter"),
        ("/Things", {"$filter": "name eq 3"}, "$filter"),
        ("/Things", {"$filter": "nosuch eq 'x'"}, "$filter"),
        ("/Things", {"$filter": "geo.intersects(Locations/location, geography'POLYGON((0 0, 1 1))')"},
         "$filter"),
        ("/Observations", {"$filter": "phenomenonTime ge 2026-13-01T00:00:00Z"}, "$filter"),
        ("/Things", {"$orderby": "Locations/location"}, "$orderby"),
        ("/Things", {"$top": "-1"}, "$top"),
        ("/Things", {"$skip": "x"}, "$skip"),
        ("/Things", {"$count": "yes"}, "$count"),
        ("/Things", {"$select": "colour"}, "$select"),
        ("/Things", {"$expand": "Datastreams/Observations"}, "$expand"),
        ("/Things", {"$expand": "Datastreams($expand=Sensor)"}, "$expand"),
        ("/Things", {"$levels": "2"}, "$levels"),
        ("/Datastreams('no-tilde')", {}, "@iot.id"),
        ("/Observations('SL~power_w~soon')", {}, "@iot.id"),
        ("/Things(SL-000001)", {}, "@iot.id"),
        ("/Things('a'b')", {}, "@iot.id"),
    ]
    for path, query, field in cases:
        status, body = await get(live, path, **query)
        assert status == 400, (path, query, status, body)
        assert body["field"] == field and body["detail"], (path, query, body)
    for path in ("/Nothing", "/Things('NOPE-404')", f"/Things('{live.lamps[0]}')/Colour"):
        status, body = await get(live, path)
        assert status == 404 and body["detail"], (path, body)
    status, _ = await get(live, "/Things", token=None)
    assert status == 401


async def test_generated_filters_run_without_a_server_error(live):
    """Filters from the fuzzer's generator that compile must also run: every SQL they make is
    sent to PostgreSQL through the API, and none may fail there."""
    rnd = random.Random(16)
    sets = sorted(FIELDS_OF)
    answered = {200: 0, 400: 0}
    for i in range(240):
        name = sets[i % len(sets)]
        text = generate_filter(rnd, name)
        query = {"$filter": text, "$top": "5"}
        if name == "Observations":
            query["$filter"] = f"({text}) and phenomenonTime ge 2026-11-20T23:00:00Z and " \
                               "phenomenonTime lt 2026-11-21T01:00:00Z"
        status, body = await get(live, "/" + name, **query)
        assert status in answered, (name, query, status, body)
        if status == 400:
            assert body["field"] == "$filter" and body["detail"], body
        answered[status] += 1
    assert answered[200] > 60, answered  # the generator makes mostly valid filters


async def test_a_long_polygon_filter_and_a_true_false_result(live):
    """A polygon of 120 vertices (over the 1,024 characters other query values may have)."""
    import math

    cx, cy, r = 105.84, 21.59, 0.01
    ring = [(cx + r * math.cos(2 * math.pi * i / 120), cy + r * math.sin(2 * math.pi * i / 120))
            for i in range(120)]
    wkt = "POLYGON((" + ", ".join(f"{x:.6f} {y:.6f}" for x, y in [*ring, ring[0]]) + "))"
    assert len(wkt) > 2000
    expected = {r[0] for r in await aq(live.url, "select id from devices where ST_Intersects(geom, "
                                                 "ST_GeomFromText(%s, 4326))", wkt)}
    status, body = await get(live, "/Things", **{"$filter": f"geo.intersects(Locations/location, "
                                                            f"geography'{wkt}')", "$top": "1000"})
    assert status == 200 and {t["@iot.id"] for t in body["value"]} == expected and expected

    lamp = live.lamps[0]
    status, body = await get(live, "/Observations", **{
        "$filter": f"Datastream/@iot.id eq '{lamp}~power_w' and (result eq true or result eq 40)",
        "$count": "true"})
    assert status == 200 and body["@iot.count"] == sum(1 for m in range(MINUTES) if value_at(m) == 40)


async def test_combined_options_answer_200_or_a_problem_never_a_500(live):
    """Every entity set (plain and under a navigation) with drawn $top, $skip, $count,
    $select, $orderby and $expand (with its own options)."""
    from server.api.sta.model import SETS

    lamp = live.lamps[0]
    paths = [f"/{name}" for name in SETS] + [
        f"/Things('{lamp}')/Datastreams", f"/Datastreams('{lamp}~power_w')/Observations",
        "/Sensors('streetlight')/Datastreams", f"/Things('{lamp}')/Locations/$ref"]
    rnd = random.Random(5)
    statuses = []
    for i in range(120):
        path = paths[i % len(paths)]
        es = SETS[path.split("/")[1].split("(")[0]] if path.count("/") == 1 else None
        query: dict[str, str] = {"$top": rnd.choice(["0", "1", "3", "100"])}
        if rnd.random() < 0.5:
            query["$skip"] = rnd.choice(["0", "2", "5000"])
        if rnd.random() < 0.5:
            query["$count"] = rnd.choice(["true", "false"])
        if es is not None and rnd.random() < 0.6:
            names = [*es.fields, *es.navs, "@iot.id"]
            query["$select"] = ",".join(rnd.sample(names, rnd.randint(1, min(3, len(names)))))
        if es is not None and es.navs and rnd.random() < 0.7:
            nav = rnd.choice(list(es.navs))
            opts = rnd.choice(["", "($top=2)", "($count=true;$top=1)", "($skip=1;$top=0)",
                               "($select=@iot.id)", "($orderby=@iot.id desc)"])
            query["$expand"] = nav + opts
        if path.endswith("Observations") and rnd.random() < 0.5:
            query["$orderby"] = rnd.choice(["phenomenonTime desc", "result", "@iot.id desc"])
        status, body = await get(live, path, **query)
        assert status in (200, 400), (path, query, status, body)
        if status == 400:
            assert body["field"] and body["detail"], body
        elif query["$top"] == "0":
            assert body["value"] == [] and "@iot.nextLink" not in body, (path, query, body)
        statuses.append(status)
    assert statuses.count(200) > 80, statuses
