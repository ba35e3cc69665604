"""Incidents: a cabinet trip in the simulator is one incident, not an alarm per lamp; a
pressure drop at neighbouring sensors is one burst incident at an estimated point."""

from __future__ import annotations

import uuid

from server.keys import ALARMS
from server.simulate import Simulator
from tests.helpers import aq, publisher, q, running, wait_connected, wait_for
from tests.server.helpers import send, write_rules

LAMP_FAULT = {"id": "lamp-fault", "kind": "fault", "select": {"kind": "streetlight"},
              "metric": "lamp_fault", "severity": "minor"}
FEEDER = {"id": "feeder-dark", "kind": "topology", "member": "lamp-fault", "min_count": 4,
          "within": "5m", "severity": "critical"}


async def test_cabinet_trip_is_one_incident(city_db_url, make_settings, mosquitto, tmp_path,
                                            token_for):
    url = city_db_url
    cabinet, n = (await aq(url, """select parent, count(*) from devices where kind = 'streetlight'
                                   group by parent having count(*) >= 5 order by parent limit 1"""))[0]
    lamps = sorted(r[0] for r in await aq(url, "select id from devices where parent = %s", cabinet))
    path = write_rules(tmp_path / "r.yaml", LAMP_FAULT, FEEDER)
    settings = make_settings(url, rules={"paths": [path]})
    token = await token_for(url, "viewer")
    sim = Simulator(url, mosquitto.url, modbus=False, faults=False,
                    intervals={"streetlight": 20}, client_id="sim-" + uuid.uuid4().hex[:6])
    async with running(settings) as client:
        await wait_connected(client)
        await sim.start()
        try:
            # Every lamp of the cabinet has reported (healthy) once.
            await wait_for(lambda: q(url, """select count(*) from device_state s join devices d
                                             on d.key = s.device_key where d.parent = %s""",
                                     cabinet)[0][0] == n, within=40, blocking=True)
            sim.inject("cabinet_trip", cabinet)
            await wait_for(lambda: q(url, "select count(*) from alarms where rule = 'lamp-fault' "
                                          "and suppressed", )[0][0] == n, within=30, blocking=True)
            await client.app[ALARMS].drained()
            incidents = await aq(url, "select id, device, state, severity from alarms "
                                      "where rule = 'feeder-dark'")
            assert len(incidents) == 1
            iid, device, state, severity = incidents[0]
            assert (device, state, severity) == (cabinet, "active_unacked", "critical")
            children = await aq(url, "select device, incident, suppressed, state from alarms "
                                     "where rule = 'lamp-fault' order by device")
            assert [c[0] for c in children] == lamps
            assert all(c[1] == iid and c[2] for c in children)
            # At most the first few lamps (before the fourth) were ever announced alone.
            shown = (await aq(url, """select count(*) from alarm_events e join alarms a on a.id = e.alarm_id
                                      where a.rule = 'lamp-fault' and e.event = 'raised'
                                        and (e.details ->> 'annunciated')::boolean"""))[0][0]
            assert shown < FEEDER["min_count"]
            r = await client.get(f"/api/v1/alarms/{iid}", headers={"Authorization": f"Bearer {token}"})
            body = await r.json()
            assert body["children"] == lamps and body["geometry"]["type"] == "Point"
            assert f"{n} of {n} children" in body["message"]
            open_shown = await (await client.get(
                "/api/v1/alarms?suppressed=false", headers={"Authorization": f"Bearer {token}"})).json()
            assert [a["id"] for a in open_shown["alarms"]] == [iid]

            # Power back: every lamp reports again, the children close, the incident returns.
            sim.clear_faults()
            await wait_for(lambda: q(url, "select state from alarms where id = %s", iid)[0][0]
                           == "rtn_unacked", within=30, blocking=True)
            await client.app[ALARMS].drained()
            assert (await aq(url, "select count(*) from alarms where rule = 'lamp-fault' "
                                  "and state <> 'closed'"))[0][0] == 0
        finally:
            await sim.stop()


async def test_pressure_drop_at_neighbours_is_one_burst_incident(city_db_url, make_settings,
                                                                 mosquitto, tmp_path):
    url = city_db_url
    a, b, dist = (await aq(url, """select x.id, y.id, ST_Distance(x.geom::geography, y.geom::geography)
                                   from devices x join devices y on x.id < y.id
                                   where x.kind = 'pressure_sensor' and y.kind = 'pressure_sensor'
                                   order by 3 limit 1"""))[0]
    drop = {"id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
            "metric": "pressure_bar", "below": 2.0, "severity": "major"}
    burst = {"id": "pipe-burst", "kind": "neighbourhood", "member": "p-low", "min_count": 2,
             "radius_m": dist + 100, "within": "3m", "severity": "critical"}
    path = write_rules(tmp_path / "r.yaml", drop, burst)
    async with running(make_settings(url, rules={"paths": [path]})) as client, \
            publisher(mosquitto.url) as pub:
        await wait_connected(client)
        await send(pub, a, {"pressure_bar": 0.8})  # a lost more: the estimate leans to it
        await send(pub, b, {"pressure_bar": 1.8})
        await wait_for(lambda: q(url, "select count(*) from alarms where rule = 'pipe-burst'")[0][0]
                       == 1, blocking=True)
        await client.app[ALARMS].drained()
        await wait_for(lambda: q(url, "select count(*) from alarms where rule = 'p-low' "
                                      "and suppressed")[0][0] == 2, blocking=True)
        (device, da, db) = (await aq(url, """select i.device,
                                                    ST_Distance(i.geom::geography, x.geom::geography),
                                                    ST_Distance(i.geom::geography, y.geom::geography)
                                             from alarms i, devices x, devices y
                                             where i.rule = 'pipe-burst' and x.id = %s and y.id = %s""",
                                     a, b))[0]
        assert device == a
        assert da < db and abs(da + db - dist) < 1.0  # on the line between them, nearer a
