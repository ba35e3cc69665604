"""The Modbus poller against real in-process pymodbus servers: scheduling, availability,
backoff, reconnects, backpressure and command routing.

Intervals are 0.2 s and timeouts 0.1 s so the suite takes seconds; timing assertions are
liveness bounds with generous slack (e.g. "offline within 3 intervals + timeout + 0.5 s"),
never tight wall-clock checks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Sequence

import pytest

from adapters.modbus import InvalidCommand
from adapters.modbus.simulator import SimulatedGateway
from adapters.sdk import ConfigError, Reading, StatusUpdate
from server.polling.modbus import ModbusPoller, PollPolicy
from server.settings import ModbusGateway, ModbusUnit

INTERVAL = 0.2
TIMEOUT = 0.1
SLACK = 0.5
POLICY = PollPolicy(unit_backoff_max_s=4 * INTERVAL, reconnect_min_s=0.05, reconnect_max_s=0.3)


class Sink:
    """Records what the poller emits, with the loop time it arrived."""

    def __init__(self, delay: float = 0.0) -> None:
        self.items: list[tuple[float, Reading | StatusUpdate]] = []
        self.calls = 0
        self.delay = delay

    async def __call__(self, batch: Sequence[Reading | StatusUpdate]) -> None:
        self.calls += 1
        now = asyncio.get_running_loop().time()
        self.items.extend((now, item) for item in batch)
        if self.delay:
            await asyncio.sleep(self.delay)

    def polls(self, device: str, metric: str) -> list[float]:
        return [
            t
            for t, i in self.items
            if isinstance(i, Reading) and i.device_id == device and i.metric == metric
        ]

    def statuses(self, device: str) -> list[tuple[float, bool]]:
        return [(t, i.online) for t, i in self.items if isinstance(i, StatusUpdate) and i.device_id == device]


async def eventually(predicate: Callable[[], object], within: float, what: str) -> float:
    """Wait until ``predicate()`` is true; return the loop time it became true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"not within {within:.2f} s: {what}")
        await asyncio.sleep(0.01)
    return loop.time()


def gateway(
    sim: SimulatedGateway, *units: tuple[str, int, str], name: str = "gw-a", interval: float = INTERVAL
) -> ModbusGateway:
    return ModbusGateway(
        name=name,
        host=sim.host,
        port=sim.port,
        timeout_s=TIMEOUT,
        units=[ModbusUnit(device=d, unit=u, profile=p, interval_s=interval) for d, u, p in units],
    )


@pytest.fixture(autouse=True)
async def _no_leftover_tasks():
    yield
    me = asyncio.current_task()
    left = [
        t for t in asyncio.all_tasks() if t is not me and not t.done() and t.get_name().startswith("modbus")
    ]
    assert not left, f"tasks left running: {left}"


@pytest.fixture
async def sim():
    gw = SimulatedGateway()
    gw.add_unit(1, "eastron_sdm120", {"voltage_l1_v": 230.2})
    gw.add_unit(2, "keller_series30", {"pressure_bar": 3.5})
    gw.add_unit(4, "dali_gateway?short_address=3", {"dim_level_pct": 50})
    async with gw:
        yield gw


async def test_polls_on_schedule_and_reports_online(sim) -> None:
    sink = Sink()
    poller = ModbusPoller(
        [gateway(sim, ("LC-1", 1, "eastron_sdm120"), ("PS-1", 2, "keller_series30"))], sink, policy=POLICY
    )
    async with poller:
        await asyncio.sleep(10 * INTERVAL + 0.05)
        assert "modbus[gw-a].poll" in {t.get_name() for t in asyncio.all_tasks()}
        stats = poller.stats()["gw-a"]
    assert sink.statuses("LC-1")[0][1] is True  # online at the first answer
    assert sink.statuses("PS-1")[0][1] is True
    volts = [i.value for _, i in sink.items if isinstance(i, Reading) and i.metric == "voltage_l1_v"]
    assert volts and volts[0] == pytest.approx(230.2)
    # absolute deadlines: ~10 polls in 10 intervals, no drift (generous bounds)
    assert 8 <= len(sink.polls("LC-1", "voltage_l1_v")) <= 11
    # the two units are staggered, not fired together
    first_lc, first_ps = sink.polls("LC-1", "voltage_l1_v")[0], sink.polls("PS-1", "pressure_bar")[0]
    assert abs(first_ps - first_lc) >= INTERVAL / 4
    assert stats.connected and stats.units_online == 2 and stats.failures == 0
    assert stats.polls >= 16


