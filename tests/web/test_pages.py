"""The pages' server side: / and /crew with their configuration, /api/v1/me, and the ward
roll-up behind the map's ward view (no browser needed)."""

from __future__ import annotations

import asyncio
import json
import re

import psycopg

from tests.helpers import acount, aexecute, aq, running


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def script_json(html: str, kind: str) -> dict:
    m = re.search(rf'<script type="{kind}"[^>]*>(.*?)</script>', html, re.S)
    assert m, f"no {kind} script in the page"
    return json.loads(m.group(1))


async def test_pages_are_public_and_carry_their_configuration(db_url, make_settings):
    settings = make_settings(db_url, web_style_url="https://tiles.example.org/style.json?a=1&b=</x>")
    async with running(settings) as client:
        for path in ("/", "/crew"):
            resp = await client.get(path)
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
            html = await resp.text()
            config = script_json(html, "application/json")
            assert config["styleUrl"] == "https://tiles.example.org/style.json?a=1&b=</x>"
            assert "</x>" not in html, "a setting must not be able to close the script element"
            imports = script_json(html, "importmap")["imports"]
            version = config["version"]
            assert imports["maplibre-gl"].endswith(f"maplibre-gl.mjs?v={version}")
            assert imports["/static/js/common.js"] == f"/static/js/common.js?v={version}"
            for url in imports.values():
                assert (await client.get(url)).status == 200, url
        assert (await client.get("/favicon.ico")).status == 200
        # the citizens' pages share one <head> (static/partials/citizen-head.html), filled in
        for path in ("/report", "/reports/ABCDEFGHJKLMNPQR", "/public"):
            html = await (await client.get(path)).text()
            head = html.split("</head>")[0]
            assert "{{" not in html and head.count('<meta charset="utf-8">') == 1, path
            assert head.index("charset") < head.index("<title>") < head.index('type="module"'), path
            assert script_json(html, "application/json")["version"] == version, path
            assert script_json(html, "importmap")["imports"]["/static/js/citizen.js"].endswith(version)


async def test_me_names_the_token(db_url, make_settings, token_for):
    await aexecute(db_url, "insert into crews (id, name) values ('crew-7', 'Đội 7')")
    token = await token_for(db_url, "crew", "crew-7")
    async with running(make_settings(db_url)) as client:
        resp = await client.get("/api/v1/me", headers=auth(token))
        assert await resp.json() == {"name": "test-crew", "role": "crew", "crew": "crew-7"}
        assert (await client.get("/api/v1/me")).status == 401


async def test_ward_summary_counts_lamps_out_and_alarms_per_ward(city_db_url, make_settings, token_for):
    token = await token_for(city_db_url, "viewer")
    ward = (await aq(city_db_url, "select ward from devices where kind = 'streetlight' group by ward "
                                  "order by count(*) desc limit 1"))[0][0]
    lamps = [r[0] for r in await aq(city_db_url, "select key from devices where kind = 'streetlight' "
                                                 "and ward = %s order by id limit 4", ward)]
    lamp_ids = [r[0] for r in await aq(city_db_url, "select id from devices where key = any(%s) order by id",
                                       lamps)]
    def seed() -> None:
        with psycopg.connect(city_db_url) as conn:
            # Out: offline, a lamp fault, a driver fault; the fourth is on and fine.
            for key, status, values in ((lamps[0], "offline", {}), (lamps[1], "online", {"lamp_fault": True}),
                                        (lamps[2], "online", {"driver_fault": True}),
                                        (lamps[3], "online", {"lamp_on": True})):
                conn.execute("insert into device_state (device_key, status, values) values (%s, %s, %s) "
                             "on conflict (device_key) do update set status = excluded.status, "
                             "values = excluded.values", (key, status, json.dumps(values)))
            # Two open alarms (one on a lamp already out) and a closed one, which is not counted.
            for dev, sev, state in ((lamp_ids[1], "minor", "active_unacked"),
                                    (lamp_ids[3], "critical", "active_acked"),
                                    (lamp_ids[2], "major", "closed")):
                conn.execute("insert into alarms (rule, device, severity, state, dedup_key) "
                             "values ('r', %s, %s, %s, %s)", (dev, sev, state, f"r:{dev}"))

    await asyncio.to_thread(seed)
    async with running(make_settings(city_db_url)) as client:
        resp = await client.get("/api/v1/wards/summary", headers=auth(token))
        assert resp.status == 200
        body = await resp.json()
        assert (await client.get("/api/v1/wards/summary")).status == 401
    wards = {w["code"]: w for w in body["wards"]}
    assert len(wards) == (await aq(city_db_url, "select count(*) from wards"))[0][0]
    w = wards[ward]
    # The fourth lamp is out too: it has an open (critical) alarm.
    assert w["lamps"]["out"] == 4
    assert w["lamps"]["on"] == 1
    assert w["lamps"]["total"] == await acount(city_db_url, "select count(*) from devices "
                                                            "where kind = 'streetlight' and ward = %s", ward)
    assert w["alarms"]["open"] == 2
    assert w["alarms"]["unacked"] == 1
    assert w["alarms"]["by_severity"] == {"critical": 1, "major": 0, "minor": 1, "warning": 0}
    assert w["devices"]["offline"] == 1
    others = [x for code, x in wards.items() if code != ward]
    assert all(x["lamps"]["out"] == 0 and x["alarms"]["open"] == 0 for x in others)
    assert body["totals"]["lamps_out"] == 4 and body["totals"]["alarms"] == 2
    x0, y0, x1, y1 = body["bbox"]
    assert x0 < w["label"][0] < x1 and y0 < w["label"][1] < y1
    wx0, wy0, wx1, wy1 = w["bbox"]
    assert x0 <= wx0 < wx1 <= x1 and y0 <= wy0 < wy1 <= y1
