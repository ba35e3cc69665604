"""The Modbus poller: the supervisor of every ``[[modbus.gateways]]`` entry.

The adapter (:class:`adapters.modbus.GatewayConnection`) knows registers and errors; this
module owns time: intervals, phase offsets, per-unit timeouts, backoff, availability and
reconnecting.

* One task per gateway (``modbus[<gateway>].poll``), all owned by :class:`ModbusPoller`
  (``async with`` or ``start()``/``stop()``). The gateway's
  requests are serialised anyway (one client per gateway), so one task per gateway loses
  nothing and keeps the bus order predictable.
* Each unit is polled on its own grid ``phase + k × interval_s`` (absolute deadlines, so
  wake-up jitter never accumulates). Phases spread a gateway's units evenly over
  ``min(interval_s, max_stagger_s)`` so they do not all fire at once.
* A unit that does not answer keeps its regular slot once, then backs off exponentially
  (``interval × 2^n`` capped at ``unit_backoff_max_s``, jittered between ½ and 1× and never
  below the interval): a dead meter costs the bus one timeout per backoff period, not one
  per cycle. Its first answer puts it straight back on its grid.
* ``StatusUpdate(device, online=False)`` when a unit has not answered for two intervals
  (also while the gateway is unreachable); ``online=True`` at the first answer after that
  and at the first answer ever. Each is logged once, at info level.
* A lost gateway link is reconnected with capped, jittered exponential backoff; pymodbus
  itself never retries or reconnects (see :mod:`adapters.modbus.connection`).
* The sink is awaited: when ingest applies backpressure the gateway's polls wait and
  missed slots are skipped (counted as ``overruns``), so nothing piles up in memory.

The grid, the backoff, the availability clock and the once-per-streak logging are
:mod:`server.polling.core`'s, shared with the adapter supervisor. Every log line starts with
``modbus[<gateway>]`` (and the device, when it concerns one unit).

No pymodbus exception reaches this module; it handles the SDK's error classes only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from adapters.modbus import GatewayConnection
from adapters.sdk import ConfigError, Reading, StatusUpdate, TransientError
from server import keys
from server.polling.core import Availability, Delivery, Grid, Labelled, Streak, backoff, describe, wait_until
from server.runtime.tasks import cancel_and_wait
from server.settings import ModbusGateway, ModbusUnit

__all__ = ["GatewayStats", "ModbusPoller", "PollPolicy", "Sink"]

logger = logging.getLogger(__name__)

#: The ingest pipeline: awaited once per unit poll (its status change, then its readings)
#: or once per batch of availability changes. It may block; polling slows down meanwhile.
Sink = Callable[[Sequence[Reading | StatusUpdate]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PollPolicy:
    offline_after_intervals: float = 2.0
    unit_backoff_max_s: float = 120.0  # a dead unit is retried at least this often
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_stagger_s: float = 10.0  # phases spread over min(interval, this)


@dataclass(slots=True)
class GatewayStats:
    """Counters for ``/metrics`` (a snapshot; see :meth:`ModbusPoller.stats`)."""

    connected: bool = False
    polls: int = 0
    failures: int = 0
    reconnects: int = 0  # links re-established after a loss
    overruns: int = 0  # poll slots skipped because the gateway or the sink fell behind
    units_online: int = 0
    units_offline: int = 0
    units_stopped: int = 0  # configuration errors: not polled until restart


@dataclass(eq=False, slots=True)
class _Unit:
    cfg: ModbusUnit
    log: logging.LoggerAdapter
    grid: Grid
    up: Availability
    streak: Streak = field(default_factory=Streak)  # polls without an answer, in a row
    stopped: bool = False  # a configuration error: not polled until restart

    @property
    def interval(self) -> float:
        return self.cfg.interval_s


class _GatewayWorker:
    def __init__(self, cfg: ModbusGateway, sink: Sink, policy: PollPolicy, rng: random.Random) -> None:
        self.cfg, self.policy, self.rng = cfg, policy, rng
        self.name = cfg.name
        self.conn = GatewayConnection(cfg)
        self.log = Labelled(logger, f"modbus[{cfg.name}]", gateway=cfg.name)
        self.units = [
            _Unit(u, Labelled(logger, f"modbus[{cfg.name}] {u.device}", gateway=cfg.name, device=u.device),
                  Grid(u.interval_s), Availability(policy.offline_after_intervals * u.interval_s))
            for u in cfg.units
        ]
        for u in cfg.units:  # a bad profile stops start-up, naming the device and field
            self.conn.unit_map(u)
        self.counters = GatewayStats()
        self.link = Streak()  # failed connects (and the loss that started them)
        self._had_link = False
        self._emit = Delivery(sink, self.log)

    def stats(self) -> GatewayStats:
        s = replace(self.counters, connected=self.conn.connected)
        s.units_online = sum(u.up.online is True for u in self.units)
        s.units_offline = sum(u.up.online is False and not u.stopped for u in self.units)
        s.units_stopped = sum(u.stopped for u in self.units)
        return s

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self) -> None:
        t0 = self._loop_time()
        for i, u in enumerate(self.units):
            spread = min(u.interval, self.policy.max_stagger_s)
            u.grid.start(t0 + spread * i / len(self.units))
            u.up.last_success = t0
        try:
            while True:
                try:
                    await self._connect()
                    await self._poll_while_connected()
                except Exception:  # supervision boundary: a bug must not end the gateway
                    self.log.exception("poll loop failed; restarting it")
                    await self.conn.close()
                    await self._idle(backoff(self.rng, self.policy.reconnect_min_s, 3,
                                             self.policy.reconnect_max_s))
        finally:
            await self.conn.close()

    # -- link -----------------------------------------------------------------------------

    async def _connect(self) -> None:
        attempt = 0
        while not self.conn.connected:
            try:
                await self.conn.connect()
            except TransientError as err:
                if self.link.fail(f"gateway unreachable: {describe(err)}"):
                    self.log.info("gateway unreachable (%s); retrying with backoff", describe(err))
                attempt += 1
                await self._idle(backoff(self.rng, self.policy.reconnect_min_s, attempt - 1,
                                         self.policy.reconnect_max_s))
        if self._had_link:
            self.counters.reconnects += 1
        self._had_link = True
        now = self._loop_time()
        for u in self.units:
            u.grid.forgive(now)
        if self.link.succeed():
            self.log.info("gateway link restored")

    def _link_lost(self, err: BaseException) -> None:
        if self.link.fail(f"gateway unreachable: {describe(err)}"):
            self.log.info("gateway link lost (%s); reconnecting", describe(err))

    def _why(self, u: _Unit) -> str:
        """Why a unit has not answered: the link's trouble first, else its own."""
        return self.link.last_error or u.streak.last_error or "never answered"

    async def _idle(self, delay: float) -> None:
        """Sleep ``delay`` seconds, marking units offline whose time is up meanwhile."""
        await wait_until(self._loop_time() + delay, self._watched, self._expire)

    # -- polling --------------------------------------------------------------------------

    def _watched(self) -> list[Availability]:
        return [u.up for u in self.units if not u.stopped and u.up.watched]

    async def _poll_while_connected(self) -> None:
        while self.conn.connected:
            active = [u for u in self.units if not u.stopped]
            if not active:
                await asyncio.get_running_loop().create_future()  # nothing left: wait for stop
            unit = min(active, key=lambda u: u.grid.deadline)
            await wait_until(unit.grid.deadline, self._watched, self._expire)
            await self._poll(unit)

    async def _poll(self, u: _Unit) -> None:
        started = self._loop_time()
        self.counters.polls += 1
        try:
            async with asyncio.timeout(self.conn.read_budget_s(u.cfg)):
                readings = await self.conn.read_unit(u.cfg)
        except ConfigError as err:
            self.counters.failures += 1
            u.stopped = True
            u.log.error("stopped polling: %s", err)
            if u.up.lost():
                await self._emit([StatusUpdate(u.cfg.device, online=False)])
            return
        except (TransientError, TimeoutError) as err:
            self.counters.failures += 1
            if not self.conn.connected:  # the link, not the unit: reconnect, then poll it
                self._link_lost(err)
                return
            self._failed(u, str(err) or "no answer within the poll's time budget")
            return
        except Exception as err:  # supervision boundary: one unit's bug spares the others
            self.counters.failures += 1
            error = f"{type(err).__name__}: {describe(err)}"
            if u.streak.first_bug():
                u.log.exception("poll failed unexpectedly (%s)", error)
            self._failed(u, error)
            return
        u.streak.succeed()
        batch: list[Reading | StatusUpdate] = []
        before = u.up.succeeded(started)
        if before is not True:
            if before is False:
                u.log.info("available again")
            batch.append(StatusUpdate(u.cfg.device, online=True))
        batch.extend(readings)
        self.counters.overruns += u.grid.next_slot(self._loop_time())
        await self._emit(batch)

    def _failed(self, u: _Unit, error: str) -> None:
        u.streak.fail(error)
        if u.streak.failures == 1:  # one miss keeps the regular slot
            self.counters.overruns += u.grid.next_slot(self._loop_time())
        else:
            delay = max(u.interval, backoff(self.rng, u.interval, u.streak.failures - 1,
                                            self.policy.unit_backoff_max_s))
            u.grid.retry_at(self._loop_time() + delay)

    async def _expire(self, gone: list[Availability]) -> None:
        now = self._loop_time()
        units = [u for u in self.units if any(u.up is a for a in gone)]
        for u in units:
            u.up.lost()
            u.log.info("unavailable: no answer for %.1f s (%s)", now - u.up.last_success, self._why(u))
        await self._emit([StatusUpdate(u.cfg.device, online=False) for u in units])


