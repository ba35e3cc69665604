"""Every decoder fed 100,000 generated inputs: nothing but its own error escapes, and every
rejected input is rejected with a reason a person can act on.

Each Hypothesis example draws ``BASE`` structured inputs (the shapes a decoder expects,
broken in the ways firmware breaks them) and a seeded PRNG, and each base input is also
fed ``MUTANTS`` mutated copies (bytes flipped, cut, repeated; a JSON leaf swapped for an odd
value). The engine's cost is per example, so 1,000 examples give each decoder 100,000
inputs in seconds rather than minutes, and a failing example is still shrunk and printed.
The counters at the end prove the volume. What the decoders reject becomes a dead letter
(MQTT, Modbus) or a 4xx (GeoJSON, query parameters) through code the other tests cover.
"""

from __future__ import annotations

import json
import math
import string
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient as C

from adapters.chirpstack import ChirpStackAdapter
from adapters.chirpstack.protocol import IGNORED_EVENTS
from adapters.modbus.profile import builtin_profiles
from adapters.modbus.protocol import decode_request, resolve
from adapters.mqtt.protocol import decode as decode_native
from adapters.sdk import DecodeError, Quality, Reading, StatusUpdate
from geo.geojson import GeometryError, parse_bbox, parse_geometry
from server.errors import DomainError
from server.registry.devices import parse_feature
from server.store.history import parse_duration, parse_time

TARGET = 100_000
BASE = 10
MUTANTS = 9
EXAMPLES = TARGET // (BASE * (1 + MUTANTS))
# No shrinking: a mutant does not shrink meaningfully, and the assertion names the input.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
KINDS = frozenset({"streetlight", "lighting_cabinet", "water_meter", "pressure_sensor"})
seen: Counter[str] = Counter()


ODD_LEAVES = [None, True, 0, -1, 2**64, 1e308, -1e308, math.nan, math.inf, -math.inf, "", "NaN",
              "\x00", "é" * 50, [], {}, [None], {"": None}]


