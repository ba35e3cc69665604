"""Outbound requests cannot be turned inward: crews' webhooks (and any other URL the server
posts to) that lead to loopback, link-local (cloud metadata), private or other non-public
addresses are refused at the API (400 naming the field) and again when the notifier sends,
on the address the name resolves to then, unless ``[security] allow_outbound`` allows them."""

from __future__ import annotations

import pytest

from server.http.app import create_app
from server.notify.outbound import OutboundPolicy
from server.settings import SecuritySettings
from tests.helpers import free_port, until
from tests.server.helpers import Receiver, fast_settings, notifier_running, outbox, raise_alarm

INWARD = [
    ("http://127.0.0.1:8080/api/v1/tokens", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.20.0.15/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://0.0.0.0:5432/", "unspecified"),
    ("http://localhost:1883/hook", "loopback"),  # a name: what it resolves to counts
]


@pytest.fixture
async def api(aiohttp_client, db_url, make_settings, token_for):
    async def make(**security):
        settings = make_settings(db_url, mqtt_url=None, security=SecuritySettings(**security))
        client = await aiohttp_client(create_app(settings))
        client.headers = {"Authorization": f"Bearer {await token_for(db_url, 'operator')}"}
        return client

    return make


@pytest.mark.parametrize(("url", "kind"), INWARD)
async def test_the_api_refuses_webhooks_that_lead_inward(api, url, kind):
    client = await api()
    resp = await client.post("/api/v1/crews", headers=client.headers, json={
        "id": "C1", "name": "Crew 1", "contacts": {"webhook": url}})
    assert resp.status == 400, await resp.text()
    problem = await resp.json()
    [error] = problem["errors"]
    assert error["field"] == "contacts.webhook" and kind in error["reason"]
    assert "allow_outbound" in error["reason"], "the way out is named"
    # a patch is checked the same way, and nothing was stored
    assert (await client.get("/api/v1/crews/C1", headers=client.headers)).status == 404


async def test_a_patch_is_checked_and_an_allow_list_opens_the_way(api):
    client = await api()
    ok = await client.post("/api/v1/crews", headers=client.headers, json={
        "id": "C2", "name": "Crew 2", "contacts": {"webhook": "https://93.184.215.14/hook"}})
    assert ok.status == 201, await ok.text()
    resp = await client.patch("/api/v1/crews/C2", headers=client.headers,
                              json={"contacts": {"webhook": "http://127.0.0.2:8080/x"}})
    assert resp.status == 400 and "loopback" in (await resp.json())["errors"][0]["reason"]

    intranet = await api(allow_outbound=["10.20.0.0/16"])
    resp = await intranet.patch("/api/v1/crews/C2", headers=intranet.headers,
                                json={"contacts": {"webhook": "http://10.20.0.15/hook"}})
    assert resp.status == 200, await resp.text()
    resp = await intranet.patch("/api/v1/crews/C2", headers=intranet.headers,
                                json={"contacts": {"webhook": "http://10.21.0.15/hook"}})
    assert resp.status == 400, "only the networks named"


def test_the_policy_judges_addresses_not_spellings():
    policy = OutboundPolicy()
    import ipaddress

    refused = ["127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fd00:ec2::254",
               "100.64.0.1", "172.16.0.1", "224.0.0.1", "0.0.0.0", "fe80::1"]
    for text in refused:
        assert policy.refusal(ipaddress.ip_address(text)), text
    for text in ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "8.8.8.8"]:
        assert policy.refusal(ipaddress.ip_address(text)) is None, text


async def test_the_notifier_refuses_an_inward_address_at_send_time(db_url):
    """The crew's webhook was written behind the API's back (or its name now resolves
    inward): the notifier resolves it, refuses the loopback address, and never connects."""
    receiver = Receiver(free_port())
    hook = f"http://localhost:{receiver.port}/hook"
    await receiver.start()
    try:
        async with notifier_running(db_url, fast_settings(max_attempts=3),
                                    allow_outbound=()) as (pool, notifier):
            async with pool.acquire() as conn:
                await conn.execute("insert into crews (id, name, contacts) values ('C3', 'c', $1)",
                                   {"webhook": hook})
            alarm, _ = await raise_alarm(pool, notifier, "PS-0001", assigned_crew="C3")

            async def settled():
                rows = [r for r in await outbox(pool, alarm["id"]) if r["channel"] == "webhook"]
                return rows if rows and rows[0]["status"] != "pending" else None

            [row] = await until(settled, what="the webhook row settled")
        assert row["status"] in ("fallback", "failed") and row["attempts"] == 1, dict(row)
        assert "refused" in row["last_error"] and "loopback" in row["last_error"]
        # a literal address is refused without resolving
        async with notifier_running(db_url, fast_settings(), allow_outbound=()) as (pool, notifier):
            from server.notify.channels import DeliveryError

            with pytest.raises(DeliveryError, match="loopback") as err:
                await notifier.worker.webhook.send(receiver.url, "ntf_1", b"{}", secret=None,
                                                   timeout_s=2)
            assert err.value.permanent
        assert receiver.requests == [], "nothing reached the inner address"

        # allowed by the administrator: delivered
        async with notifier_running(db_url, fast_settings(), allow_outbound=["127.0.0.0/8"]) as (
                pool, notifier):
            await notifier.worker.webhook.send(hook, "ntf_2", b"{}", secret=None, timeout_s=5)
        assert len(receiver.requests) == 1
    finally:
        await receiver.stop()
