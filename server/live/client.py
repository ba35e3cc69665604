"""One websocket connection: its subscription, its two-part queue (conflated states, and
messages never dropped) and its writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSMsgType, web

from server.live.cells import CellView
from server.live.deltas import Delta, conflate
from server.live.index import Viewport

if TYPE_CHECKING:
    from server.http.auth import Principal
    from server.live.hub import Hub

logger = logging.getLogger(__name__)

CLOSE_GRACE_S = 5.0  # a closing client gets this long to read its buffered messages
MAX_CHUNKS = 32  # pending state batches per client before they are conflated eagerly
COALESCE_MAX = 1000  # messages per frame for a client that takes arrays
COALESCE_BYTES = 512 * 1024
ALL_GROUPS: frozenset[str] = frozenset({"*"})  # watching every command group's results


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
        # The kinds of the subscription sent as grid cells (too many devices in the bbox), and
        # the cells last sent, to send them again only when they change (server/live/cells.py).
        self.cells: CellView | None = None
        self.cells_sent: str | None = None
        self.alarms = False
        self.coalesce = False
        # Command groups whose results this client watches ({"op": "commands"}): None for
        # none, ALL_GROUPS for every group (and single commands).
        self.command_groups: frozenset[str] | None = None
        self.seen_alarms: set[Any] = set()  # crew-scoped: alarms once theirs (see wants_alarm)
        self.reports = False  # subscribed with "reports": true (citizens' reports, issue 14)
        self.seen_reports: set[Any] = set()  # crew-scoped: reports once theirs
        self.closing = False
        self.holding = False  # a snapshot is being read: states wait for it
        self.replay: asyncio.Task | None = None  # a replay of the past, while one runs
        # What {"op": "live"} goes back to: the live view subscribed last, else the replay's.
        self.live_sub: tuple[Viewport, bool] | None = None
        self.replay_sub: tuple[Viewport, bool] | None = None
        self._chunks: list[tuple[list[Delta], np.ndarray | None]] = []
        self._nstates = 0
        self._messages: deque[tuple[str, bytes]] = deque()
        self._pending_since: float | None = None
        self._sending_since: float | None = None
        self._wake = asyncio.Event()
        self.sent_some = asyncio.Event()  # set after each send (a replay waits on it)
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

    def report_view(self, report: dict[str, Any], previous_crew: str | None) -> dict[str, Any] | None:
        """What this client may see of a report (server/reports/ops.py's rules), or None."""
        if not self.reports:
            return None
        from server.reports.ops import for_role
        rid = report.get("id")
        shown = for_role(report, self.principal.role, self.crew)
        if self.crew_scoped:
            if shown is not None and report.get("status") not in ("resolved", "rejected", "merged"):
                self.seen_reports.add(rid)
            elif shown is None and (rid in self.seen_reports or previous_crew == self.crew):
                # reassigned elsewhere: only that it is no longer theirs, nothing of the report
                self.seen_reports.discard(rid)
                return {"id": rid, "crew": report.get("crew"), "status": report.get("status"),
                        "yours": False}
        return shown

    def watches_group(self, group: str | None) -> bool:
        groups = self.command_groups
        return groups is not None and (groups is ALL_GROUPS or group in groups)

    # ---- the writer
    def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name=f"hub.client[{self.name}].writer")

    def drop(self, kind: str) -> None:
        """Forget the unsent messages of one kind (a replay's, when it is stopped)."""
        self._messages = deque(m for m in self._messages if m[0] != kind)

    async def stop(self) -> None:
        replay, self.replay = self.replay, None
        if replay is not None:
            replay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replay
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
                self.sent_some.set()
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
