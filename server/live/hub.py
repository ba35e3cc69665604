"""The websocket hub: viewport subscriptions, snapshots, conflated state deltas, alarms.

Producers call in synchronously on the event loop and never wait for a client: the ingest
writer after each commit (:meth:`Hub.on_batch`), the staleness scan (:meth:`Hub.on_status`),
the alarm engine (:meth:`Hub.publish_alarm`), the notifier (:meth:`Hub.send_to_crew`) and
the command journal (:meth:`Hub.publish_commands`, to clients watching command results).
They only route; each client's own writer task sends.

Routing is done once per committed batch for all clients together: the batch's device keys
are looked up in :class:`SpatialIndex` (every device's bounding box and kind in numpy arrays
indexed by device key) and one (clients x devices) boolean matrix says who sees what. At
5,000 updates/s and 100 clients that is a few numpy operations per batch instead of half a
million Python comparisons per second.

Each client's queue has two parts:

- states, conflated: when a client is behind, a newer update of a device whose previous
  update is still unsent is merged into it (per metric, the newer timestamp wins);
- messages that are never dropped nor merged: snapshots, alarm transitions, notifications,
  errors, in order.

A client whose oldest unsent message has waited longer than ``slow_after_s``, or which has
more than ``max_queued`` unsent messages of the second kind, is disconnected with close code
1013 (try again later) and a reason; on reconnecting it gets a fresh snapshot. This follows
Home Assistant's ``websocket_api/http.py``: bounded queue, ``put_nowait``, disconnect the
client that cannot keep up. Coalescing is also theirs: a client that subscribes with
``"coalesce": true`` gets several messages per frame as a JSON array.

Scale-out: every update routed from this process is also offered to ``relays`` as an
envelope (JSON bytes, see :meth:`Hub.apply_remote`); a transport between server processes
publishes them and hands its peers' envelopes to :meth:`Hub.apply_remote`, which routes
them like local ones. :class:`BrokerRelay` is that transport over the MQTT broker
(``hub.relay = true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import numpy as np
import orjson
from aiohttp import WSCloseCode, web

from server import keys
from server.http.jsonutil import dumps
from server.vocab import severity_rank_sql
from tiles.catalogue import DETAIL_MINZOOM

if TYPE_CHECKING:
    from server.http.auth import Principal
    from server.ingest.directory import Directory
    from server.ingest.writer import Committed
    from server.runtime.metrics import Registry
    from server.settings import HubSettings

from server.live.cells import CELLS_SQL, DENSE_SQL, cell_view
from server.live.client import Client
from server.live.deltas import Delta, now_ms
from server.live.index import SpatialIndex, Viewport
from server.live.relay import BrokerRelay
from server.live.replay import KIND as REPLAY_KIND
from server.live.replay import Replay, ReplayRequest

logger = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 1013  # "try again later": reconnect and take a fresh snapshot
TICK_S = 0.5  # the watchdog: slow clients, queue gauges, index refresh
MAX_PARKED = 100_000  # updates held for devices the index does not know yet


SNAPSHOT_SQL = f"""
with v as (
    select d.id, d.kind, coalesce(s.status, 'unknown') as status,
           coalesce(s.values, '{{}}'::jsonb) as values, s.last_seen, a.severity,
           row_number() over (order by d.id) as n
    from devices d
    left join device_state s on s.device_key = d.key
    left join (
        select device, (array_agg(severity order by {severity_rank_sql()}))[1] as severity
        from alarms
        where active and state <> 'closed' and not suppressed and not out_of_service
          and ($7::text is null or assigned_crew = $7::text)  -- a crew sees its own alarms
        group by device
    ) a on a.device = d.id
    where d.geom && ST_MakeEnvelope($1, $2, $3, $4, 4326) and d.kind = any($5::text[])
    order by d.id
    limit $6 + 1
)
select count(*) as n,
       coalesce(json_agg(json_build_object(
           'id', id, 'kind', kind, 'status', status, 'values', values,
           'alarm_severity', severity,
           'last_seen', to_char(last_seen at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
       ) order by id) filter (where n <= $6), '[]')::text as devices
from v
"""


class Hub:
    def __init__(self, pool: asyncpg.Pool, directory: Directory, settings: HubSettings,
                 metrics: Registry) -> None:
        self.pool = pool
        self.directory = directory
        self.settings = settings
        self.metrics = metrics
        self.node = uuid.uuid4().hex[:12]  # names this process in relay envelopes
        self.index = SpatialIndex()
        self.clients: set[Client] = set()
        # Called with each envelope of a local update (see the module docstring).
        self.relays: list[Callable[[bytes], None]] = []
        self.broker: BrokerRelay | None = None  # the transport to other processes, if on
        self._subs: list[Client] = []
        self._subs_dirty = True
        self._vx0 = self._vy0 = self._vx1 = self._vy1 = np.empty(0)
        self._vkinds = np.zeros((0, 1), bool)
        self._tasks: set[asyncio.Task] = set()
        self._watchdog: asyncio.Task | None = None
        self._reload: asyncio.Task | None = None
        self._parked: list[Delta] = []
        self._sent: dict[str, int] = {}
        self._sent_children: dict[str, Any] = {}
        self._cells_at = 0.0
        self._cells_task: asyncio.Task | None = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            await self.index.load(conn, self.directory.version)
        self._watchdog = asyncio.create_task(self._watch(), name="hub.watchdog")

    async def stop(self) -> None:
        await self.close_all(WSCloseCode.GOING_AWAY, "server shutting down")
        reload, self._reload = self._reload, None
        if reload is not None and not reload.done():
            # Let a running index reload finish rather than cancel it inside its
            # transaction, which leaves the pooled connection mid-operation ("another
            # operation is in progress") for whoever closes the pool next.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await asyncio.shield(reload)
        for task in (self._watchdog, self._cells_task, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._watchdog, self._cells_task, *self._tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks.clear()

    async def close_all(self, code: int, reason: str) -> None:
        clients = [c for c in self.clients if not c.closing]
        if clients:
            await asyncio.gather(*(c.close(code, reason) for c in clients),
                                 return_exceptions=True)

    # ---------------------------------------------------------------- connections
    def connect(self, ws: web.WebSocketResponse, principal: Principal,
                request: web.Request) -> Client:
        transport = request.transport
        if transport is not None and self.settings.send_buffer_bytes:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.send_buffer_bytes)
        peer = request.remote or "?"
        client = Client(self, ws, principal, transport, f"{principal.name}@{peer}")
        self.clients.add(client)
        self.metrics.ws_clients.set(len(self.clients))
        client.start()
        return client

    async def disconnect(self, client: Client) -> None:
        client.closing = True
        self.clients.discard(client)
        self._subs_dirty = True
        self.metrics.ws_clients.set(len(self.clients))
        await client.stop()

    def kick(self, client: Client, code: int, reason: str) -> None:
        """Disconnect a client that cannot keep up, without waiting for it."""
        if client.closing:
            return
        client.closing = True
        self._subs_dirty = True
        self.metrics.ws_disconnected_slow.inc()
        logger.warning("websocket %s disconnected: %s", client.name, reason)
        task = asyncio.create_task(client.close(code, reason), name=f"hub.kick[{client.name}]")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def subscribe(self, client: Client, viewport: Viewport, alarms: bool,
                        request_id: Any = None, zoom: int | None = None) -> int:
        """Route ``viewport`` to the client from now on, then queue its snapshot.

        Updates routed while the snapshot is read wait behind it, so the client sees
        the snapshot first and then every change since (merged where they overlap).
        A kind with more devices in the bbox than ``max_snapshot_devices`` comes as grid
        cells (server/live/cells.py; ``zoom``: the map's tile zoom, whose cells to send) and
        its devices' updates are not routed. Returns the number of devices in the snapshot.
        """
        self.end_replay(client)
        client.live_sub = (viewport, alarms)
        client.holding = True
        client.clear_states()  # the old viewport's updates are no use now
        client.viewport = viewport
        client.cells = None
        client.alarms = alarms
        self._subs_dirty = True
        crew = (client.crew or "") if client.crew_scoped else None
        try:
            async with self.pool.acquire() as conn:
                dense = await self._dense(conn, viewport, zoom)
                if dense:
                    client.viewport = viewport = Viewport(
                        viewport.bbox, tuple(k for k in viewport.kinds if k not in dense))
                    view = cell_view(dense, viewport.bbox, zoom)
                    cells = await conn.fetchval(CELLS_SQL, *view.args(crew))
                count, devices = await self._snapshot(viewport, crew, conn)
        except BaseException:
            client.viewport = None
            self._subs_dirty = True
            raise
        finally:
            client.holding = False
            client._wake.set()
        limit = self.settings.max_snapshot
        head: dict[str, Any] = {"type": "snapshot"}
        if request_id is not None:
            head["id"] = request_id
        if count > limit:
            head.update(truncated=True, limit=limit)
        frame = dumps(head)[:-1] + b',"devices":' + devices.encode()
        if dense:
            client.cells, client.cells_sent = view, cells
            frame += (b',"aggregated":' + dumps(list(view.kinds)) + b',"cell_zoom":' + str(view.zoom).encode()
                      + b',"cells":' + cells.encode())
        client.push("snapshot", frame + b"}")
        return min(count, limit)

    async def _dense(self, conn: asyncpg.Connection, viewport: Viewport,
                     zoom: int | None = None) -> tuple[str, ...]:
        """The subscribed kinds with more devices in the bbox than ``max_snapshot_devices``
        that the map draws as cells at ``zoom`` (below the kind's detail zoom). At or above it
        the tiles list the devices, so the devices come too, each with its live state (up to
        ``max_snapshot``); a client that gives no zoom gets cells for every dense kind."""
        if viewport.bbox is None or not viewport.kinds:
            return ()
        kinds = [k for k in viewport.kinds if zoom is None or zoom < DETAIL_MINZOOM.get(k, 0)]
        if not kinds:
            return ()
        rows = await conn.fetch(DENSE_SQL, kinds, *viewport.bbox, self.settings.max_snapshot_devices)
        return tuple(r["kind"] for r in rows)

    async def _refresh_cells(self) -> None:
        """Read the cells of every aggregated view again; send those that changed."""
        for client in [c for c in self.clients if c.cells is not None and not c.closing]:
            view = client.cells
            crew = (client.crew or "") if client.crew_scoped else None
            try:
                async with self.pool.acquire() as conn:
                    cells = await conn.fetchval(CELLS_SQL, *view.args(crew))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                logger.warning("hub: cells not refreshed (%s)", err)
                return
            if client.cells is view and cells != client.cells_sent:
                client.cells_sent = cells
                head = b'{"type":"cells","aggregated":' + dumps(list(view.kinds))
                client.push("cells", head + b',"cell_zoom":' + str(view.zoom).encode()
                            + b',"cells":' + cells.encode() + b"}")

    def unsubscribe(self, client: Client) -> None:
        self.end_replay(client)
        client.live_sub = None
        client.viewport = None
        client.cells = None
        client.alarms = False
        client.clear_states()
        self._subs_dirty = True

    # ---------------------------------------------------------------- replay
    def start_replay(self, client: Client, req: ReplayRequest, request_id: Any = None) -> None:
        """Replay the past to the client (server/live/replay.py); it gets no live updates
        until :meth:`end_replay` (``{"op": "live"}``, a subscribe, or another replay)."""
        self.end_replay(client)
        client.replay_sub = (req.viewport, req.alarms)
        client.viewport = None
        client.cells = None
        client.alarms = False
        client.clear_states()
        self._subs_dirty = True
        replay = Replay(self, client, req, request_id)
        client.replay = asyncio.create_task(replay.run_reporting(),
                                            name=f"hub.client[{client.name}].replay")

    def end_replay(self, client: Client) -> bool:
        """Stop a client's replay, if one runs or has ended unseen; its unsent messages
        are dropped. True when the client was in a replay."""
        task, client.replay = client.replay, None
        if task is None:
            return False
        task.cancel()
        client.drop(REPLAY_KIND)
        return True

    async def _snapshot(self, viewport: Viewport, crew: str | None = None,
                        conn: asyncpg.Connection | None = None) -> tuple[int, str]:
        """The devices in ``viewport``, with the worst alarm severity of each: of every
        alarm, or for a crew token (``crew``) of its own crew's alarms only."""
        if viewport.bbox is None or not viewport.kinds:
            return 0, "[]"
        if conn is None:
            async with self.pool.acquire() as conn:
                return await self._snapshot(viewport, crew, conn)
        row = await conn.fetchrow(SNAPSHOT_SQL, *viewport.bbox, list(viewport.kinds),
                                  self.settings.max_snapshot, crew)
        return row["n"], row["devices"]

    # ---------------------------------------------------------------- producers
    def on_batch(self, committed: Committed) -> None:
        """An ingest listener: state deltas for the devices of a committed batch."""
        by_key = self.directory.by_key
        status: dict[int, tuple[str, int]] = {}
        for key, st, ts, _retained in committed.status:
            ms = int(ts.timestamp() * 1000)
            cur = status.get(key)
            if cur is None or ms >= cur[1]:
                status[key] = (st, ms)
        deltas: list[Delta] = []
        for key, per in committed.states.items():
            dev = by_key.get(key)
            if dev is None:
                continue
            times = {m: v[0] for m, v in per.items()}
            ts = max(times.values())
            st, st_ms = status.pop(key, ("online", ts))
            deltas.append(Delta(key, dev.id, ts, st, st_ms, {m: v[1] for m, v in per.items()},
                                times))
        for key, (st, ms) in status.items():
            dev = by_key.get(key)
            if dev is not None:
                deltas.append(Delta(key, dev.id, ms, st, ms, {}, {}))
        self._publish_states(deltas)

    def on_status(self, changes: list[tuple[int, str]]) -> None:
        """Status changes found by the staleness scan: [(device_key, status), ...]."""
        ms = now_ms()
        by_key = self.directory.by_key
        deltas = [Delta(key, dev.id, ms, st, ms, {}, {})
                  for key, st in changes if (dev := by_key.get(key)) is not None]
        self._publish_states(deltas)

    def publish_alarm(self, alarm: dict[str, Any], *, relay: bool = True) -> None:
        """An alarm transition (the alarm as the API shows it), to alarm subscribers."""
        frame = None
        for client in self.clients:
            if not client.closing and client.wants_alarm(alarm):
                if frame is None:
                    frame = dumps({"type": "alarm", "alarm": alarm})
                client.push("alarm", frame)
        if relay and self.relays:
            self._relay({"alarm": alarm})

    def publish_report(self, report: dict[str, Any], *, previous_crew: str | None = None,
                       relay: bool = True) -> None:
        """A citizens' report created or changed (server/reports/ops.py), to the clients that
        subscribed with ``"reports": true``, each seeing what its role may see."""
        for client in self.clients:
            if not client.closing:
                shown = client.report_view(report, previous_crew)
                if shown is not None:
                    client.push("report", dumps({"type": "report", "report": shown}))
        if relay and self.relays:
            self._relay({"report": report, "previous_crew": previous_crew})

    def publish_commands(self, events: list[dict[str, Any]], *, relay: bool = True) -> None:
        """Commands' status changes as written (server/commands/journal.py), one
        ``command_results`` message per group to the clients watching it (``{"op":
        "commands"}``); never dropped, so a map counts every result of a group."""
        watchers = [c for c in self.clients if not c.closing and c.command_groups is not None]
        if watchers:
            by_group: dict[str | None, list[dict[str, Any]]] = {}
            for e in events:
                by_group.setdefault(e["group"], []).append(e)
            for group, results in by_group.items():
                frame = None
                for client in watchers:
                    if client.watches_group(group):
                        if frame is None:
                            frame = dumps({"type": "command_results", "group": group,
                                           "results": results})
                        client.push("command_results", frame)
        if relay and self.relays:
            self._relay({"commands": events})

    def send_to_crew(self, crew: str, message: dict[str, Any], *, relay: bool = True) -> bool:
        """A message to the connected clients of one crew; False when none is connected
        to this process."""
        frame = None
        for client in self.clients:
            if not client.closing and client.crew == crew:
                if frame is None:
                    frame = dumps(message)
                client.push(str(message.get("type", "message")), frame)
        if relay and self.relays:
            self._relay({"crew": crew, "message": message})
        return frame is not None

    def apply_remote(self, envelope: bytes | dict[str, Any]) -> None:
        """Route an update that another server process published (its relay envelope):

        - ``{"node": n, "states": [[device, ts_ms, status, status_ms, {metric: [ms, value]}], ...]}``
        - ``{"node": n, "alarm": {...}}``
        - ``{"node": n, "crew": crew_id, "message": {...}}``
        - ``{"node": n, "report": {...}, "previous_crew": id}``
        - ``{"node": n, "commands": [{"device", "command", "group", "status", ...}, ...]}``
        """
        doc = orjson.loads(envelope) if isinstance(envelope, bytes | bytearray) else envelope
        if doc.get("node") == self.node:
            return  # our own, echoed back by the transport
        if "states" in doc:
            devices = self.directory.devices
            deltas = []
            for device, ts_ms, st, st_ms, vals in doc["states"]:
                dev = devices.get(device)
                if dev is not None:
                    deltas.append(Delta(dev.key, device, ts_ms, st, st_ms,
                                        {m: v[1] for m, v in vals.items()},
                                        {m: v[0] for m, v in vals.items()}))
            self._publish_states(deltas, relay=False)
        if "alarm" in doc:
            self.publish_alarm(doc["alarm"], relay=False)
        if "report" in doc:
            self.publish_report(doc["report"], previous_crew=doc.get("previous_crew"), relay=False)
        if "crew" in doc:
            self.send_to_crew(doc["crew"], doc["message"], relay=False)
        if "commands" in doc:
            self.publish_commands(doc["commands"], relay=False)

    # ---------------------------------------------------------------- routing
    def _publish_states(self, deltas: list[Delta], *, relay: bool = True) -> None:
        if not deltas:
            return
        if relay and self.relays:
            self._relay({"states": [d.as_wire() for d in deltas]})
        if self._subs_dirty:
            self._rebuild_subs()
        if not self._subs:
            return
        index = self.index
        if not index.size:
            self._park(deltas)
            return
        keys = np.fromiter((d.key for d in deltas), np.int64, len(deltas))
        known = keys < index.size
        k = np.where(known, keys, 0)
        x0, y0, x1, y1 = index.minx[k], index.miny[k], index.maxx[k], index.maxy[k]
        known &= ~np.isnan(x0)
        if not known.all():
            self._park([deltas[i] for i in np.flatnonzero(~known).tolist()])
        kinds = np.where(known, index.kind[k], -1)  # -1: the all-False last column
        hit = ((self._vx0[:, None] <= x1) & (self._vx1[:, None] >= x0)
               & (self._vy0[:, None] <= y1) & (self._vy1[:, None] >= y0)
               & self._vkinds[:, kinds] & known)
        rows, cols = np.nonzero(hit)
        if not rows.size:
            return
        cuts = np.flatnonzero(np.diff(rows)) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = np.concatenate((cuts, [rows.size])).tolist()
        subs = self._subs
        for s, e in zip(starts, ends, strict=True):
            subs[rows[s]].push_states(deltas, cols[s:e])

    def _park(self, deltas: list[Delta]) -> None:
        """Updates of devices the index does not know yet (created a moment ago, here or in
        another process): routed once the index is rebuilt, instead of lost."""
        if self.directory.version == self.index.version:
            return  # the index is current: a device deleted meanwhile
        room = MAX_PARKED - len(self._parked)
        self._parked.extend(deltas[:room])
        self._schedule_reload()

    def _rebuild_subs(self) -> None:
        subs = [c for c in self.clients
                if not c.closing and c.viewport is not None and c.viewport.bbox is not None]
        codes = self.index.kinds
        vk = np.zeros((len(subs), len(codes) + 1), bool)
        for i, c in enumerate(subs):
            for kind in c.viewport.kinds:
                code = codes.get(kind)
                if code is not None:
                    vk[i, code] = True
        boxes = np.array([c.viewport.bbox for c in subs], np.float64).reshape(len(subs), 4)
        self._vx0, self._vy0, self._vx1, self._vy1 = boxes.T.copy()
        self._vkinds = vk
        self._subs = subs
        self._subs_dirty = False

    def _relay(self, doc: dict[str, Any]) -> None:
        doc["node"] = self.node
        envelope = dumps(doc)
        for relay in self.relays:
            try:
                relay(envelope)
            except Exception:
                logger.exception("hub relay %r failed", relay)

    # ---------------------------------------------------------------- the watchdog
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._tick()
            except Exception:  # supervision boundary: the next tick tries again
                logger.exception("hub watchdog failed")

    def _tick(self) -> None:
        now = time.monotonic()
        limit = self.settings.slow_after_s
        queued = 0
        for client in list(self.clients):
            if client.closing:
                continue
            queued += client.queued
            lag = client.lag(now)
            if client.unsent_messages > self.settings.max_queued:
                self.kick(client, CLOSE_TOO_SLOW,
                          f"too slow: {client.unsent_messages} alarm and notification messages "
                          "unsent; reconnect for a fresh snapshot")
            elif lag > limit:
                self.kick(client, CLOSE_TOO_SLOW,
                          f"too slow: messages waited {lag:.0f} s unsent (limit {limit:g} s); "
                          "reconnect for a fresh snapshot")
        self.metrics.ws_queued.set(queued)
        self._flush_sent_counts()
        if now - self._cells_at >= self.settings.cells_refresh_s and (
                self._cells_task is None or self._cells_task.done()):
            self._cells_at = now
            if any(c.cells is not None for c in self.clients):
                self._cells_task = asyncio.create_task(self._refresh_cells(), name="hub.cells")
        if self.directory.version != self.index.version:
            self._schedule_reload()

    def _schedule_reload(self) -> None:
        if self._reload is None or self._reload.done():
            self._reload = asyncio.create_task(self._reload_index(), name="hub.index.reload")

    def _flush_sent_counts(self) -> None:
        """Message counts go to Prometheus here, not per message on the send path."""
        sent, self._sent = self._sent, {}
        for kind, n in sent.items():
            child = self._sent_children.get(kind)
            if child is None:
                child = self._sent_children[kind] = self.metrics.ws_messages_sent.labels(kind)
            child.inc(n)

    async def _reload_index(self) -> None:
        version = self.directory.version
        fresh = SpatialIndex()
        try:
            async with self.pool.acquire() as conn:
                await fresh.load(conn, version)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            logger.warning("hub: device index not refreshed (%s); retrying", err)
            return
        self.index = fresh
        self._subs_dirty = True  # kind codes may have changed
        parked, self._parked = self._parked, []
        self._publish_states(parked, relay=False)


# ---------------------------------------------------------------- scale-out through the broker


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    hub = Hub(app[keys.DB], app[keys.DIRECTORY], settings.hub, app[keys.METRICS])
    await hub.start()
    app[keys.HUB] = hub
    relay = None
    if settings.hub.relay:
        if not settings.mqtt_url:
            raise RuntimeError("hub.relay needs the MQTT broker (IOC_MQTT_URL) to share "
                               "live updates between server processes")
        relay = hub.broker = BrokerRelay(hub, settings.mqtt_url, settings.mqtt_client_id)
        await relay.start()
    try:
        yield
    finally:
        if relay is not None:
            await relay.stop()
        await hub.stop()
