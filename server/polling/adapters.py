"""The supervisor of polling adapters found through the ``ioc.adapters`` entry points.

Third-party :class:`~adapters.sdk.PollingAdapter` packages implement ``connect``, ``poll``
and ``close``; everything else is here, the same for every adapter (STYLE §2, as Home
Assistant's ``DataUpdateCoordinator`` does for integrations):

* **Which run.** An adapter runs when its ``[adapters.<kind>]`` section exists and does not
  say ``enabled = false``. The section is the adapter's own configuration (its
  ``config_model``) except ``enabled``, ``interval_s`` (default: the adapter's
  ``poll_interval``) and ``timeout_s`` (default: the interval, at most 30 s). A section that
  does not validate stops start-up with the adapter, the field and the reason. Devices
  bound to an adapter that is not installed or not configured are named in one warning.
  The Modbus adapter has its own poller (``[modbus]``) and is not run here.
* **Bindings.** ``adapter.bindings`` holds the devices whose ``adapter`` is the kind, with
  their ``adapter_config`` and ``external_id``; reloaded before a poll when the device
  directory changed.
* **Schedule.** Polls on a grid ``phase + k × interval`` (absolute deadlines: no drift);
  each adapter gets a random phase within its first interval so adapters do not fire
  together. Each ``poll`` runs under ``timeout_s``.
* **Errors** (the SDK's tree; anything else is a bug, logged with its traceback once and
  treated as transient): :class:`TransientError` or a timeout → ``close``, then
  ``connect`` again with capped, jittered exponential backoff; the devices go offline once
  no poll has succeeded for two intervals. :class:`AuthError` → the devices offline at
  once; tried again only every ``auth_retry_s`` (credentials rarely fix themselves; no
  hammering). :class:`ConfigError` → the devices offline and the adapter stopped until
  restart. Unavailability and recovery are logged once each, at info level (warning and
  error for credentials and configuration).
* **Availability.** The devices are those bound to the adapter and those its readings
  named; ``StatusUpdate(online=False)`` for them when the adapter fails as above, and
  ``online=True`` at its first good poll after that.
* **Backpressure.** Readings go to the ingest pipeline through an awaited sink: while the
  database is slow, polls wait, and slots missed meanwhile are skipped, not queued.
* **Commands.** An adapter that overrides :meth:`~adapters.sdk.PollingAdapter.write` takes
  the commands of its devices (``server/commands/service.py`` routes them here). A write never runs
  beside a poll or another write of the same adapter (one lock per adapter: most devices
  have one link), connects first if the link is down, and runs under ``timeout_s``.

One task per adapter (``adapter[<kind>].poll``), all owned by :class:`AdapterSupervisor`.
The grid, the backoff, the availability clock and the once-per-streak logging are
:mod:`server.polling.core`'s, shared with the Modbus poller; every log line starts with
``adapter[<kind>]``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from adapters.registry import discover
from adapters.sdk import (
    AuthError,
    ConfigError,
    DecodeError,
    DeviceBinding,
    PollingAdapter,
    Reading,
    StatusUpdate,
    TransientError,
)
from server import keys
from server.polling.core import Availability, Delivery, Grid, Labelled, Streak, backoff, describe, wait_until
from server.runtime.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

#: Polling adapters the server runs elsewhere (the Modbus poller owns ``[modbus]``).
RUN_ELSEWHERE = frozenset({"modbus"})
#: Keys of ``[adapters.<kind>]`` the server keeps for itself.
SERVER_KEYS = ("enabled", "interval_s", "timeout_s")

#: ``sink(kind, items)``: the ingest pipeline, awaited (it may block: backpressure).
Sink = Callable[[str, Sequence[Reading | StatusUpdate]], Awaitable[None]]
BindingsLoader = Callable[[str], Awaitable[list[DeviceBinding]]]


class StartupError(Exception):
    """An adapter's configuration is wrong: the server does not start (the message says
    which adapter and which field)."""


@dataclass(frozen=True, slots=True)
class SupervisorPolicy:
    offline_after_intervals: float = 2.0
    backoff_min_s: float = 1.0
    backoff_max_s: float = 300.0
    auth_retry_s: float = 300.0
    max_timeout_s: float = 30.0


@dataclass(slots=True)
class AdapterStats:
    """What ``stats()`` reports per adapter."""

    state: str = "starting"  # polling | retrying | auth_failed | stopped
    polls: int = 0
    failures: int = 0
    readings: int = 0
    skipped: int = 0  # slots missed because a poll or the sink took too long
    last_error: str = ""
    devices: int = 0


class _Runner:
    """One adapter's task: its schedule, its link, its devices' availability."""

    def __init__(self, kind: str, adapter: PollingAdapter, interval: float, timeout: float, sink: Sink,
                 load_bindings: BindingsLoader, policy: SupervisorPolicy, rng: random.Random,
                 directory_version: Callable[[], int]) -> None:
        self.kind, self.adapter, self.interval, self.timeout = kind, adapter, interval, timeout
        self.load_bindings, self.policy, self.rng = load_bindings, policy, rng
        self.directory_version = directory_version
        self.stats = AdapterStats()
        self.devices: set[str] = set()  # bound or seen in readings
        # Its devices are not announced online at the first poll, only after being offline.
        self.up = Availability(policy.offline_after_intervals * interval, online=True)
        self.streak = Streak()  # failed polls (and connects) in a row
        self.grid = Grid(interval)
        self.connected = False
        self._bound_at: int | None = None
        # Held by a poll (connect included) and by a write: they share the adapter's link.
        self.lock = asyncio.Lock()
        self.log = Labelled(logger, f"adapter[{kind}]", adapter=kind)

        async def deliver(batch: Sequence[Reading | StatusUpdate]) -> None:
            await sink(kind, batch)

        self._emit = Delivery(deliver, self.log)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self) -> None:
        start = self._now()
        self.up.last_success = start  # the offline clock starts with us
        self.grid.start(start + self.rng.uniform(0, self.interval))
        try:
            while True:
                await wait_until(self.grid.deadline, self._watched, self._expire)
                try:
                    async with self.lock:
                        await self._refresh_bindings()
                        await self._connect()
                        async with asyncio.timeout(self.timeout):
                            readings = await self.adapter.poll()
                except ConfigError as err:
                    await self._stop(err)
                    return
                except AuthError as err:
                    await self._failed(err, auth=True)
                    self.grid.retry_at(self._now() + self.policy.auth_retry_s)
                    continue
                # A reply the adapter could not read (DecodeError) is the device's or the
                # cloud's fault, not a bug: retried like a timeout, logged in one line.
                except (TransientError, DecodeError, TimeoutError) as err:
                    await self._failed(err)
                    self.grid.retry_at(self._retry_at())
                    continue
                except Exception as err:  # supervision boundary: a bug in the adapter
                    await self._failed(err, bug=True)
                    self.grid.retry_at(self._retry_at())
                    continue
                await self._succeeded(readings)
                self.stats.skipped += self.grid.next_slot(self._now())
        finally:
            await self._close()

    async def _connect(self) -> None:
        if not self.connected:
            await self.adapter.connect()
            self.connected = True

    async def write(self, device_id: str, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run one command through the adapter, between its polls.

        Raises what the adapter raises (the SDK's errors), or :class:`TimeoutError` when
        connecting and writing outlive ``timeout``. A transient failure closes the link, as
        a failed poll does, so the next poll or write reconnects. The caller bounds the
        wait for a running poll.
        """
        if self.stats.state == "stopped":
            raise ConfigError(f"adapter {self.kind} is stopped by a configuration error "
                              f"({self.stats.last_error}); fix it and restart the server")
        async with self.lock:
            try:
                await self._refresh_bindings()
                async with asyncio.timeout(self.timeout):
                    await self._connect()
                    return await self.adapter.write(device_id, name, args) or {}
            except (TransientError, TimeoutError):
                await self._close()
                raise

    # -- schedule
    def _retry_at(self) -> float:
        """After the streak's n-th failure: capped exponential backoff from the interval
        (at least ``backoff_min_s``); once back up, polls return to the grid."""
        base = max(self.policy.backoff_min_s, self.interval)
        return self._now() + backoff(self.rng, base, self.streak.failures - 1, self.policy.backoff_max_s)

    def _watched(self) -> list[Availability]:
        return [self.up] if self.devices and self.up.watched else []

    async def _expire(self, _gone: list[Availability]) -> None:
        await self._mark_offline(self.stats.last_error or "no successful poll")

    # -- outcomes
    async def _succeeded(self, readings: Sequence[Reading]) -> None:
        self.stats.polls += 1
        recovered = self.streak.succeed()
        self.stats.state, self.stats.last_error = "polling", ""
        named = {r.device_id for r in readings}
        self.devices |= named
        self.stats.devices = len(self.devices)
        batch: list[Reading | StatusUpdate] = []
        if self.up.succeeded(self._now()) is False:
            batch += [StatusUpdate(d, online=True) for d in sorted(self.devices)]
        if recovered and self.stats.polls > 1:
            self.log.info("polls again")
        batch += readings
        self.stats.readings += len(readings)
        await self._emit(batch)

    async def _failed(self, err: BaseException, auth: bool = False, bug: bool = False) -> None:
        """Count the failure, close the link; one line when the streak starts (a bug's
        traceback once per streak instead)."""
        self.stats.failures += 1
        message = describe(err)
        if isinstance(err, TimeoutError):
            message = f"poll did not finish within {self.timeout:g} s"
        elif not isinstance(err, TransientError | AuthError):  # a bug: say what kind
            message = f"{type(err).__name__}: {message}"
        first = self.streak.fail(message)
        self.stats.last_error = message
        self.stats.state = "auth_failed" if auth else "retrying"
        await self._close()
        if auth:
            if first:
                self.log.warning("credentials refused (%s); its %d device(s) are offline; trying "
                                 "again every %.0f s", message, len(self.devices),
                                 self.policy.auth_retry_s)
            await self._mark_offline(message, said=True)
        elif bug and self.streak.first_bug():
            self.log.exception("failed unexpectedly (%s); retrying with backoff", message)
        elif first:
            self.log.info("unavailable (%s); retrying with backoff", message)

    async def _stop(self, err: ConfigError) -> None:
        self.stats.failures += 1
        self.stats.state, self.stats.last_error = "stopped", str(err)
        self.log.error("stopped: configuration error: %s (fix [adapters.%s] or the devices' "
                       "adapter_config, then restart); its %d device(s) are offline", err,
                       self.kind, len(self.devices))
        await self._close()
        await self._mark_offline(str(err), said=True)

    async def _mark_offline(self, why: str, said: bool = False) -> None:
        """Tell the sink the devices are offline (and the log, unless the failure's own line
        ``said`` so: one line per failure)."""
        if not self.up.lost():
            return
        if self.devices:
            names = sorted(self.devices)
            if not said:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                self.log.info("%d device(s) offline: %s (%s)", len(names), shown, why)
            await self._emit([StatusUpdate(d, online=False) for d in names])

    async def _close(self) -> None:
        if not self.connected:
            return
        self.connected = False
        try:
            await self.adapter.close()
        except Exception as err:  # supervision boundary: a failing close must not end polling
            self.log.warning("close failed (%s)", describe(err))

    async def _refresh_bindings(self) -> None:
        version = self.directory_version()
        if version == self._bound_at:
            return
        bindings = await self.load_bindings(self.kind)
        self.adapter.bindings = tuple(bindings)
        self.devices |= {b.device_id for b in bindings}
        self.stats.devices = len(self.devices)
        self._bound_at = version


