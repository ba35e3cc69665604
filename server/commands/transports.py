"""How a command travels: one :class:`Transport` per route, each a thin wrapper that turns
its link's errors into an :class:`~server.commands.command.Outcome`.

* :class:`MqttTransport` publishes to ``ioc/v1/{id}/commands`` at QoS 1 through the one
  MQTT session and waits for the device's answer on ``…/commands/{cid}/result``.
* :class:`ModbusTransport` writes through the gateway's connection owner
  (:meth:`server.polling.modbus.ModbusPoller.command`), at most
  ``commands.modbus_per_gateway`` at a time per gateway.
* :class:`AdapterTransport` runs a third-party adapter's ``write`` between its polls
  (:meth:`server.polling.adapters.AdapterSupervisor.write`).
* :class:`SparkplugTransport` writes a metric of a Sparkplug B device (a DCMD, see
  :data:`adapters.sparkplug.COMMAND_METRICS`) and waits for the device to report it.

The Modbus driver's :class:`~adapters.modbus.connection.CommandFailed` and the adapter SDK's
errors are caught here and nowhere else: the service sees only outcomes, and the domain's
:class:`~server.errors.Invalid` or :class:`~server.errors.Unavailable` when no transport
can carry a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from adapters.modbus.connection import CommandFailed
from adapters.sdk import AuthError, ConfigError, TransientError
from adapters.sparkplug import COMMAND_METRICS
from server.commands.command import ADAPTER, MODBUS, MQTT, Command, Outcome, utcnow
from server.errors import Invalid, Unavailable
from server.settings import CommandSettings
from server.vocab import CommandState

if TYPE_CHECKING:
    from adapters.sparkplug import SparkplugAdapter
    from server.ingest.directory import Directory
    from server.mqtt.link import MqttLink
    from server.polling.adapters import AdapterSupervisor
    from server.polling.modbus import ModbusPoller

__all__ = ["SPARKPLUG", "UNROUTABLE", "AdapterTransport", "ModbusTransport", "MqttTransport",
           "SparkplugTransport", "Transport", "route"]

logger = logging.getLogger(__name__)

# What :func:`route` raises when no transport can carry a command to a device.
UNROUTABLE = (Invalid, Unavailable)

Sent = Callable[[Command], None]

# The route of commands to Sparkplug B devices (beside command.py's mqtt, modbus, adapter).
SPARKPLUG = "sparkplug"


class Transport(Protocol):
    """One way of carrying commands to devices."""

    route: str  # the command's ``route``: mqtt, modbus or adapter

    def carries(self, device: str, adapter: str | None, name: str) -> bool:
        """Whether this transport reaches ``device`` (bound to ``adapter``); raises
        :data:`UNROUTABLE` when it should but cannot carry ``name``."""
        ...

    async def send(self, cmd: Command, sent: Sent) -> Outcome:
        """Deliver ``cmd``, calling ``sent(cmd)`` once it has left; never raises for the
        link's or the device's failures (those are outcomes)."""
        ...


def route(transports: Sequence[Transport], device: str, adapter: str | None, name: str) -> Transport:
    """The transport that carries ``name`` to ``device``, or :data:`UNROUTABLE`."""
    for transport in transports:
        if transport.carries(device, adapter, name):
            return transport
    raise Invalid(f"device {device} is reached through the {adapter} adapter, "
                  "which carries no commands on this server")


class _Refused(Exception):
    """The device or its link said no: trying again would not help."""


class _TryAgain(Exception):
    """No answer this time; the next attempt may get one."""


async def _with_one_retry(write: Callable[[], Awaitable[Any]], limit_s: float,
                          no_answer: str) -> Outcome:
    """Two attempts of at most ``limit_s`` each: a serial line or a third-party link drops
    the odd request."""
    last = ""
    for attempt in range(2):
        try:
            async with asyncio.timeout(limit_s):
                result = await write()
        except _Refused as err:
            return Outcome.failed(str(err))
        except _TryAgain as err:
            last = str(err)
        except TimeoutError:
            last = no_answer
        else:
            return Outcome.succeeded(result)
        if attempt == 0:
            await asyncio.sleep(0.5)
    return Outcome.failed(f"not confirmed: {last}")


class ModbusTransport:
    """Writes through the gateway and reads back: it succeeded only if the register holds
    what was written."""

    route = MODBUS

    def __init__(self, poller: ModbusPoller | None, settings: CommandSettings) -> None:
        self.poller = poller
        self.settings = settings
        self._slots: dict[str, asyncio.Semaphore] = {}  # per gateway

    def carries(self, device: str, adapter: str | None, name: str) -> bool:
        poller = self.poller
        if poller is not None and device in poller.devices:
            if name not in poller.commands_for(device):
                profiles = ", ".join(poller.profiles_of(device))
                takes = ", ".join(sorted(poller.commands_for(device))) or "no commands"
                raise Invalid(f"device {device} is a Modbus unit (profile {profiles}) whose "
                              f"profile has no {name} command; it takes {takes}")
            return True
        if adapter == "modbus":
            raise Invalid(f"device {device} is bound to Modbus but no configured gateway "
                          "lists it; add it to [[modbus.gateways.units]]")
        return False

    async def send(self, cmd: Command, sent: Sent) -> Outcome:
        poller = self.poller
        if poller is None or cmd.device not in poller.devices:
            return Outcome.failed(f"device {cmd.device} is no longer behind a Modbus gateway")
        gateway = poller.gateway_of(cmd.device) or ""
        slots = self._slots.get(gateway)
        if slots is None:
            slots = self._slots[gateway] = asyncio.Semaphore(self.settings.modbus_per_gateway)
        # Registers hold numbers: a switch's true/false is written as 1/0.
        args = {k: int(v) if isinstance(v, bool) else v for k, v in cmd.args.items()}
        timeout = self.settings.timeout_s
        async with slots:
            if utcnow() >= cmd.expires_at:
                return Outcome.expired("its time to live ran out while the gateway was busy")
            sent(cmd)
            return await _with_one_retry(lambda: self._write(poller, cmd, args), timeout,
                                         f"no answer from gateway {gateway} within {timeout:g} s")

    @staticmethod
    async def _write(poller: ModbusPoller, cmd: Command, args: Mapping[str, Any]) -> Any:
        try:
            return await poller.command(cmd.device, cmd.name, args)
        except (CommandFailed, ConfigError, ValueError) as err:
            raise _Refused(str(err)) from None
        except TransientError as err:
            raise _TryAgain(str(err)) from None


class AdapterTransport:
    """Runs a polling adapter's ``write``: it succeeded when ``write`` returns (what it read
    back is the result), failed on a :class:`~adapters.sdk.ConfigError` or
    :class:`~adapters.sdk.AuthError`, and is tried once more after a
    :class:`~adapters.sdk.TransientError` or a timeout."""

    route = ADAPTER

    def __init__(self, supervisor: AdapterSupervisor | None, settings: CommandSettings) -> None:
        self.supervisor = supervisor
        self.settings = settings
        self._kinds: dict[str, str] = {}  # device → the adapter its commands go through

    def carries(self, device: str, adapter: str | None, name: str) -> bool:
        supervisor = self.supervisor
        if adapter is not None and supervisor is not None and supervisor.takes_commands(adapter):
            self._kinds[device] = adapter
            return True
        return False

    async def send(self, cmd: Command, sent: Sent) -> Outcome:
        supervisor = self.supervisor
        kind = self._kinds.get(cmd.device)
        if supervisor is None or kind is None or not supervisor.takes_commands(kind):
            return Outcome.failed(f"device {cmd.device} is no longer bound to an adapter that "
                                  "takes commands")
        timeout = self.settings.timeout_s
        sent(cmd)
        outcome = await _with_one_retry(lambda: self._write(supervisor, kind, cmd), timeout,
                                        f"the {kind} adapter did not finish within {timeout:g} s")
        if outcome.state is CommandState.SUCCEEDED:
            return Outcome.succeeded(dict(outcome.result))
        return outcome

    @staticmethod
    async def _write(supervisor: AdapterSupervisor, kind: str, cmd: Command) -> Any:
        try:
            return await supervisor.write(kind, cmd.device, cmd.name, cmd.args)
        except (ConfigError, AuthError) as err:
            raise _Refused(f"{kind} adapter: {err}") from None
        except TransientError as err:
            raise _TryAgain(str(err)) from None
        except TimeoutError:
            raise  # a timeout, whoever raised it, is worth one more attempt
        except Exception as err:  # supervision boundary: a bug in a third-party adapter
            logger.exception("adapter %s failed writing %s to %s", kind, cmd.name, cmd.device)
            raise _Refused(f"{kind} adapter failed: {type(err).__name__}: {err}") from None


class MqttTransport:
    """The native convention (CONTRACT): published at QoS 1 as ``{"id", "name", "args"}``;
    the device answers ``{"ok": true}`` or ``{"ok": false, "error": …}``, and no answer
    within ``commands.timeout_s`` fails it. At most ``commands.mqtt_in_flight`` publishes
    await the broker's PUBACK at once, leaving the session's in-flight window to ingest."""

    route = MQTT

    def __init__(self, link: MqttLink | None, settings: CommandSettings) -> None:
        self.link = link
        self.settings = settings
        self._waiting: dict[str, tuple[Command, asyncio.Future[Outcome]]] = {}
        self._slots = asyncio.Semaphore(settings.mqtt_in_flight)
        self.late_results = 0  # answers for commands no longer waiting (timed out, unknown)

    def carries(self, device: str, adapter: str | None, name: str) -> bool:
        if adapter not in (None, "mqtt"):
            return False
        if self.link is None:
            raise Unavailable(f"device {device} is reached over MQTT, which is not configured "
                              "on this server (set IOC_MQTT_URL)")
        return True

    def expect(self, cmd: Command) -> None:
        """Wait for the answer to ``cmd``, sent before a restart: the persistent session
        replays it, possibly before the command's lane runs."""
        self._waiting[str(cmd.id)] = (cmd, asyncio.get_running_loop().create_future())

    def close(self) -> None:
        for _, fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()

    async def send(self, cmd: Command, sent: Sent) -> Outcome:
        key = str(cmd.id)
        hit = self._waiting.get(key)
        if hit is None:
            fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            self._waiting[key] = (cmd, fut)
        else:
            fut = hit[1]
        try:
            if cmd.sent_at is None:
                unsent = await self._publish(cmd, sent)
                if unsent is not None:
                    return unsent
            timeout = self.settings.timeout_s
            assert cmd.sent_at is not None
            left = (cmd.sent_at + timedelta(seconds=timeout) - utcnow()).total_seconds()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    return await fut
            except TimeoutError:
                return Outcome.failed(f"no result from device {cmd.device} within "
                                      f"{timeout:g} s of sending")
        finally:
            self._waiting.pop(key, None)

    async def _publish(self, cmd: Command, sent: Sent) -> Outcome | None:
        """Publish at QoS 1, waiting out a broker outage up to the command's expiry; the
        outcome if it could not be published."""
        link = self.link
        if link is None:
            return Outcome.failed("MQTT is not configured on this server")
        payload = orjson.dumps({"id": str(cmd.id), "name": cmd.name, "args": cmd.args})
        topic = f"ioc/v1/{cmd.device}/commands"
        logged = False
        while True:
            left = (cmd.expires_at - utcnow()).total_seconds()
            if left <= 0:
                return Outcome.expired("the MQTT broker stayed unreachable until its time to "
                                       "live ran out")
            if not link.is_connected:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await link.connected.wait()
                continue
            try:
                async with self._slots:
                    await link.publish(topic, payload, qos=1)
            except ConnectionError as err:
                if not logged:
                    logger.info("command %s to %s not published yet: %s", cmd.id, cmd.device, err)
                    logged = True
                await asyncio.sleep(min(1.0, max(left, 0.0)))
                continue
            sent(cmd)
            return None

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
        fut.set_result(parse_answer(payload))


