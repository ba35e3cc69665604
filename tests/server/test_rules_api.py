"""Rules from files (reloaded on change) and from /api/v1/rules; errors that name the file,
the rule and the field; a backtest over stored telemetry."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import asyncpg
import yaml

from server.store import compress
from tests.helpers import aq, publisher, q, running, wait_connected, wait_for
from tests.server.helpers import first, send, state_of, write_rules


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def touch_later(path) -> None:
    """Some filesystems keep mtimes to the second: make sure a rewrite looks newer."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


async def test_rule_files_reload_and_api(city_db_url, make_settings, mosquitto, tmp_path, token_for):
    url = city_db_url
    ps = (await asyncio.to_thread(first, url, "pressure_sensor"))[0]
    path = tmp_path / "site.yaml"
    write_rules(path, {"id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
                       "metric": "pressure_bar", "below": 1.5, "severity": "major"})
    viewer, integrator = auth(await token_for(url, "viewer")), auth(await token_for(url, "integrator"))
    settings = make_settings(url, rules={"paths": [str(tmp_path / "*.yaml")],
                                         "reload_interval_s": 0.2})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        listed = await (await client.get("/api/v1/rules", headers=viewer)).json()
        (rule,) = listed["rules"]
        assert rule["id"] == "p-low" and rule["source"] == f"file:{path}" and rule["evaluated"]
        assert rule["document"]["below"] == 1.5 and listed["errors"] == []

        # A mistake in the file: reported with file, rule and field; the old version stays.
        path.write_text(yaml.safe_dump({"rules": [
            {"id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
             "metric": "pressure_bar", "bellow": 1.8, "severity": "major"}]}))
        touch_later(path)

        async def errors():
            return (await (await client.get("/api/v1/rules", headers=viewer)).json())["errors"]

        for _ in range(100):
            errs = await errors()
            if errs:
                break
            await asyncio.sleep(0.1)
        assert any(str(path) in e and "'p-low'" in e and "bellow" in e for e in errs), errs
        await send(pub, ps, {"pressure_bar": 1.2})
        await wait_for(lambda: state_of(url, "p-low", ps) == "active_unacked", blocking=True)

        # Fixed, with a second rule: picked up without a restart.
        write_rules(path,
                    {"id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
                     "metric": "pressure_bar", "below": 1.0, "severity": "major"},
                    {"id": "p-high", "kind": "threshold", "select": {"kind": "pressure_sensor"},
                     "metric": "pressure_bar", "above": 6, "severity": "minor"})
        touch_later(path)
        await wait_for(lambda: {r[0] for r in q(url, "select id from rules")} == {"p-low", "p-high"},
                       blocking=True)
        # The changed rule re-evaluated the stored state: 1.2 is no longer below its limit.
        await wait_for(lambda: state_of(url, "p-low", ps) == "rtn_unacked", blocking=True)
        await send(pub, ps, {"pressure_bar": 7.0})
        await wait_for(lambda: state_of(url, "p-high", ps) == "active_unacked", blocking=True)
        assert await errors() == []

        # The API: validation names the field; conflicts with file rules; CRUD.
        bad = {"id": "tc", "kind": "state", "select": {"kind": "traffic_controller"},
               "metric": "mode", "in": [], "severity": "major"}
        r = await client.post("/api/v1/rules", json=bad, headers=integrator)
        body = await r.json()
        assert r.status == 400 and any("'tc'" in e["message"] and e["field"] == "in" for e in body["errors"])
        r = await client.post("/api/v1/rules", json=bad | {"kind": "blinking"}, headers=integrator)
        assert r.status == 400 and "unknown kind 'blinking'" in (await r.json())["detail"]
        r = await client.post("/api/v1/rules", json=bad | {"metric": "wattage", "in": [3]},
                              headers=integrator)
        assert r.status == 400 and "unknown metric 'wattage'" in (await r.json())["detail"]
        good = bad | {"in": [1, 3, 4], "id": "tc-flash"}
        assert (await client.post("/api/v1/rules", json=good, headers=viewer)).status == 403
        r = await client.post("/api/v1/rules", json=good, headers=integrator)
        assert r.status == 201, await r.text()
        assert (await client.post("/api/v1/rules", json=good, headers=integrator)).status == 409
        r = await client.put("/api/v1/rules/p-low", json={"kind": "threshold", "metric": "pressure_bar",
                                                          "below": 2, "severity": "major"},
                             headers=integrator)
        assert r.status == 409 and "site.yaml" in (await r.json())["detail"]
        tc = (await asyncio.to_thread(first, url, "traffic_controller"))[0]
        await send(pub, tc, {"mode": 3})
        await wait_for(lambda: state_of(url, "tc-flash", tc) == "active_unacked", blocking=True)
        r = await client.put("/api/v1/rules/tc-flash", json=good | {"in": [1]}, headers=integrator)
        assert r.status == 200 and (await r.json())["document"]["in"] == [1.0]
        # Mode 3 no longer matches the edited rule: its alarm returns to normal.
        await wait_for(lambda: state_of(url, "tc-flash", tc) == "rtn_unacked", blocking=True)
        assert (await client.delete("/api/v1/rules/tc-flash", headers=integrator)).status == 204
        await wait_for(lambda: state_of(url, "tc-flash", tc) == "closed", blocking=True)
        assert (await client.get("/api/v1/rules/tc-flash", headers=viewer)).status == 404
        audit = await aq(url, "select action from audit_log where target = 'tc-flash' order by id")
        assert [a[0] for a in audit] == ["rule.create", "rule.update", "rule.delete"]


