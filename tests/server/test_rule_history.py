"""The history of rule changes (who, when, before and after) kept in the database: API
writes, enable/disable with PATCH, rule files as they load and change; errors that name
the field; who may read it."""

from __future__ import annotations

import yaml

from tests.helpers import aq, q, running, wait_for
from tests.server.helpers import write_rules
from tests.server.test_rules_api import touch_later


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


RULE = {"id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
        "metric": "pressure_bar", "below": 1.5, "severity": "major"}
FILE_RULE = {"id": "lamp-fault", "kind": "fault", "select": {"kind": "streetlight"},
             "metric": "lamp_fault", "severity": "minor"}


async def test_every_change_is_recorded_with_who_and_what(city_db_url, make_settings, tmp_path,
                                                          token_for):
    url = city_db_url
    path = tmp_path / "site.yaml"
    write_rules(path, FILE_RULE)
    integrator = auth(await token_for(url, "integrator"))
    operator = auth(await token_for(url, "operator"))
    viewer = auth(await token_for(url, "viewer"))
    settings = make_settings(url, rules={"paths": [str(tmp_path / "*.yaml")],
                                         "reload_interval_s": 0.2})
    async with running(settings) as client:
        async def history(rule_id: str, headers=operator) -> list[dict]:
            r = await client.get(f"/api/v1/rules/{rule_id}/history", headers=headers)
            assert r.status == 200, await r.text()
            body = await r.json()
            assert body["rule"] == rule_id
            return body["history"]

        # A rule file loaded at start: recorded once, by "file", with its path.
        (loaded,) = await history("lamp-fault")
        assert loaded["action"] == "create" and loaded["by"] == "file"
        assert loaded["source"] == f"file:{path}" and loaded["before"] is None
        assert loaded["after"]["metric"] == "lamp_fault"

        r = await client.post("/api/v1/rules", json=RULE, headers=integrator)
        assert r.status == 201, await r.text()
        (created,) = await history("p-low")
        assert created["action"] == "create" and created["by"].endswith("(integrator)")
        assert created["source"] == "api" and created["before"] is None
        assert created["after"]["below"] == 1.5
        assert {"field": "below", "before": None, "after": 1.5} in created["changes"]

        # An edit: the changed fields by name, before and after.
        r = await client.put("/api/v1/rules/p-low", json=RULE | {"below": 1.2, "deadband": 0.1},
                             headers=integrator)
        assert r.status == 200, await r.text()
        updated = (await history("p-low"))[0]
        assert updated["action"] == "update"
        assert updated["before"]["below"] == 1.5 and updated["after"]["below"] == 1.2
        assert sorted(c["field"] for c in updated["changes"]) == ["below", "deadband"]
        assert {"field": "deadband", "before": 0.0, "after": 0.1} in updated["changes"]

        # The same document again changes nothing, and records nothing.
        r = await client.put("/api/v1/rules/p-low", json=RULE | {"below": 1.2, "deadband": 0.1},
                             headers=integrator)
        assert r.status == 200 and len(await history("p-low")) == 2

        # Disable and enable with a merge patch: the engine follows, the history says so.
        r = await client.patch("/api/v1/rules/p-low", json={"enabled": False}, headers=integrator)
        body = await r.json()
        assert r.status == 200 and body["enabled"] is False and body["document"]["below"] == 1.2
        assert body["evaluated"] is False
        disabled = (await history("p-low"))[0]
        assert disabled["action"] == "disable"
        assert disabled["changes"] == [{"field": "enabled", "before": True, "after": False}]
        r = await client.patch("/api/v1/rules/p-low", json={"enabled": True}, headers=integrator)
        assert r.status == 200 and (await r.json())["evaluated"] is True
        assert [h["action"] for h in await history("p-low")] == [
            "enable", "disable", "update", "create"]

        # A bad patch: 400 naming the field, and nothing changes (rule nor history).
        r = await client.patch("/api/v1/rules/p-low", json={"below": "low", "deadband": -1},
                               headers=integrator)
        problem = await r.json()
        assert r.status == 400 and r.content_type == "application/problem+json"
        assert {e["field"] for e in problem["errors"]} == {"below", "deadband"}, problem
        assert all(e["reason"] for e in problem["errors"])
        r = await client.patch("/api/v1/rules/p-low", json={"below": None}, headers=integrator)
        problem = await r.json()
        assert r.status == 400 and problem["errors"][0]["field"] == "(rule)", problem
        assert "give a limit" in problem["detail"]  # null removed the only limit
        r = await client.patch("/api/v1/rules/p-low", json={"id": "other"}, headers=integrator)
        assert r.status == 400 and (await r.json())["field"] == "id"
        assert len(await history("p-low")) == 4
        stored = (await aq(url, "select document->>'below', enabled from rules where id = 'p-low'"))
        assert stored == [("1.2", True)]

        # Who may: operators and integrators read it; viewers and crews do not; writers only
        # integrators; a file's rule is changed in its file.
        assert (await client.get("/api/v1/rules/p-low/history", headers=viewer)).status == 403
        assert (await client.patch("/api/v1/rules/p-low", json={"enabled": False},
                                   headers=operator)).status == 403
        r = await client.patch("/api/v1/rules/lamp-fault", json={"enabled": False},
                               headers=integrator)
        assert r.status == 409 and str(path) in (await r.json())["detail"]
        assert (await client.patch("/api/v1/rules/nope", json={"enabled": False},
                                   headers=integrator)).status == 404
        assert (await client.get("/api/v1/rules/nope/history", headers=operator)).status == 404

        # Deleted: the history stays readable, its last entry the whole rule before.
        assert (await client.delete("/api/v1/rules/p-low", headers=integrator)).status == 204
        gone = await history("p-low")
        assert gone[0]["action"] == "delete" and gone[0]["after"] is None
        assert gone[0]["before"]["below"] == 1.2 and len(gone) == 5

        # A file edited: the change is recorded by "file" once the file is re-read.
        write_rules(path, FILE_RULE | {"severity": "major"})
        touch_later(path)
        await wait_for(lambda: len(stored_actions(url, "lamp-fault")) == 2, blocking=True)
        changed = (await history("lamp-fault"))[0]
        assert changed["action"] == "update" and changed["by"] == "file"
        assert changed["changes"] == [{"field": "severity", "before": "minor", "after": "major"}]
        # ... and a rule taken out of the file is a delete by "file".
        path.write_text(yaml.safe_dump({"rules": []}))
        touch_later(path)
        await wait_for(lambda: len(stored_actions(url, "lamp-fault")) == 3, blocking=True)
        assert (await history("lamp-fault"))[0]["action"] == "delete"


def stored_actions(url: str, rule_id: str) -> list[tuple]:
    return q(url, "select action from rule_history where rule_id = %s", rule_id)