async def test_dead_unit_goes_offline_others_stay_on_time(sim, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.polling.modbus")
    sink = Sink()
    policy = PollPolicy(unit_backoff_max_s=5 * INTERVAL, reconnect_min_s=0.05)
    poller = ModbusPoller(
        [gateway(sim, ("PS-1", 2, "keller_series30"), ("PS-9", 9, "keller_series30"))],
        sink,
        policy=policy,
        rng=random.Random(7),
    )
    loop = asyncio.get_running_loop()
    async with poller:
        t0 = loop.time()
        offline_at = await eventually(
            lambda: (sink.statuses("PS-9") or [(0, True)])[0][1] is False,
            3 * INTERVAL + TIMEOUT + SLACK,
            "PS-9 offline",
        )
        assert offline_at - t0 >= 2 * INTERVAL - 0.05  # not before two intervals
        await asyncio.sleep(12 * INTERVAL)
        stats = poller.stats()["gw-a"]
    assert [s for _, s in sink.statuses("PS-9")] == [False]  # once, never flapping
    # the live unit kept its schedule: no gap longer than an interval plus one timeout
    times = sink.polls("PS-1", "pressure_bar")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 12 and max(gaps) <= INTERVAL + TIMEOUT + 0.1, gaps
    # the dead unit is retried less often than every cycle
    assert sim.requests[9] < 0.6 * sim.requests[2], sim.requests
    assert stats.connected and stats.units_online == 1 and stats.units_offline == 1
    assert sim.requests[9] - 1 <= stats.failures <= sim.requests[9]  # one may be in flight
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 1 and "PS-9" in unavailable[0].getMessage()
    assert unavailable[0].gateway == "gw-a" and unavailable[0].device == "PS-9"


async def test_unit_comes_back(sim, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.polling.modbus")
    sink = Sink()
    sim.silent.add(2)
    poller = ModbusPoller(
        [gateway(sim, ("LC-1", 1, "eastron_sdm120"), ("PS-1", 2, "keller_series30"))], sink, policy=POLICY
    )
    async with poller:
        await eventually(lambda: sink.statuses("PS-1"), 3 * INTERVAL + TIMEOUT + SLACK, "PS-1 offline")
        await asyncio.sleep(6 * INTERVAL)  # deep into backoff
        sim.silent.discard(2)
        loop = asyncio.get_running_loop()
        back = loop.time()
        # within one backoff period (capped at 4 intervals) plus one interval
        online = await eventually(
            lambda: len(sink.statuses("PS-1")) == 2,
            POLICY.unit_backoff_max_s + INTERVAL + TIMEOUT + SLACK,
            "PS-1 online again",
        )
        await asyncio.sleep(3 * INTERVAL)
    assert [s for _, s in sink.statuses("PS-1")] == [False, True]
    assert online - back <= POLICY.unit_backoff_max_s + INTERVAL + TIMEOUT + SLACK
    # back on its grid after the first answer
    after = [t for t in sink.polls("PS-1", "pressure_bar") if t > online]
    assert len(after) >= 2
    messages = [r.getMessage() for r in caplog.records if "PS-1" in r.getMessage()]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("available again" in m for m in messages) == 1


async def test_gateway_restart_resumes_readings(sim, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.polling.modbus")
    sink = Sink()
    poller = ModbusPoller([gateway(sim, ("PS-1", 2, "keller_series30"))], sink, policy=POLICY)
    async with poller:
        await eventually(lambda: sink.polls("PS-1", "pressure_bar"), 2 * INTERVAL + SLACK, "first reading")
        await sim.stop()
        await eventually(lambda: not poller.stats()["gw-a"].connected, 2.0, "link lost")
        await eventually(
            lambda: sink.statuses("PS-1")[-1][1] is False,
            3 * INTERVAL + TIMEOUT + SLACK,
            "offline while the gateway is down",
        )
        down = len(sink.polls("PS-1", "pressure_bar"))
        await sim.start()  # same port
        await eventually(
            lambda: len(sink.polls("PS-1", "pressure_bar")) > down + 2,
            POLICY.reconnect_max_s + 3 * INTERVAL + SLACK,
            "readings resume",
        )
        stats = poller.stats()["gw-a"]
    assert [s for _, s in sink.statuses("PS-1")] == [True, False, True]
    assert stats.connected and stats.reconnects >= 1
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("link lost" in m for m in msgs) == 1
    assert sum("link restored" in m for m in msgs) == 1


async def test_unreachable_gateway_does_not_stall_another(sim) -> None:
    dead = SimulatedGateway()
    async with dead:
        pass  # a port nothing listens on any more
    sink = Sink()
    poller = ModbusPoller(
        [
            gateway(sim, ("PS-1", 2, "keller_series30")),
            gateway(dead, ("PS-2", 2, "keller_series30"), name="gw-dead"),
        ],
        sink,
        policy=POLICY,
    )
    async with poller:
        await eventually(lambda: sink.statuses("PS-2"), 2 * INTERVAL + SLACK, "PS-2 offline")
        await asyncio.sleep(5 * INTERVAL)
        stats = poller.stats()
    assert sink.statuses("PS-2")[0][1] is False
    assert len(sink.polls("PS-1", "pressure_bar")) >= 5
    assert not stats["gw-dead"].connected and stats["gw-a"].connected


async def test_slow_sink_slows_polling_without_piling_up(sim) -> None:
    sink = Sink(delay=4 * INTERVAL)
    poller = ModbusPoller([gateway(sim, ("PS-1", 2, "keller_series30"))], sink, policy=POLICY)
    async with poller:
        await asyncio.sleep(12 * INTERVAL)
        stats = poller.stats()["gw-a"]
    assert sink.calls <= 12 * INTERVAL / sink.delay + 1
    assert stats.polls == sink.calls  # one batch per poll, nothing queued behind the sink
    assert stats.overruns >= 3 * (sink.calls - 1)


async def test_commands_route_to_the_gateway(sim) -> None:
    sink = Sink()
    poller = ModbusPoller(
        [gateway(sim, ("SL-3", 4, "dali_gateway?short_address=3"), ("PS-1", 2, "keller_series30"))],
        sink,
        policy=POLICY,
    )
    assert poller.devices == {"SL-3", "PS-1"}
    async with poller:
        await eventually(lambda: poller.stats()["gw-a"].connected, 1.0, "connected")
        assert await poller.command("SL-3", "set_dim", {"level": 25}) == {"dim_level_pct": 25.0}
        with pytest.raises(InvalidCommand):
            await poller.command("SL-3", "set_dim", {"level": -1})
        with pytest.raises(ConfigError, match="not behind any Modbus gateway"):
            await poller.command("SL-404", "set_dim", {"level": 25})
    assert await sim.read_registers(4, 3, 315, 1) == [25]


async def test_configuration_errors_stop_startup_or_the_unit(sim, caplog) -> None:
    with pytest.raises(ConfigError, match=r"LC-9.*unknown Modbus profile 'sdm999'"):
        ModbusPoller([gateway(sim, ("LC-9", 1, "sdm999"))], Sink())
    with pytest.raises(ConfigError, match="PS-1 is listed on gateways gw-a and gw-b"):
        ModbusPoller(
            [
                gateway(sim, ("PS-1", 2, "keller_series30")),
                gateway(sim, ("PS-1", 2, "keller_series30"), name="gw-b"),
            ],
            Sink(),
        )
    # a profile that does not fit the device (exception 02): that unit stops, others go on
    sim.exceptions[2] = 0x02
    sink = Sink()
    poller = ModbusPoller(
        [gateway(sim, ("PS-1", 2, "keller_series30"), ("LC-1", 1, "eastron_sdm120"))], sink, policy=POLICY
    )
    async with poller:
        await asyncio.sleep(6 * INTERVAL)
        stats = poller.stats()["gw-a"]
    assert sink.statuses("PS-1") == [(sink.statuses("PS-1")[0][0], False)]
    assert sim.requests[2] == 1
    assert len(sink.polls("LC-1", "voltage_l1_v")) >= 4
    assert stats.units_stopped == 1


async def test_stop_is_idempotent_and_start_twice_fails(sim) -> None:
    poller = ModbusPoller([gateway(sim, ("PS-1", 2, "keller_series30"))], Sink(), policy=POLICY)
    await poller.stop()  # never started
    await poller.start()
    with pytest.raises(RuntimeError):
        await poller.start()
    await poller.stop()
    await poller.stop()
    assert not poller.stats()["gw-a"].connected
