"""The kit fails the adapters it should: each flaw below breaks exactly the checks named.

The flawed adapters run in a pytest of their own (a subprocess, with nothing of this
repository's conftest), the way an author's package runs the kit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

FLAWED = '''
import asyncio
import math
from datetime import timedelta

import pytest

from adapters.sdk import (AuthError, DecodeError, DeviceBinding, PollingAdapter, PushAdapter,
                          Reading, TransientError, utcnow)
from adapters.testing import PollingAdapterContract, PushAdapterContract


class Device:
    """The stand-in: what the meter would answer."""

    def __init__(self):
        self.answer = {"volume_m3": 1.0}
        self.up = True


class Meter(PollingAdapter):
    kind = "meter"
    flaw = ""

    async def connect(self):
        if self.flaw == "leaks_a_task":
            self.task = asyncio.create_task(asyncio.sleep(3600))

    async def poll(self):
        if not self.device.up:
            raise TransientError("the meter does not answer")
        ts = utcnow() + timedelta(hours=1 if self.flaw == "future" else 0)
        metric = "volume" if self.flaw == "unknown_metric" else "volume_m3"
        device = "WM-9" if self.flaw == "unbound_device" else "WM-1"
        return [Reading(device, metric, float(self.device.answer["volume_m3"]), ts)]

    async def close(self):
        pass


class Contract(PollingAdapterContract):
    flaw = ""
    breakages = {"down": TransientError}

    @pytest.fixture
    def device(self):
        return Device()

    @pytest.fixture
    def adapter(self, device):
        meter = Meter()
        meter.device, meter.flaw = device, self.flaw
        meter.bindings = (DeviceBinding("WM-1", {}),)
        return meter

    @pytest.fixture
    def break_device(self, device):
        def breaks(how):
            if how == "down":
                device.up = False
            elif how == "no_volume":
                del device.answer["volume_m3"]
            elif how == "nan":
                device.answer["volume_m3"] = math.nan
        return breaks


class TestSound(Contract):
    pass


class TestKeyErrorEscapes(Contract):
    breakages = {"down": TransientError, "no_volume": None}


class TestNanWithQualityOk(Contract):
    breakages = {"down": TransientError, "nan": None}


class TestWrongError(Contract):
    breakages = {"down": AuthError}


class TestNoBreakages(Contract):
    breakages = {}


class TestFuture(Contract):
    flaw = "future"


class TestUnknownMetric(Contract):
    flaw = "unknown_metric"


class TestUnboundDevice(Contract):
    flaw = "unbound_device"


class TestLeaksATask(Contract):
    flaw = "leaks_a_task"


class Lamp(PushAdapter):
    """The ACME lamp as it was: NaN with quality OK, and an IndexError on odd topics."""

    kind = "lamp"
    topic_filters = ("acme/+/state",)

    def decode(self, topic, payload):
        serial = topic.split("/")[1]
        out = []
        for part in payload.decode("ascii", "replace").split(";"):
            key, _, raw = part.partition("=")
            if key != "power":
                raise DecodeError(f"unknown field {key!r}")
            try:
                out.append(Reading(serial, "power_w", float(raw), utcnow()))
            except ValueError:
                raise DecodeError(f"{raw!r} is not a number") from None
        return out


class TestOldLamp(PushAdapterContract):
    adapter_cls = Lamp
    topics = ("acme/A-1/state",)
    samples = (("acme/A-1/state", b"power=41.5"), ("acme/A-1/state", b"power=nan"))
'''

POLL = ("test_connect_poll_close", "test_connects_again_after_close")
EXPECTED = {
    "TestKeyErrorEscapes": {"test_breakage_surfaces_as_an_sdk_error[no_volume]"},
    "TestNanWithQualityOk": {"test_breakage_surfaces_as_an_sdk_error[nan]"},
    "TestWrongError": {"test_breakage_surfaces_as_an_sdk_error[down]"},
    "TestNoBreakages": {"test_declares_breakages"},
    "TestFuture": set(POLL),
    "TestUnknownMetric": set(POLL),
    "TestUnboundDevice": set(POLL),
    "TestLeaksATask": {"test_connect_poll_close"},
    "TestOldLamp": {"test_samples_decode_cleanly", "test_mutated_samples_never_escape",
                    "test_odd_topics_never_escape"},
}


def test_each_flaw_fails_its_checks_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "test_flawed.py").write_text(FLAWED)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "--hypothesis-seed=13", "test_flawed.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    failed: dict[str, set[str]] = {}
    for cls, test in re.findall(r"^FAILED test_flawed\.py::(\w+)::(\S+)", done.stdout, re.M):
        failed.setdefault(cls, set()).add(test)
    assert failed == EXPECTED, done.stdout[-3000:]
    sound = re.findall(r"^PASSED test_flawed\.py::TestSound::(\S+)", done.stdout, re.M)
    assert sorted(sound) == [
        "test_breakage_surfaces_as_an_sdk_error[down]", "test_connect_poll_close",
        "test_connects_again_after_close", "test_declares_breakages", "test_declares_what_it_is",
    ], done.stdout[-3000:]
