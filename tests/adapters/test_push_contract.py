"""Both built-in push adapters against the shared contract in ``adapters/testing.py``.

The shaped strategies aim the fuzzing at documents that get past the first checks (a
``values`` object, a ``deviceInfo`` with a plausible DevEUI), where the interesting
failures hide; plain JSON-ish garbage rarely gets that far.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from hypothesis import strategies as st

from adapters.chirpstack import ChirpStackAdapter
from adapters.chirpstack.protocol import DEFAULT_METRIC_MAP
from adapters.mqtt import NativeMqttAdapter
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
