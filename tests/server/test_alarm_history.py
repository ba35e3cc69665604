"""Alarm history over the API (issue 18.4): the list's ward, kind, from/to and free-text
filters over closed alarms, bad filters as problems naming the field, each alarm's context
(rule kind, metric, unit, value, limit) for wording it in the reader's language, shelved and
out-of-service alarms not counted as open in the ward roll-up, and the KPI chart series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mapbox_vector_tile
import morecantile

from server.keys import ALARMS
from tests.helpers import aq, publisher, running, wait_connected, wait_for
from tests.server.helpers import send, state_of, write_rules


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def two_sensors(url: str) -> list[tuple[str, str]]:
    """Two pressure sensors in different wards: (id, ward)."""
    rows = await aq(url, "select distinct on (ward) id, ward from devices "
                         "where kind = 'pressure_sensor' and ward is not null order by ward, id limit 2")
    assert len(rows) == 2, rows
    return [tuple(r) for r in rows]


async def ward_counts(client, headers, ward: str) -> dict:
    body = await (await client.get("/api/v1/wards/summary", headers=headers)).json()
    return next(w["alarms"] for w in body["wards"] if w["code"] == ward)


async def ward_stats_alarms(client, headers, url: str, device: str, ward: str) -> int:
    lon, lat = (await aq(url, "select ST_X(geom), ST_Y(geom) from devices where id = %s", device))[0]
    t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 13)
    r = await client.get(f"/tiles/ward_stats/13/{t.x}/{t.y}.mvt", headers=headers)
    assert r.status == 200, await r.text()
    feats = mapbox_vector_tile.decode(await r.read())["ward_stats"]["features"]
    return next(f["properties"]["alarms"] for f in feats if f["properties"]["id"] == ward)


async def test_history_filters_context_and_shelved_not_counted(city_db_url, make_settings, mosquitto,
                                                                tmp_path, token_for):
    url = city_db_url
    (a, ward_a), (b, ward_b) = await two_sensors(url)
    path = write_rules(tmp_path / "r.yaml", {
        "id": "hist-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
        "metric": "pressure_bar", "below": 2.0, "severity": "minor"})
    viewer, operator = auth(await token_for(url, "viewer")), auth(await token_for(url, "operator"))
    started = datetime.now(UTC) - timedelta(seconds=1)
    async with running(make_settings(url, rules={"paths": [path]})) as client, \
            publisher(mosquitto.url) as pub:
        await wait_connected(client)
        for dev in (a, b):
            await send(pub, dev, {"pressure_bar": 1.98})
        for dev in (a, b):
            await wait_for(lambda d=dev: state_of(url, "hist-low", d) == "active_unacked", blocking=True)
        await client.app[ALARMS].drained()

        # The context: what the message says, as data.
        got = await (await client.get(f"/api/v1/alarms?rule=hist-low&device={a}", headers=viewer)).json()
        [alarm] = got["alarms"]
        ctx = alarm["context"]
        assert ctx["rule_kind"] == "threshold" and ctx["metric"] == "pressure_bar" and ctx["unit"] == "bar"
        assert ctx["value"] == 1.98 and ctx["limit"] == 2.0 and ctx["direction"] == "below"
        assert "1.98" in alarm["message"], "the English message stays for the API"
        aid = alarm["id"]

        # Shelving b: it stays open in its lifecycle but leaves the ward's open count.
        before = await ward_counts(client, viewer, ward_b)
        tile_before = await ward_stats_alarms(client, viewer, url, b, ward_b)
        bid = (await aq(url, "select id from alarms where rule = 'hist-low' and device = %s "
                             "and state <> 'closed'", b))[0][0]
        r = await client.post(f"/api/v1/alarms/{bid}/shelve", json={"minutes": 30, "reason": "pump swap"},
                              headers=operator)
        assert r.status == 200
        after = await ward_counts(client, viewer, ward_b)
        assert after["open"] == before["open"] - 1 and after["shelved"] == before["shelved"] + 1
        assert after["by_severity"]["minor"] == before["by_severity"]["minor"] - 1
        # the map's ward_stats tile counts alike
        await wait_for(lambda: _eq(ward_stats_alarms(client, viewer, url, b, ward_b), tile_before - 1),
                       what="the ward_stats tile without the shelved alarm")
        r = await client.get(f"/api/v1/alarms?rule=hist-low&device={b}", headers=viewer)
        open_list = await r.json()
        assert [x["id"] for x in open_list["alarms"]] == [bid], "shelved is still open in the list"

        # a back to normal, acknowledged: closed, and found again in the history.
        await send(pub, a, {"pressure_bar": 2.6})
        await wait_for(lambda: state_of(url, "hist-low", a) == "rtn_unacked", blocking=True)
        await client.app[ALARMS].drained()
        assert (await client.post(f"/api/v1/alarms/{aid}/ack", headers=operator)).status == 200
        await wait_for(lambda: state_of(url, "hist-low", a) == "closed", blocking=True)
        cleared = await (await client.get(f"/api/v1/alarms/{aid}", headers=viewer)).json()
        assert cleared["state"] == "closed" and cleared["context"]["direction"] is None
        assert cleared["context"]["value"] == 2.6

        async def ids(query: str) -> list[int]:
            r = await client.get(f"/api/v1/alarms?rule=hist-low&{query}", headers=viewer)
            assert r.status == 200, await r.text()
            return [x["id"] for x in (await r.json())["alarms"]]

        assert aid in await ids("state=closed")
        assert aid not in await ids("")  # open only by default
        assert aid in await ids(f"state=closed&ward={ward_a}")
        assert aid not in await ids(f"state=closed&ward={ward_b}")
        assert bid in await ids(f"state=all&ward={ward_a},{ward_b}")
        assert aid in await ids("state=closed&kind=pressure_sensor")
        assert aid not in await ids("state=closed&kind=streetlight,camera")
        assert aid in await ids(f"state=closed&q={a.upper()}")  # device id, any case
        assert aid in await ids("state=closed&q=pressure_bar")  # the message
        assert aid not in await ids("state=closed&q=%25_nothing_like_this")
        since = started.isoformat().replace("+00:00", "Z")
        assert aid in await ids(f"state=closed&from={since}")
        assert aid not in await ids(f"state=closed&to={since}")
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert aid not in await ids(f"state=closed&from={later.replace('+', '%2B')}")
        assert aid in await ids(f"state=all&closed_from={since}")
        assert bid not in await ids(f"state=all&closed_from={since}"), "b is open: never closed"
        assert aid not in await ids(f"state=all&closed_to={since}")
        # paging through closed alarms: a page of one, then the next
        first = await (await client.get("/api/v1/alarms?state=all&rule=hist-low&limit=1",
                                         headers=viewer)).json()
        assert first["count"] == 1 and first["links"][0]["rel"] == "next"
        nxt = await (await client.get(first["links"][0]["href"], headers=viewer)).json()
        assert {first["alarms"][0]["id"], nxt["alarms"][0]["id"]} == {aid, bid}

        # Bad filters: a problem naming the field; nothing else changes.
        for query, field in (("kind=spaceship", "kind"), ("ward=nowhere-ward", "ward"),
                             ("from=yesterday", "from"), ("to=2026-13-01T00:00:00Z", "to"),
                             (f"from={later.replace('+', '%2B')}&to={since}", "from"),
                             (f"closed_from={later.replace('+', '%2B')}&closed_to={since}", "closed_from"),
                             ("closed_to=soon", "closed_to"),
                             ("q=", "q"), (f"q={'x' * 201}", "q")):
            r = await client.get(f"/api/v1/alarms?{query}", headers=viewer)
            assert r.status == 400, (query, r.status)
            assert r.content_type == "application/problem+json"
            problem = await r.json()
            fields = [e["field"] for e in problem.get("errors", [])] or [problem.get("field")]
            assert field in fields, (query, problem)

        # The KPIs for charts: a series of activations per operator against the targets.
        r = await client.get(f"/api/v1/alarms/kpis?from={since}", headers=viewer)
        assert r.status == 200
        kpis = await r.json()
        series = kpis["series"]
        assert series["bucket_s"] == 600 and series["target"] == 1 and series["max_manageable"] == 2
        assert len(series["t"]) == len(series["per_operator"]) >= 1
        assert sum(series["per_operator"]) * kpis["operator_consoles"] >= 2  # a and b at least
        r = await client.get("/api/v1/alarms/kpis?from=2025-01-01T00:00:00Z&to=2025-12-01T00:00:00Z",
                             headers=viewer)
        long = (await r.json())["series"]
        assert long["bucket_s"] == 86400 and len(long["t"]) == 334


async def _eq(value, expected) -> bool:
    return (await value) == expected
