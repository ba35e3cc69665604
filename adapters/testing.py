"""The adapter author's test kit: the contract suites every adapter passes (STYLE.md §7).

Import it from your adapter package's tests; it needs pytest, pytest-asyncio and hypothesis,
and nothing of the server::

    from adapters.testing import PollingAdapterContract, PushAdapterContract

Subclass a contract in a ``Test...`` class (the contracts' own names keep pytest from
collecting them alone). Readings must carry metric names of the server's catalogue,
:data:`adapters.catalog.METRIC_NAMES` by default; set ``metric_names`` on your class when
your server's catalogue has more.

**Push adapters** (:class:`PushAdapterContract`): set ``adapter_cls``, ``topics`` (topics
under the adapter's filters) and ``samples`` (recorded good messages); override
:meth:`~PushAdapterContract.shaped_messages` to aim the fuzzing at payloads that look like
the adapter's own. The checks:

* the class declares ``kind``, ``iot_class``, ``topic_filters``, ``config_model``;
* recorded samples decode to well-formed readings of catalogue metrics with no errors;
* nothing escapes ``decode_partial`` for arbitrary bytes, JSON-ish documents, mutated samples
  or odd topics (pymodbus ``DecodePDU.decode`` logs garbage and returns ``None``; we return
  errors), and ``decode`` raises nothing but :class:`DecodeError`;
* readings have a str device id, a float value that is finite or flagged by its quality, and
  an aware timestamp.

Property tests run a few thousand examples: enough to find the classic escapes (a ``None``
where a dict was expected, NaN, huge integers, bad UTF-8) while keeping the suite quick.

**Polling adapters** (:class:`PollingAdapterContract`): provide two fixtures and one
attribute, against a stand-in for the device or cloud (a real server on loopback, as the
server's own tests do: a pymodbus simulator, an aiohttp app):

* fixture ``adapter``: the adapter configured to talk to the stand-in, with its
  ``bindings`` set, not yet connected;
* fixture ``break_device``: a callable (sync or async) taking a breakage's name and
  putting the stand-in into that state;
* ``breakages``: ``{name: the SDK error poll must raise}``, or ``None`` for a breakage
  (a malformed answer, say) where readings or any SDK error are fine, as long as nothing
  else escapes.

The checks: ``connect``/``poll``/``close`` work and work again after a ``close`` (the
supervisor closes and reconnects after every transient failure); the stand-in's readings
are well formed (catalogue metric names, bound devices, finite values or a non-OK quality,
timezone-aware timestamps that are not in the future); no task the adapter started outlives
``close``; and every breakage surfaces as one of the SDK's errors, never as a ``KeyError``
or ``ValueError`` escaping ``poll``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from adapters.catalog import METRIC_NAMES
from adapters.sdk import (
    AdapterError,
    DecodeError,
    IotClass,
    PollingAdapter,
    PushAdapter,
    Quality,
    Reading,
    StatusUpdate,
    utcnow,
)

__all__ = [
    "METRIC_NAMES",
    "PollingAdapterContract",
    "PushAdapterContract",
    "check_item",
    "check_partial",
    "dumps",
    "json_scalars",
    "json_values",
    "topic_matches",
]

# differing_executors: the same inherited test method runs once per adapter class by design;
# each class draws from its own strategies, so a replayed example is still a valid input.
FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.differing_executors,
    ],
)
FUZZ_LIGHT = settings(FUZZ, max_examples=500)

KIND_RE = re.compile(r"[a-z][a-z0-9_]*")

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=8,
)


def dumps(doc: Any) -> bytes:
    """JSON as sloppy firmware writes it: NaN and Infinity tokens allowed."""
    return json.dumps(doc, allow_nan=True).encode()


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, trailing ``#`` the rest)."""
    levels = topic.split("/")
    for index, part in enumerate(topic_filter.split("/")):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(levels) == len(topic_filter.split("/"))


def check_item(item: object, metric_names: Collection[str] | None = None) -> None:
    """One decoded item is a well-formed Reading or StatusUpdate; with ``metric_names``,
    a reading's metric must be one of them."""
    assert isinstance(item, (Reading, StatusUpdate)), item
    assert isinstance(item.device_id, str) and item.device_id, item
    assert item.ts.tzinfo is not None and item.ts.utcoffset() is not None, item
    if isinstance(item, Reading):
        assert isinstance(item.metric, str) and item.metric, item
        if metric_names is not None:
            assert item.metric in metric_names, f"{item.metric!r} is not in the metric catalogue"
        assert type(item.value) is float, item
        assert math.isfinite(item.value) or item.quality is not Quality.OK, item
        assert isinstance(item.quality, Quality), item
    else:
        assert isinstance(item.online, bool), item


