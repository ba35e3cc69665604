"""Device commands: routing to the device's adapter, confirmation, queueing, expiry, groups.

A command is a row in ``commands`` from the moment it is accepted; its status moves
``pending → sent → succeeded | failed``, or ``pending → expired`` when its device stays
offline past the command's time to live. How it travels depends on the device:

* **Modbus** (a unit of a ``[[modbus.gateways]]`` entry): written through the gateway's one
  connection owner (:meth:`server.polling.modbus.ModbusPoller.command`) and read back; it
  succeeded only if the register holds what was written. At most
  ``commands.modbus_per_gateway`` commands wait on one gateway's link at a time, so the
  poller's reads interleave with a 5,000-lamp dim instead of queueing behind it.
* **MQTT** (the native convention, CONTRACT): published to ``ioc/v1/{id}/commands`` at QoS 1
  as ``{"id", "name", "args"}``; the device answers on ``ioc/v1/{id}/commands/{cid}/result``
  with ``{"ok": true}`` or ``{"ok": false, "error": …}``. No answer within
  ``commands.timeout_s`` fails it. At most ``commands.mqtt_in_flight`` publishes await the
  broker's PUBACK at once, leaving the session's in-flight window to ingest.
* **A third-party polling adapter** (the device's ``adapter`` is a running
  ``[adapters.<kind>]`` whose class implements ``write``): the supervisor runs the write
  between the adapter's polls (:meth:`server.polling.adapters.AdapterSupervisor.write`); it
  succeeded when ``write`` returns (what it read back is the result), failed when it raises
  a :class:`~adapters.sdk.ConfigError` or :class:`~adapters.sdk.AuthError`, and is tried
  once more after a :class:`~adapters.sdk.TransientError` or a timeout.

Each device has a lane: its commands run one after another in the order accepted (dim to 30
then to 80 ends at 80). A lane whose device is offline (``device_state.status``) is parked;
it resumes when ingest commits a reading or an ``online`` status of that device (an ingest
listener) or when a periodic check finds the device no longer offline, and its commands
expire at their ``expires_at`` meanwhile.

Status changes and their audit entries are written in batches (one UPDATE … FROM unnest and
one INSERT per flush), so a group command costs the database a few statements per flush,
not three per lamp. Open commands survive a restart: at start, pending ones are queued
again (or expired), sent MQTT ones wait for the rest of their timeout (the persistent
session keeps the answers), sent Modbus ones are written again: commands are absolute
values (see :mod:`server.commands.catalog`), so a second write is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from adapters.modbus.connection import CommandFailed
from adapters.sdk import AuthError, ConfigError, TransientError
from geo.geojson import GeometryError, check_bbox, parse_bbox
from server import keys
from server.commands.catalog import CommandSpec, InvalidRequest, check_args, spec_of, validate
from server.runtime.tasks import cancel_and_wait
from server.settings import CommandSettings
from server.store.audit import AuditEntry, audit_many

__all__ = ["CommandService", "Rejected", "Selection", "commands_ctx"]

logger = logging.getLogger(__name__)

MQTT, MODBUS, ADAPTER = "mqtt", "modbus", "adapter"
SWEEP_S = 1.0  # expiry resolution of parked commands
RECHECK_S = 5.0  # how often parked devices' status is read back from the database
FLUSH_LINGER_S = 0.05  # status changes gathered into one write
TARGET_KEYS = ("ward", "parent", "bbox", "kind", "devices")

DEVICE_SQL = """
select d.id, d.kind, d.adapter, coalesce(s.status, 'unknown') as status
from devices d left join device_state s on s.device_key = d.key
"""
COMMAND_COLS = ("id, device, name, args, status, group_id, requested_by, created_at, sent_at, "
                "finished_at, expires_at, result, error")


class Rejected(Exception):
    """A request the service refuses, with the HTTP status and a detail a person can act on."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


