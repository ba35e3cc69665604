"""ACME's adapters against the IOC's contract suites, as an adapter author runs them.

Only ``adapters.sdk`` and ``adapters.testing`` come from ioc-server; the stand-in for ACME's
cloud is a real HTTP server on loopback (``acme_cloud.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pytest
import pytest_asyncio
from acme_cloud import API_KEY, AcmeCloud
from acme_ioc import AcmeLampAdapter
from acme_ioc.meter import AcmeMeterAdapter
from hypothesis import strategies as st

from adapters.sdk import AdapterError, AuthError, ConfigError, DeviceBinding, TransientError
from adapters.testing import PollingAdapterContract, PushAdapterContract

TOPIC = "acme/ACME-0042/state"


class TestAcmeLampContract(PushAdapterContract):
    adapter_cls = AcmeLampAdapter
    topics = (TOPIC, "acme/ACME-0001/state")
    samples = ((TOPIC, b"power=41.5;on=1;dim=70"), (TOPIC, b"on=0"))

    def shaped_messages(self) -> st.SearchStrategy[tuple[str, bytes]]:
        keys = st.sampled_from(["power", "on", "dim", "dim", "volts", ""])
        numbers = st.floats(allow_nan=True, allow_infinity=True).map(repr)
        values = numbers | st.sampled_from(["nan", "inf", "-inf", "1e400", "", "abc", "0x10"])
        parts = st.tuples(keys, st.sampled_from(["=", "", "=="]), values).map("".join)
        payloads = st.lists(parts, min_size=1, max_size=4).map(lambda p: ";".join(p).encode())
        return st.one_of(st.tuples(st.sampled_from(list(self.topics)), payloads),
                         super().shaped_messages())


class TestAcmeMeterContract(PollingAdapterContract):
    breakages: ClassVar[Mapping[str, type[AdapterError] | None]] = {
        "down": TransientError,
        "unauthorized": AuthError,
        "gone": ConfigError,
        "bad_json": TransientError,
        "not_an_object": TransientError,
        "meters_not_a_list": TransientError,
        "entry_not_an_object": TransientError,
        "missing_ts": TransientError,
        "text_value": None,  # a reading with quality FAULT: the meter's value is unusable
        "nan_value": None,  # readings flagged NOT_A_NUMBER and OUT_OF_RANGE
    }

    @pytest_asyncio.fixture  # not plain pytest.fixture: works in pytest-asyncio's strict mode too
    async def cloud(self):
        cloud = AcmeCloud()
        cloud.base_url = await cloud.start()
        yield cloud
        await cloud.stop()

    @pytest.fixture
    def adapter(self, cloud: AcmeCloud) -> AcmeMeterAdapter:
        adapter = AcmeMeterAdapter({"base_url": cloud.base_url, "api_key": API_KEY})
        adapter.bindings = (DeviceBinding("WM-0001", {"meter": "M-0"}),
                            DeviceBinding("WM-0002", {}, external_id="M-1"))
        return adapter

    @pytest.fixture
    def break_device(self, cloud: AcmeCloud):
        def breaks(how: str) -> None:
            cloud.mode = how
        return breaks