def check_partial(result: object) -> tuple[Sequence[Any], Sequence[DecodeError]]:
    """``decode_partial``'s answer has the promised shape; returns it unpacked."""
    assert isinstance(result, tuple) and len(result) == 2, result
    items, errors = result
    for item in items:
        check_item(item)
    for error in errors:
        assert isinstance(error, DecodeError), error
        assert str(error), "a dead letter needs a message a person can act on"
        assert error.device_id is None or isinstance(error.device_id, str)
        assert error.field is None or isinstance(error.field, str)
    return items, errors


def _essence(item: Reading | StatusUpdate) -> tuple[object, ...]:
    if isinstance(item, Reading):  # ts may be "received now", which differs call to call
        return (item.device_id, item.metric, item.value, item.quality)
    return (item.device_id, item.online)


class PushAdapterContract:
    """Mix into a ``Test...`` class; the name keeps pytest from collecting it alone."""

    adapter_cls: ClassVar[type[PushAdapter]]
    config: ClassVar[Mapping[str, Any]] = {}
    topics: ClassVar[Sequence[str]]
    samples: ClassVar[Sequence[tuple[str, bytes]]] = ()
    metric_names: ClassVar[Collection[str]] = METRIC_NAMES

    def adapter(self) -> PushAdapter:
        return self.adapter_cls(dict(self.config))

    def shaped_messages(self) -> st.SearchStrategy[tuple[str, bytes]]:
        """(topic, payload) pairs shaped like this adapter's messages; JSON-ish by default."""
        return st.tuples(st.sampled_from(list(self.topics)), json_values.map(dumps))

    def roundtrip(self, adapter: PushAdapter, topic: str, payload: bytes) -> None:
        """decode_partial never raises; decode agrees with it or raises DecodeError."""
        items, errors = check_partial(adapter.decode_partial(topic, payload))
        try:
            strict = adapter.decode(topic, payload)
        except DecodeError:
            assert errors, "decode raised although decode_partial found no problem"
            return
        assert not errors, "decode returned although decode_partial found problems"
        assert [_essence(i) for i in strict] == [_essence(i) for i in items]

    def test_declares_what_it_is(self) -> None:
        cls = self.adapter_cls
        assert issubclass(cls, PushAdapter)
        assert isinstance(cls.kind, str) and KIND_RE.fullmatch(cls.kind)
        assert cls.iot_class in get_args(IotClass)
        assert isinstance(cls.config_model, type) and issubclass(cls.config_model, BaseModel)
        assert cls.addressed_by in ("device_id", "external_id")
        assert isinstance(cls.topic_filters, tuple) and cls.topic_filters
        for topic_filter in cls.topic_filters:
            levels = topic_filter.split("/")
            assert all(level in ("+", "#") or not {"+", "#"} & set(level) for level in levels)
            assert "#" not in levels[:-1], topic_filter
        self.adapter()  # the defaults are a valid configuration

    def test_topics_are_under_the_filters(self) -> None:
        for topic in self.topics:
            assert any(topic_matches(f, topic) for f in self.adapter_cls.topic_filters), topic

    def test_samples_decode_cleanly(self) -> None:
        assert self.samples, "record at least one good message"
        adapter = self.adapter()
        for topic, payload in self.samples:
            items, errors = check_partial(adapter.decode_partial(topic, payload))
            assert not errors, (topic, errors)
            assert items, topic
            for item in items:
                check_item(item, self.metric_names)
            self.roundtrip(adapter, topic, payload)

    @FUZZ_LIGHT
    @given(data=st.data())
    def test_garbage_bytes_never_escape(self, data: st.DataObject) -> None:
        topic = data.draw(st.sampled_from(list(self.topics)))
        self.roundtrip(self.adapter(), topic, data.draw(st.binary(max_size=200)))

    @FUZZ
    @given(data=st.data())
    def test_jsonish_payloads_never_escape(self, data: st.DataObject) -> None:
        strategy = type(self).__dict__.get("_shaped")
        if strategy is None:  # build once per class: constructing strategies is not free
            strategy = self.shaped_messages()
            type(self)._shaped = strategy
        topic, payload = data.draw(strategy)
        self.roundtrip(self.adapter(), topic, payload)

    @FUZZ_LIGHT
    @given(data=st.data())
    def test_mutated_samples_never_escape(self, data: st.DataObject) -> None:
        topic, payload = data.draw(st.sampled_from(list(self.samples)))
        cut = data.draw(st.integers(0, len(payload)))
        junk = data.draw(st.binary(max_size=8))
        self.roundtrip(self.adapter(), topic, payload[:cut] + junk + payload[cut + len(junk) :])

    @FUZZ_LIGHT
    @given(topic=st.text(max_size=60), payload=st.binary(max_size=40))
    def test_odd_topics_never_escape(self, topic: str, payload: bytes) -> None:
        self.roundtrip(self.adapter(), topic, payload)


SDK_ERRORS = "TransientError, ConfigError, AuthError or DecodeError (adapters.sdk)"


