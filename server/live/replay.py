"""The websocket replay: ``{"op": "replay", "from", "to", "speed", "bbox", "layers"}``.

The client gets a ``snapshot`` with ``"at"`` (the devices as they were at ``from``, shaped
like the live snapshot, plus ``"alarms"``: the alarms open then), then the ``state`` and
``alarm`` messages between ``from`` and ``to`` in their original order with their original
``ts``, paced by ``speed`` (60: a minute of the past per second), then ``replay_end``. While
it replays the client is routed no live updates; ``{"op": "live"}`` (or a ``subscribe``)
ends the replay and takes a fresh live snapshot. The snapshot holds what happened up to and
including ``from``; the messages, what happened after it, up to and including ``to``.

Memory stays bounded however long the range: the past is read in windows of time (one
query each for readings and for alarm events, a window sized so it holds a few thousand
rows), each sent before the next is read, and the reader waits while the client's queue is
long. Held per replay: each device's last reading time and status (to derive the
stale/offline changes the live staleness scan would have sent, by its rule: see
:mod:`server.live.past`), nothing per reading.

What a state message holds: one per device and reading timestamp, status ``online`` (as
live, where a reading makes a device online), the metrics read at that instant; and one
per derived status change, with no values. An alarm message is the alarm as it stood after
the event (the copy in ``alarm_events.alarm``) with the event's time as ``ts``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from server.alarms.views import alarm_json
from server.http.jsonutil import dumps
from server.live.deltas import Delta, iso_ms
from server.live.index import Viewport
from server.live.past import (
    OFFLINE_INTERVALS,
    STALE_INTERVALS,
    Metrics,
    Scope,
    epoch_ms,
    snapshot_entry,
    state_at,
)
from server.store.history import readings_between

if TYPE_CHECKING:
    from server.live.client import Client
    from server.live.hub import Hub

logger = logging.getLogger(__name__)

KIND = "replay"  # the queue kind of replay messages: dropped from the queue when it ends
MAX_RANGE = timedelta(days=31)
MAX_SPEED = 86_400.0  # a day per second
MIN_WINDOW = timedelta(seconds=5)
MAX_WINDOW = timedelta(hours=6)
WINDOW_ROWS = 20_000  # readings one window should hold, at most about
BACKLOG = 2_000  # unsent messages a replay lets pile up before it waits for the client

EVENTS_SQL = """
select e.id as event_id, e.at, e.event, e.alarm as copy, a.*,
       ST_AsGeoJSON(coalesce(a.geom, d.geom), 7)::json as geometry,
       coalesce((select array_agg(c.device order by c.device) from alarms c
                 where c.incident = a.id), '{}') as children
from alarm_events e
join alarms a on a.id = e.alarm_id
left join devices d on d.id = a.device
where e.at > $1 and e.at <= $2
order by e.at, e.id
"""

# The alarms open at $1 that a replay's alarm list starts with: each as of its newest event.
OPEN_AT_SQL = """
select c.at, c.event, c.copy, a.*,
       ST_AsGeoJSON(coalesce(a.geom, d.geom), 7)::json as geometry,
       coalesce((select array_agg(x.device order by x.device) from alarms x
                 where x.incident = a.id), '{}') as children