class _Unroutable(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(eq=False, slots=True)
class Command:
    id: uuid.UUID
    device: str
    name: str
    args: dict[str, Any]
    actor: str
    expires_at: datetime
    route: str
    group: uuid.UUID | None = None
    sent_at: datetime | None = None  # set once published / written


@dataclass(slots=True)
class _Lane:
    queue: deque[Command] = field(default_factory=deque)
    task: asyncio.Task | None = None
    parked: bool = False


@dataclass(frozen=True, slots=True)
class _Answer:
    ok: bool
    result: Any = None
    error: str | None = None


@dataclass(slots=True)
class Selection:
    """What a group target picks: the devices that will be commanded and those that cannot."""

    spec: CommandSpec
    args: dict[str, Any]
    target: dict[str, Any]
    devices: list[dict[str, Any]]  # id, kind, status, route
    skipped: list[dict[str, str]]  # id, reason

    def summary(self) -> dict[str, Any]:
        def count(key: str) -> dict[str, int]:
            out: dict[str, int] = {}
            for d in self.devices:
                out[d[key]] = out.get(d[key], 0) + 1
            return out

        return {
            "name": self.spec.name, "args": self.args, "target": self.target,
            "count": len(self.devices),
            "queued": sum(d["status"] == "offline" for d in self.devices),
            "by_kind": count("kind"), "by_status": count("status"), "by_route": count("route"),
            "devices": self.devices, "skipped": self.skipped,
        }


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Journal:
    """Batched status changes and audit entries; see the module docstring."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._changes: dict[uuid.UUID, dict[str, Any]] = {}
        self._audit: list[AuditEntry] = []
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.failing = False

    def note(self, cmd_id: uuid.UUID, **fields: Any) -> None:
        self._changes.setdefault(cmd_id, {}).update(fields)
        self._dirty.set()

    def audit(self, entry: AuditEntry) -> None:
        self._audit.append(entry)
        self._dirty.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="commands.journal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:  # the pool may be gone: what is lost is re-derived at the next start
            logger.exception("could not write the last command status changes")

    async def _run(self) -> None:
        delay = 0.5
        while True:
            await self._dirty.wait()
            await asyncio.sleep(FLUSH_LINGER_S)
            try:
                await self.flush()
            except Exception:  # supervision boundary: keep the changes, retry with backoff
                if not self.failing:
                    logger.exception("command status changes could not be written; retrying")
                self.failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                if self.failing:
                    logger.info("command status changes are written again")
                self.failing, delay = False, 0.5

    async def flush(self) -> None:
        self._dirty.clear()
        changes, self._changes = self._changes, {}
        entries, self._audit = self._audit, []
        if not changes and not entries:
            return
        ids = list(changes)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if ids:
                    await conn.execute(
                        """update commands c set status = u.status,
                               sent_at = coalesce(u.sent_at, c.sent_at),
                               finished_at = coalesce(u.finished_at, c.finished_at),
                               result = coalesce(u.result, c.result),
                               error = coalesce(u.error, c.error)
                           from unnest($1::uuid[], $2::text[], $3::timestamptz[],
                                       $4::timestamptz[], $5::jsonb[], $6::text[])
                                as u(id, status, sent_at, finished_at, result, error)
                           where c.id = u.id and c.status in ('pending', 'sent')""",
                        ids, [changes[i]["status"] for i in ids],
                        [changes[i].get("sent_at") for i in ids],
                        [changes[i].get("finished_at") for i in ids],
                        [changes[i].get("result") for i in ids],
                        [changes[i].get("error") for i in ids],
                    )
                await audit_many(conn, entries)
        except BaseException:
            for cmd_id, old in changes.items():  # put back under anything newer
                self._changes[cmd_id] = {**old, **self._changes.get(cmd_id, {})}
            self._audit[:0] = entries
            self._dirty.set()
            raise


class CommandService:
    """Accepts, routes, confirms, queues and expires commands; owns every task it starts."""

    def __init__(self, pool: asyncpg.Pool, settings: CommandSettings, *, directory=None,
                 mqtt=None, modbus=None, adapters=None, metrics=None) -> None:
        self.pool = pool
        self.settings = settings
        self.directory = directory
        self.mqtt = mqtt  # server.mqtt.link.MqttLink, or None when MQTT is off
        self.modbus = modbus  # server.polling.modbus.ModbusPoller, or None without gateways
        self.adapters = adapters  # server.polling.adapters.AdapterSupervisor, or None without any
        self._adapter_kinds: dict[str, str] = {}  # device → the adapter its commands go through
        self.metrics = metrics
        self._journal = _Journal(pool)
        self._lanes: dict[str, _Lane] = {}
        self._parked: set[str] = set()
        self._waiting: dict[str, tuple[Command, asyncio.Future[_Answer]]] = {}
        self._mqtt_slots = asyncio.Semaphore(settings.mqtt_in_flight)
        self._gateway_slots: dict[str, asyncio.Semaphore] = {}
        self._sweeper: asyncio.Task | None = None
        self._recheck = asyncio.Event()
        self.late_results = 0  # answers for commands no longer waiting (timed out, unknown)

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
        for _, fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
        await self._journal.stop()

    # ------------------------------------------------------------------ routing
    def route(self, device_id: str, adapter: str | None, name: str) -> str:
        """``mqtt``, ``modbus`` or ``adapter`` for this device and command, or
        :class:`_Unroutable`."""
        poller = self.modbus
        if poller is not None and device_id in poller.devices:
            if name not in poller.commands_for(device_id):
                profiles = ", ".join(poller.profiles_of(device_id))
                takes = ", ".join(sorted(poller.commands_for(device_id))) or "no commands"
                raise _Unroutable(f"device {device_id} is a Modbus unit (profile {profiles}) whose "
                                  f"profile has no {name} command; it takes {takes}")
            return MODBUS
        if adapter in (None, "mqtt"):
            if self.mqtt is None:
                raise _Unroutable(f"device {device_id} is reached over MQTT, which is not configured "
                                  "on this server (set IOC_MQTT_URL)", 503)
            return MQTT
        if adapter == "modbus":
            raise _Unroutable(f"device {device_id} is bound to Modbus but no configured gateway "
                              "lists it; add it to [[modbus.gateways.units]]")
        supervisor = self.adapters
        if supervisor is not None and supervisor.takes_commands(adapter):
            self._adapter_kinds[device_id] = adapter
            return ADAPTER
        raise _Unroutable(f"device {device_id} is reached through the {adapter} adapter, "
                          "which carries no commands on this server")

    # ------------------------------------------------------------------ single commands
    async def submit(self, actor: str, device_id: str, name: Any, args: Any,
                     ttl_s: float | None = None) -> dict[str, Any]:
        """Accept one command (validated, stored, audited) and start delivering it."""
        async with self.pool.acquire() as conn:
            dev = await conn.fetchrow(DEVICE_SQL + " where d.id = $1", device_id)
            if dev is None:
                raise Rejected(404, f"no device with id {device_id!r}")
            try:
                spec, args = validate(dev["kind"], name, args)
                route = self.route(device_id, dev["adapter"], spec.name)
            except InvalidRequest as err:
                raise Rejected(400, str(err)) from None
            except _Unroutable as err:
                raise Rejected(err.status, str(err)) from None
            cmd = self._new(device_id, spec.name, args, actor, route, ttl_s)
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"""insert into commands (id, device, name, args, requested_by, expires_at)
                        values ($1, $2, $3, $4, $5, $6) returning {COMMAND_COLS}""",
                    cmd.id, cmd.device, cmd.name, cmd.args, actor, cmd.expires_at)
                await audit_many(conn, [self._created(cmd, dev["status"])])
        self._admit([cmd], {device_id: dev["status"]})
        return command_json(row)

    def _new(self, device: str, name: str, args: dict[str, Any], actor: str, route: str,
             ttl_s: float | None, group: uuid.UUID | None = None) -> Command:
        ttl = self.settings.ttl_s if ttl_s is None else ttl_s
        return Command(uuid.uuid4(), device, name, args, actor, utcnow() + timedelta(seconds=ttl),
                       route, group)

    @staticmethod
    def _created(cmd: Command, status: str) -> AuditEntry:
        details = {"command": str(cmd.id), "name": cmd.name, "args": cmd.args, "route": cmd.route,
                   "device_status": status, "expires_at": cmd.expires_at.isoformat()}
        if cmd.group:
            details["group"] = str(cmd.group)
        return AuditEntry(cmd.actor, "command.create", cmd.device, str(cmd.id), details)

    def check_ttl(self, ttl_s: Any) -> float | None:
        if ttl_s is None:
            return None
        top = self.settings.max_ttl_s
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not 0 < ttl_s <= top:
            raise Rejected(400, f"ttl_s must be a number of seconds above 0 and at most {top:g}, "
                                f"got {ttl_s!r}")
        return float(ttl_s)

    # ------------------------------------------------------------------ group commands
    async def select(self, target: Any, name: Any, args: Any) -> Selection:
        """Which devices a group command would reach (the preview), without changing anything."""
        try:
            spec = spec_of(name)
            args = check_args(spec, args)
        except InvalidRequest as err:
            raise Rejected(400, str(err)) from None
        if not isinstance(target, Mapping) or not target:
            raise Rejected(400, "target must be an object naming at least one of "
                                f"{', '.join(TARGET_KEYS)}, e.g. {{\"parent\": \"LC-0001\"}}")
        unknown = sorted(set(target) - set(TARGET_KEYS))
        if unknown:
            raise Rejected(400, f"unknown target key(s) {', '.join(unknown)}; "
                                f"use {', '.join(TARGET_KEYS)}")
        where, params = [], []

        def arg(v: Any) -> str:
            params.append(v)
            return f"${len(params)}"

        kinds = _strings(target, "kind")
        if kinds is not None:
            refused = [k for k in kinds if k not in spec.kinds]
            if refused:
                raise Rejected(400, f"{', '.join(refused)} do(es) not take {spec.name}; it is for "
                                    f"{', '.join(sorted(spec.kinds))}")
            where.append(f"d.kind = any({arg(kinds)}::text[])")
        ids = _strings(target, "devices")
        if ids is not None:
            if len(ids) > self.settings.max_group:
                raise Rejected(400, f"at most {self.settings.max_group} devices in one group command")
            where.append(f"d.id = any({arg(ids)}::text[])")
        elif kinds is None:  # "dim the ward" means its lamps: the command's group kinds
            where.append(f"d.kind = any({arg(sorted(spec.group_kinds))}::text[])")
        wards = _strings(target, "ward")
        if wards is not None:
            where.append(f"d.ward = any({arg(wards)}::text[])")
        parents = _strings(target, "parent")
        if parents is not None:
            where.append(f"d.parent = any({arg(parents)}::text[])")
        if "bbox" in target:
            b = _bbox(target["bbox"])
            env = f"ST_MakeEnvelope({arg(b[0])}, {arg(b[1])}, {arg(b[2])}, {arg(b[3])}, 4326)"
            where.append(f"d.geom && {env} and ST_Intersects(d.geom, {env})")
        limit = self.settings.max_group
        sql = (DEVICE_SQL + " where " + " and ".join(where)
               + f" order by d.id limit {arg(limit + 1)}")
        async with self.pool.acquire() as conn:
            await _check_references(conn, wards, parents, ids)
            rows = await conn.fetch(sql, *params)
        if len(rows) > limit:
            raise Rejected(400, f"the target selects more than {limit} devices; narrow it "
                                "(commands.max_group)")
        devices, skipped = [], []
        for r in rows:
            if r["kind"] not in spec.kinds:
                skipped.append({"id": r["id"], "reason": f"a {r['kind']} does not take {spec.name}"})
                continue
            try:
                route = self.route(r["id"], r["adapter"], spec.name)
            except _Unroutable as err:
                skipped.append({"id": r["id"], "reason": str(err)})
                continue
            devices.append({"id": r["id"], "kind": r["kind"], "status": r["status"], "route": route})
        return Selection(spec, args, dict(target), devices, skipped)

    async def submit_group(self, actor: str, target: Any, name: Any, args: Any,
                           ttl_s: float | None = None) -> dict[str, Any]:
        sel = await self.select(target, name, args)
        if not sel.devices:
            raise Rejected(400, f"the target selects no device that can take {sel.spec.name}",
                           skipped=sel.skipped[:100])
        group = uuid.uuid4()
        cmds = [self._new(d["id"], sel.spec.name, sel.args, actor, d["route"], ttl_s, group)
                for d in sel.devices]
        statuses = {d["id"]: d["status"] for d in sel.devices}
        async with self.pool.acquire() as conn, conn.transaction():
            created = await conn.fetchval(
                """insert into command_groups (id, name, args, target, requested_by, total, skipped)
                   values ($1, $2, $3, $4, $5, $6, $7) returning created_at""",
                group, sel.spec.name, sel.args, sel.target, actor, len(cmds), sel.skipped)
            await conn.execute(
                """insert into commands (id, device, name, args, group_id, requested_by, expires_at,
                                         created_at)
                   select u.id, u.device, $3, $4, $5, $6, u.expires_at, $7
                   from unnest($1::uuid[], $2::text[], $8::timestamptz[]) as u(id, device, expires_at)""",
                [c.id for c in cmds], [c.device for c in cmds], sel.spec.name, sel.args, group,
                actor, created, [c.expires_at for c in cmds])
            summary = sel.summary()
            await audit_many(conn, [
                AuditEntry(actor, "command_group.create", None, str(group), {
                    "group": str(group), "name": sel.spec.name, "args": sel.args,
                    "target": sel.target, "count": len(cmds), "skipped": len(sel.skipped),
                    "by_status": summary["by_status"], "by_route": summary["by_route"]}),
                *(self._created(c, statuses[c.device]) for c in cmds),
            ])
        self._admit(cmds, statuses)
        logger.info("%s: group command %s %s on %d device(s) (%d skipped)", actor, group,
                    sel.spec.name, len(cmds), len(sel.skipped))
        return {"id": str(group), "status": "pending", "name": sel.spec.name, "args": sel.args,
                "total": len(cmds), "queued": summary["queued"], "skipped": sel.skipped}

    # ------------------------------------------------------------------ lanes
    def _admit(self, cmds: Iterable[Command], statuses: Mapping[str, str]) -> None:
        for cmd in cmds:
            lane = self._lanes.get(cmd.device)
            if lane is None:
                lane = self._lanes[cmd.device] = _Lane()
            lane.queue.append(cmd)
            if statuses.get(cmd.device) == "offline" and cmd.sent_at is None:
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
                    await self._deliver(cmd)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # supervision boundary: one command's bug spares the rest
                    logger.exception("command %s to %s failed unexpectedly", cmd.id, device)
                    self._finish(cmd, "failed", error=f"internal error: {err!r}")
                lane.queue.popleft()
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(device) is lane and not lane.parked:
                del self._lanes[device]
            self._gauge()

    async def _deliver(self, cmd: Command) -> None:
        if cmd.sent_at is None and utcnow() >= cmd.expires_at:
            self._finish(cmd, "expired", error="its time to live ran out before it could be sent")
            return
        if cmd.route == MODBUS:
            await self._via_modbus(cmd)
        elif cmd.route == ADAPTER:
            await self._via_adapter(cmd)
        else:
            await self._via_mqtt(cmd)

    async def _via_modbus(self, cmd: Command) -> None:
        poller = self.modbus
        if poller is None or cmd.device not in poller.devices:
            self._finish(cmd, "failed", error=f"device {cmd.device} is no longer behind a Modbus gateway")
            return
        gateway = poller.gateway_of(cmd.device) or ""
        slots = self._gateway_slots.get(gateway)
        if slots is None:
            slots = self._gateway_slots[gateway] = asyncio.Semaphore(self.settings.modbus_per_gateway)
        # Registers hold numbers: a switch's true/false is written as 1/0.
        args = {k: int(v) if isinstance(v, bool) else v for k, v in cmd.args.items()}
        timeout = self.settings.timeout_s
        last = ""
        async with slots:
            if utcnow() >= cmd.expires_at:
                self._finish(cmd, "expired", error="its time to live ran out while the gateway was busy")
                return
            self._sent(cmd)
            for attempt in range(2):  # one retry: an RS-485 line drops the odd frame
                try:
                    async with asyncio.timeout(timeout):
                        result = await poller.command(cmd.device, cmd.name, args)
                except (CommandFailed, ConfigError, ValueError) as err:
                    self._finish(cmd, "failed", error=str(err))
                    return
                except TransientError as err:
                    last = str(err)
                except TimeoutError:
                    last = f"no answer from gateway {gateway} within {timeout:g} s"
                else:
                    self._finish(cmd, "succeeded", result=result)
                    return
                if attempt == 0:
                    await asyncio.sleep(0.5)
        self._finish(cmd, "failed", error=f"not confirmed: {last}")

    async def _via_adapter(self, cmd: Command) -> None:
        supervisor = self.adapters
        kind = self._adapter_kinds.get(cmd.device)
        if supervisor is None or kind is None or not supervisor.takes_commands(kind):
            self._finish(cmd, "failed", error=f"device {cmd.device} is no longer bound to an "
                                              "adapter that takes commands")
            return
        timeout = self.settings.timeout_s
        last = ""
        self._sent(cmd)
        for attempt in range(2):  # one retry, as for Modbus: a link drops the odd request
            try:
                async with asyncio.timeout(timeout):
                    result = await supervisor.write(kind, cmd.device, cmd.name, cmd.args)
            except (ConfigError, AuthError) as err:
                self._finish(cmd, "failed", error=f"{kind} adapter: {err}")
                return
            except TransientError as err:
                last = str(err)
            except TimeoutError:
                last = f"the {kind} adapter did not finish within {timeout:g} s"
            except Exception as err:  # supervision boundary: a bug in a third-party adapter
                logger.exception("adapter %s failed writing %s to %s", kind, cmd.name, cmd.device)
                self._finish(cmd, "failed", error=f"{kind} adapter failed: "
                                                  f"{type(err).__name__}: {err}")
                return
            else:
                self._finish(cmd, "succeeded", result=dict(result))
                return
            if attempt == 0:
                await asyncio.sleep(0.5)
        self._finish(cmd, "failed", error=f"not confirmed: {last}")

    async def _via_mqtt(self, cmd: Command) -> None:
        key = str(cmd.id)
        hit = self._waiting.get(key)
        if hit is None:
            fut: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
            self._waiting[key] = (cmd, fut)
        else:
            fut = hit[1]
        try:
            if cmd.sent_at is None and not await self._publish(cmd):
                return
            timeout = self.settings.timeout_s
            assert cmd.sent_at is not None
            left = (cmd.sent_at + timedelta(seconds=timeout) - utcnow()).total_seconds()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    answer = await fut
            except TimeoutError:
                self._finish(cmd, "failed", error=f"no result from device {cmd.device} within "
                                                  f"{timeout:g} s of sending")
                return
        finally:
            self._waiting.pop(key, None)
        if answer.ok:
            self._finish(cmd, "succeeded", result=answer.result)
        else:
            self._finish(cmd, "failed", error=answer.error, result=answer.result)

    async def _publish(self, cmd: Command) -> bool:
        """Publish at QoS 1, waiting out a broker outage up to the command's expiry."""
        link = self.mqtt
        if link is None:
            self._finish(cmd, "failed", error="MQTT is not configured on this server")
            return False
        payload = orjson.dumps({"id": str(cmd.id), "name": cmd.name, "args": cmd.args})
        topic = f"ioc/v1/{cmd.device}/commands"
        logged = False
        while True:
            left = (cmd.expires_at - utcnow()).total_seconds()
            if left <= 0:
                self._finish(cmd, "expired", error="the MQTT broker stayed unreachable until its "
                                                   "time to live ran out")
                return False
            if not link.is_connected:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await link.connected.wait()
                continue
            try:
                async with self._mqtt_slots:
                    await link.publish(topic, payload, qos=1)
            except ConnectionError as err:
                if not logged:
                    logger.info("command %s to %s not published yet: %s", cmd.id, cmd.device, err)
                    logged = True
                await asyncio.sleep(min(1.0, max(left, 0.0)))
                continue
            self._sent(cmd)
            return True

    def on_result(self, topic: str, payload: bytes) -> None:
        """A device's answer (``ioc/v1/{id}/commands/{cid}/result``), from the MQTT session."""
        parts = topic.split("/")
        if len(parts) != 6:
            return
        device, cid = parts[2], parts[4]
        hit = self._waiting.get(cid)
        if hit is None or hit[1].done():
            self.late_results += 1
            logger.info("result from %s for command %s, which is not waiting (late or unknown)",
                        device, cid)
            return
        cmd, fut = hit
        if cmd.device != device:
            logger.warning("device %s answered command %s, which was sent to %s; ignored",
                           device, cid, cmd.device)
            return
        fut.set_result(_parse_answer(payload))

    def _sent(self, cmd: Command) -> None:
        cmd.sent_at = utcnow()
        self._journal.note(cmd.id, status="sent", sent_at=cmd.sent_at)

    def _finish(self, cmd: Command, status: str, *, result: Any = None, error: str | None = None) -> None:
        now = utcnow()
        self._journal.note(cmd.id, status=status, finished_at=now, result=result, error=error)
        details: dict[str, Any] = {"command": str(cmd.id), "name": cmd.name, "args": cmd.args,
                                   "route": cmd.route}
        if cmd.group:
            details["group"] = str(cmd.group)
        if result is not None:
            details["result"] = result
        if error:
            details["error"] = error
        self._journal.audit(AuditEntry(cmd.actor, f"command.{status}", cmd.device, str(cmd.id),
                                       details))
        if self.metrics is not None:
            self.metrics.commands.labels(cmd.route, status).inc()
        # A group's thousands of outcomes are in the API and the audit log, not the log.
        logger.log(logging.DEBUG if cmd.group else logging.INFO, "command %s %s to %s: %s%s",
                   cmd.id, cmd.name, cmd.device, status, f" ({error})" if error else "")

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
        online.update(k for k, (_, st) in latest.items() if st == "online")
        online.difference_update(k for k, (_, st) in latest.items() if st == "offline")
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
                        self._finish(cmd, "expired", error=f"device {device} stayed offline until "
                                                           "the command's time to live ran out")
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
                            self._finish(cmd, "failed", error=f"device {device} was deleted")
                        self._parked.discard(device)
                        del self._lanes[device]
                    elif found[device] != "offline":
                        self._unpark(device)

    # ------------------------------------------------------------------ restart
    async def _resume(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""select {', '.join('c.' + c.strip() for c in COMMAND_COLS.split(','))},
                           d.adapter, d.id is not null as known,
                           coalesce(s.status, 'unknown') as device_status
                    from commands c
                    left join devices d on d.id = c.device
                    left join device_state s on s.device_key = d.key
                    where c.status in ('pending', 'sent') order by c.created_at, c.id""")
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
                self._finish(cmd, "failed", error=f"device {cmd.device} was deleted")
                continue
            try:
                cmd.route = self.route(cmd.device, r["adapter"], cmd.name)
            except _Unroutable as err:
                self._finish(cmd, "failed", error=str(err))
                continue
            if r["status"] == "sent" and cmd.route == MQTT:
                if r["sent_at"] + timeout <= now:
                    self._finish(cmd, "failed", error=f"no result from device {cmd.device} within "
                                                      f"{timeout.total_seconds():g} s of sending "
                                                      "(the server restarted meanwhile)")
                    continue
                cmd.sent_at = r["sent_at"]  # the persistent session keeps its answer for us
                fut = asyncio.get_running_loop().create_future()
                self._waiting[str(cmd.id)] = (cmd, fut)
            elif r["status"] == "pending" and now >= cmd.expires_at:
                self._finish(cmd, "expired", error="its time to live ran out while the server was down")
                continue
            admit.append(cmd)
            statuses[cmd.device] = r["device_status"]
        logger.info("resuming %d open command(s) from before the restart", len(admit))
        self._admit(admit, statuses)


def _level(lane: _Lane) -> int:
    """Info for a single command's lane; debug when a group's thousands would flood the log."""
    return logging.DEBUG if lane.queue and lane.queue[-1].group else logging.INFO


def _parse_answer(payload: bytes) -> _Answer:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _Answer(False, None, f"the device answered with something that is not JSON: "
                                    f"{payload[:80]!r}")
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        return _Answer(False, doc if isinstance(doc, dict) else None,
                       'the device\'s answer is not {"ok": true} or {"ok": false, "error": "..."}')
    if doc["ok"]:
        return _Answer(True, doc)
    error = doc.get("error")
    return _Answer(False, doc, str(error) if error else "the device reported a failure without a reason")


def _strings(target: Mapping[str, Any], key: str) -> list[str] | None:
    if key not in target:
        return None
    value = target[key]
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(dict.fromkeys(value))
    raise Rejected(400, f"target.{key} must be a non-empty string or array of strings, got {value!r}")


def _bbox(value: Any) -> tuple[float, float, float, float]:
    try:
        if isinstance(value, str):
            bbox = parse_bbox(value)
        elif (isinstance(value, list) and len(value) == 4
              and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
            bbox = check_bbox(tuple(float(v) for v in value))  # type: ignore[arg-type]
        else:
            raise GeometryError("bbox must be [minLon, minLat, maxLon, maxLat] or the same as a "
                                "comma-separated string")
    except GeometryError as err:
        raise Rejected(400, f"target.{err}" if str(err).startswith("bbox") else str(err)) from None
    assert bbox is not None
    return bbox


async def _check_references(conn: asyncpg.Connection, wards: Sequence[str] | None,
                            parents: Sequence[str] | None, ids: Sequence[str] | None) -> None:
    """Unknown wards, parents or device ids are mistakes worth a 400, not an empty group."""
    if wards:
        known = {r["code"] for r in await conn.fetch("select code from wards where code = any($1::text[])",
                                                     list(wards))}
        if missing := [w for w in wards if w not in known]:
            raise Rejected(400, f"unknown ward(s) {', '.join(missing[:20])}")
    for what, values in (("parent", parents), ("device", ids)):
        if values:
            known = {r["id"] for r in await conn.fetch("select id from devices where id = any($1::text[])",
                                                       list(values))}
            if missing := [v for v in values if v not in known]:
                raise Rejected(400, f"unknown {what} device(s) {', '.join(missing[:20])}"
                                    + (" …" if len(missing) > 20 else ""))


def command_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "device": row["device"], "name": row["name"], "args": row["args"],
        "status": row["status"], "group": str(row["group_id"]) if row["group_id"] else None,
        "requested_by": row["requested_by"], "created_at": row["created_at"],
        "sent_at": row["sent_at"], "finished_at": row["finished_at"],
        "expires_at": row["expires_at"], "result": row["result"], "error": row["error"],
    }


async def fetch_command(conn: asyncpg.Connection, cmd_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"select {COMMAND_COLS} from commands where id = $1", cmd_id)
    return command_json(row) if row else None


async def fetch_group(conn: asyncpg.Connection, group: uuid.UUID,
                      status: str | None = None) -> dict[str, Any] | None:
    g = await conn.fetchrow("select * from command_groups where id = $1", group)
    if g is None:
        return None
    counts = {s: 0 for s in ("pending", "sent", "succeeded", "failed", "expired")}
    for r in await conn.fetch("select status, count(*) as n from commands where group_id = $1 "
                              "group by status", group):
        counts[r["status"]] = r["n"]
    sql = ("select id, device, status, result, error, sent_at, finished_at from commands "
           "where group_id = $1")
    args: list[Any] = [group]
    if status:
        sql += " and status = $2"
        args.append(status)
    rows = await conn.fetch(sql + " order by device", *args)
    return {
        "id": str(g["id"]), "name": g["name"], "args": g["args"], "target": g["target"],
        "requested_by": g["requested_by"], "created_at": g["created_at"], "total": g["total"],
        "counts": counts, "done": counts["pending"] + counts["sent"] == 0,
        "results": [{"device": r["device"], "command": str(r["id"]), "status": r["status"],
                     "result": r["result"], "error": r["error"], "sent_at": r["sent_at"],
                     "finished_at": r["finished_at"]} for r in rows],
        "skipped": g["skipped"],
    }


async def commands_ctx(app: web.Application) -> AsyncIterator[None]:
    """The command service, after the MQTT session and the Modbus poller it sends through."""
    service = CommandService(
        app[keys.DB], app[keys.SETTINGS].commands, directory=app.get(keys.DIRECTORY),
        mqtt=app.get(keys.MQTT), modbus=app.get(keys.MODBUS), adapters=app.get(keys.ADAPTERS),
        metrics=app.get(keys.METRICS))
    app[keys.COMMANDS] = service
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