def mutate_bytes(data: bytes, rnd) -> bytes:
    if not data:
        return bytes([rnd.randrange(256)])
    i = rnd.randrange(len(data))
    match rnd.randrange(5):
        case 0:
            return data[:i] + bytes([rnd.randrange(256)]) + data[i + 1:]
        case 1:
            return data[:i]
        case 2:
            return data[:i] + data[i:i + rnd.randrange(1, 8)] * rnd.randrange(2, 5) + data[i:]
        case 3:
            return data[:i] + data[i + 1:]
        case _:
            junk = rnd.choice([b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\xff"])
            return data[:i] + junk + data[i:]


def mutate_doc(doc, rnd):
    """A copy of a JSON-like document with one leaf (or the whole) swapped for an odd value."""
    if isinstance(doc, dict) and doc and rnd.random() < 0.8:
        key = rnd.choice(list(doc))
        return {**doc, key: mutate_doc(doc[key], rnd)}
    if isinstance(doc, list) and doc and rnd.random() < 0.8:
        i = rnd.randrange(len(doc))
        return [*doc[:i], mutate_doc(doc[i], rnd), *doc[i + 1:]]
    return rnd.choice(ODD_LEAVES)


def mutate(item, rnd):
    if isinstance(item, bytes):
        return mutate_bytes(item, rnd)
    if isinstance(item, str):
        return mutate_bytes(item.encode(), rnd).decode("utf-8", "replace")
    if isinstance(item, tuple):  # (topic, payload): mutate one side
        i = rnd.randrange(len(item))
        return (*item[:i], mutate(item[i], rnd), *item[i + 1:])
    if isinstance(item, float):
        return rnd.choice([math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 1e-45, -0.0])
    if isinstance(item, list) and all(isinstance(x, int) for x in item):  # Modbus registers
        regs = list(item) or [0]
        regs[rnd.randrange(len(regs))] = rnd.choice([0, 0xFFFF, 0x7FC0, 0x7F80, 0xFF80, 0x8000])
        return regs
    return mutate_doc(item, rnd)


def batch(strategy):
    """BASE drawn inputs, each followed by MUTANTS mutated copies of it."""

    def expand(drawn):
        items, rnd = drawn
        out = []
        for item in items:
            out.append(item)
            out.extend(mutate(item, rnd) for _ in range(MUTANTS))
        return out

    return st.tuples(st.lists(strategy, min_size=BASE, max_size=BASE),
                     st.randoms(use_true_random=False)).map(expand)


# ---------------------------------------------------------------- generators
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_docs = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=10,
)
metric_names = st.sampled_from(["power_w", "dim_level_pct", "lamp_on", "pressure_bar", "PowerW",
                                "x" * 70, "", "1abc", "flow m3h"]) | st.text(max_size=8)
timestamps = (st.integers(-(2**63), 2**63) | st.floats(allow_nan=True, allow_infinity=True)
              | st.sampled_from(["2026-11-22T10:00:00Z", "2026-11-22T10:00:00.123+07:00",
                                 "2026-13-45T99:00:00Z", "yesterday", "", "1e30"])
              | st.text(max_size=30) | st.none())
telemetry_shaped = st.fixed_dictionaries(
    {}, optional={"ts": timestamps,
                  "values": st.dictionaries(metric_names, scalars, max_size=5) | json_docs,
                  "extra": json_docs})


def to_bytes(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


native_payloads = st.one_of(
    st.binary(max_size=200),
    json_docs.map(to_bytes),
    telemetry_shaped.map(to_bytes),
    st.lists(telemetry_shaped, max_size=4).map(to_bytes),
    telemetry_shaped.map(to_bytes).flatmap(  # a good-looking payload, cut or corrupted
        lambda b: st.integers(0, max(len(b) - 1, 0)).map(lambda i: b[:i] + b"\xff" + b[i + 1:])),
    st.sampled_from([b"online", b"offline", b'"online"', b"ONLINE ", b"\x00", b"null"]),
)
device_ids = st.sampled_from(["SL-000001", "LC-0001", "a", "x" * 200, "bad id", "é", ""]) | st.text(
    alphabet=string.ascii_letters + string.digits + "-_.:/+#", max_size=20)
native_topics = st.one_of(
    st.builds(lambda d, ch: f"ioc/v1/{d}/{ch}", device_ids,
              st.sampled_from(["telemetry", "status", "commands", "x", ""])),
    st.text(max_size=40),
)

dev_euis = st.sampled_from(["0004a30b001c0530", "0004A30B001C0530", "zz", ""]) | st.text(max_size=18)
chirpstack_docs = st.fixed_dictionaries(
    {}, optional={
        "deviceInfo": st.fixed_dictionaries({}, optional={"devEui": dev_euis | json_docs,
                                                          "deviceName": st.text(max_size=8)}),
        "time": timestamps,
        "object": st.dictionaries(metric_names | st.sampled_from(["flow", "volume", "battery"]),
                                  scalars | json_docs, max_size=5) | json_docs,
        "batteryLevel": scalars,
        "rxInfo": json_docs,
    })
chirpstack_payloads = st.one_of(st.binary(max_size=200), json_docs.map(to_bytes),
                                chirpstack_docs.map(to_bytes))
chirpstack_topics = st.one_of(
    st.builds(lambda a, d, ev: f"application/{a}/device/{d}/event/{ev}",
              st.sampled_from(["app-1", "", "+"]), dev_euis,
              st.sampled_from(["up", "status", "join", "ack", "log"])),
    st.text(max_size=40),
)

coords = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1000, 1000) | st.text(max_size=3)
positions = st.lists(coords, max_size=4)
geometry_docs = st.one_of(
    json_docs,
    st.fixed_dictionaries({"type": st.sampled_from(["Point", "LineString", "Polygon", "MultiPoint",
                                                    "MultiLineString", "MultiPolygon",
                                                    "GeometryCollection", "Feature", "point", ""]),
                           "coordinates": st.one_of(positions, st.lists(positions, max_size=5),
                                                    st.lists(st.lists(positions, max_size=5),
                                                             max_size=3), json_docs)}),
)
feature_docs = st.one_of(
    json_docs,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["Feature", "feature", "FeatureCollection"])},
        optional={"id": st.text(max_size=12) | scalars, "geometry": geometry_docs,
                  "properties": st.fixed_dictionaries(
                      {}, optional={"kind": st.sampled_from(sorted(KINDS)) | st.text(max_size=8),
                                    "name": scalars, "parent": scalars, "external_id": scalars})
                  | json_docs}),
)
query_texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-400, 400),
             max_size=6).map(lambda xs: ",".join(str(x) for x in xs)),
    st.sampled_from(["", "5m", "1h", "0s", "-5m", "1y", "2026-11-22T10:00:00Z", "now", "1e309"]),
)


# (profile, its read requests) for every built-in profile, parameters at their defaults.
PROFILES = [(name, resolve(name).requests) for name in builtin_profiles()]


# ---------------------------------------------------------------- invariants
def check_decoded(items, errors, payload: bytes) -> None:
    for item in items:
        assert isinstance(item, Reading | StatusUpdate), item
        if isinstance(item, Reading):
            assert isinstance(item.device_id, str) and item.ts.tzinfo is not None
            assert math.isfinite(item.value) or item.quality is not Quality.OK, item
    for err in errors:
        assert isinstance(err, DecodeError) and str(err).strip(), repr(err)
    # Rejected means said so: bytes that gave nothing usable come back with a reason,
    # unless they said nothing (an empty batch, empty values: a keep-alive).
    if payload and not items and not says_nothing(payload):
        assert errors, f"{payload[:400]!r}: nothing decoded and no reason given"


