"""The contract every push adapter passes (STYLE.md §7), shared so adapters fail alike.

Subclass :class:`PushAdapterContract` in a ``Test...`` class and set ``adapter_cls``,
``topics`` (topics under the adapter's filters) and ``samples`` (recorded good messages);
override :meth:`~PushAdapterContract.shaped_messages` to aim the fuzzing at payloads that
look like the adapter's own. The checks:

* the class declares ``kind``, ``iot_class``, ``topic_filters``, ``config_model``;
* recorded samples decode to well-formed readings with no errors;
* nothing escapes ``decode_partial`` for arbitrary bytes, JSON-ish documents, mutated samples
  or odd topics (pymodbus ``DecodePDU.decode`` logs garbage and returns ``None``; we return
  errors), and ``decode`` raises nothing but :class:`DecodeError`;
* readings have a str device id, a float value that is finite or flagged by its quality, and
  an aware timestamp.

Property tests run a few thousand examples: enough to find the classic escapes (a ``None``
where a dict was expected, NaN, huge integers, bad UTF-8) while keeping the suite quick.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from adapters.sdk import DecodeError, IotClass, PushAdapter, Quality, Reading, StatusUpdate

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


def check_item(item: object) -> None:
    """One decoded item is a well-formed Reading or StatusUpdate."""
    assert isinstance(item, (Reading, StatusUpdate)), item
    assert isinstance(item.device_id, str) and item.device_id, item
    assert item.ts.tzinfo is not None and item.ts.utcoffset() is not None, item
    if isinstance(item, Reading):
        assert isinstance(item.metric, str) and item.metric, item
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
