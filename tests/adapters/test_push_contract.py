"""The built-in push adapters against the shared contract in ``adapters/testing.py``.

The shaped strategies aim the fuzzing at documents that get past the first checks (a
``values`` object, a ``deviceInfo`` with a plausible DevEUI), where the interesting
failures hide; plain JSON-ish garbage rarely gets that far.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import strategies as st

from adapters.chirpstack import ChirpStackAdapter
from adapters.chirpstack.protocol import DEFAULT_METRIC_MAP
from adapters.mqtt import NativeMqttAdapter
from adapters.sparkplug import SparkplugAdapter
from adapters.testing import METRIC_NAMES, PushAdapterContract, dumps, json_scalars, json_values

FIXTURES = Path(__file__).parent / "fixtures"

NATIVE_TELEMETRY = "ioc/v1/SL-000123/telemetry"
NATIVE_STATUS = "ioc/v1/SL-000123/status"
EUI = "70b3d5e75e004512"

timestamps = st.one_of(
    st.none(),
    st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-01:00", "2026-11-22"]),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    json_scalars,
)
metric_names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True) | st.text(max_size=20)
value_maps = st.dictionaries(metric_names, json_scalars, max_size=6) | json_values


def _fixtures(folder: str) -> list[Path]:
    return sorted((FIXTURES / folder).glob("*.json"))


class TestNativeMqttContract(PushAdapterContract):
    adapter_cls = NativeMqttAdapter
    topics = (NATIVE_TELEMETRY, NATIVE_STATUS, "ioc/v1/WM-77/telemetry")
    samples = (
        *[
            (NATIVE_TELEMETRY, path.read_bytes())
            for path in _fixtures("native")
            if not path.stem.endswith(("bad_value", "mixed"))
        ],
        (NATIVE_STATUS, b"online"),
        (NATIVE_STATUS, b"offline"),
    )

    def shaped_messages(self) -> st.SearchStrategy[tuple[str, bytes]]:
        entry = st.fixed_dictionaries({"values": value_maps}, optional={"ts": timestamps})
        payloads = st.one_of(entry, st.lists(entry | json_values, max_size=4)).map(dumps)
        status = st.sampled_from([b"online", b"OFFLINE", b'"online"', b" offline\n", b"on"])
        return st.one_of(
            st.tuples(st.just(NATIVE_TELEMETRY), payloads),
            st.tuples(st.just(NATIVE_STATUS), status | st.binary(max_size=12)),
            super().shaped_messages(),
        )


class TestChirpStackContract(PushAdapterContract):
    adapter_cls = ChirpStackAdapter
    # pass_through keeps snake_case codec keys, and the recorded water meter sends "leak",
    # which the catalogue does not have (yet).
    metric_names = METRIC_NAMES | {"leak"}
    topics = (
        f"application/17c82e96/device/{EUI}/event/up",
        f"application/17c82e96/device/{EUI}/event/status",
    )
    samples = (
        (topics[0], (FIXTURES / "chirpstack/up_water_meter.json").read_bytes()),
        (topics[1], (FIXTURES / "chirpstack/status.json").read_bytes()),
        (
            "application/17c82e96/device/a84041000181c231/event/up",
            (FIXTURES / "chirpstack/up_pressure_tofixed.json").read_bytes(),
        ),
    )

    def shaped_messages(self) -> st.SearchStrategy[tuple[str, bytes]]:
        # mostly the topic's DevEUI (any case); sometimes another one, which must be refused
        euis = st.sampled_from([EUI, EUI, EUI.upper(), "70b3d5e75e004513"])
        codec_keys = st.sampled_from([*DEFAULT_METRIC_MAP, "volume_m3", "unit", "meterSerial"])
        codec_values = json_scalars | st.floats().map(lambda x: f"{x:.2f}")
        good_times = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
        devices = st.fixed_dictionaries({"devEui": st.one_of(euis, euis, euis, json_scalars)})
        common = {"deviceInfo": devices}
        optional = {"time": st.one_of(good_times, good_times, timestamps), "data": st.text()}
        uplinks = st.fixed_dictionaries(
            {**common, "object": st.dictionaries(codec_keys, codec_values, max_size=6) | json_values},
            optional=optional,
        )
        statuses = st.fixed_dictionaries(
            {**common, "batteryLevel": json_scalars},
            optional={
                **optional,
                "externalPowerSource": st.booleans(),
                "batteryLevelUnavailable": st.booleans(),
            },
        )
        at = f"application/17c82e96/device/{EUI}/event/"
        kinds = st.sampled_from(["up", "status", "join", "log", "weird"])
        return st.one_of(
            st.tuples(st.just(at + "up"), uplinks.map(dumps)),
            st.tuples(st.just(at + "status"), statuses.map(dumps)),
            st.tuples(kinds.map(lambda e: at + e), (uplinks | statuses).map(dumps)),
            super().shaped_messages(),
        )


def _spb(seq: int | None, *metrics: dict) -> bytes:
    from adapters.sparkplug.sparkplug_b_pb2 import Payload

    p = Payload(timestamp=1_795_000_000_000)
    if seq is not None:
        p.seq = seq
    for spec in metrics:
        m = p.metrics.add()
        for k, v in spec.items():
            setattr(m, k, v)
    return p.SerializeToString()


class TestSparkplugContract(PushAdapterContract):
    adapter_cls = SparkplugAdapter
    config: ClassVar[Mapping[str, Any]] = {"metric_map": {"Dimmer/Level": "dim_level_pct"}}
    topics = ("spBv1.0/city/NBIRTH/gw-1", "spBv1.0/city/DBIRTH/gw-1/lamp-1",
              "spBv1.0/city/DDATA/gw-1/lamp-1", "spBv1.0/city/NDEATH/gw-1",
              "spBv1.0/city/DDEATH/gw-1/lamp-1")
    samples = (
        (topics[0], _spb(0, {"name": "bdSeq", "datatype": 8, "long_value": 1},
                         {"name": "Cabinet/power_w", "alias": 9, "datatype": 9, "float_value": 812.5})),
        (topics[1], _spb(1, {"name": "Lamp/power_w", "alias": 1, "datatype": 10, "double_value": 41.5},
                         {"name": "Dimmer/Level", "alias": 2, "datatype": 3, "int_value": 70})),
        (topics[2], _spb(2, {"alias": 1, "double_value": 40.0}, {"alias": 2, "int_value": 60})),
    )

    def shaped_messages(self) -> st.SearchStrategy[tuple[str, bytes]]:
        from adapters.sparkplug.protocol import DATATYPES

        values = st.one_of(
            st.builds(lambda v: {"double_value": v}, st.floats(allow_nan=True, allow_infinity=True)),
            st.builds(lambda v: {"float_value": v}, st.floats(width=32, allow_nan=True)),
            st.builds(lambda v: {"int_value": v}, st.integers(0, 2**32 - 1)),
            st.builds(lambda v: {"long_value": v}, st.integers(0, 2**64 - 1)),
            st.builds(lambda v: {"boolean_value": v}, st.booleans()),
            st.builds(lambda v: {"string_value": v}, st.text(max_size=8)),
            st.just({"is_null": True}), st.just({}),
        )
        names = st.sampled_from(["Lamp/power_w", "Dimmer/Level", "lamp_on", "Vendor/Serial", "bdSeq",
                                 "Node Control/Rebirth", ""]) | st.text(max_size=12)
        metric = st.builds(
            lambda name, alias, dt, ts, value: {
                **({"name": name} if name is not None else {}),
                **({"alias": alias} if alias is not None else {}),
                **({"datatype": dt} if dt is not None else {}),
                **({"timestamp": ts} if ts is not None else {}),
                **value},
            st.none() | names, st.none() | st.integers(0, 2**64 - 1),
            st.none() | st.sampled_from(sorted(DATATYPES)) | st.integers(0, 2**32 - 1),
            st.none() | st.integers(0, 2**64 - 1), values)
        payloads = st.builds(lambda seq, ms: _spb(seq, *ms), st.none() | st.integers(0, 2**64 - 1),
                             st.lists(metric, max_size=5))
        return st.one_of(st.tuples(st.sampled_from(list(self.topics)), payloads),
                         super().shaped_messages())