def empty_frame(payload: bytes) -> bool:
    """A LoRaWAN uplink with no application data (MAC commands only) or a codec that found
    no values in it: nothing to store, nothing wrong."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("object") in (None, {}) and not doc.get("data")


def says_nothing(payload: bytes) -> bool:
    try:
        doc = json.loads(payload)
    except ValueError:
        return False
    entries = doc if isinstance(doc, list) else [doc]
    return all(isinstance(e, dict) and e.get("values") == {} for e in entries)


@FUZZ
@given(batch(st.tuples(native_topics, native_payloads)))
def test_native_mqtt_decoder(messages) -> None:
    for topic, payload in messages:
        items, errors = decode_native(topic, payload, NOW)
        check_decoded(items, errors, payload)
        seen["native"] += 1


ADAPTER = ChirpStackAdapter()


@FUZZ
@given(batch(st.tuples(chirpstack_topics, chirpstack_payloads)))
def test_chirpstack_decoder(messages) -> None:
    for topic, payload in messages:
        items, errors = ADAPTER.decode_partial(topic, payload)
        # Joins, acks and logs carry no readings by design, and a status event may carry
        # no battery figure: ignored, not rejected. Uplinks must say why they gave nothing.
        event = topic.rsplit("/", 1)[-1]
        ignored = topic.startswith("application/") and (event in IGNORED_EVENTS or event == "status")
        ignored = ignored or empty_frame(payload)
        check_decoded(items, errors, b"" if ignored else payload)
        seen["chirpstack"] += 1


@FUZZ
@given(st.sampled_from(range(len(PROFILES))),
       batch(st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=90)))
def test_modbus_register_decoding(which, replies) -> None:
    _, plan = PROFILES[which]
    for i, regs in enumerate(replies):
        request = plan[i % len(plan)]
        # Replies of the right length decode; short ones are a reason, never a wrong number.
        if len(regs) < request.count and i % 2:
            regs = (regs * (request.count // max(len(regs), 1) + 1))[:request.count] if regs else regs
        try:
            readings = decode_request(request, regs, "DEV-1", NOW)
        except DecodeError as err:
            assert str(err).strip()
            assert len(regs) < request.count, err
        else:
            for r in readings:
                assert math.isfinite(r.value) or r.quality is not Quality.OK
        seen["modbus"] += 1


@FUZZ
@given(batch(st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_modbus_float_registers_never_become_bad_numbers(values) -> None:
    _, plan = next(p for p in PROFILES if p[0] == "keller_series30")
    request = plan[0]
    for value in values:
        regs = []
        for point in request.points:
            regs.extend([0] * (point.address - request.address - len(regs)))
            regs.extend(C.convert_to_registers(value, C.DATATYPE.FLOAT32) if point.count == 2
                        else [0] * point.count)
        regs.extend([0] * (request.count - len(regs)))
        for r in decode_request(request, regs[:request.count], "PT-1", NOW):
            assert math.isfinite(r.value), r
            if not math.isfinite(value):
                assert r.quality is not Quality.OK, (value, r)
        seen["modbus-float"] += 1


@FUZZ
@given(batch(geometry_docs))
def test_geojson_geometry(docs) -> None:
    for doc in docs:
        try:
            geom = parse_geometry(doc)
        except GeometryError as err:
            assert str(err).strip()
        else:
            assert geom.is_valid and not geom.is_empty
        seen["geometry"] += 1


@FUZZ
@given(batch(feature_docs))
def test_geojson_feature(docs) -> None:
    for i, doc in enumerate(docs):
        device, errors = parse_feature(doc, i, KINDS)
        assert (device is None) == bool(errors), (doc, device, errors)
        for e in errors:
            assert e.field and e.reason.strip(), e
        seen["feature"] += 1


@FUZZ
@given(batch(query_texts))
def test_query_parameters(texts) -> None:
    for text in texts:
        for parse in (parse_bbox, lambda t: parse_time(t, "from"), lambda t: parse_duration(t)):
            try:
                parse(text)
            except (DomainError, ValueError) as err:  # the history raises the domain's Invalid
                assert str(getattr(err, "detail", err)).strip(), repr(err)
        seen["query"] += 1


@pytest.mark.parametrize("decoder", ["native", "chirpstack", "modbus", "modbus-float", "geometry",
                                     "feature", "query"])
def test_each_decoder_saw_100k_inputs(decoder) -> None:
    """Runs after the fuzzers in this module (pytest keeps file order)."""
    assert seen[decoder] >= TARGET, f"{decoder}: only {seen[decoder]} inputs"
