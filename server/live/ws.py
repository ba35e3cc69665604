"""``GET /api/v1/ws``: the live map's websocket (protocol in CONTRACT.md "Websocket").

Client → server, one JSON object per text frame:

- ``{"op": "subscribe", "bbox": [minLon, minLat, maxLon, maxLat], "layers": [kind, ...],
  "alarms": true, "coalesce": false, "id": any}``: route the devices of these kinds in the
  bbox (again to move the viewport). Answered with a ``snapshot``, then ``state`` deltas.
  A kind with more devices in the bbox than ``[hub] max_snapshot_devices`` comes as grid
  cells instead (``"aggregated"``, ``"cell_zoom"``, ``"cells"`` in the snapshot, then
  ``{"type": "cells"}`` when they change, no ``state`` for its devices; server/live/cells.py);
  ``"zoom"`` (optional, the map's tile zoom) picks the cells of that zoom's aggregate tiles.
  Without ``bbox`` no devices are routed (a crew page that only wants alarms); without
  ``layers``, every device kind. ``coalesce: true`` lets the server put several messages in
  one frame as a JSON array (as Home Assistant's websocket API does), which a busy map wants.
  ``"reports": true`` adds ``{"type": "report", "report": {...}}`` for each citizens' report
  created or changed that the token may see (server/reports/ops.py).
- ``{"op": "unsubscribe"}``: stop devices and alarms (crew messages keep coming).
- ``{"op": "ping"}``: answered with ``{"type": "pong"}`` (browsers cannot send ping frames).
- ``{"op": "replay", "from": RFC 3339, "to": RFC 3339 (default now), "speed": 60, "bbox",
  "layers", "alarms": true}``: the past instead of live (server/live/replay.py): a
  ``snapshot`` with ``"at"``, the ``state`` and ``alarm`` messages with their original
  ``ts``, then ``{"type": "replay_end"}``. No live updates meanwhile.
- ``{"op": "commands", "groups": "all" | [group id, ...] | []}``: watch command results
  (answered with ``{"type": "commands_watch", "groups": ...}``): from then on, each batch of
  status changes the server writes comes as ``{"type": "command_results", "group": id (null
  for a single command), "results": [{"device", "command", "group", "status", "at",
  "result", "error"}, ...]}``, ``sent`` then a final state per device. ``[]`` stops. Every
  token may watch, as every token may read ``GET /api/v1/command-groups/{id}``. Watch first,
  then send (or read the group once), so no result falls between the two.
- ``{"op": "live"}``: back to live after a replay, with a fresh snapshot of the viewport
  subscribed before it (or of the replay's, or of ``bbox``/``layers`` if given).

A message the server cannot use gets ``{"type": "error", "message": ...}`` (with the
request's ``id``, if it had one, and the ``field`` at fault when it is one) and changes
nothing; the connection stays open.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import WSMsgType, web

from server import keys
from server.http.auth import principal
from server.http.jsonutil import dumps, flaw
from server.live.client import ALL_GROUPS, CLOSE_GRACE_S, Client
from server.live.hub import Hub
from server.live.index import Viewport
from server.live.replay import BadReplay, parse_replay

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_MESSAGE_BYTES = 64 * 1024
OPS = ("subscribe", "unsubscribe", "ping", "replay", "live", "commands")
MAX_WATCHED_GROUPS = 100


class BadMessage(ValueError):
    """What is wrong with a client's message, in words the client's developer can act on."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def parse_subscribe(msg: dict[str, Any], known_kinds: set[str]) -> tuple[Viewport, bool, bool]:
    bbox = msg.get("bbox")
    if bbox is not None:
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)):
            raise BadMessage("bbox must be [minLon, minLat, maxLon, maxLat] (four numbers, WGS 84)",
                             "bbox")
        x0, y0, x1, y1 = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise BadMessage("bbox values must be finite numbers", "bbox")
        if not (-180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= 90 and -90 <= y1 <= 90):
            raise BadMessage(f"bbox {bbox} is outside WGS 84 (longitudes -180..180, "
                             "latitudes -90..90); send [minLon, minLat, maxLon, maxLat]", "bbox")
        if x0 > x1 or y0 > y1:
            raise BadMessage(f"bbox {bbox} has its minimum above its maximum; send "
                             "[minLon, minLat, maxLon, maxLat]", "bbox")
        bbox = (x0, y0, x1, y1)
    layers = msg.get("layers")
    if layers is None:
        kinds = tuple(sorted(known_kinds))
    else:
        if not isinstance(layers, list) or not all(isinstance(k, str) for k in layers):
            raise BadMessage("layers must be a list of device kinds, e.g. [\"streetlight\"]",
                             "layers")
        unknown = sorted(set(layers) - known_kinds)
        if unknown:
            raise BadMessage(f"unknown layer(s) {', '.join(unknown)}; layers are device kinds: "
                             f"{', '.join(sorted(known_kinds))}", "layers")
        kinds = tuple(dict.fromkeys(layers))
    alarms = msg.get("alarms", False)
    coalesce = msg.get("coalesce", False)
    for name, val in (("alarms", alarms), ("coalesce", coalesce)):
        if not isinstance(val, bool):
            raise BadMessage(f"{name} must be true or false, got {val!r}", name)
    return Viewport(bbox, kinds), alarms, coalesce


