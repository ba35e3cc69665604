"""Alarm lifecycle over the API: role checks, ISA-18.2 transitions, history, chattering, KPIs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from server.keys import ALARMS
from tests.helpers import aq, publisher, q, running, wait_connected, wait_for
from tests.server.helpers import first, send, state_of, write_rules


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_lifecycle_actions_and_role_checks(city_db_url, make_settings, mosquitto, tmp_path,
                                                 token_for):
    url = city_db_url
    ps = (await asyncio.to_thread(first, url, "pressure_sensor"))[0]
    path = write_rules(tmp_path / "r.yaml", {
        "id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
        "metric": "pressure_bar", "below": 1.5, "severity": "major"})
    viewer, operator = auth(await token_for(url, "viewer")), auth(await token_for(url, "operator"))
    settings = make_settings(url, rules={"paths": [path], "shelve_max_minutes": 60})
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await send(pub, ps, {"pressure_bar": 1.2})
        await wait_for(lambda: state_of(url, "p-low", ps) == "active_unacked", blocking=True)
        await client.app[ALARMS].drained()
        listed = await (await client.get("/api/v1/alarms?state=active_unacked", headers=viewer)).json()
        alarm = listed["alarms"][0]
        aid = alarm["id"]
        assert alarm["rule"] == "p-low" and alarm["device"] == ps and alarm["severity"] == "major"
        assert alarm["geometry"]["type"] == "Point" and alarm["value"] == 1.2
        assert alarm["dedup_key"] == f"p-low:{ps}:{aid}" and alarm["priority"] == 2
        crew = alarm["assigned_crew"]
        assert crew, "the notifier routes a new alarm to a crew"
        other = (await aq(url, "select id from crews where id <> %s order by id limit 1", crew))[0][0]
        mine, theirs = auth(await token_for(url, "crew", crew)), auth(await token_for(url, "crew", other))

        r = await client.post(f"/api/v1/alarms/{aid}/ack", headers=viewer)
        assert r.status == 403
        r = await client.post(f"/api/v1/alarms/{aid}/ack", headers=mine)
        assert r.status == 403, "crews do not acknowledge alarms; operators do"
        r = await client.post(f"/api/v1/alarms/{aid}/shelve", json={"minutes": 600}, headers=operator)
        assert r.status == 400 and "60 minutes" in (await r.json())["detail"]
        r = await client.post(f"/api/v1/alarms/{aid}/shelve", json={"minutes": 30, "reason": "testing"},
                              headers=operator)
        assert r.status == 200 and (await r.json())["shelved_until"]
        r = await client.post(f"/api/v1/alarms/{aid}/unshelve", headers=operator)
        assert r.status == 200 and (await r.json())["shelved_until"] is None
        oos = f"/api/v1/alarms/{aid}/out_of_service"
        r = await client.post(oos, json={"enabled": True, "reason": "transmitter swap"}, headers=operator)
        assert r.status == 200 and (await r.json())["out_of_service"] is True
        r = await client.post(oos, json={"enabled": False}, headers=operator)
        assert r.status == 200 and (await r.json())["out_of_service"] is False
        assert (await client.post(oos, json={"enabled": False}, headers=operator)).status == 409
        assert (await client.post(oos, json={"enabled": "yes"}, headers=operator)).status == 400
        r = await client.post(f"/api/v1/alarms/{aid}/ack", headers=operator)
        body = await r.json()
        assert r.status == 200 and body["state"] == "active_acked" and "operator" in body["acked_by"]
        r = await client.post(f"/api/v1/alarms/{aid}/ack", headers=operator)
        assert r.status == 409

        # The crew: its own alarms only; comments and the work order, not the ack flag.
        assert (await client.get(f"/api/v1/alarms/{aid}", headers=theirs)).status == 403
        assert (await client.get(f"/api/v1/alarms/{aid}", headers=mine)).status == 200
        mine_list = await (await client.get("/api/v1/alarms?assigned=me", headers=mine)).json()
        assert [a["id"] for a in mine_list["alarms"]] == [aid]
        theirs_list = await (await client.get("/api/v1/alarms", headers=theirs)).json()
        assert theirs_list["alarms"] == []
        r = await client.post(f"/api/v1/alarms/{aid}/work", json={"state": "in_progress"}, headers=theirs)
        assert r.status == 403
        r = await client.post(f"/api/v1/alarms/{aid}/work", json={"state": "in_progress"}, headers=mine)
        assert r.status == 200 and (await r.json())["work_state"] == "in_progress"
        r = await client.post(f"/api/v1/alarms/{aid}/work", json={"state": "fixed"}, headers=mine)
        assert r.status == 400 and "in_progress" in (await r.json())["detail"]
        r = await client.post(f"/api/v1/alarms/{aid}/comment", json={"text": "valve closed"}, headers=mine)
        assert r.status == 200
        r = await client.post(f"/api/v1/alarms/{aid}/assign", json={"crew": "nope"}, headers=operator)
        assert r.status == 400
        r = await client.post(f"/api/v1/alarms/{aid}/assign", json={"crew": other}, headers=operator)
        assert r.status == 200 and (await r.json())["assigned_crew"] == other
        assert (await client.get(f"/api/v1/alarms/{aid}", headers=mine)).status == 403
        assert (await client.post(f"/api/v1/alarms/{aid}/nudge", headers=operator)).status == 404

        # Back to normal after the ack: closed.
        await send(pub, ps, {"pressure_bar": 2.5})
        await wait_for(lambda: state_of(url, "p-low", ps) == "closed", blocking=True)
        r = await client.get(f"/api/v1/alarms/{aid}/events", headers=operator)
        history = (await r.json())["events"]
        kinds = [e["event"] for e in history]
        for expected in ("raised", "assigned", "shelved", "unshelved", "acknowledged", "work",
                         "comment", "cleared"):
            assert expected in kinds
        shelved = next(e for e in history if e["event"] == "shelved")
        assert shelved["reason"] == "testing" and "operator" in shelved["actor"]
        assert next(e for e in history if e["event"] == "comment")["reason"] == "valve closed"
        assert (await client.get("/api/v1/alarms", headers=viewer)).status == 200
        closed = await (await client.get("/api/v1/alarms?state=closed", headers=viewer)).json()
        assert closed["alarms"][0]["closed_at"] is not None
        bad = await client.get("/api/v1/alarms?state=burning", headers=viewer)
        assert bad.status == 400 and "active_unacked" in (await bad.json())["detail"]


async def test_shelving_ends_by_itself_and_chattering_is_held(city_db_url, make_settings, mosquitto,
                                                              tmp_path, token_for):
    url = city_db_url
    ps1, ps2 = await asyncio.to_thread(first, url, "pressure_sensor", 2)
    path = write_rules(tmp_path / "r.yaml", {
        "id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
        "metric": "pressure_bar", "below": 1.5, "severity": "major"})
    operator = auth(await token_for(url, "operator"))
    settings = make_settings(url, rules={"paths": [path], "chatter_window_s": 3})
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    async with running(settings) as client, publisher(mosquitto.url) as pub:
        await wait_connected(client)
        engine = client.app[ALARMS]
        await send(pub, ps1, {"pressure_bar": 1.0})
        await wait_for(lambda: state_of(url, "p-low", ps1) == "active_unacked", blocking=True)
        aid = (await aq(url, "select id from alarms where device = %s", ps1))[0][0]
        r = await client.post(f"/api/v1/alarms/{aid}/shelve", json={"minutes": 0.02}, headers=operator)
        assert r.status == 200
        # 1.2 s later the timer ends the shelving, recorded as the system's doing.
        await wait_for(lambda: q(url, "select shelved_until from alarms where id = %s", aid)[0][0] is None,
                       blocking=True)
        unshelved = await aq(url, "select actor, reason from alarm_events where alarm_id = %s and "
                                  "event = 'unshelved'", aid)
        assert unshelved == [("rules", "the shelving time ran out")]

        # ps2 flaps: low, normal, low, normal, low within the window → chattering, held active.
        for i, v in enumerate((1.0, 2.0, 1.0, 2.0, 1.0, 2.0)):
            await send(pub, ps2, {"pressure_bar": v}, t0 + timedelta(seconds=i))
        await wait_for(lambda: q(url, "select bool_or(chattering) from alarms where device = %s",
                                 ps2)[0][0], blocking=True)
        await engine.drained()
        assert (await aq(url, "select active from alarms where device = %s", ps2))[0][0] is True
        assert len(await aq(url, "select id from alarms where device = %s", ps2)) == 1
        # Quiet for the window: the held clear is stored and the flag dropped.
        await wait_for(lambda: state_of(url, "p-low", ps2) == "rtn_unacked", within=20, blocking=True)
        assert (await aq(url, "select chattering from alarms where device = %s", ps2))[0][0] is False
        kpis = await (await client.get("/api/v1/alarms/kpis", headers=operator)).json()
    k = kpis["kpis"]
    assert kpis["alarms"] >= 2 and k["chattering_alarms"]["value"] == 1
    assert k["chattering_alarms"]["ok"] is False and k["chattering_alarms"]["target"] == 0
    assert k["alarms_per_operator_per_10min"]["target"] == 1
    assert k["alarms_per_operator_per_10min"]["max_manageable"] == 2
    assert k["priority_split_pct"]["value"]["medium"] == 100.0
    assert k["priority_split_pct"]["target"] == {"high": 5, "medium": 15, "low": 80}
    assert set(k) >= {"time_in_flood_pct", "stale_alarms", "peak_alarms_per_10min"}
