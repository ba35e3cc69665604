"""The device simulator: the synthetic city's devices, alive, for ``ioc demo`` and load tests.

It reads the devices from the registry (so it animates any seeded or imported city),
computes believable values (:mod:`.patterns`), overlays faults (:mod:`.faults`), and
reports them the way real devices would: MQTT devices on one broker connection
(:mod:`.mqtt_fleet`), cabinets and water instruments as Modbus TCP gateways the server
polls (:mod:`.modbus_fleet`, see :meth:`Simulator.gateway_settings`).

Lifecycle follows STYLE.md §4: :meth:`Simulator.start` spawns named tasks it keeps
(``sim.mqtt``, ``sim.modbus[cabinet-gw-01]``, …), :meth:`Simulator.stop` cancels and awaits
every one (each closes its own server or connection on the way out). This package never
creates an event loop; only ``cli.py`` does, for ``ioc simulate`` without a web server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine

from aiohttp import web

from server import keys
from server.simulate.faults import FAULT_KINDS, Fault, FaultBook
from server.simulate.fleet import Fleet, load_fleet
from server.simulate.modbus_fleet import ModbusFleet
from server.simulate.mqtt_fleet import MqttFleet
from server.simulate.patterns import DEFAULT_TZ, Patterns
from server.simulate.world import World

__all__ = ["DEFAULT_INTERVALS", "FAULT_KINDS", "Fault", "Simulator"]

logger = logging.getLogger(__name__)

#: Seconds between reports per kind (MQTT publishing, Modbus polling in gateway_settings).
DEFAULT_INTERVALS: dict[str, float] = {
    "streetlight": 60, "env_sensor": 60, "camera": 60, "traffic_controller": 30,
    "road_segment": 30, "water_meter": 300, "lighting_cabinet": 10,
    "pressure_sensor": 10, "flow_meter": 10,
}


class Simulator:
    """Everything simulated for one city. ``start()``/``stop()`` inside a running loop."""

    def __init__(self, database_url: str, mqtt_url: str | None, *, seed: int = 42,
                 rate: float | None = None, faults: bool = True, modbus: bool = True,
                 mqtt: bool = True, intervals: dict[str, float] | None = None,
                 fault_interval_s: float = 180.0, tz: str = DEFAULT_TZ,
                 modbus_host: str = "127.0.0.1", modbus_port: int = 0,
                 units_per_gateway: int = 10, start_time: float | None = None,
                 speed: float = 1.0, client_id: str | None = None, tls=None) -> None:
        """``rate``: msgs/s load mode instead of per-device intervals. ``faults``: the
        seeded fault schedule (one every ``fault_interval_s`` on average); on-request
        faults work either way. ``modbus_port``: first gateway port, the next ones follow;
        0 picks free ports at start. ``start_time``/``speed``: simulated clock (epoch
        seconds at start, and how fast it runs), for demos at night and for tests."""
        if rate is not None and rate <= 0:
            raise ValueError("rate must be a positive number of messages per second")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.database_url = database_url
        self.mqtt_url = mqtt_url
        self.tls = tls  # an ssl.SSLContext for mqtts://
        self.seed = seed
        self.rate = rate
        self.faults_enabled = faults
        self.modbus_enabled = modbus
        self.mqtt_enabled = mqtt
        self.intervals = DEFAULT_INTERVALS | (intervals or {})
        self.fault_interval_s = fault_interval_s
        self.tz = tz
        self.modbus_host = modbus_host
        self.modbus_port = modbus_port
        self.units_per_gateway = units_per_gateway
        self.client_id = client_id
        self._start_time = start_time
        self._speed = speed
        self._t0 = time.time()
        self._m0 = time.monotonic()
        self.fleet: Fleet | None = None
        self.world: World | None = None
        self.modbus: ModbusFleet | None = None
        self.mqtt: MqttFleet | None = None
        self._tasks: set[asyncio.Task] = set()

    def clock(self) -> float:
        """Simulated epoch seconds (wall time unless ``start_time``/``speed`` were given)."""
        if self._start_time is None and self._speed == 1.0:
            return time.time()
        base = self._t0 if self._start_time is None else self._start_time
        return base + self._speed * (time.monotonic() - self._m0)

    async def load(self) -> Fleet:
        """Read the devices and plan the fleets (no sockets yet); ``start`` calls it."""
        self.fleet = await load_fleet(self.database_url)
        book = FaultBook(self.fleet, self.seed,
                         interval_s=self.fault_interval_s if self.faults_enabled else None)
        self.world = World(self.fleet, Patterns(self.fleet, self.seed, self.tz), book)
        if self.modbus_enabled:
            self.modbus = ModbusFleet(self.world, intervals=self.intervals,
                                      host=self.modbus_host, base_port=self.modbus_port,
                                      per_gateway=self.units_per_gateway, clock=self.clock)
        if self.mqtt_enabled and self.mqtt_url:
            self.mqtt = MqttFleet(self.world, self.mqtt_url, intervals=self.intervals,
                                  rate=self.rate, client_id=self.client_id,
                                  clock=self.clock, seed=self.seed, tls=self.tls)
        elif self.mqtt_enabled:
            logger.warning("no MQTT URL: the MQTT devices are not simulated")
        return self.fleet

    async def start(self, ready_timeout_s: float = 10.0) -> None:
        """Load the city, open the Modbus gateways (listening when this returns), connect
        the MQTT fleet. On failure everything started is stopped again."""
        if self._tasks:
            raise RuntimeError("the simulator is already running")
        if self.world is None:
            await self.load()
        try:
            if self.modbus is not None:
                for gw in self.modbus.gateways:
                    gw.ready.clear()  # a restart must wait for the new listeners
                serving = [self._spawn(self.modbus.serve(gw), f"sim.modbus[{gw.name}]")
                           for gw in self.modbus.gateways]
                deadline = asyncio.get_running_loop().time() + ready_timeout_s
                while not all(gw.ready.is_set() for gw in self.modbus.gateways):
                    for t in serving:
                        if t.done():
                            t.result()  # raises why that gateway could not listen
                    if asyncio.get_running_loop().time() > deadline:
                        raise TimeoutError("the simulated Modbus gateways did not start")
                    await asyncio.sleep(0.01)
            if self.mqtt is not None:
                self._spawn(self.mqtt.run(), "sim.mqtt")
        except BaseException:
            await self.stop()
            raise
        logger.info("simulating %d devices (%s)", len(self.fleet), ", ".join(
            f"{len(g)} {k}" for k, g in sorted(self.fleet.groups.items())))

    async def stop(self) -> None:
        """Cancel every task and wait for each to close its server or connection."""
        tasks, self._tasks = list(self._tasks), set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _spawn(self, coro: Coroutine, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s stopped", task.get_name(), exc_info=task.exception())

    @property
    def tasks(self) -> list[asyncio.Task]:
        return list(self._tasks)

    # ------------------------------------------------------------------ faults
    def inject(self, fault_kind: str, target: str | tuple[float, float] | None = None, *,
               duration_s: float | None = None) -> Fault:
        """Start a fault now (kinds: :data:`FAULT_KINDS`); it clears after ``duration_s``
        (default per kind). ``target``: a device id, (lon, lat) for ``main_burst``, or None
        for a random device of the right kind."""
        return self._book().inject(fault_kind, target, now=self.clock(), duration_s=duration_s)

    def clear_faults(self, fault_id: int | None = None) -> int:
        return self._book().clear(fault_id)

    @property
    def active_faults(self) -> list[Fault]:
        return list(self._book().active)

    def _book(self) -> FaultBook:
        if self.world is None:
            raise RuntimeError("load() or start() the simulator first")
        return self.world.faults

    def gateway_settings(self) -> list[dict]:
        """The ``[[modbus.gateways]]`` config for the server to poll the simulated units:
        ``[{name, host, port, framer, timeout_s, units: [{device, unit, profile,
        interval_s}]}]``. Known after ``start()`` (or after ``load()`` with a fixed
        ``modbus_port``); empty without Modbus."""
        if self.world is None:
            raise RuntimeError("load() or start() the simulator first")
        return self.modbus.settings() if self.modbus is not None else []


async def simulator_ctx(app: web.Application) -> AsyncIterator[None]:
    """The demo's simulated devices, in-process: the MQTT fleet and the Modbus servers
    the poller (next context) is pointed at."""
    settings = app[keys.SETTINGS]
    if not settings.simulate:
        yield
        return
    from server.mqtt.dynsec import mqtt_tls

    # Its own broker account when the settings give one (the demo does), else the server's.
    url = settings.mqtt_simulator_url or settings.mqtt_url
    sim = Simulator(settings.database_url, url,
                    tls=mqtt_tls(settings.model_copy(update={"mqtt_url": url})))
    await sim.start()
    app[keys.SIMULATOR] = sim
    try:
        yield
    finally:
        await sim.stop()