def parse_groups(groups: Any) -> frozenset[str] | None:
    """``"all"``, a list of command group ids (UUIDs), or ``[]`` to stop watching."""
    if groups == "all":
        return ALL_GROUPS
    if not isinstance(groups, list) or len(groups) > MAX_WATCHED_GROUPS:
        raise BadMessage(f'groups must be "all" or a list of at most {MAX_WATCHED_GROUPS} command '
                         'group ids ([] stops watching)', "groups")
    out = set()
    for g in groups:
        try:
            out.add(str(uuid.UUID(g)))
        except (TypeError, ValueError, AttributeError):
            raise BadMessage(f"groups: {g!r} is not a command group id (a UUID)", "groups") from None
    return frozenset(out) if out else None


async def handle_message(hub: Hub, client: Client, data: str | bytes) -> None:
    request_id = None
    try:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError as err:
            raise BadMessage(f"not JSON: {err}") from None
        if not isinstance(msg, dict):
            raise BadMessage('send a JSON object such as {"op": "subscribe", "bbox": [...]}')
        found = flaw(msg)  # an id nested 300 deep cannot be echoed back (orjson stops at 254)
        if found:
            raise BadMessage(f"{found[0]} {found[1]}")
        request_id = msg.get("id")
        op = msg.get("op")
        if op == "subscribe":
            viewport, alarms, coalesce = parse_subscribe(msg, set(hub.directory.kind_metrics))
            reports = _reports_flag(msg)
            zoom = msg.get("zoom")
            if zoom is not None and (not isinstance(zoom, int) or isinstance(zoom, bool)
                                     or not 0 <= zoom <= 24):
                raise BadMessage("zoom must be the map's tile zoom, an integer 0 to 24", "zoom")
            client.coalesce = coalesce
            client.reports = reports
            await _subscribe(hub, client, viewport, alarms, request_id, zoom)
        elif op == "replay":
            viewport, alarms, coalesce = parse_subscribe({"alarms": True, **msg},
                                                         set(hub.directory.kind_metrics))
            try:
                req = parse_replay(msg, viewport, alarms, datetime.now(UTC))
            except BadReplay as err:
                raise BadMessage(str(err), err.field) from None
            if "coalesce" in msg:
                client.coalesce = coalesce
            hub.start_replay(client, req, request_id)
        elif op == "live":
            if "bbox" in msg or "layers" in msg:
                viewport, alarms, _ = parse_subscribe({"alarms": True, **msg},
                                                      set(hub.directory.kind_metrics))
                back = (viewport, alarms)
            else:  # the live view left for the replay, else the replay's own view
                back = client.live_sub or client.replay_sub or (Viewport(None, ()), True)
            await _subscribe(hub, client, *back, request_id)
        elif op == "commands":
            client.command_groups = parse_groups(msg.get("groups"))
            shown: Any = "all" if client.command_groups is ALL_GROUPS else sorted(client.command_groups or ())
            client.push("commands_watch", dumps(_with_id({"type": "commands_watch", "groups": shown},
                                                         request_id)))
        elif op == "unsubscribe":
            hub.unsubscribe(client)
            client.reports = False
        elif op == "ping":
            client.push("pong", dumps(_with_id({"type": "pong"}, request_id)))
        else:
            raise BadMessage(f"unknown op {op!r}; ops are {', '.join(OPS)}")
    except BadMessage as err:
        doc: dict[str, Any] = {"type": "error", "message": str(err)}
        if err.field is not None:
            doc["field"] = err.field
        client.push("error", dumps(_with_id(doc, request_id)))


async def _subscribe(hub: Hub, client: Client, viewport: Viewport, alarms: bool,
                     request_id: Any, zoom: int | None = None) -> None:
    try:
        await hub.subscribe(client, viewport, alarms, request_id, zoom)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        logger.warning("websocket %s: snapshot failed: %s", client.name, err)
        raise BadMessage("the snapshot could not be read (database unavailable); "
                         "subscribe again in a moment") from None


def _reports_flag(msg: dict[str, Any]) -> bool:
    reports = msg.get("reports", False)
    if not isinstance(reports, bool):
        raise BadMessage(f"reports must be true or false, got {reports!r}", "reports")
    return reports


def _with_id(doc: dict[str, Any], request_id: Any) -> dict[str, Any]:
    if request_id is not None:
        doc["id"] = request_id
    return doc


@routes.get("/api/v1/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    who = principal(request)  # the auth middleware has already refused a bad token
    hub: Hub = request.app[keys.HUB]
    settings = hub.settings
    # No per-message compression: state messages are small and many, and deflate would
    # cost CPU per frame per client (and a zlib context per client).
    ws = web.WebSocketResponse(heartbeat=settings.heartbeat_s, compress=False,
                               max_msg_size=MAX_MESSAGE_BYTES, timeout=CLOSE_GRACE_S)
    await ws.prepare(request)
    client = hub.connect(ws, who, request)
    logger.info("websocket %s connected (%s)", client.name, who.role)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await handle_message(hub, client, msg.data)
            elif msg.type == WSMsgType.BINARY:
                client.push("error", dumps({"type": "error", "message":
                                            "send JSON in text frames, not binary"}))
            elif msg.type == WSMsgType.ERROR:
                logger.info("websocket %s: %s", client.name, ws.exception())
    finally:
        await hub.disconnect(client)
        logger.info("websocket %s disconnected (code %s)", client.name, ws.close_code)
    return ws


def setup(app: web.Application) -> None:
    """The route, and closing every websocket (1001 going away) when the server stops,
    before aiohttp waits for open handlers to finish."""
    app.add_routes(routes)

    async def close_websockets(app: web.Application) -> None:
        hub = app.get(keys.HUB)
        if hub is not None:
            await hub.close_all(1001, "server shutting down")

    app.on_shutdown.append(close_websockets)
