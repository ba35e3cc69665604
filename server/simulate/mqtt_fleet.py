"""The MQTT devices of the city, all on ONE broker connection (native convention).

One aiomqtt client carries every simulated device: a connection per device would cost
the broker thousands of sessions and the simulator thousands of sockets, for nothing the
server can tell apart. Each device reports at its own interval, phase-shifted so the
fleet's load is flat (5,000 lamps at 60 s are ~83 messages every second, not 5,000 once a
minute). After a (re)connect everyone reports once within ``warmup_s``, spread evenly too.

Topics and payloads follow CONTRACT.md: ``ioc/v1/{id}/telemetry`` with
``{"ts": "…Z", "values": {…}}`` at QoS 1, ``ioc/v1/{id}/status`` ``online``/``offline``
retained, and ``ioc/v1/{id}/commands`` answered on ``…/commands/{cid}/result``
(streetlights take ``set_dim``). With ``rate`` set, the fleet instead publishes exactly
that many messages a second round-robin over the devices that have five metrics or more,
five values each (so readings/s = 5 × rate), for load tests.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime

import aiomqtt
import numpy as np
import orjson

from server.mqtt.link import parse_mqtt_url
from server.simulate.patterns import BOOL_METRICS, DECIMALS
from server.simulate.rand import device_keys, uniform
from server.simulate.world import World

logger = logging.getLogger(__name__)

MQTT_KINDS = ("streetlight", "water_meter", "traffic_controller", "road_segment",
              "env_sensor", "camera")
#: Kinds whose real devices hold an MQTT session with a last will; water meters would be
#: LoRaWAN behind ChirpStack, which has no such thing, so a silent meter just goes quiet.
LAST_WILL_KINDS = frozenset(MQTT_KINDS) - {"water_meter"}
WINDOW = 32  # unacknowledged publishes at a time (see _publish)


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def as_lists(vals: dict[str, np.ndarray]) -> dict[str, list]:
    """Arrays → Python lists a device would send: booleans, integers, rounded floats."""
    out: dict[str, list] = {}
    for m, arr in vals.items():
        if m in BOOL_METRICS:
            out[m] = arr.astype(bool).tolist()
            continue
        d = DECIMALS.get(m, 3)
        r = np.round(arr.astype(np.float64), d)
        out[m] = r.astype(np.int64).tolist() if d == 0 and np.isfinite(r).all() else r.tolist()
    return out


def telemetry(ts: str, lists: dict[str, list], i: int, metrics=None) -> bytes:
    # NaN has no JSON form: a metric without a valid value is left out, as devices do.
    values = {m: lists[m][i] for m in (metrics or lists) if lists[m][i] == lists[m][i]}
    return orjson.dumps({"ts": ts, "values": values})


class MqttFleet:
    def __init__(self, world: World, url: str, *, intervals: dict[str, float],
                 rate: float | None = None, client_id: str | None = None,
                 clock: Callable[[], float], warmup_s: float = 10.0, tick_s: float = 1.0,
                 seed: int = 42, tls=None) -> None:
        self.world = world
        self._params = parse_mqtt_url(url)
        self._tls = tls
        self.client_id = client_id or f"ioc-sim-{random.getrandbits(32):08x}"
        self.rate = rate
        self.clock = clock
        self.tick_s = tick_s
        self.warmup_s = warmup_s
        self.kinds = [k for k in MQTT_KINDS if k in world.fleet.groups]
        self.intervals = {k: float(intervals[k]) for k in self.kinds}
        # Even spread: device i of n reports at phase (rank_i + ½)/n of its interval, the
        # ranks shuffled by the seed so neighbouring lamps do not report in sequence.
        self._rank = {}
        for k in self.kinds:
            order = np.argsort(uniform(device_keys(world.fleet.groups[k].ids, seed), 90))
            rank = np.empty(len(order))
            rank[order] = (np.arange(len(order)) + 0.5) / len(order)
            self._rank[k] = rank
        self._next_due: dict[str, np.ndarray] = {}
        self._offline: dict[str, np.ndarray] = {}
        self.sent = 0
        self.connected = asyncio.Event()

    # ------------------------------------------------------------------ session
    async def run(self) -> None:
        """Connect, report, reconnect with capped jittered backoff; until cancelled."""
        attempt = 0
        while True:
            try:
                async with aiomqtt.Client(**self._params, identifier=self.client_id, tls_context=self._tls,
                                          keepalive=30, timeout=10,
                                          max_inflight_messages=4 * WINDOW) as client:
                    client.pending_calls_threshold = WINDOW + 10  # no warning per publish
                    attempt = 0
                    self.connected.set()
                    logger.info("simulated fleet connected to MQTT as %s (%d devices)",
                                self.client_id, sum(len(self.world.fleet.groups[k])
                                                    for k in self.kinds))
                    await self._session(client)
            except aiomqtt.MqttError as err:
                delay = random.uniform(0, min(30.0, 0.5 * 2 ** min(attempt, 8)))
                if self.connected.is_set() or attempt == 0:
                    logger.warning("simulated fleet: MQTT unavailable (%s); retrying", err)
                self.connected.clear()
                attempt += 1
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe("ioc/v1/+/commands", qos=1)
        await self._announce(client)
        tasks = [
            asyncio.create_task(self._rate_loop(client) if self.rate else self._loop(client),
                                name="sim.mqtt.publish"),
            asyncio.create_task(self._command_loop(client), name="sim.mqtt.commands"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # the link failed: re-raise its MqttError
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _publish(self, client: aiomqtt.Client, msgs: list[tuple[str, bytes, bool]]):
        """Publish with a sliding window of ``WINDOW`` unacknowledged messages.

        A QoS 1 publish waits for its PUBACK, so one at a time would cap the fleet at one
        message per round trip; an unbounded burst makes aiomqtt 2.5 and paho scan every
        pending message on each publish and acknowledgement (quadratic). A window keeps
        the pipe full at a bounded cost per message: on loopback 32 sustains ~10,000 msg/s
        and peaks near 15,000; 1,000 peaked at 6,000, 2,000-message bursts at 4,500."""
        window = asyncio.Semaphore(WINDOW)
        pending: set[asyncio.Task] = set()
        failed: list[BaseException] = []

        def finished(task: asyncio.Task) -> None:
            pending.discard(task)
            window.release()
            if task.cancelled():
                return
            if task.exception() is not None:
                failed.append(task.exception())
            else:
                self.sent += 1

        try:
            for topic, payload, retain in msgs:
                await window.acquire()
                if failed:
                    raise failed[0]
                task = asyncio.create_task(client.publish(topic, payload, qos=1, retain=retain))
                pending.add(task)
                task.add_done_callback(finished)
            if pending:
                await asyncio.wait(set(pending))
            if failed:
                raise failed[0]
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Retained ``online`` for every device (``offline`` for the silenced ones)."""
        now = self.clock()
        self.world.advance(now)
        msgs = []
        for k in self.kinds:
            ids = self.world.fleet.groups[k].ids
            silent = self.world.silent(k)
            self._offline[k] = silent & (k in LAST_WILL_KINDS)
            msgs += [(f"ioc/v1/{d}/status", b"offline" if s else b"online", True)
                     for d, s in zip(ids, self._offline[k], strict=True)]
            if k not in self._next_due:  # keep the phases across reconnects
                warm = min(self.warmup_s, self.intervals[k])
                self._next_due[k] = now + self._rank[k] * warm
        await self._publish(client, msgs)

    # ------------------------------------------------------------------ reporting
    async def _loop(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._publish(client, self._due(self.clock()))
            await asyncio.sleep(max(0.0, self.tick_s - (loop.time() - started)))

    def _due(self, now: float) -> list[tuple[str, bytes, bool]]:
        """Messages for every device whose slot came up or whose state a fault changed."""
        self.world.advance(now)
        changed, self.world.faults.changed = self.world.faults.changed, set()
        ts, msgs = rfc3339(now), []
        for k in self.kinds:
            g, nxt, every = self.world.fleet.groups[k], self._next_due[k], self.intervals[k]
            silent = self.world.silent(k)
            went = silent & (k in LAST_WILL_KINDS)
            for i in np.flatnonzero(went != self._offline[k]):
                msgs.append((f"ioc/v1/{g.ids[i]}/status",
                             b"offline" if went[i] else b"online", True))
            self._offline[k] = went
            due = nxt <= now
            if due.any():
                phase = self._rank[k] * every
                nxt[due] = now - ((now - phase[due]) % every) + every
            for kind, i in changed:
                if kind == k:
                    due[i] = True
            send = np.flatnonzero(due & ~silent)
            if not len(send):
                continue
            lists = as_lists(self.world.values(k, now))
            msgs += [(f"ioc/v1/{g.ids[i]}/telemetry", telemetry(ts, lists, i), False)
                     for i in send]
        return msgs

    async def _rate_loop(self, client: aiomqtt.Client) -> None:
        groups = self.world.fleet.groups
        rich = [k for k in self.kinds if len(self.world.values(k, self.clock())) >= 5]
        pool = [(k, i) for k in (rich or self.kinds) for i in range(len(groups[k]))]
        if not pool:  # nothing to publish: idle rather than end the session
            logger.warning("rate mode: no MQTT devices to publish for")
            await asyncio.Event().wait()
        loop = asyncio.get_running_loop()
        start, done, cursor, warned = loop.time(), 0, 0, False
        while True:
            owed = int(self.rate * (loop.time() - start)) - done
            if owed > self.rate:  # more than a second behind: drop it, do not burst
                if not warned:
                    logger.warning("cannot sustain %s msg/s; publishing what it can",
                                   self.rate)
                    warned = True
                done += owed - int(self.rate)
                owed = int(self.rate)
            if owed > 0:
                now = self.clock()
                ts, lists, five, msgs = rfc3339(now), {}, {}, []
                for _ in range(owed):
                    k, i = pool[cursor]
                    cursor = (cursor + 1) % len(pool)
                    if k not in lists:
                        lists[k] = as_lists(self.world.values(k, now))
                        five[k] = list(lists[k])[:5]
                    msgs.append((f"ioc/v1/{groups[k].ids[i]}/telemetry",
                                 telemetry(ts, lists[k], i, five[k]), False))
                await self._publish(client, msgs)
                done += owed
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ commands
    async def _command_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            device = message.topic.value.split("/")[2]
            try:
                kind, idx = self.world.fleet.locate(device)
                cmd = orjson.loads(message.payload)
                cid = str(cmd["id"])
            except (KeyError, TypeError, orjson.JSONDecodeError):
                continue  # not one of ours, or not a command: a real device would ignore it
            if kind not in self.kinds:
                continue
            result = self._execute(kind, idx, cmd)
            await client.publish(f"ioc/v1/{device}/commands/{cid}/result",
                                 orjson.dumps(result), qos=1)

    def _execute(self, kind: str, idx: int, cmd: dict) -> dict:
        name, args = cmd.get("name"), cmd.get("args") or {}
        if kind == "streetlight" and name == "set_dim":
            level = args.get("level") if isinstance(args, dict) else None
            if (isinstance(level, bool) or not isinstance(level, int | float)
                    or not math.isfinite(level) or not 0 <= level <= 100):
                return {"ok": False, "error": "set_dim needs args.level between 0 and 100"}
            self.world.set_dim(idx, float(level))
            return {"ok": True}
        if kind == "streetlight" and name == "switch":
            on = args.get("on") if isinstance(args, dict) else None
            if not isinstance(on, bool):
                return {"ok": False, "error": "switch needs args.on true or false"}
            self.world.set_dim(idx, 100.0 if on else 0.0)  # the schedule still rules by day
            return {"ok": True}
        return {"ok": False, "error": f"a {kind} does not support the command {name!r}"}
