"""Command results on the websocket (``{"op": "commands"}``): each device's result arrives as
the server writes it, for the groups a client watches, and matches what the API then shows."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from tests.helpers import aq, auth, running, wait_connected
from tests.server.test_commands import device_client

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WS = "/api/v1/ws"


async def _next(ws, kind: str, within: float = 20.0) -> dict:
    """The next message of type ``kind`` (frames may be arrays when coalescing)."""
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            docs = orjson.loads(msg.data)
            for doc in docs if isinstance(docs, list) else [docs]:
                if doc.get("type") == kind:
                    return doc


async def test_group_results_arrive_live_for_watchers(city_db_url, make_settings, mosquitto, token_for):
    [(cabinet,)] = await aq(city_db_url, """select parent from devices where kind = 'streetlight'
                                            and parent is not null group by parent
                                            order by count(*) desc, 1 limit 1""")
    children = [r[0] for r in await aq(city_db_url, "select id from devices where parent = %s and "
                                                    "kind = 'streetlight' order by id", cabinet)]
    faulty = children[0]
    operator = await token_for(city_db_url, "operator")
    viewer = await token_for(city_db_url, "viewer")
    body = {"target": {"parent": cabinet}, "name": "set_dim", "args": {"level": 30}}

    def answer(dev: str, cmd: dict) -> dict:
        return {"ok": False, "error": "driver fault"} if dev == faulty else {"ok": True}

    async with running(make_settings(city_db_url)) as client, \
            device_client(mosquitto.url, children, answer):
        await wait_connected(client)
        # The map's command picker reads the catalogue with each command's arguments.
        cat = await (await client.get("/api/v1/command-catalog", headers=auth(viewer))).json()
        by_name = {c["name"]: c for c in cat["commands"]}
        assert by_name["set_dim"]["args"]["level"] == {"type": "number", "minimum": 0, "maximum": 100,
                                                       "required": True}
        assert by_name["set_dim"]["group_kinds"] == ["streetlight"]
        ws_all = await client.ws_connect(WS, headers=auth(operator))
        ws_other = await client.ws_connect(WS, headers=auth(viewer))
        await ws_all.send_json({"op": "commands", "groups": "all", "id": 1})
        ack = await _next(ws_all, "commands_watch")
        assert ack == {"type": "commands_watch", "groups": "all", "id": 1}
        other = str(uuid.uuid4())  # a group that is not this one: its watcher gets nothing of it
        await ws_other.send_json({"op": "commands", "groups": [other]})
        assert (await _next(ws_other, "commands_watch"))["groups"] == [other]

        resp = await client.post("/api/v1/commands", headers=auth(operator), json=body)
        assert resp.status == 202, await resp.text()
        group = (await resp.json())["id"]
        # A viewer may watch it too (it may read the group from the API).
        ws_viewer = await client.ws_connect(WS, headers=auth(viewer))
        await ws_viewer.send_json({"op": "commands", "groups": [group]})
        await _next(ws_viewer, "commands_watch")

        final: dict[str, dict] = {}
        seen: list[str] = []
        while len(final) < len(children):
            msg = await _next(ws_all, "command_results")
            assert msg["group"] == group
            for r in msg["results"]:
                seen.append(r["status"])
                assert r["group"] == group and r["command"] and r["at"]
                if r["status"] not in ("pending", "sent"):
                    final[r["device"]] = r
        assert set(final) == set(children)
        assert final[faulty]["status"] == "failed" and final[faulty]["error"] == "driver fault"
        assert all(final[c]["status"] == "succeeded" for c in children[1:])
        assert "sent" in seen
        # What arrived live is what the API shows (the results are written before they are told).
        g = await (await client.get(f"/api/v1/command-groups/{group}", headers=auth(operator))).json()
        assert {r["device"]: r["status"] for r in g["results"]} == \
            {d: r["status"] for d, r in final.items()}

        # The viewer watching this group by id gets its results too; the one watching
        # another group gets none (a ping answered proves nothing came before it).
        got = await _next(ws_viewer, "command_results")
        assert got["group"] == group
        await ws_other.send_json({"op": "ping"})
        async with asyncio.timeout(10):
            first = orjson.loads((await ws_other.receive()).data)
        assert first == {"type": "pong"}

        # Bad watch requests name the field and change nothing.
        for bad in ("some", ["not-a-uuid"], [str(uuid.uuid4())] * 101, 5):
            await ws_all.send_json({"op": "commands", "groups": bad, "id": "x"})
            err = await _next(ws_all, "error")
            assert err["field"] == "groups" and err["id"] == "x", err
        # [] stops watching.
        await ws_all.send_json({"op": "commands", "groups": []})
        assert (await _next(ws_all, "commands_watch"))["groups"] == []
        for ws in (ws_all, ws_other, ws_viewer):
            await ws.close()