from alarms a
left join devices d on d.id = a.device
join lateral (
    select e.at, e.event, e.alarm as copy from alarm_events e
    where e.alarm_id = a.id and e.at <= $1
    order by e.at desc, e.id desc limit 1
) c on true
where a.raised_at <= $1 and (a.closed_at is null or a.closed_at > $1)
order by a.id
"""

# How an event without a copy (older than migration 0007) leaves the alarm, roughly.
_FOLD = {
    "raised": {"active": True, "state": "active_unacked", "cleared_at": None, "closed_at": None},
    "acknowledged": {"state": "active_acked"},
    "cleared": {"active": False, "state": "rtn_unacked", "closed_at": None},
    "closed": {"active": False, "state": "closed"},
}


class BadReplay(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    start: datetime
    end: datetime
    speed: float
    viewport: Viewport
    alarms: bool


def parse_time_field(msg: dict[str, Any], name: str, now: datetime,
                     default: datetime | None = None) -> datetime:
    raw = msg.get(name)
    if raw is None:
        if default is None:
            raise BadReplay(name, f"{name} is required: an RFC 3339 time like 2026-11-22T10:00:00Z")
        return default
    if not isinstance(raw, str):
        raise BadReplay(name, f"{name} must be an RFC 3339 time like 2026-11-22T10:00:00Z, "
                              f"got {raw!r}")
    try:
        ts = datetime.fromisoformat(raw.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise BadReplay(name, f"{name} must be an RFC 3339 time like 2026-11-22T10:00:00Z, "
                              f"got {raw!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=now.tzinfo)
    if ts > now:
        raise BadReplay(name, f"{name} {raw} is in the future; a replay ends at the latest now")
    return ts


def parse_replay(msg: dict[str, Any], viewport: Viewport, alarms: bool, now: datetime) -> ReplayRequest:
    start = parse_time_field(msg, "from", now)
    end = parse_time_field(msg, "to", now, default=now)
    if end <= start:
        raise BadReplay("to", f"to ({end.isoformat()}) must be after from ({start.isoformat()})")
    if end - start > MAX_RANGE:
        raise BadReplay("to", f"a replay covers at most {MAX_RANGE.days} days; "
                              f"from {start.isoformat()} to {end.isoformat()} is longer")
    speed = msg.get("speed", 60)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed <= MAX_SPEED:
        raise BadReplay("speed", f"speed must be a number above 0 and at most {MAX_SPEED:g} "
                                 f"(60: one minute of the past per second), got {speed!r}")
    return ReplayRequest(start, end, float(speed), viewport, alarms)


class Replay:
    """One client's replay, run as a task; cancelled by ``live``, a new replay or a
    disconnect."""

    def __init__(self, hub: Hub, client: Client, req: ReplayRequest, request_id: Any = None) -> None:
        self.hub = hub
        self.client = client
        self.req = req
        self.request_id = request_id
        self.ids: dict[int, str] = {}
        self.interval_ms: dict[int, int] = {}
        self.last_ms: dict[int, int] = {}
        self.status: dict[int, str] = {}
        # (ms, key): when a device is next looked at; at most one entry per device (armed).
        self.deadlines: list[tuple[int, int]] = []
        self.armed: set[int] = set()
        self.seen_alarms: set[Any] = set()
        self.sent = 0
        self.wall0: float | None = None  # the loop time the replay's first moment is due
        self.metrics: Metrics | None = None

    async def run_reporting(self) -> None:
        """:meth:`run`, telling the client when the past cannot be read."""
        try:
            await self.run()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            logger.warning("websocket %s: replay failed: %s", self.client.name, err)
            doc: dict[str, Any] = {"type": "error", "message": "the replay could not be read "
                                   "(database unavailable); ask for it again in a moment"}
            if self.request_id is not None:
                doc["id"] = self.request_id
            self._push(doc)

    # ---------------------------------------------------------------- the run
    async def run(self) -> None:
        req, loop = self.req, asyncio.get_running_loop()
        keys = await self._snapshot()
        self.wall0 = loop.time()
        window = timedelta(minutes=1)
        t = req.start
        while t < req.end:
            hi = min(t + window, req.end)
            async with self.hub.pool.acquire() as conn:
                # raw and compressed days alike (server/store/history.py)
                readings = await readings_between(conn, t, hi, keys, WINDOW_ROWS * 2 + 1) \
                    if keys else []
                if len(readings) > WINDOW_ROWS * 2:
                    if hi - t > MIN_WINDOW:
                        window = max(MIN_WINDOW, (hi - t) / 4)  # too dense: read less at once
                        continue
                    readings = await readings_between(conn, t, hi, keys)  # all of it
                events = await conn.fetch(EVENTS_SQL, t, hi) if req.alarms else []
            await self._play(readings, events, self.metrics, hi)
            if len(readings) < WINDOW_ROWS // 4:
                window = min(MAX_WINDOW, window * 2)
            elif len(readings) > WINDOW_ROWS:
                window = max(MIN_WINDOW, window / 2)
            t = hi
        await self._due_statuses(epoch_ms(req.end))
        await self._pace(epoch_ms(req.end))
        self._push({"type": "replay_end", "from": _iso(req.start), "to": _iso(req.end)})

    async def _snapshot(self) -> list[int]:
        req, client = self.req, self.client
        vp = req.viewport
        limit = self.hub.settings.max_snapshot
        scope = Scope(vp.bbox, vp.kinds, (client.crew or "") if client.crew_scoped else None, limit)
        async with self.hub.pool.acquire() as conn:
            self.metrics = await Metrics.load(conn)
            if vp.bbox is None or not vp.kinds:
                devices, truncated = [], False
            else:
                devices, truncated = await state_at(conn, req.start, scope)
            alarms = [a for a in map(self._alarm_of, await conn.fetch(OPEN_AT_SQL, req.start))
                      if a["state"] != "closed" and self._wants(a)] if req.alarms else []
        head: dict[str, Any] = {"type": "snapshot", "at": _iso(req.start)}
        if self.request_id is not None:
            head["id"] = self.request_id
        if truncated:
            head.update(truncated=True, limit=limit)
        head["devices"] = [snapshot_entry(d) for d in devices]
        head["alarms"] = alarms
        self._push(head)
        for d in devices:
            self.ids[d.key] = d.row["id"]
            self.interval_ms[d.key] = d.interval_s * 1000
            self.status[d.key] = d.status
            if d.last_seen is not None:
                self.last_ms[d.key] = epoch_ms(d.last_seen)
                self._watch(d.key)
        return [d.key for d in devices]

    # ---------------------------------------------------------------- one window
    async def _play(self, readings: list[tuple], events: list[asyncpg.Record],
                    metrics: Metrics, hi: datetime) -> None:
        """Send one window's readings (grouped per device and timestamp), alarm events
        and derived status changes, merged in time order, each when its time comes."""
        i, j, n, m = 0, 0, len(readings), len(events)
        while i < n or j < m:
            r_ms = epoch_ms(readings[i][2]) if i < n else None
            e_ms = epoch_ms(events[j]["at"]) if j < m else None
            if e_ms is not None and (r_ms is None or e_ms < r_ms):
                await self._due_statuses(e_ms)
                ev = events[j]
                j += 1
                alarm = self._alarm_of(ev)
                if self._wants(alarm):
                    await self._pace(e_ms)
                    self._push({"type": "alarm", "ts": iso_ms(e_ms), "alarm": alarm})
                continue
            await self._due_statuses(r_ms)
            key, ts = readings[i][0], readings[i][2]  # (device_key, metric_id, ts, value, quality)
            values: dict[str, Any] = {}
            times: dict[str, int] = {}
            while i < n and readings[i][0] == key and readings[i][2] == ts:
                _, mid, _, value, quality = readings[i]
                name = metrics.names.get(mid)
                if name is not None:
                    values[name] = metrics.shown(mid, value, quality)
                    times[name] = r_ms
                i += 1
            await self._pace(r_ms)
            self.last_ms[key] = r_ms
            self.status[key] = "online"
            self._watch(key)
            self._push_frame(Delta(key, self.ids[key], r_ms, "online", r_ms, values, times).frame())
        await self._due_statuses(epoch_ms(hi))

    def _next_check(self, key: int) -> int | None:
        """When the device, heard last when it was, turns stale or offline by the staleness
        scan's rule (older than 3 or 10 intervals); None once offline."""
        iv, status = self.interval_ms[key], self.status.get(key)
        last = self.last_ms.get(key)
        if last is None or status not in ("online", "stale"):
            return None
        return last + (STALE_INTERVALS if status == "online" else OFFLINE_INTERVALS) * iv + 1

    def _watch(self, key: int) -> None:
        """Look at the device again when it would change (a reading meanwhile only moves
        that moment later: the entry is then put back, so there is one per device)."""
        if key in self.armed:
            return
        due = self._next_check(key)
        if due is not None:
            heapq.heappush(self.deadlines, (due, key))
            self.armed.add(key)

    async def _due_statuses(self, upto_ms: int) -> None:
        heap = self.deadlines
        while heap and heap[0][0] <= upto_ms:
            due, key = heapq.heappop(heap)
            self.armed.discard(key)
            now_due = self._next_check(key)
            if now_due is None:
                continue
            if now_due > due:  # heard since: later
                self._watch(key)
                continue
            status = "stale" if self.status[key] == "online" else "offline"
            self.status[key] = status
            await self._pace(due)
            self._push_frame(Delta(key, self.ids[key], due, status, due, {}, {}).frame())
            self._watch(key)

    # ---------------------------------------------------------------- alarms
    def _alarm_of(self, row: asyncpg.Record) -> dict[str, Any]:
        """The alarm as the event left it: its copy, else its present row folded by name."""
        r = dict(row)
        copy = r.get("copy")
        if copy is not None:
            for k, v in copy.items():
                if k in r and k not in ("geometry", "children"):
                    r[k] = _parse_time(v) if k.endswith(("_at", "_until")) else v
        else:
            r.update(_FOLD.get(r.get("event") or "", {}))
        return alarm_json(r)

    def _wants(self, alarm: dict[str, Any]) -> bool:
        """Crew tokens: their crew's alarms, and once the news that one is theirs no more."""
        client = self.client
        if not client.crew_scoped:
            return True
        aid = alarm["id"]
        if client.crew and alarm.get("assigned_crew") == client.crew:
            self.seen_alarms.add(aid)
            return True
        if aid in self.seen_alarms:
            self.seen_alarms.discard(aid)
            return True
        return False

    # ---------------------------------------------------------------- pacing and sending
    async def _pace(self, ts_ms: int) -> None:
        """Wait until the moment ``ts_ms`` of the past is due at this speed, and while the
        client has a long queue."""
        loop = asyncio.get_running_loop()
        if self.wall0 is None:
            self.wall0 = loop.time()
        wait = self.wall0 + (ts_ms - epoch_ms(self.req.start)) / 1000 / self.req.speed - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        client = self.client
        while client.unsent_messages > BACKLOG:
            client.sent_some.clear()
            await client.sent_some.wait()  # a disconnect cancels this task

    def _push(self, doc: dict[str, Any]) -> None:
        self._push_frame(dumps(doc))

    def _push_frame(self, frame: bytes) -> None:
        self.sent += 1
        self.client.push(KIND, frame)


def _iso(ts: datetime) -> str:
    return iso_ms(epoch_ms(ts))


def _parse_time(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            return v
    return v
