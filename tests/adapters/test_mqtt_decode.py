"""The native convention's decoder against recorded payloads (fixtures/native/*.json).

Each error test checks the message says what to change, since a dead letter is only useful
if the person reading it can fix the device without opening the code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters.mqtt import NativeMqttAdapter, protocol
from adapters.sdk import DecodeError, Quality, Reading, StatusUpdate

FIXTURES = Path(__file__).parent / "fixtures" / "native"
TELEMETRY = "ioc/v1/SL-000123/telemetry"
STATUS = "ioc/v1/SL-000123/status"
RECEIVED = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TEN = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def decode(payload: bytes | str, topic: str = TELEMETRY):
    if isinstance(payload, str):
        payload = payload.encode()
    return NativeMqttAdapter().decode_at(topic, payload, RECEIVED)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def values(readings) -> dict[str, float]:
    return {r.metric: r.value for r in readings}


def only_error(payload: bytes | str, topic: str = TELEMETRY) -> DecodeError:
    readings, errors = decode(payload, topic)
    assert not readings
    assert len(errors) == 1, errors
    return errors[0]


def test_streetlight_fixture() -> None:
    readings, errors = decode(fixture("streetlight.json"))
    assert not errors
    assert values(readings) == {
        "lamp_on": 1.0,
        "dim_level_pct": 70.0,
        "power_w": 41.5,
        "energy_kwh": 1234.56,
        "burning_hours": 5210.0,
        "lamp_fault": 0.0,
    }
    ts = TEN + timedelta(milliseconds=123)
    assert all(r.ts == ts and r.device_id == "SL-000123" for r in readings)
    assert all(r.quality is Quality.OK and type(r.value) is float for r in readings)


def test_batch_with_epoch_milliseconds() -> None:
    readings, errors = decode(fixture("cabinet_batch_epoch_ms.json"))
    assert not errors
    assert len(readings) == 15
    assert sorted({r.ts for r in readings}) == [
        TEN,
        TEN + timedelta(minutes=1),
        TEN + timedelta(minutes=2, microseconds=500),
    ]
    last = [r for r in readings if r.ts > TEN + timedelta(minutes=1)]
    assert values(last)["breaker_tripped"] == 1.0


def test_absent_ts_means_received_time() -> None:
    readings, errors = decode(fixture("water_meter_no_ts.json"))
    assert not errors
    assert values(readings) == {"volume_m3": 1532.417, "flow_m3h": 0.42, "battery_pct": 87.0}
    assert {r.ts for r in readings} == {RECEIVED}


def test_offset_ts_becomes_utc_and_extra_keys_are_ignored() -> None:
    readings, errors = decode(fixture("pressure_offset_ts.json"))
    assert not errors
    assert {r.ts for r in readings} == {TEN + timedelta(milliseconds=250)}
    assert all(r.ts.tzinfo is UTC for r in readings)


def test_one_bad_value_keeps_the_others() -> None:
    readings, errors = decode(fixture("streetlight_one_bad_value.json"))
    assert values(readings) == {"power_w": 41.2, "lamp_on": 1.0}
    by_field = {e.field: str(e) for e in errors}
    assert set(by_field) == {"dim_level_pct", "driver_fault"}
    assert "is a string ('70')" in by_field["dim_level_pct"]
    assert "without quotes" in by_field["dim_level_pct"]
    assert "is null" in by_field["driver_fault"]
    assert "leave the metric out" in by_field["driver_fault"]
    assert all(e.device_id == "SL-000123" for e in errors)


def test_batch_bad_entries_cost_only_themselves() -> None:
    readings, errors = decode(fixture("env_batch_mixed.json"))
    assert values(readings) == {"pm25_ugm3": 12.4, "pm10_ugm3": 20.1, "noise_dba": 61.5,
                                "humidity_pct": 71.0}  # fmt: skip
    messages = [str(e) for e in errors]
    assert messages[0].startswith("batch entry 1: bad ts: '22/11/2026 10:01'")
    assert errors[0].field == "ts"
    assert messages[1].startswith("batch entry 2: metric name 'PM25' is not snake_case")
    assert "did you mean 'pm25'?" in messages[1]
    assert errors[1].field == "PM25"
    assert messages[2] == "batch entry 3: expected an object, got a string"


def test_decode_is_all_or_nothing() -> None:
    adapter = NativeMqttAdapter()
    with pytest.raises(DecodeError, match=r"value of 'dim_level_pct'.*\(and 1 more problems\)"):
        adapter.decode(TELEMETRY, fixture("streetlight_one_bad_value.json"))
    assert len(adapter.decode(TELEMETRY, fixture("streetlight.json"))) == 6


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ('"2026-11-22T10:00:00Z"', TEN),
        ('"2026-11-22T10:00:00.123456789Z"', TEN + timedelta(microseconds=123456)),
        ('"2026-11-22t10:00:00z"', TEN),
        ('"2026-11-22 10:00:00+00:00"', TEN),
        ('"2026-11-22T11:30:00+01:30"', TEN),
        ('"2026-11-22T05:00:00-05:00"', TEN),
        ('"2026-11-22T10:00:00"', TEN),  # no offset: taken as UTC
        ("1795341600000", TEN),
        ("1795341600000.0", TEN),
        ("1795341600123", TEN + timedelta(milliseconds=123)),
    ],
)
def test_timestamp_forms(ts: str, expected: datetime) -> None:
    readings, errors = decode('{"ts": ' + ts + ', "values": {"power_w": 1}}')
    assert not errors
    assert readings[0].ts == expected
    assert readings[0].ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        ("1795341600", "looks like epoch seconds, send milliseconds"),
        ("1795341600000000", "looks like micro- or nanoseconds"),
        ("-5", "out of range"),
        ('"2026-11-22"', "is not an RFC 3339 date-time such as 2026-11-22T10:00:00Z"),
        ('"yesterday"', "is not an RFC 3339 date-time"),
        ('"2026-11-22T25:00:00Z"', "hour must be in 0..23"),
        ('"2026-02-30T10:00:00Z"', "day is out of range for month"),
        ('"0001-01-01T00:00:00+05:00"', "outside the supported years"),
        ("true", "a boolean (True) is not a time"),
        ('{"ms": 1}', "an object"),
    ],
)
def test_bad_timestamps_say_why(ts: str, reason: str) -> None:
    error = only_error('{"ts": ' + ts + ', "values": {"power_w": 1}}')
    assert error.field == "ts"
    assert str(error).startswith("bad ts: ")
    assert reason in str(error)


def test_nan_and_infinity_tokens_become_qualities() -> None:
    readings, errors = decode('{"values": {"pm25_ugm3": NaN, "noise_dba": -Infinity, "a": 1e400}}')
    assert not errors
    assert [r.quality for r in readings] == [
        Quality.NOT_A_NUMBER,
        Quality.OUT_OF_RANGE,
        Quality.OUT_OF_RANGE,
    ]
    assert all(r.value == 0.0 for r in readings)


def test_not_json_names_the_position() -> None:
    error = only_error(b'{"values": {"power_w": 41.5,}}')
    assert str(error) == (
        "payload is not valid JSON: trailing comma is not allowed at line 1 column 28 (byte 27)"
    )
    assert error.device_id == "SL-000123"
    assert "not valid UTF-8" in str(only_error(b'{"values": {"\xff": 1}}'))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("42", "payload is a number; expected an object"),
        ('"hi"', "payload is a string; expected an object"),
        ("null", "payload is null; expected an object"),
        ('{"power_w": 41.5}', '"values" is missing; expected an object such as'),
        ('{"values": null}', '"values" is null; expected an object'),
        ('{"values": [41.5]}', '"values" is an array; expected an object'),
        ('{"values": {"power_w": {"v": 1}}}', "value of 'power_w' is an object"),
        ('{"values": {"power_w": [1]}}', "value of 'power_w' is an array"),
        ('{"values": {"power_w": "high"}}', "value of 'power_w' is a string ('high')"),
        ('{"values": {"powerW": 1}}', "did you mean 'power_w'?"),
        ('{"values": {"power__w": 1}}', "is not snake_case"),
        ('{"values": {"1st": 1}}', "is not snake_case"),
        ('{"values": {"": 1}}', "is not snake_case"),
    ],
)
def test_shape_errors_say_what_to_send(payload: str, message: str) -> None:
    error = only_error(payload)
    assert message in str(error)
    assert error.device_id == "SL-000123"


def test_value_errors_name_the_metric() -> None:
    error = only_error('{"values": {"power_w": "high"}}')
    assert error.field == "power_w"
    assert "send a JSON number or boolean" in str(error)


def test_empty_containers_are_quietly_empty() -> None:
    assert decode("[]") == ([], [])
    assert decode('{"values": {}}') == ([], [])


def test_errors_per_message_are_capped() -> None:
    readings, errors = decode("[" + ",".join(["1"] * 500) + "]")
    assert not readings
    assert len(errors) == protocol.MAX_ERRORS + 1
    assert str(errors[-1]) == "450 more problems in this message not listed"


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("ioc/v2/SL-1/telemetry", "is not ioc/v1/{device_id}/telemetry or"),
        ("ioc/v1/SL-1/commands", "is not ioc/v1/{device_id}/telemetry or"),
        ("ioc/v1/SL-1/telemetry/extra", "is not ioc/v1/{device_id}/telemetry or"),
        ("ioc/v1/SL 1/telemetry", "device id 'SL 1' in topic is not valid"),
        ("ioc/v1//telemetry", "device id '' in topic is not valid"),
        ("ioc/v1/-SL1/status", "starting with a letter or digit"),
        ("ioc/v1/" + "x" * 129 + "/status", "in topic is not valid"),
    ],
)
def test_topic_errors(topic: str, message: str) -> None:
    error = only_error('{"values": {"power_w": 1}}', topic)
    assert message in str(error)
    assert error.device_id is None


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b"offline", False),
        (b"ONLINE", True),
        (b"  Offline\r\n", False),
        (b'"online"', True),
        (b' "OFFLINE" ', False),
    ],
)
def test_status(payload: bytes, online: bool) -> None:
    assert decode(payload, STATUS) == ([StatusUpdate("SL-000123", online, RECEIVED)], [])


@pytest.mark.parametrize("payload", [b"on", b"1", b"true", b'{"online": true}', b'"on', b"\xff"])
def test_bad_status(payload: bytes) -> None:
    error = only_error(payload, STATUS)
    assert "is neither 'online' nor 'offline'" in str(error)
    assert error.device_id == "SL-000123"


def test_empty_payload_is_a_cleared_retained_message() -> None:
    assert decode(b"", STATUS) == ([], [])
    assert decode(b"", TELEMETRY) == ([], [])


def test_adapter_declaration() -> None:
    assert NativeMqttAdapter.kind == "mqtt"
    assert NativeMqttAdapter.topic_filters == ("ioc/v1/+/telemetry", "ioc/v1/+/status")
    assert NativeMqttAdapter.addressed_by == "device_id"


def test_decode_partial_uses_the_current_time() -> None:
    before = datetime.now(UTC)
    readings, _ = NativeMqttAdapter().decode_partial(TELEMETRY, b'{"values": {"power_w": 1}}')
    assert isinstance(readings[0], Reading)
    assert before <= readings[0].ts <= datetime.now(UTC)


def test_parse_ts_keeps_instant_across_offsets() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert protocol.parse_ts(datetime(2026, 11, 22, 12, tzinfo=plus_two).isoformat()) == TEN
