"""Device commands: accepting, queueing per device, expiry, and recording how each ended.

A command is a row in ``commands`` from the moment it is accepted; its status moves
``pending → sent → succeeded | failed``, or ``pending → expired`` when its device stays
offline past the command's time to live. The rooms next door:

* :mod:`~server.commands.catalog`: what each device kind can be told (the arguments' check);
* :mod:`~server.commands.targets`: which devices a group command's target picks;
* :mod:`~server.commands.transports`: how a command travels (MQTT, a Modbus gateway, a
  third-party polling adapter), one :class:`~server.commands.transports.Transport` each;
* :mod:`~server.commands.journal`: the rows and their batched status changes and audit;
* :mod:`~server.commands.views`: commands and groups as the API shows them.

Each device has a lane: its commands run one after another in the order accepted (dim to 30
then to 80 ends at 80). A lane whose device is offline (``device_state.status``) is parked;
it resumes when ingest commits a reading or an ``online`` status of that device (an ingest
listener) or when a periodic check finds the device no longer offline, and its commands
expire at their ``expires_at`` meanwhile.

Open commands survive a restart: at start, pending ones are queued again (or expired), sent
MQTT ones wait for the rest of their timeout (the persistent session keeps the answers),
sent Modbus and adapter ones are written again: commands are absolute values (see
:mod:`server.commands.catalog`), so a second write is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from server import keys
from server.commands import journal, targets
from server.commands.catalog import validate
from server.commands.command import MQTT, Command, Outcome, utcnow
from server.commands.journal import Journal
from server.commands.targets import DEVICE_SQL, Selection
from server.commands.transports import (
    UNROUTABLE,
    AdapterTransport,
    ModbusTransport,
    MqttTransport,
    SparkplugTransport,
    Transport,
    route,
)
from server.commands.views import command_json
from server.errors import Invalid, NotFound
from server.runtime.tasks import cancel_and_wait
from server.settings import CommandSettings
from server.store.audit import AuditEntry
from server.vocab import CommandState, DeviceStatus

__all__ = ["CommandService", "PreparedGroup", "commands_ctx"]

logger = logging.getLogger(__name__)

SWEEP_S = 1.0  # expiry resolution of parked commands
RECHECK_S = 5.0  # how often parked devices' status is read back from the database


@dataclass(slots=True)
class PreparedGroup:
    """A group command built but not stored (:meth:`CommandService.prepare_group`)."""

    id: uuid.UUID
    actor: str
    selection: Selection
    cmds: list[Command]
    statuses: dict[str, str]
    created: AuditEntry
    queued: int

    def answer(self) -> dict[str, Any]:
        """What POST /api/v1/commands answers."""
        sel = self.selection
        return {"id": str(self.id), "status": CommandState.PENDING, "name": sel.spec.name,
                "args": sel.args, "total": len(self.cmds), "queued": self.queued,
                "skipped": sel.skipped}


@dataclass(slots=True)
class _Lane:
    queue: deque[Command] = field(default_factory=deque)
    task: asyncio.Task | None = None
    parked: bool = False


class CommandService:
    """Accepts, queues and expires commands, hands them to their transport and records how
    each ended; owns every task it starts."""

    def __init__(self, pool: asyncpg.Pool, settings: CommandSettings, *, directory=None,
                 mqtt=None, modbus=None, adapters=None, metrics=None, sparkplug=None) -> None:
        self.pool = pool
        self.settings = settings
        self.directory = directory
        self.metrics = metrics
        # mqtt: the MqttLink (None when MQTT is off); modbus: the ModbusPoller (None without
        # gateways); adapters: the AdapterSupervisor (None without any). Tried in this order.
        self._mqtt = MqttTransport(mqtt, settings)
        self._transports: tuple[Transport, ...] = (
            ModbusTransport(modbus, settings), SparkplugTransport(mqtt, sparkplug, directory, settings),
            self._mqtt, AdapterTransport(adapters, settings))
        self._by_route = {t.route: t for t in self._transports}
        self._journal = Journal(pool)
        self._lanes: dict[str, _Lane] = {}
        self._parked: set[str] = set()
        self._sweeper: asyncio.Task | None = None

    @property
    def listeners(self) -> list:
        """Called with each written batch of status changes (see :mod:`server.commands.journal`)."""
        return self._journal.listeners

    @property
    def late_results(self) -> int:
        """MQTT answers for commands no longer waiting (timed out, unknown)."""
        return self._mqtt.late_results

    def on_result(self, topic: str, payload: bytes) -> None:
        """A device's answer (``ioc/v1/{id}/commands/{cid}/result``), from the MQTT session."""
        self._mqtt.on_result(topic, payload)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._journal.start()
        await self._resume()
        self._sweeper = asyncio.create_task(self._sweep(), name="commands.sweep")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *(lane.task for lane in self._lanes.values())) if t]
        # A lane may sit in a pymodbus write: Python 3.11's wait_for can swallow one cancel.
        await cancel_and_wait(tasks)
        self._sweeper = None
        self._mqtt.close()
        await self._journal.stop()

    def route(self, device_id: str, adapter: str | None, name: str) -> str:
        """``mqtt``, ``modbus`` or ``adapter`` for this device and command, or one of
        :data:`~server.commands.transports.UNROUTABLE`."""
        return route(self._transports, device_id, adapter, name).route

    # ------------------------------------------------------------------ accepting
    async def submit(self, actor: str, device_id: str, name: Any, args: Any,
                     ttl_s: float | None = None) -> dict[str, Any]:
        """Accept one command (validated, stored, audited) and start delivering it."""
        async with self.pool.acquire() as conn:
            dev = await conn.fetchrow(DEVICE_SQL + " where d.id = $1", device_id)
            if dev is None:
                raise NotFound(f"no device with id {device_id!r}")
            spec, args = validate(dev["kind"], name, args)
            cmd = self._new(device_id, spec.name, args, actor,
                            self.route(device_id, dev["adapter"], spec.name), ttl_s)
            row = await journal.insert_command(conn, cmd, dev["status"])
        self._admit([cmd], {device_id: dev["status"]})
        return command_json(row)

    def _new(self, device: str, name: str, args: dict[str, Any], actor: str, route: str,
             ttl_s: float | None, group: uuid.UUID | None = None) -> Command:
        ttl = self.settings.ttl_s if ttl_s is None else ttl_s
        return Command(uuid.uuid4(), device, name, args, actor, utcnow() + timedelta(seconds=ttl),
                       route, group)

    def check_ttl(self, ttl_s: Any) -> float | None:
        if ttl_s is None:
            return None
        top = self.settings.max_ttl_s
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not 0 < ttl_s <= top:
            raise Invalid(f"ttl_s must be a number of seconds above 0 and at most {top:g}, "
                          f"got {ttl_s!r}")
        return float(ttl_s)

    async def select(self, target: Any, name: Any, args: Any) -> Selection:
        """Which devices a group command would reach (the preview), without changing anything."""
        return await targets.select(self.pool, self.settings.max_group, target, name, args,
                                    self.route)

    async def submit_group(self, actor: str, target: Any, name: Any, args: Any,
                           ttl_s: float | None = None) -> dict[str, Any]:
        sel = await self.select(target, name, args)
        if not sel.devices:
            raise Invalid(f"the target selects no device that can take {sel.spec.name}",
                          skipped=sel.skipped[:100])
        group = self.prepare_group(actor, sel, ttl_s)
        async with self.pool.acquire() as conn:
            await self.record_group(conn, group)
        self.admit_group(group)
        return group.answer()

    # A group in three steps, for a caller that records it inside its own transaction (the
    # lighting scheduler moves its "last step applied" in the same one): prepare, record in
    # the caller's transaction, admit once that has committed.
    def prepare_group(self, actor: str, sel: Selection, ttl_s: float | None = None) -> PreparedGroup:
        """The commands of a selection, not stored yet."""
        group = uuid.uuid4()
        cmds = [self._new(d["id"], sel.spec.name, sel.args, actor, d["route"], ttl_s, group)
                for d in sel.devices]
        statuses = {d["id"]: d["status"] for d in sel.devices}
        summary = sel.summary()
        created = AuditEntry(actor, "command_group.create", None, str(group), {
            "group": str(group), "name": sel.spec.name, "args": sel.args,
            "target": sel.target, "count": len(cmds), "skipped": len(sel.skipped),
            "by_status": summary["by_status"], "by_route": summary["by_route"]})
        return PreparedGroup(group, actor, sel, cmds, statuses, created, summary["queued"])

    async def record_group(self, conn: asyncpg.Connection, group: PreparedGroup) -> None:
        """Store a prepared group (its rows and audit entries) through ``conn``."""
        sel = group.selection
        await journal.insert_group(conn, group.id, sel.spec.name, sel.args, sel.target,
                                   sel.skipped, group.actor, group.cmds, group.statuses, group.created)

    def admit_group(self, group: PreparedGroup) -> None:
        """Start delivering a recorded group (after its transaction has committed)."""
        self._admit(group.cmds, group.statuses)
        logger.info("%s: group command %s %s on %d device(s) (%d skipped)", group.actor, group.id,
                    group.selection.spec.name, len(group.cmds), len(group.selection.skipped))

    async def cancel_group(self, actor: str, group: uuid.UUID) -> dict[str, Any]:
        """Withdraw a group's commands that have not been sent yet (one already on the wire
        finishes); they end ``failed`` with the reason. Raises :class:`NotFound`."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("select exists(select 1 from command_groups where id = $1)", group):
                raise NotFound(f"no command group with id {group}")
        cancelled = 0
        reason = f"cancelled by {actor}"
        for device, lane in list(self._lanes.items()):
            busy = lane.queue[0] if lane.task is not None and lane.queue else None
            keep: deque[Command] = deque()
            for cmd in lane.queue:
                if cmd.group == group and cmd is not busy and cmd.sent_at is None:
                    self._finish(cmd, Outcome.failed(reason))
                    cancelled += 1
                else:
                    keep.append(cmd)
            lane.queue = keep
            if not keep and lane.task is None:
                self._parked.discard(device)
                del self._lanes[device]
        self._journal.audit(AuditEntry(actor, "command_group.cancel", None, str(group),
                                       {"group": str(group), "cancelled": cancelled}))
        self._gauge()
        await self._journal.flush()
        return {"id": str(group), "cancelled": cancelled}

    # ------------------------------------------------------------------ lanes
    def _admit(self, cmds: Iterable[Command], statuses: Mapping[str, str]) -> None:
        for cmd in cmds:
            lane = self._lanes.get(cmd.device)
            if lane is None:
                lane = self._lanes[cmd.device] = _Lane()
            lane.queue.append(cmd)
            if statuses.get(cmd.device) == DeviceStatus.OFFLINE and cmd.sent_at is None:
                if lane.task is None:
                    self._park(cmd.device, lane)
            else:
                self._unpark(cmd.device)
        self._gauge()

    def _park(self, device: str, lane: _Lane) -> None:
        if not lane.parked:
            lane.parked = True
            self._parked.add(device)
            logger.log(_level(lane), "device %s is offline: %d command(s) wait for it", device,
                       len(lane.queue))

    def _unpark(self, device: str) -> None:
        lane = self._lanes.get(device)
        if lane is None:
            return
        lane.parked = False
        self._parked.discard(device)
        if lane.task is None and lane.queue:
            lane.task = asyncio.create_task(self._drain(device, lane), name=f"commands[{device}]")

    async def _drain(self, device: str, lane: _Lane) -> None:
        try:
            while lane.queue:
                cmd = lane.queue[0]
                try:
                    self._finish(cmd, await self._deliver(cmd))
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # supervision boundary: one command's bug spares the rest
                    logger.exception("command %s to %s failed unexpectedly", cmd.id, device)
                    self._finish(cmd, Outcome.failed(f"internal error: {err!r}"))
                lane.queue.popleft()
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(device) is lane and not lane.parked:
                del self._lanes[device]
            self._gauge()

    async def _deliver(self, cmd: Command) -> Outcome:
        if cmd.sent_at is None and utcnow() >= cmd.expires_at:
            return Outcome.expired("its time to live ran out before it could be sent")
        return await self._by_route[cmd.route].send(cmd, self._sent)

    def _sent(self, cmd: Command) -> None:
        cmd.sent_at = utcnow()
        self._journal.sent(cmd)

    def _finish(self, cmd: Command, outcome: Outcome) -> None:
        self._journal.finished(cmd, outcome, utcnow())
        if self.metrics is not None:
            self.metrics.commands.labels(cmd.route, outcome.state).inc()
        # A group's thousands of outcomes are in the API and the audit log, not the log.
        logger.log(logging.DEBUG if cmd.group else logging.INFO, "command %s %s to %s: %s%s",
                   cmd.id, cmd.name, cmd.device, outcome.state,
                   f" ({outcome.error})" if outcome.error else "")

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.commands_queued.set(sum(len(lane.queue) for lane in self._lanes.values()))

    # ------------------------------------------------------------------ device availability
    def on_batch(self, committed) -> None:
        """Ingest listener: a device that reported or came online releases its parked lane."""
        if not self._parked:
            return
        directory = self.directory
        online: set[int] = set(committed.states)
        latest: dict[int, tuple[datetime, str]] = {}
        for key, status, ts, _retained in committed.status:
            if key not in latest or ts >= latest[key][0]:
                latest[key] = (ts, status)
        online.update(k for k, (_, st) in latest.items() if st == DeviceStatus.ONLINE)
        online.difference_update(k for k, (_, st) in latest.items() if st == DeviceStatus.OFFLINE)
        if not online:
            return
        for device in list(self._parked):
            info = directory.get(device) if directory is not None else None
            if info is not None and info.key in online:
                logger.log(_level(self._lanes[device]), "device %s is back: sending its queued "
                           "command(s)", device)
                self._unpark(device)

    async def _sweep(self) -> None:
        """Expire parked commands at their time; re-read parked devices' status now and then."""
        last_check = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = utcnow()
            for device in list(self._parked):
                lane = self._lanes[device]
                keep: deque[Command] = deque()
                for cmd in lane.queue:
                    if now >= cmd.expires_at:
                        self._finish(cmd, Outcome.expired(f"device {device} stayed offline until "
                                                          "the command's time to live ran out"))
                    else:
                        keep.append(cmd)
                lane.queue = keep
                if not keep:
                    self._parked.discard(device)
                    del self._lanes[device]
            self._gauge()
            if self._parked and loop.time() - last_check >= RECHECK_S:
                last_check = loop.time()
                try:
                    async with self.pool.acquire() as conn:
                        rows = await conn.fetch(DEVICE_SQL + " where d.id = any($1::text[])",
                                                list(self._parked))
                except Exception:  # the database is away: keep waiting, try again later
                    logger.exception("could not read the status of devices with queued commands")
                    continue
                found = {r["id"]: r["status"] for r in rows}
                for device in list(self._parked):
                    if device not in found:
                        for cmd in self._lanes[device].queue:
                            self._finish(cmd, Outcome.failed(f"device {device} was deleted"))
                        self._parked.discard(device)
                        del self._lanes[device]
                    elif found[device] != DeviceStatus.OFFLINE:
                        self._unpark(device)

    # ------------------------------------------------------------------ restart
    async def _resume(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await journal.open_commands(conn)
        if not rows:
            return
        now = utcnow()
        timeout = timedelta(seconds=self.settings.timeout_s)
        admit: list[Command] = []
        statuses: dict[str, str] = {}
        for r in rows:
            cmd = Command(r["id"], r["device"], r["name"], dict(r["args"]), r["requested_by"] or "?",
                          r["expires_at"], MQTT, r["group_id"])
            if not r["known"]:
                self._finish(cmd, Outcome.failed(f"device {cmd.device} was deleted"))
                continue
            try:
                cmd.route = self.route(cmd.device, r["adapter"], cmd.name)
            except UNROUTABLE as err:
                self._finish(cmd, Outcome.failed(str(err)))
                continue
            if r["status"] == CommandState.SENT and cmd.route == MQTT:
                if r["sent_at"] + timeout <= now:
                    self._finish(cmd, Outcome.failed(
                        f"no result from device {cmd.device} within {timeout.total_seconds():g} s "
                        "of sending (the server restarted meanwhile)"))
                    continue
                cmd.sent_at = r["sent_at"]  # the persistent session keeps its answer for us
                self._mqtt.expect(cmd)
            elif r["status"] == CommandState.PENDING and now >= cmd.expires_at:
                self._finish(cmd, Outcome.expired("its time to live ran out while the server "
                                                  "was down"))
                continue
            admit.append(cmd)
            statuses[cmd.device] = r["device_status"]
        logger.info("resuming %d open command(s) from before the restart", len(admit))
        self._admit(admit, statuses)


def _level(lane: _Lane) -> int:
    """Info for a single command's lane; debug when a group's thousands would flood the log."""
    return logging.DEBUG if lane.queue and lane.queue[-1].group else logging.INFO


def _push_adapter(app: web.Application, kind: str):
    ingest = app.get(keys.MQTT_INGEST)
    return ingest.adapters.get(kind) if ingest is not None else None


async def commands_ctx(app: web.Application) -> AsyncIterator[None]:
    """The command service, after the MQTT session and the Modbus poller it sends through."""
    service = CommandService(
        app[keys.DB], app[keys.SETTINGS].commands, directory=app.get(keys.DIRECTORY),
        mqtt=app.get(keys.MQTT), modbus=app.get(keys.MODBUS), adapters=app.get(keys.ADAPTERS),
        metrics=app.get(keys.METRICS), sparkplug=_push_adapter(app, "sparkplug"))
    app[keys.COMMANDS] = service
    hub = app.get(keys.HUB)
    if hub is not None:  # results to the maps watching them, live
        service.listeners.append(hub.publish_commands)
    await service.start()  # sent MQTT commands wait again before early answers are replayed
    ingest = app.get(keys.INGEST)
    if ingest is not None:
        ingest.listeners.append(service.on_batch)
    mqtt_ingest = app.get(keys.MQTT_INGEST)
    if mqtt_ingest is not None:
        mqtt_ingest.attach_command_results(service.on_result)
    try:
        yield
    finally:
        if mqtt_ingest is not None:
            mqtt_ingest.attach_command_results(None)
        if ingest is not None and service.on_batch in ingest.listeners:
            ingest.listeners.remove(service.on_batch)
        await service.stop()
