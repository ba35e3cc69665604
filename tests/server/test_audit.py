"""The audit log API: admins only, filters by actor, device, action and time, keyset pages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.helpers import running

LAMP = {"type": "Feature", "id": "SL-AUDIT-1", "geometry": {"type": "Point", "coordinates": [105.84, 21.59]},
        "properties": {"kind": "streetlight", "name": "audit lamp"}}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


async def test_audit_records_and_filters(db_url, make_settings, token_for):
    admin, integrator, operator, viewer = [await token_for(db_url, r)
                                           for r in ("admin", "integrator", "operator", "viewer")]
    started = datetime.now(UTC) - timedelta(seconds=1)
    async with running(make_settings(db_url, mqtt_url=None)) as client:
        async def audit(query: str = "", token: str = admin, status: int = 200) -> dict:
            resp = await client.get(f"/api/v1/audit{query}", headers=auth(token))
            assert resp.status == status, await resp.text()
            return await resp.json()

        assert (await client.post("/api/v1/devices", headers=auth(integrator), json=LAMP)).status == 201
        resp = await client.patch("/api/v1/devices/SL-AUDIT-1", headers=auth(integrator),
                                  json={"properties": {"name": "renamed"}})
        assert resp.status == 200
        # an operator's command (MQTT is off here: refused with 503, so nothing is audited)...
        resp = await client.post("/api/v1/devices/SL-AUDIT-1/commands", headers=auth(operator),
                                 json={"name": "set_dim", "args": {"level": 5}})
        assert resp.status == 503 and "IOC_MQTT_URL" in (await resp.json())["detail"]
        # ...and a viewer's attempt, which is
        resp = await client.post("/api/v1/devices/SL-AUDIT-1/commands", headers=auth(viewer),
                                 json={"name": "set_dim", "args": {"level": 5}})
        assert resp.status == 403
        # Wall time passes on both sides of `middle` (the point): the filter below splits there.
        await asyncio.sleep(0.05)
        middle = datetime.now(UTC)
        await asyncio.sleep(0.05)
        assert (await client.delete("/api/v1/devices/SL-AUDIT-1", headers=auth(integrator))).status == 204

        everything = await audit()
        actions = [e["action"] for e in everything["entries"]]
        # newest first; the four test tokens were created first, by the CLI
        assert actions == ["device.delete", "command.denied", "device.update", "device.create",
                           *["token.create"] * 4]
        assert everything["entries"][0]["actor"] == "test-integrator (integrator)"
        assert everything["entries"][1]["details"]["role"] == "viewer"

        by_device = await audit("?device=SL-AUDIT-1")
        assert [e["action"] for e in by_device["entries"]] == [
            "device.delete", "command.denied", "device.update", "device.create"]
        assert by_device["entries"][2]["details"] == {"changed": ["name"]}
        by_actor = await audit("?actor=test-integrator")
        assert {e["action"] for e in by_actor["entries"]} == {"device.create", "device.update",
                                                              "device.delete"}
        exact = await audit("?actor=test-viewer%20(viewer)")
        assert [e["action"] for e in exact["entries"]] == ["command.denied"]
        assert [e["action"] for e in (await audit("?action=device"))["entries"]] == [
            "device.delete", "device.update", "device.create"]
        assert (await audit("?action=devic"))["entries"] == []  # a prefix of a word is not a match
        assert [e["target"] for e in (await audit("?action=token.create"))["entries"]] == [
            "test-viewer", "test-operator", "test-integrator", "test-admin"]
        since = await audit(f"?from={iso(middle)}")
        assert [e["action"] for e in since["entries"]] == ["device.delete"]
        until = await audit(f"?from={iso(started)}&to={iso(middle)}&device=SL-AUDIT-1")
        assert len(until["entries"]) == 3

        # keyset pages of three, following the next links to the end
        seen, url = [], "/api/v1/audit?limit=3"
        while url:
            resp = await client.get(url, headers=auth(admin))
            page = await resp.json()
            assert page["numberReturned"] <= 3
            seen += [e["id"] for e in page["entries"]]
            url = next((link["href"] for link in page.get("links", []) if link["rel"] == "next"), None)
        assert seen == [e["id"] for e in everything["entries"]]

        for role_token in (operator, integrator, viewer):
            problem = await audit(token=role_token, status=403)
            assert "admin" in problem["detail"]
        for bad, words in [("?limit=0", "limit"), ("?limit=x", "limit"), ("?from=yesterday", "from"),
                           ("?user=bob", "unknown parameter"), ("?after=-4", "after"),
                           (f"?from={iso(middle)}&to={iso(started)}", "earlier")]:
            problem = await audit(bad, status=400)
            assert words in problem["detail"], bad