class ModbusPoller:
    """Polls every unit of every gateway and routes commands to the right gateway.

    ``ModbusPoller(settings.modbus.gateways, sink)`` then ``async with poller:`` (or
    ``await poller.start()`` ... ``await poller.stop()``). Bad profiles raise
    :class:`ConfigError` here, before anything runs.
    """

    def __init__(
        self,
        gateways: Sequence[ModbusGateway],
        sink: Sink,
        *,
        policy: PollPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or PollPolicy()
        rng = rng or random.Random()
        self._workers = {g.name: _GatewayWorker(g, sink, self.policy, rng) for g in gateways if g.units}
        self._units: dict[str, tuple[_GatewayWorker, ModbusUnit]] = {}
        self._device_units: dict[str, list[ModbusUnit]] = {}  # every unit of a device, in order
        for w in self._workers.values():
            for u in w.cfg.units:
                # A device may have several units behind its gateway (a cabinet's energy
                # meter and its I/O module); across gateways it would have two owners.
                if u.device in self._units and self._units[u.device][0] is not w:
                    other = self._units[u.device][0].name
                    raise ConfigError(
                        f"device {u.device} is listed on gateways {other} "
                        f"and {w.name}; a device has one gateway"
                    )
                self._units.setdefault(u.device, (w, u))
                self._device_units.setdefault(u.device, []).append(u)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def devices(self) -> frozenset[str]:
        """Device ids this poller serves (and can send commands to)."""
        return frozenset(self._units)

    def stats(self) -> dict[str, GatewayStats]:
        """Per-gateway counters: polls, failures, reconnects, overruns, connected, units."""
        return {name: w.stats() for name, w in self._workers.items()}

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("ModbusPoller already started")
        self._tasks = [asyncio.create_task(w.run(), name=f"modbus[{w.name}].poll")
                       for w in self._workers.values()]

    async def stop(self) -> None:
        """Cancel every gateway task, wait for them and close the connections.

        Not a TaskGroup: a gateway task that swallowed its cancellation (Python 3.11's
        ``asyncio.wait_for`` inside pymodbus can) must be cancelled again, which a TaskGroup
        being cancelled does not do; :func:`cancel_and_wait` does.
        """
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def __aenter__(self) -> ModbusPoller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def command(self, device_id: str, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Write through the device's gateway connection and return what was read back.

        Raises ``InvalidCommand`` (a ``ValueError``: unknown command or bad argument),
        ``CommandFailed`` (refused or read back differently), :class:`TransientError`
        (no answer, link down) or :class:`ConfigError` (not a Modbus device here).
        """
        try:
            worker, unit = self._units[device_id]
        except KeyError:
            raise ConfigError(f"device {device_id} is not behind any Modbus gateway") from None
        # A cabinet's meter takes no commands but its I/O module may: the first unit whose
        # profile has the command carries it out.
        for candidate in self._device_units.get(device_id, ()):
            if name in worker.conn.unit_map(candidate).commands:
                unit = candidate
                break
        return dict(await worker.conn.write(unit, name, args))

    def commands_for(self, device_id: str) -> frozenset[str]:
        """The commands the profiles of the device's units define (empty if not ours)."""
        if device_id not in self._units:
            return frozenset()
        conn = self._units[device_id][0].conn
        return frozenset(n for u in self._device_units[device_id] for n in conn.unit_map(u).commands)

    def gateway_of(self, device_id: str) -> str | None:
        """The name of the gateway whose one connection reaches the device."""
        hit = self._units.get(device_id)
        return hit[0].name if hit else None

    def profiles_of(self, device_id: str) -> list[str]:
        return [u.profile for u in self._device_units.get(device_id, ())]


async def modbus_ctx(app: web.Application) -> AsyncIterator[None]:
    """Poll the configured Modbus gateways into the ingest pipeline."""
    gateways = list(app[keys.SETTINGS].modbus.gateways)
    sim = app.get(keys.SIMULATOR)
    if sim is not None:
        gateways += [ModbusGateway.model_validate(g) for g in sim.gateway_settings()]
    if not gateways:
        yield
        return
    ingest = app[keys.INGEST]

    async def sink(items) -> None:
        await ingest.submit(items, source="modbus")

    poller = ModbusPoller(gateways, sink)
    app[keys.MODBUS] = poller
    pollers = app[keys.METRICS].pollers
    pollers.gateways = poller.stats
    await poller.start()
    try:
        yield
    finally:
        pollers.gateways = None
        await poller.stop()