class AdapterSupervisor:
    """Runs every configured polling adapter; ``start()``/``stop()`` or ``async with``."""

    def __init__(self, adapters: Mapping[str, tuple[PollingAdapter, float, float]], sink: Sink,
                 load_bindings: BindingsLoader, *, policy: SupervisorPolicy | None = None,
                 directory_version: Callable[[], int] = lambda: 0,
                 rng: random.Random | None = None) -> None:
        self.policy = policy or SupervisorPolicy()
        rng = rng or random.Random()
        self._runners = {
            kind: _Runner(kind, adapter, interval, timeout, sink, load_bindings, self.policy, rng,
                          directory_version)
            for kind, (adapter, interval, timeout) in adapters.items()
        }
        self._tasks: dict[str, asyncio.Task] = {}

    @property
    def kinds(self) -> list[str]:
        return sorted(self._runners)

    def adapter(self, kind: str) -> PollingAdapter:
        return self._runners[kind].adapter

    def stats(self) -> dict[str, AdapterStats]:
        return {kind: r.stats for kind, r in self._runners.items()}

    def takes_commands(self, kind: str) -> bool:
        """Whether the adapter implements ``write`` (the SDK's default refuses)."""
        runner = self._runners.get(kind)
        return runner is not None and type(runner.adapter).write is not PollingAdapter.write

    async def write(self, kind: str, device_id: str, name: str,
                    args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Carry out a command through adapter ``kind`` (see :meth:`_Runner.write`)."""
        return await self._runners[kind].write(device_id, name, args)

    async def start(self) -> None:
        for kind, runner in self._runners.items():
            self._tasks[kind] = asyncio.create_task(runner.run(), name=f"adapter[{kind}].poll")

    async def stop(self) -> None:
        """Cancel every adapter's task and wait for it (each closes its adapter)."""
        tasks, self._tasks = list(self._tasks.values()), {}
        await cancel_and_wait(tasks)

    async def __aenter__(self) -> AdapterSupervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def build_adapters(classes: Mapping[str, type[PollingAdapter]], config: Mapping[str, Mapping[str, Any]],
                   policy: SupervisorPolicy | None = None) -> dict[str, tuple[PollingAdapter, float, float]]:
    """The configured adapters, constructed: ``{kind: (adapter, interval_s, timeout_s)}``.

    Raises :class:`StartupError` naming the adapter and the field for a bad section.
    """
    policy = policy or SupervisorPolicy()
    out: dict[str, tuple[PollingAdapter, float, float]] = {}
    for kind, cls in sorted(classes.items()):
        if kind in RUN_ELSEWHERE or kind not in config:
            continue
        section = dict(config[kind])
        own = {k: section.pop(k) for k in SERVER_KEYS if k in section}
        if own.get("enabled", True) is False:
            continue
        try:
            interval = float(own.get("interval_s", cls.poll_interval.total_seconds()))
            timeout = float(own.get("timeout_s", min(interval, policy.max_timeout_s)))
        except (TypeError, ValueError):
            raise StartupError(f"[adapters.{kind}]: interval_s and timeout_s must be numbers of "
                               "seconds") from None
        if not (interval > 0 and timeout > 0):
            raise StartupError(f"[adapters.{kind}]: interval_s and timeout_s must be positive")
        try:
            adapter = cls(section)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(section)'}: {e['msg']}"
                                 for e in err.errors())
            raise StartupError(f"[adapters.{kind}] is not a valid configuration for the {kind} "
                               f"adapter: {problems}") from None
        except ConfigError as err:
            raise StartupError(f"[adapters.{kind}]: {err}") from None
        out[kind] = (adapter, interval, timeout)
    return out


