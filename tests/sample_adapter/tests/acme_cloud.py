"""A real HTTP server standing in for ACME's cloud API (aiohttp, loopback).

Used by the package's contract tests and by the server's tests of the installed package.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

API_KEY = "k-123"


class AcmeCloud:
    """``mode`` says how the cloud answers ``GET /v1/meters``: ``ok``; outages and refusals
    (``down`` 503, ``unauthorized`` 401, ``gone`` 404); or documents a sloppy cloud sends
    (``missing_ts``, ``text_value``, ``nan_value``, ``bad_json``, ``not_an_object``,
    ``meters_not_a_list``, ``entry_not_an_object``)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        self.volume = 100.0
        self.valves: dict[str, bool] = {}
        self.no_valve: set[str] = set()  # serials that answer 409
        app = web.Application()
        app.router.add_get("/v1/meters", self._meters)
        app.router.add_put("/v1/meters/{serial}/valve", self._valve)
        self.runner = web.AppRunner(app)

    async def _valve(self, request: web.Request) -> web.Response:
        self.requests += 1
        serial = request.match_info["serial"]
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"error": "bad key"}, status=401)
        if self.mode == "down":
            return web.json_response({"error": "maintenance"}, status=503)
        if serial in self.no_valve:
            return web.json_response({"error": "no valve"}, status=409)
        self.valves[serial] = bool((await request.json())["open"])
        return web.json_response({"serial": serial, "valve_open": self.valves[serial]})

    async def _meters(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {API_KEY}" or self.mode == "unauthorized":
            return web.json_response({"error": "bad key"}, status=401)
        if self.mode == "down":
            return web.json_response({"error": "maintenance"}, status=503)
        if self.mode == "gone":
            return web.json_response({"error": "no such path"}, status=404)
        self.volume += 1
        ts = int(datetime.now(UTC).timestamp() * 1000)
        meters = [{"serial": s, "ts": ts, "volume_m3": self.volume, "flow_m3h": 1.5}
                  for s in request.query.getall("serial")]
        match self.mode:
            case "missing_ts":
                del meters[0]["ts"]
            case "text_value":
                meters[0]["flow_m3h"] = "n/a"
            case "nan_value":  # Python's json writes NaN and Infinity, as sloppy clouds do
                meters[0]["flow_m3h"] = float("nan")
                meters[0]["volume_m3"] = float("inf")
            case "bad_json":
                return web.Response(text='{"meters": [', content_type="application/json")
            case "not_an_object":
                return web.json_response(meters)
            case "meters_not_a_list":
                return web.json_response({"meters": "none today"})
            case "entry_not_an_object":
                meters[0] = None
        return web.json_response({"meters": meters})

    async def start(self) -> str:
        """Listen on a free loopback port; returns the base URL."""
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.runner.cleanup()
