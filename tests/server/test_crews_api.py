"""``/api/v1/crews`` over real HTTP against the synthetic city, and the notifier inside the
whole app: outbox metrics on /metrics."""

from __future__ import annotations

import psycopg

from server.notify.signing import new_secret
from server.settings import SecuritySettings, WebhookChannel
from tests.helpers import aexecute, free_port, running, until
from tests.server.helpers import RECEIVERS, Receiver, fast_settings

DEPOT = {"type": "Point", "coordinates": [105.84, 21.59]}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _one(url: str, sql: str, *args):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchone()


async def test_crews_are_listed_created_patched_and_deleted(city_db_url, make_settings, token_for):
    viewer = _auth(await token_for(city_db_url, "viewer"))
    operator = _auth(await token_for(city_db_url, "operator"))
    secret = new_secret()
    async with running(make_settings(city_db_url, mqtt_url=None)) as client:
        resp = await client.get("/api/v1/crews", headers=viewer)
        assert resp.status == 200
        listed = await resp.json()
        assert [c["id"] for c in listed["crews"]] == [f"CREW-{i:02d}" for i in range(1, 9)]
        first = listed["crews"][0]
        assert first["location"]["type"] == "Point" and first["escalation_level"] == 1
        assert first["contacts"] == {"email": "crew01@ioc.example"} and first["open_alarms"] == 0

        new = {"id": "SUP-01", "name": "Night supervisor", "ward": "W01", "location": DEPOT,
               "escalation_level": 2,
               "contacts": {"email": "sup@city.example", "webhook": "https://hooks.city.example/sup",
                            "webhook_secret": secret}}
        resp = await client.post("/api/v1/crews", json=new, headers=viewer)
        assert resp.status == 403
        resp = await client.post("/api/v1/crews", json=new, headers=operator)
        assert resp.status == 201, await resp.text()
        assert resp.headers["Location"] == "/api/v1/crews/SUP-01"
        body = await resp.json()
        assert body["webhook_signed"] is True and "webhook_secret" not in body["contacts"]
        assert body["location"] == DEPOT and body["available"] is True
        assert _one(city_db_url, "select contacts->>'webhook_secret', ST_AsText(location) "
                                 "from crews where id = 'SUP-01'") == (secret, "POINT(105.84 21.59)")
        resp = await client.post("/api/v1/crews", json=new, headers=operator)
        assert resp.status == 409

        patch = {"available": False, "contacts": {"webhook": None, "phone": "+84 912 345 678"}}
        resp = await client.patch("/api/v1/crews/SUP-01", json=patch, headers=operator)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["available"] is False
        assert body["contacts"] == {"email": "sup@city.example", "phone": "+84 912 345 678"}
        resp = await client.get("/api/v1/crews?available=false", headers=viewer)
        assert [c["id"] for c in (await resp.json())["crews"]] == ["SUP-01"]
        resp = await client.get("/api/v1/crews?ward=W01", headers=viewer)
        assert "SUP-01" in [c["id"] for c in (await resp.json())["crews"]]

        resp = await client.delete("/api/v1/crews/SUP-01", headers=operator)
        assert resp.status == 204
        resp = await client.get("/api/v1/crews/SUP-01", headers=viewer)
        assert resp.status == 404
        assert (await resp.json())["detail"] == "no crew with id 'SUP-01'"
    actions = _one(city_db_url, "select array_agg(action order by id) from audit_log "
                                "where target = 'SUP-01'")[0]
    assert actions == ["crew.create", "crew.update", "crew.delete"]