class SparkplugTransport:
    """Commands to devices bound to the ``sparkplug`` adapter, found by ``external_id``.

    Sparkplug has no command acknowledgement: a DCMD (NCMD for a node's own metrics) writes
    one metric, at QoS 0 as the specification asks, and the device confirms by reporting
    the metric's new value (DDATA). A report within ``commands.timeout_s`` succeeds the
    command; a different value or none fails it. The mapping from the catalogue
    (``set_dim`` → ``dim_level_pct``, ``switch`` → ``lamp_on``, …) is the adapter's.
    """

    route = SPARKPLUG

    def __init__(self, link: MqttLink | None, adapter: SparkplugAdapter | None,
                 directory: Directory | None, settings: CommandSettings) -> None:
        self.link = link
        self.adapter = adapter
        self.directory = directory
        self.settings = settings

    def carries(self, device: str, adapter: str | None, name: str) -> bool:
        if adapter != SPARKPLUG:
            return False
        if name not in COMMAND_METRICS:
            raise Invalid(f"device {device} is a Sparkplug B device; {name} has no Sparkplug "
                          f"metric write (it takes {', '.join(sorted(COMMAND_METRICS))})")
        if self.link is None or self.adapter is None:
            raise Unavailable(f"device {device} is reached through Sparkplug B, which is not "
                              "running on this server (set IOC_MQTT_URL; [sparkplug] enabled)")
        return True

    async def send(self, cmd: Command, sent: Sent) -> Outcome:
        link, adapter = self.link, self.adapter
        info = self.directory.get(cmd.device) if self.directory is not None else None
        if link is None or adapter is None:
            return Outcome.failed("Sparkplug B is not running on this server")
        if info is None or not info.external_id:
            return Outcome.failed(f"device {cmd.device} has no external_id "
                                  "({group}/{edge node}/{device}) to address it by")
        try:
            topic, payload, metric, value = adapter.command(info.external_id, cmd.name, cmd.args)
        except (ValueError, KeyError) as err:
            return Outcome.failed(f"cannot write it as a Sparkplug metric: {err}")
        loop = asyncio.get_running_loop()
        reported: asyncio.Future[float] = loop.create_future()
        last: list[float] = []

        def seen(v: float) -> None:  # a report of the old value (a periodic DDATA) may come first
            last[:] = [v]
            if not reported.done() and abs(v - value) <= 1e-6 * max(1.0, abs(value)):
                reported.set_result(v)

        unwatch = adapter.watch(info.external_id, metric, seen)
        timeout = self.settings.timeout_s
        try:
            while True:
                if utcnow() >= cmd.expires_at:
                    return Outcome.expired("the MQTT broker stayed unreachable until its time to "
                                           "live ran out")
                try:
                    await link.publish(topic, payload, qos=0)
                    break
                except ConnectionError:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await link.connected.wait()
            sent(cmd)
            try:
                async with asyncio.timeout(timeout):
                    got = await reported
            except TimeoutError:
                if last:
                    return Outcome.failed(f"device {cmd.device} reported {metric} = {last[0]:g} "
                                          f"after the DCMD, not {value:g}, within {timeout:g} s",
                                          {"metric": metric, "value": last[0]})
                return Outcome.failed(f"device {cmd.device} did not report {metric} within "
                                      f"{timeout:g} s of the DCMD")
        finally:
            unwatch()
        return Outcome.succeeded({"metric": metric, "value": got, "topic": topic})


def parse_answer(payload: bytes) -> Outcome:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Outcome.failed(f"the device answered with something that is not JSON: {payload[:80]!r}")
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        return Outcome.failed('the device\'s answer is not {"ok": true} or {"ok": false, "error": "..."}',
                              doc if isinstance(doc, dict) else None)
    if doc["ok"]:
        return Outcome.succeeded(doc)
    error = doc.get("error")
    return Outcome.failed(str(error) if error else "the device reported a failure without a reason", doc)