async def test_backtest_over_stored_telemetry(city_db_url, make_settings, token_for):
    url = city_db_url
    ps1, ps2 = await asyncio.to_thread(first, url, "pressure_sensor", 2)
    integrator = auth(await token_for(url, "integrator"))
    t0 = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    # One reading a minute for 100 min; ps1 dips below 1.5 twice (for 5 and 2 min), ps2 never.
    rows = []
    for i in range(100):
        dip = 20 <= i < 25 or 60 <= i < 62
        for dev, v in ((ps1, 1.2 if dip else 3.0), (ps2, 3.0)):
            rows.append({"device_id": dev, "ts": int((t0 + timedelta(minutes=i)).timestamp() * 1000),
                         "values": {"pressure_bar": v}})
    async with running(make_settings(url, mqtt_url=None)) as client:
        r = await client.post("/api/v1/telemetry", json=rows, headers=integrator)
        assert r.status == 202
        await wait_for(lambda: q(url, "select count(*) from telemetry")[0][0] == 200, blocking=True)
        rule = {"id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
                "metric": "pressure_bar", "below": 1.5, "severity": "major"}
        body = {"rule": rule, "from": (t0 - timedelta(minutes=1)).isoformat(),
                "to": (t0 + timedelta(minutes=100)).isoformat()}
        r = await client.post("/api/v1/rules/backtest", json=body, headers=integrator)
        got = await r.json()
        assert r.status == 200, got
        assert got["count"] == 2 and got["devices"] == 1 and got["readings"] == 200
        assert [a["device"] for a in got["alarms"]] == [ps1, ps1]
        first_alarm = got["alarms"][0]
        assert first_alarm["geometry"]["type"] == "Point"  # where: the console marks it on the map
        assert datetime.fromisoformat(first_alarm["raised_at"].replace("Z", "+00:00")) == \
            t0 + timedelta(minutes=20)
        assert datetime.fromisoformat(first_alarm["cleared_at"].replace("Z", "+00:00")) == \
            t0 + timedelta(minutes=25)
        # A 3-minute on-delay keeps the 2-minute dip out: the tuning question a backtest answers.
        body["rule"] = rule | {"on_delay": "3m"}
        got = await (await client.post("/api/v1/rules/backtest", json=body, headers=integrator)).json()
        assert got["count"] == 1
        assert datetime.fromisoformat(got["alarms"][0]["raised_at"].replace("Z", "+00:00")) == \
            t0 + timedelta(minutes=23)
        # Nothing was stored: a backtest changes nothing.
        assert (await aq(url, "select count(*) from alarms"))[0][0] == 0
        # The same answer once those days are compressed (as if it were days later).
        conn = await asyncpg.connect(url)
        try:
            await compress.compress_due(conn, datetime.now(UTC) + timedelta(days=3))
        finally:
            await conn.close()
        assert (await aq(url, "select count(*) from telemetry"))[0][0] == 0
        again = await (await client.post("/api/v1/rules/backtest", json=body, headers=integrator)).json()
        assert again == got
        r = await client.post("/api/v1/rules/backtest", json={"rule": rule | {"below": "low"}},
                              headers=integrator)
        assert r.status == 400 and "below" in (await r.json())["detail"]