class PollingAdapterContract:
    """Mix into a ``Test...`` class; provide the ``adapter`` and ``break_device`` fixtures
    and the ``breakages`` table (see the module's docstring)."""

    metric_names: ClassVar[Collection[str]] = METRIC_NAMES
    breakages: ClassVar[Mapping[str, type[AdapterError] | None]] = {}
    # How far the stand-in's clock may run ahead of ours (a stand-in on loopback: not at all).
    clock_skew: ClassVar[timedelta] = timedelta(0)
    # A poll against a broken stand-in must end by itself: the supervisor would cancel it after
    # ``timeout_s``, but then the operator sees "timed out" instead of the adapter's reason.
    poll_within_s: ClassVar[float] = 10.0

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """One test per breakage, named after it (pytest calls this for the class)."""
        if "breakage" in metafunc.fixturenames:
            metafunc.parametrize("breakage", list(self.breakages))

    @pytest.fixture
    def adapter(self) -> PollingAdapter:
        pytest.fail("provide an `adapter` fixture: the adapter configured for your stand-in, "
                    "bindings set, not connected")

    @pytest.fixture
    def break_device(self) -> Callable[[str], Any]:
        pytest.fail("provide a `break_device` fixture: a callable (sync or async) that puts "
                    "your stand-in into the state a breakage names")

    def check_readings(self, adapter: PollingAdapter, readings: object) -> None:
        """What ``poll`` returned is a sequence of well-formed readings of bound devices."""
        now = utcnow()
        assert isinstance(readings, Sequence) and not isinstance(readings, str | bytes), readings
        bound = {b.device_id for b in adapter.bindings}
        for reading in readings:
            assert isinstance(reading, Reading), f"poll returns Readings, not {reading!r}"
            check_item(reading, self.metric_names)
            if bound:
                assert reading.device_id in bound, f"{reading.device_id!r} is not a bound device"
            assert reading.ts <= now + self.clock_skew, f"{reading} is in the future"

    async def poll_well(self, adapter: PollingAdapter) -> Sequence[Reading]:
        readings = await adapter.poll()
        self.check_readings(adapter, readings)
        assert readings, "the stand-in in good health should give at least one reading"
        return readings

    def test_declares_what_it_is(self, adapter: PollingAdapter) -> None:
        cls = type(adapter)
        assert isinstance(adapter, PollingAdapter)
        assert isinstance(cls.kind, str) and KIND_RE.fullmatch(cls.kind), cls.kind
        assert cls.iot_class in get_args(IotClass)
        assert isinstance(cls.config_model, type) and issubclass(cls.config_model, BaseModel)
        assert isinstance(cls.poll_interval, timedelta) and cls.poll_interval > timedelta(0)

    def test_declares_breakages(self) -> None:
        assert self.breakages, "declare at least one way the stand-in breaks (an outage, say)"
        for name, expected in self.breakages.items():
            assert expected is None or issubclass(expected, AdapterError), (name, expected)

    @pytest.mark.asyncio
    async def test_connect_poll_close(self, adapter: PollingAdapter) -> None:
        before = asyncio.all_tasks()
        await adapter.connect()
        try:
            await self.poll_well(adapter)
            await self.poll_well(adapter)  # the link stays usable between polls
        finally:
            await adapter.close()
        # close releases everything: whatever the adapter started ends (given a moment to).
        started = {t for t in asyncio.all_tasks() - before if not t.done()}
        if started:
            _, left = await asyncio.wait(started, timeout=2.0)
            assert not left, f"tasks outlive close: {left}"

    @pytest.mark.asyncio
    async def test_connects_again_after_close(self, adapter: PollingAdapter) -> None:
        """The supervisor closes after every transient failure, then connects again."""
        for _ in range(2):
            await adapter.connect()
            try:
                await self.poll_well(adapter)
            finally:
                await adapter.close()

    @pytest.mark.asyncio
    async def test_breakage_surfaces_as_an_sdk_error(
        self, adapter: PollingAdapter, break_device: Callable[[str], Any], breakage: str
    ) -> None:
        expected = self.breakages[breakage]
        await adapter.connect()
        try:
            outcome = break_device(breakage)
            if inspect.isawaitable(outcome):
                await outcome
            deadline = asyncio.timeout(self.poll_within_s)
            try:
                async with deadline:
                    readings = await adapter.poll()
            except AdapterError as err:
                if expected is not None:
                    assert isinstance(err, expected), (
                        f"{breakage}: poll raised {type(err).__name__}, expected {expected.__name__}")
                assert str(err), "the supervisor shows this message to the operator"
            except Exception as err:
                if deadline.expired():
                    pytest.fail(f"{breakage}: poll did not end within {self.poll_within_s:g} s; "
                                "bound the adapter's I/O and raise TransientError saying what is "
                                "silent")
                pytest.fail(f"{breakage}: {type(err).__name__} escaped poll ({err!r}); translate "
                            f"it into {SDK_ERRORS}")
            else:
                assert expected is None, (
                    f"{breakage}: poll returned {readings!r}, expected {expected.__name__}")
                self.check_readings(adapter, readings)
        finally:
            await adapter.close()