BINDINGS_SQL = """
select id, external_id, adapter_config from devices where adapter = $1 order by id
"""


async def load_bindings(pool: asyncpg.Pool, kind: str) -> list[DeviceBinding]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(BINDINGS_SQL, kind)
    return [DeviceBinding(r["id"], dict(r["adapter_config"] or {}), r["external_id"]) for r in rows]


async def adapters_ctx(app: web.Application) -> AsyncIterator[None]:
    """Poll the configured third-party adapters into the ingest pipeline."""
    settings = app[keys.SETTINGS]
    registry = discover()
    polling = registry.polling_adapters()
    runnable = build_adapters(polling, settings.adapters)
    pool = app[keys.DB]
    async with pool.acquire() as conn:
        bound = await conn.fetch("select adapter, count(*) as n from devices "
                                 "where adapter is not null group by adapter")
    for r in bound:
        kind = r["adapter"]
        if kind in runnable or kind in RUN_ELSEWHERE or kind in registry.push_adapters():
            continue
        why = ("is not installed" if kind not in polling
               else f"is not configured (no [adapters.{kind}] section, or enabled = false)")
        logger.warning("%d device(s) are bound to adapter %r, which %s: they get no data",
                       r["n"], kind, why)
    if not runnable:
        yield
        return
    ingest = app[keys.INGEST]
    directory = app[keys.DIRECTORY]

    async def sink(kind: str, items) -> None:
        await ingest.submit(items, source=f"adapter:{kind}")

    supervisor = AdapterSupervisor(
        runnable, sink, lambda kind: load_bindings(pool, kind),
        directory_version=lambda: getattr(directory, "version", 0))
    app[keys.ADAPTERS] = supervisor
    pollers = app[keys.METRICS].pollers
    pollers.adapters = supervisor.stats
    await supervisor.start()
    try:
        yield
    finally:
        pollers.adapters = None
        await supervisor.stop()
