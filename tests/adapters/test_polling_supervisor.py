"""The supervisor of polling adapters (server/polling/adapters.py) with a fake adapter that
implements the SDK: schedule, the error tree, availability, backoff, close.

Intervals are 0.1 s so the suite takes seconds; timing assertions are liveness bounds
with generous slack, never tight wall-clock checks.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from adapters.modbus import ModbusAdapter
from adapters.sdk import (
    AuthError,
    ConfigError,
    DecodeError,
    DeviceBinding,
    PollingAdapter,
    Reading,
    StatusUpdate,
    TransientError,
    utcnow,
)
from server.polling.adapters import AdapterSupervisor, StartupError, SupervisorPolicy, build_adapters

INTERVAL = 0.1
POLICY = SupervisorPolicy(backoff_min_s=0.05, backoff_max_s=0.2, auth_retry_s=1.0)


class FakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str = "north"


class FakeAdapter(PollingAdapter):
    """Does what ``script`` says, one step per poll: "ok", an exception to raise, "hang"."""

    kind = "fake"
    config_model: ClassVar[type[BaseModel]] = FakeConfig
    poll_interval = timedelta(seconds=INTERVAL)

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.script: list[object] = []
        self.default: object = "ok"
        self.connects = self.closes = self.polls = 0
        self.open = False

    async def connect(self) -> None:
        self.connects += 1
        self.open = True

    async def poll(self) -> Sequence[Reading]:
        self.polls += 1
        step = self.script.pop(0) if self.script else self.default
        if step == "hang":
            await asyncio.sleep(3600)
        if isinstance(step, BaseException):
            raise step
        return [Reading(b.device_id, "flow_m3h", 1.0, utcnow()) for b in self.bindings]

    async def close(self) -> None:
        self.closes += 1
        self.open = False


class Sink:
    def __init__(self) -> None:
        self.items: list[tuple[float, str, Reading | StatusUpdate]] = []

    async def __call__(self, kind: str, batch) -> None:
        now = asyncio.get_running_loop().time()
        self.items.extend((now, kind, i) for i in batch)

    def statuses(self) -> list[tuple[str, bool]]:
        return [(i.device_id, i.online) for _, _, i in self.items if isinstance(i, StatusUpdate)]

    def readings(self) -> int:
        return sum(isinstance(i, Reading) for _, _, i in self.items)


async def bindings(kind: str) -> list[DeviceBinding]:
    return [DeviceBinding("WM-1", {"meter": "1"}), DeviceBinding("WM-2", {"meter": "2"})]


async def eventually(predicate, within: float = 5.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)


def supervise(adapter: FakeAdapter, sink: Sink, timeout: float = 0.3) -> AdapterSupervisor:
    return AdapterSupervisor({"fake": (adapter, INTERVAL, timeout)}, sink, bindings,
                             policy=POLICY, rng=random.Random(1))


async def test_polls_on_schedule_with_the_bound_devices_and_closes_at_stop():
    adapter, sink = FakeAdapter(), Sink()
    async with supervise(adapter, sink) as sup:
        await eventually(lambda: adapter.polls >= 5, what="five polls")
        assert [b.device_id for b in adapter.bindings] == ["WM-1", "WM-2"]
        assert sink.readings() >= 10 and sink.statuses() == []
        assert sup.stats()["fake"].state == "polling"
    assert adapter.connects == 1 and adapter.closes == 1 and not adapter.open


async def test_transient_failures_back_off_take_devices_offline_and_recover():
    adapter, sink = FakeAdapter(), Sink()
    async with supervise(adapter, sink) as sup:
        await eventually(lambda: adapter.polls >= 2, what="first polls")
        adapter.default = TransientError("cloud unreachable")
        await eventually(lambda: ("WM-1", False) in sink.statuses(), what="devices offline")
        assert sorted(sink.statuses()) == [("WM-1", False), ("WM-2", False)]
        failing_polls = adapter.polls
        assert adapter.closes >= 1, "a transient failure closes, the next attempt connects again"
        assert sup.stats()["fake"].state == "retrying"
        assert "cloud unreachable" in sup.stats()["fake"].last_error
        adapter.default = "ok"
        await eventually(lambda: ("WM-1", True) in sink.statuses(), what="devices back online")
        assert sup.stats()["fake"].state == "polling"
        assert adapter.connects >= 2 and adapter.polls > failing_polls


async def test_a_poll_that_outlives_its_timeout_is_a_transient_failure():
    adapter, sink = FakeAdapter(), Sink()
    adapter.script = ["hang"]
    async with supervise(adapter, sink, timeout=0.1) as sup:
        await eventually(lambda: sup.stats()["fake"].failures >= 1, what="the timeout")
        assert "within 0.1 s" in sup.stats()["fake"].last_error
        await eventually(lambda: sup.stats()["fake"].state == "polling", what="recovery")
    assert adapter.closes >= 2


async def test_refused_credentials_go_offline_at_once_and_are_not_hammered():
    adapter, sink = FakeAdapter(), Sink()
    adapter.default = AuthError("API key refused")
    async with supervise(adapter, sink) as sup:
        await eventually(lambda: ("WM-1", False) in sink.statuses(), within=2, what="offline")
        assert sup.stats()["fake"].state == "auth_failed"
        polls = adapter.polls
        await asyncio.sleep(5 * INTERVAL)  # five intervals, well inside auth_retry_s
        assert adapter.polls == polls, "credentials are tried again only every auth_retry_s"
        adapter.default = "ok"
        await eventually(lambda: ("WM-1", True) in sink.statuses(), within=3, what="retry")


async def test_a_configuration_error_stops_the_adapter():
    adapter, sink = FakeAdapter(), Sink()
    adapter.script = ["ok", ConfigError("meter 2 is not on this account")]
    async with supervise(adapter, sink) as sup:
        await eventually(lambda: sup.stats()["fake"].state == "stopped", what="stopped")
        polls = adapter.polls
        await asyncio.sleep(5 * INTERVAL)
        assert adapter.polls == polls
        assert sorted(sink.statuses()) == [("WM-1", False), ("WM-2", False)]
        assert not adapter.open


async def test_an_adapter_bug_is_logged_once_and_retried(caplog):
    adapter, sink = FakeAdapter(), Sink()
    adapter.script = [KeyError("oops"), KeyError("oops"), KeyError("oops")]
    async with supervise(adapter, sink) as sup:
        await eventually(lambda: sup.stats()["fake"].state == "polling"
                         and sup.stats()["fake"].failures == 3, what="recovery")
    assert caplog.text.count("failed unexpectedly") == 1
    assert "KeyError" in caplog.text


async def test_an_unreadable_reply_is_retried_like_a_transient_failure(caplog):
    """A DecodeError from poll is the device's or the cloud's fault: one line, no traceback,
    retried; not reported as a bug in the adapter."""
    caplog.set_level(logging.INFO, logger="server.polling")
    adapter, sink = FakeAdapter(), Sink()
    adapter.script = [DecodeError("the cloud answered HTML, not JSON")]
    async with supervise(adapter, sink) as sup:
        await eventually(lambda: sup.stats()["fake"].state == "polling"
                         and sup.stats()["fake"].failures == 1, what="recovery")
    assert "answered HTML" in caplog.text
    assert "failed unexpectedly" not in caplog.text
    assert not any(r.exc_info for r in caplog.records)


def test_configuration_sections_are_validated_at_startup():
    classes = {"fake": FakeAdapter, "modbus": ModbusAdapter}
    built = build_adapters(classes, {"fake": {"site": "south", "interval_s": 5, "timeout_s": 2}})
    adapter, interval, timeout = built["fake"]
    assert (adapter.config.site, interval, timeout) == ("south", 5.0, 2.0)
    assert build_adapters(classes, {}) == {}, "an adapter without a section does not run"
    assert build_adapters(classes, {"fake": {"enabled": False}}) == {}
    assert build_adapters(classes, {"modbus": {"name": "x", "host": "h"}}) == {}, \
        "Modbus has its own poller"
    with pytest.raises(StartupError, match=r"\[adapters.fake\].*sitee.*Extra inputs"):
        build_adapters(classes, {"fake": {"sitee": "typo"}})
    with pytest.raises(StartupError, match="interval_s"):
        build_adapters(classes, {"fake": {"interval_s": "often"}})
    default = build_adapters(classes, {"fake": {}})["fake"]
    assert default[1] == INTERVAL and default[2] == INTERVAL  # poll_interval; timeout ≤ it


class ValveAdapter(FakeAdapter):
    """Takes commands; its polls are slow, and it records whether a write ever ran inside one."""

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.busy = False
        self.overlaps = 0
        self.writes: list[tuple[str, str, dict]] = []
        self.write_error: Exception | None = None

    async def poll(self) -> Sequence[Reading]:
        self.busy = True
        try:
            await asyncio.sleep(0.05)
            return await super().poll()
        finally:
            self.busy = False

    async def write(self, device_id, name, args):
        self.overlaps += self.busy or not self.open
        if self.write_error is not None:
            raise self.write_error
        self.writes.append((device_id, name, dict(args)))
        return {"valve_open": args["open"]}


async def test_writes_run_between_polls_on_an_open_link():
    assert not supervise(FakeAdapter(), Sink()).takes_commands("fake"), \
        "the SDK's default write refuses: no commands routed to it"
    adapter, sink = ValveAdapter(), Sink()
    async with supervise(adapter, sink) as sup:
        assert sup.takes_commands("fake") and not sup.takes_commands("other")
        results = await asyncio.gather(*(sup.write("fake", "WM-1", "set_valve", {"open": i % 2 == 0})
                                         for i in range(20)))
        assert results[0] == {"valve_open": True} and len(adapter.writes) == 20
        assert adapter.overlaps == 0, "a write ran during a poll or on a closed link"
        await eventually(lambda: adapter.polls >= 3, what="polls go on beside the writes")

        adapter.write_error = TransientError("valve did not move")
        closes = adapter.closes
        with pytest.raises(TransientError):
            await sup.write("fake", "WM-1", "set_valve", {"open": True})
        assert adapter.closes == closes + 1, "a transient failure closes the link"
        adapter.write_error = None
        assert await sup.write("fake", "WM-2", "set_valve", {"open": False}) == {"valve_open": False}
        assert adapter.overlaps == 0


async def test_a_stopped_adapter_refuses_writes():
    adapter, sink = ValveAdapter(), Sink()
    adapter.default = ConfigError("no site 'north'")
    async with supervise(adapter, sink) as sup:
        await eventually(lambda: sup.stats()["fake"].state == "stopped", what="stopped")
        with pytest.raises(ConfigError, match="stopped by a configuration error"):
            await sup.write("fake", "WM-1", "set_valve", {"open": True})