async def test_bad_crews_are_refused_naming_each_field(city_db_url, make_settings, token_for):
    operator = _auth(await token_for(city_db_url, "operator"))
    async with running(make_settings(city_db_url, mqtt_url=None)) as client:
        bad = {"id": "no spaces", "name": "", "location": {"type": "LineString",
                                                          "coordinates": [[0, 0], [1, 1]]},
               "available": "yes", "escalation_level": 0, "colour": "red",
               "contacts": {"email": "not-an-address", "webhook": "ftp://x", "webhook_secret": "abc",
                            "pager": "123"}}
        resp = await client.post("/api/v1/crews", json=bad, headers=operator)
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
        fields = sorted(e["field"] for e in problem["errors"])
        assert fields == ["available", "colour", "contacts.email", "contacts.pager",
                          "contacts.webhook", "contacts.webhook_secret", "escalation_level", "id",
                          "location", "name"]
        resp = await client.post("/api/v1/crews", json={"id": "C-9", "name": "x", "ward": "W99"},
                                 headers=operator)
        assert resp.status == 400
        assert "unknown ward 'W99'; known wards: W01" in (await resp.json())["detail"]
        resp = await client.patch("/api/v1/crews/CREW-01", json={"id": "CREW-99"}, headers=operator)
        assert resp.status == 400
        resp = await client.patch("/api/v1/crews/NOPE", json={"available": True}, headers=operator)
        assert resp.status == 404
    assert _one(city_db_url, "select count(*) from crews") == (8,)


async def test_a_crew_token_updates_only_its_own_position_and_availability(
        city_db_url, make_settings, token_for):
    crew = _auth(await token_for(city_db_url, "crew", crew="CREW-02"))
    async with running(make_settings(city_db_url, mqtt_url=None)) as client:
        resp = await client.patch("/api/v1/crews/CREW-02",
                                  json={"available": False, "location": DEPOT}, headers=crew)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["location"] == DEPOT
        resp = await client.patch("/api/v1/crews/CREW-02", json={"name": "x"}, headers=crew)
        assert resp.status == 403
        resp = await client.patch("/api/v1/crews/CREW-03", json={"available": False}, headers=crew)
        assert resp.status == 403
        resp = await client.delete("/api/v1/crews/CREW-02", headers=crew)
        assert resp.status == 403
    assert _one(city_db_url, "select available, name like 'Đội%%' from crews where id = 'CREW-02'") \
        == (False, True)
    assert _one(city_db_url, "select available from crews where id = 'CREW-03'") == (True,)


async def test_a_crew_with_open_alarms_cannot_be_deleted(city_db_url, make_settings, token_for):
    operator = _auth(await token_for(city_db_url, "operator"))
    await aexecute(city_db_url, "insert into alarms (rule, device, severity, dedup_key, assigned_crew) "
                                "values ('r', 'PS-0001', 'major', 'r:PS-0001', 'CREW-04')")
    async with running(make_settings(city_db_url, mqtt_url=None)) as client:
        resp = await client.delete("/api/v1/crews/CREW-04", headers=operator)
        assert resp.status == 409
        assert "1 open alarm(s)" in (await resp.json())["detail"]
        resp = await client.get("/api/v1/crews/CREW-04", headers=operator)
        assert (await resp.json())["open_alarms"] == 1


async def test_the_app_runs_the_outbox_and_exports_its_metrics(db_url, make_settings, token_for):
    receiver = Receiver(free_port())
    notify = fast_settings(webhooks=[WebhookChannel(name="ticketing", url=receiver.url)])
    viewer = _auth(await token_for(db_url, "viewer"))
    await receiver.start()
    try:
        async with running(make_settings(db_url, mqtt_url=None, notify=notify,
                                         security=SecuritySettings(allow_outbound=RECEIVERS))) as client:
            from server import keys
            from tests.server.helpers import new_alarm

            pool = client.app[keys.DB]
            async with pool.acquire() as conn, conn.transaction():
                await client.app[keys.NOTIFIER].enqueue(conn, await new_alarm(conn, "PS-0001"), "raised")
            await until(lambda: receiver.requests, what="the webhook")

            async def delivered_metric():
                text = await (await client.get("/metrics", headers=viewer)).text()
                return 'ioc_notifications_delivered_total{channel="webhook"} 1.0' in text and text
            text = await until(delivered_metric, what="the delivery on /metrics")
    finally:
        await receiver.stop()
    assert 'ioc_notification_outbox_pending{channel="webhook"}' in text
    assert "ioc_notification_outbox_oldest_due_seconds" in text
    assert "ioc_notification_delivery_seconds_bucket" in text
