"""The websocket hub: viewport subscriptions, snapshots, conflated state deltas, alarms.

Producers call in synchronously on the event loop and never wait for a client: the ingest
writer after each commit (:meth:`Hub.on_batch`), the staleness scan (:meth:`Hub.on_status`),
the alarm engine (:meth:`Hub.publish_alarm`) and the notifier (:meth:`Hub.send_to_crew`).
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
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import numpy as np
import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from server import keys
from server.http.jsonutil import dumps
from server.vocab import severity_rank_sql

if TYPE_CHECKING:
    from server.http.auth import Principal
    from server.ingest.directory import Directory
    from server.ingest.writer import Committed
    from server.runtime.metrics import Registry
    from server.settings import HubSettings

logger = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 1013  # "try again later": reconnect and take a fresh snapshot
CLOSE_GRACE_S = 5.0  # a closing client gets this long to read its buffered messages
TICK_S = 0.5  # the watchdog: slow clients, queue gauges, index refresh
MAX_CHUNKS = 32  # pending state batches per client before they are conflated eagerly
COALESCE_MAX = 1000  # messages per frame for a client that takes arrays
COALESCE_BYTES = 512 * 1024
MAX_PARKED = 100_000  # updates held for devices the index does not know yet


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. 2026-11-22T10:00:00.123Z."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------- one device's update
class Delta:
    """One device's change as a state message; its JSON is built once, however many
    clients it goes to. Never mutated once routed: merging makes a new one."""

    __slots__ = ("_frame", "device", "key", "status", "status_ms", "times", "ts_ms", "values")

    def __init__(self, key: int, device: str, ts_ms: int, status: str, status_ms: int,
                 values: dict[str, Any], times: dict[str, int]) -> None:
        self.key = key
        self.device = device
        self.ts_ms = ts_ms
        self.status = status
        self.status_ms = status_ms
        self.values = values
        self.times = times
        self._frame: bytes | None = None

    def frame(self) -> bytes:
        f = self._frame
        if f is None:
            f = self._frame = orjson.dumps({
                "type": "state", "device": self.device, "ts": iso_ms(self.ts_ms),
                "status": self.status, "values": self.values,
            })
        return f

    def merged(self, newer: Delta) -> Delta:
        """Both updates as one: per metric and for the status, the later timestamp wins
        (a late, out-of-order reading does not overwrite a newer one)."""
        values, times = dict(self.values), dict(self.times)
        for m, ms in newer.times.items():
            if ms >= times.get(m, -1):
                times[m] = ms
                values[m] = newer.values[m]
        if newer.status_ms >= self.status_ms:
            status, status_ms = newer.status, newer.status_ms
        else:
            status, status_ms = self.status, self.status_ms
        return Delta(self.key, self.device, max(self.ts_ms, newer.ts_ms), status, status_ms,
                     values, times)

    def as_wire(self) -> list[Any]:
        """The compact form in relay envelopes."""
        return [self.device, self.ts_ms, self.status, self.status_ms,
                {m: [self.times[m], v] for m, v in self.values.items()}]


def conflate(chunks: list[tuple[list[Delta], np.ndarray | None]]) -> tuple[list[Delta], int]:
    """Pending batches of deltas as one list, one delta per device; and how many merged."""
    if len(chunks) == 1:
        deltas, idx = chunks[0]
        return (deltas if idx is None else [deltas[i] for i in idx.tolist()]), 0
    out: dict[int, Delta] = {}
    merged = 0
    for deltas, idx in chunks:
        for d in (deltas if idx is None else [deltas[i] for i in idx.tolist()]):
            prev = out.get(d.key)
            if prev is None:
                out[d.key] = d
            else:
                out[d.key] = prev.merged(d)
                merged += 1
    return list(out.values()), merged


# ---------------------------------------------------------------- spatial index
class SpatialIndex:
    """Every device's bounding box (WGS 84) and kind code, in arrays indexed by device key.

    Device keys are a dense identity column, so an array lookup is the map from key to
    position; a key with no device has NaN bounds (NaN compares false: never routed).
    """

    def __init__(self) -> None:
        self.minx = self.miny = self.maxx = self.maxy = np.full(0, np.nan)
        self.kind = np.full(0, -1, np.int16)
        self.kinds: dict[str, int] = {}
        self.version = -1

    @property
    def size(self) -> int:
        return len(self.kind)

    def kind_code(self, kind: str) -> int:
        return self.kinds.get(kind, -1)

    async def load(self, conn: asyncpg.Connection, version: int) -> None:
        kinds = [r["kind"] for r in await conn.fetch("select kind from kinds order by kind")]
        codes = {k: i for i, k in enumerate(kinds)}
        top = await conn.fetchval("select coalesce(max(key), 0) from devices")
        size = top + 1
        minx, miny = np.full(size, np.nan), np.full(size, np.nan)
        maxx, maxy = np.full(size, np.nan), np.full(size, np.nan)
        kind = np.full(size, -1, np.int16)
        # A server-side cursor in chunks: a million devices never sit in memory as Records.
        async with conn.transaction():
            cur = await conn.cursor(
                "select key, kind, ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) "
                "from (select key, kind, geom::box2d as b from devices) t")
            while rows := await cur.fetch(50_000):
                k = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                k_ok = k < size  # a device added since max(key) was read: next refresh
                box = np.array([(r[2], r[3], r[4], r[5]) for r in rows], np.float64)[k_ok]
                k = k[k_ok]
                minx[k], miny[k], maxx[k], maxy[k] = box[:, 0], box[:, 1], box[:, 2], box[:, 3]
                kc = [codes.setdefault(r[1], len(codes)) for r in rows]
                kind[k] = np.asarray(kc, np.int16)[k_ok]
        self.minx, self.miny, self.maxx, self.maxy, self.kind = minx, miny, maxx, maxy, kind
        self.kinds = codes
        self.version = version


# ---------------------------------------------------------------- clients
@dataclass(frozen=True, slots=True)
class Viewport:
    bbox: tuple[float, float, float, float] | None  # None: no devices (alarms only)
    kinds: tuple[str, ...]


class Client:
    """One websocket connection: its subscription, its queue and its writer task."""

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, principal: Principal,
                 transport: asyncio.Transport | None, name: str) -> None:
        self.hub = hub
        self.ws = ws
        self.principal = principal
        self.transport = transport
        self.name = name
        self.crew = principal.crew
        self.crew_scoped = principal.role == "crew"
        self.viewport: Viewport | None = None
        self.alarms = False
        self.coalesce = False
        self.seen_alarms: set[Any] = set()  # crew-scoped: alarms once theirs (see wants_alarm)
        self.closing = False
        self.holding = False  # a snapshot is being read: states wait for it
        self._chunks: list[tuple[list[Delta], np.ndarray | None]] = []
        self._nstates = 0
        self._messages: deque[tuple[str, bytes]] = deque()
        self._pending_since: float | None = None
        self._sending_since: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    # ---- producers' side: never awaits
    def push_states(self, deltas: list[Delta], idx: np.ndarray | None) -> None:
        if self.closing:
            return
        self._chunks.append((deltas, idx))
        self._nstates += len(deltas) if idx is None else len(idx)
        if len(self._chunks) > MAX_CHUNKS:  # bound the bookkeeping of a client far behind
            merged, n = conflate(self._chunks)
            self.hub.metrics.ws_conflated.inc(n)
            self._chunks = [(merged, None)]
            self._nstates = len(merged)
        self._queued()

    def push(self, kind: str, frame: bytes) -> None:
        if self.closing:
            return
        # Not bounded here: a burst (a feeder going dark raises hundreds of alarms in one
        # evaluation) must not cost a healthy client its connection. The watchdog bounds it.
        self._messages.append((kind, frame))
        self._queued()

    def _queued(self) -> None:
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        self._wake.set()

    def clear_states(self) -> None:
        self._chunks = []
        self._nstates = 0

    @property
    def queued(self) -> int:
        return self._nstates + len(self._messages)

    @property
    def unsent_messages(self) -> int:
        """Unsent messages that are never merged nor dropped (alarms, notifications...)."""
        return len(self._messages)

    def lag(self, now: float) -> float:
        """How long the oldest unsent message has waited (0 when none, or while the
        client's snapshot is being read: that wait is ours, not the client's)."""
        if self.holding and self._sending_since is None:
            return 0.0
        since = [t for t in (self._sending_since, self._pending_since) if t is not None]
        return now - min(since) if since else 0.0

    def wants_alarm(self, alarm: dict[str, Any]) -> bool:
        if not self.alarms:
            return False
        if not self.crew_scoped:
            return True
        aid = alarm.get("id")
        if self.crew is not None and alarm.get("assigned_crew") == self.crew:
            if alarm.get("state") == "closed":
                self.seen_alarms.discard(aid)
            else:
                self.seen_alarms.add(aid)
            return True
        if aid in self.seen_alarms:  # reassigned elsewhere: tell the crew it is no longer theirs
            self.seen_alarms.discard(aid)
            return True
        return False

    # ---- the writer
    def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name=f"hub.client[{self.name}].writer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _writer(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self.holding or self.closing:
                    continue
                messages, self._messages = self._messages, deque()
                states: list[Delta] = []
                if self._chunks:
                    states, merged = conflate(self._chunks)
                    if merged:
                        self.hub.metrics.ws_conflated.inc(merged)
                    self.clear_states()
                if not messages and not states:
                    continue
                self._sending_since, self._pending_since = self._pending_since, None
                await self._send(messages, states)
                self._sending_since = None
        except (ConnectionError, RuntimeError) as err:
            # The peer went away mid-send; the reader side notices and cleans up.
            logger.debug("websocket %s: send failed: %s", self.name, err)

    async def _send(self, messages: deque[tuple[str, bytes]], states: list[Delta]) -> None:
        counts = self.hub._sent
        for kind, _ in messages:
            counts[kind] = counts.get(kind, 0) + 1
        if states:
            counts["state"] = counts.get("state", 0) + len(states)
        frames = [f for _, f in messages]
        frames.extend(d.frame() for d in states)
        send = self.ws.send_frame
        if not self.coalesce:
            for f in frames:
                await send(f, WSMsgType.TEXT)
            return
        i, n = 0, len(frames)
        while i < n:
            j, size = i, 0
            while j < n and j - i < COALESCE_MAX and (size < COALESCE_BYTES or j == i):
                size += len(frames[j]) + 1
                j += 1
            if j - i == 1:
                await send(frames[i], WSMsgType.TEXT)
            else:
                await send(b"[" + b",".join(frames[i:j]) + b"]", WSMsgType.TEXT)
            i = j

    async def close(self, code: int, reason: str) -> None:
        """Stop sending, send a close frame with ``reason``, and give the client
        ``CLOSE_GRACE_S`` to read what is buffered before the connection is cut."""
        self.closing = True
        await self.stop()
        try:
            # aiohttp waits up to CLOSE_GRACE_S for the client's close reply (the
            # WebSocketResponse timeout); this bound also covers a send buffer that never
            # drains because the client stopped reading.
            async with asyncio.timeout(CLOSE_GRACE_S + 1):
                await self.ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()  # it never read its messages: free the buffer now


# ---------------------------------------------------------------- the hub
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
        for task in (self._watchdog, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._watchdog, *self._tasks):
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
                        request_id: Any = None) -> int:
        """Route ``viewport`` to the client from now on, then queue its snapshot.

        Updates routed while the snapshot is read wait behind it, so the client sees
        the snapshot first and then every change since (merged where they overlap).
        Returns the number of devices in the snapshot.
        """
        client.holding = True
        client.clear_states()  # the old viewport's updates are no use now
        client.viewport = viewport
        client.alarms = alarms
        self._subs_dirty = True
        try:
            count, devices = await self._snapshot(viewport)
        except BaseException:
            client.viewport = None
            self._subs_dirty = True
            raise
        finally:
            client.holding = False
            client._wake.set()
        limit = self.settings.max_snapshot
        head = {"type": "snapshot"}
        if request_id is not None:
            head["id"] = request_id
        if count > limit:
            head.update(truncated=True, limit=limit)
        frame = dumps(head)[:-1] + b',"devices":' + devices.encode() + b"}"
        client.push("snapshot", frame)
        return min(count, limit)

    def unsubscribe(self, client: Client) -> None:
        client.viewport = None
        client.alarms = False
        client.clear_states()
        self._subs_dirty = True

    async def _snapshot(self, viewport: Viewport) -> tuple[int, str]:
        if viewport.bbox is None or not viewport.kinds:
            return 0, "[]"
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(SNAPSHOT_SQL, *viewport.bbox, list(viewport.kinds),
                                      self.settings.max_snapshot)
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
        if "crew" in doc:
            self.send_to_crew(doc["crew"], doc["message"], relay=False)

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
RELAY_TOPIC = "ioc/internal/v1/hub"
RELAY_BACKLOG = 1_000  # envelopes waiting for the broker before the oldest are dropped


class BrokerRelay:
    """Hub envelopes between server processes over the MQTT broker they already share.

    Each process publishes its envelopes to ``ioc/internal/v1/hub/{node}`` at QoS 0 and
    subscribes to ``ioc/internal/v1/hub/+`` on a connection of its own (client id
    ``{mqtt_client_id}-hub``). QoS 0 on purpose: a live update is worth nothing late, and
    the broker does not queue QoS 0 messages for a process that is down, so a restarted
    process never replays stale states (its clients take a fresh snapshot from the
    database). When the broker is unreachable envelopes are dropped (counted in the log);
    the clients of other processes catch up at their next snapshot.
    """

    def __init__(self, hub: Hub, mqtt_url: str, client_id: str) -> None:
        from server.mqtt.link import MqttLink

        self.hub = hub
        self.topic = f"{RELAY_TOPIC}/{hub.node}"
        self.link = MqttLink(mqtt_url, f"{client_id}-hub", subscriptions=[f"{RELAY_TOPIC}/+"],
                             on_messages=self._received)
        self._out: deque[bytes] = deque(maxlen=RELAY_BACKLOG)
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.dropped = 0

    async def start(self) -> None:
        await self.link.start()
        self.hub.relays.append(self.offer)
        self._task = asyncio.create_task(self._sender(), name="hub.relay.sender")

    async def stop(self) -> None:
        if self.offer in self.hub.relays:
            self.hub.relays.remove(self.offer)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.link.stop()

    def offer(self, envelope: bytes) -> None:
        if len(self._out) == self._out.maxlen:
            self.dropped += 1
        self._out.append(envelope)
        self._ready.set()

    async def _sender(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._out:
                envelope = self._out.popleft()
                try:
                    await self.link.publish(self.topic, envelope, qos=0)
                except ConnectionError:
                    self.dropped += 1 + len(self._out)
                    self._out.clear()
                    logger.warning("hub relay: broker not connected; %d update envelope(s) "
                                   "dropped so far", self.dropped)

    async def _received(self, messages) -> None:
        for message in messages:
            try:
                self.hub.apply_remote(message.payload)
            except Exception:  # a peer's bad envelope must not stop the others
                logger.exception("hub relay: bad envelope on %s", message.topic.value)
        self.link.ack_all(messages)


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
