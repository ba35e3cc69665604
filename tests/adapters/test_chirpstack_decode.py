"""The ChirpStack v4 decoder against recorded events (fixtures/chirpstack/*.json).

The fixtures follow ChirpStack's protobuf-JSON marshaler: camelCase keys, nanosecond
``time``, ``object`` only when the device profile has a codec.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from adapters.chirpstack import ChirpStackAdapter, ChirpStackConfig
from adapters.sdk import DecodeError, Quality

FIXTURES = Path(__file__).parent / "fixtures" / "chirpstack"
RECEIVED = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
METER = "70b3d5e75e004512"


def topic(event: str, eui: str = METER) -> str:
    return f"application/17c82e96-be03-4f38-aef3-f83d48582d97/device/{eui}/event/{event}"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def edited(name: str, **changes: object) -> bytes:
    doc = orjson.loads(fixture(name))
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return orjson.dumps(doc)


def decode(payload: bytes, event: str = "up", eui: str = METER, **config: object):
    return ChirpStackAdapter(config).decode_at(topic(event, eui), payload, RECEIVED)


def values(readings) -> dict[str, float]:
    return {r.metric: r.value for r in readings}


def test_water_meter_uplink() -> None:
    readings, errors = decode(fixture("up_water_meter.json"))
    assert not errors
    # volume, flowRate and batteryLevel are mapped; leak passes through; the string "unit"
    # and the unmapped camelCase "meterSerial" are descriptive and ignored.
    assert values(readings) == {
        "volume_m3": 1532.417,
        "flow_m3h": 0.35,
        "battery_pct": 87.0,
        "leak": 0.0,
    }
    assert {r.device_id for r in readings} == {METER}  # lower-cased from 70B3D5E75E004512
    assert {r.ts for r in readings} == {datetime(2026, 11, 22, 10, 15, 42, 481927, tzinfo=UTC)}
    assert all(r.quality is Quality.OK for r in readings)


def test_codec_strings_from_tofixed_are_numbers() -> None:
    readings, errors = decode(fixture("up_pressure_tofixed.json"), eui="a84041000181c231")
    assert not errors
    assert values(readings) == {"pressure_bar": 3.412, "temperature_c": 11.8, "battery_pct": 95.0}


def test_uplink_without_codec() -> None:
    readings, errors = decode(fixture("up_no_codec.json"), eui="0004a30b001c0530")
    assert not readings
    [error] = errors
    assert str(error).startswith("no decoded object: configure a codec in ChirpStack")
    assert "'Mechanical meter pulse reader'" in str(error)
    assert (error.field, error.device_id) == ("object", "0004a30b001c0530")


def test_one_bad_codec_value_keeps_the_others() -> None:
    readings, errors = decode(fixture("up_one_bad_value.json"), eui="70b3d5e75e004513")
    assert values(readings) == {"volume_m3": 1200.5, "flow_m3h": 0.0}
    [error] = errors
    assert error.field == "battery_pct"
    assert error.device_id == "70b3d5e75e004513"
    assert "codec output: value of 'battery' is a string ('n/a')" in str(error)


def test_status_event_gives_battery() -> None:
    readings, errors = decode(fixture("status.json"), "status")
    assert not errors
    assert values(readings) == {"battery_pct": 85.43}
    assert readings[0].ts == datetime(2026, 11, 22, 10, 20, 0, 517603, tzinfo=UTC)


def test_status_without_battery_level_gives_nothing() -> None:
    ext = decode(fixture("status_external_power.json"), "status", eui="a84041000181c231")
    assert ext == ([], [])
    unavailable = edited("status.json", batteryLevelUnavailable=True)
    assert decode(unavailable, "status") == ([], [])
    assert decode(edited("status.json", batteryLevel=None), "status") == ([], [])


def test_status_with_bad_battery_level() -> None:
    _, [error] = decode(edited("status.json", batteryLevel="full"), "status")
    assert "batteryLevel is a string ('full')" in str(error)


@pytest.mark.parametrize("event", ["join", "ack", "txack", "log", "location", "integration"])
def test_events_without_telemetry_are_ignored(event: str) -> None:
    assert decode(fixture("join.json"), event) == ([], [])


def test_unsupported_event() -> None:
    _, [error] = decode(fixture("join.json"), "gossip")
    assert str(error) == "unsupported ChirpStack event 'gossip'"


def test_mac_only_uplink_is_ignored() -> None:
    assert decode(edited("up_no_codec.json", data=None, fPort=0), eui="0004a30b001c0530") == (
        [],
        [],
    )


def test_missing_time_means_received_time() -> None:
    readings, errors = decode(edited("up_water_meter.json", time=None))
    assert not errors and {r.ts for r in readings} == {RECEIVED}


def test_bad_time() -> None:
    _, [error] = decode(edited("up_water_meter.json", time="last tuesday"))
    assert error.field == "time"
    assert str(error).startswith("bad time: 'last tuesday' is not an RFC 3339 date-time")


def test_dev_eui_from_topic_when_payload_has_none() -> None:
    readings, errors = decode(edited("up_water_meter.json", deviceInfo=None), eui=METER.upper())
    assert not errors and {r.device_id for r in readings} == {METER}


@pytest.mark.parametrize(
    ("topic_eui", "payload_eui", "message"),
    [
        ("70b3d5e75e009999", METER, "DevEUI '70b3d5e75e009999' in topic differs"),
        (METER, "70b3d5e75e0045", "deviceInfo.devEui '70b3d5e75e0045' is not 16 hex digits"),
        (METER, "zz", "is not 16 hex digits"),
    ],
)
def test_dev_eui_problems(topic_eui: str, payload_eui: str, message: str) -> None:
    payload = edited("up_water_meter.json", deviceInfo={"devEui": payload_eui})
    readings, [error] = decode(payload, eui=topic_eui)
    assert not readings
    assert message in str(error)


def test_bad_topic() -> None:
    adapter = ChirpStackAdapter()
    _, [error] = adapter.decode_at("application/1/device/x/up", b"{}", RECEIVED)
    assert "is not application/{application_id}/device/{dev_eui}/event/{event}" in str(error)


def test_event_that_is_not_an_object() -> None:
    _, [error] = decode(b"[1, 2]")
    assert "is an array; expected a JSON object" in str(error)
    assert "marshaler" in str(error)
    assert error.device_id == METER


def test_invalid_json() -> None:
    _, [error] = decode(b'{"object": ')
    assert str(error).startswith("payload is not valid JSON:")
    assert error.device_id == METER


def test_object_that_is_not_an_object() -> None:
    _, [error] = decode(edited("up_water_meter.json", object=[1, 2]))
    assert "decoded object is an array" in str(error)


def test_object_with_nothing_we_know() -> None:
    _, [error] = decode(edited("up_water_meter.json", object={"Vol": 1, "unit": "m3"}))
    assert "no metric this adapter knows (keys: 'Vol', 'unit')" in str(error)
    assert "metric_map" in str(error)


def test_configured_mapping() -> None:
    payload = edited("up_water_meter.json", object={"Vol": 12.5, "volume": 3.0, "bat": 90})
    readings, errors = decode(payload, metric_map={"Vol": "volume_m3", "bat": "battery_pct"})
    assert not errors
    assert values(readings) == {"volume_m3": 12.5, "battery_pct": 90.0}  # first key wins
    readings, errors = decode(payload, metric_map={"Vol": "volume_m3"}, use_default_map=False)
    # without the defaults "volume" and "bat" are plain snake_case keys: passed through
    assert values(readings) == {"volume_m3": 12.5, "volume": 3.0, "bat": 90.0}
    readings, errors = decode(
        payload, metric_map={"Vol": "volume_m3"}, use_default_map=False, pass_through=False
    )
    assert values(readings) == {"volume_m3": 12.5}


def test_pass_through_can_be_switched_off() -> None:
    readings, _ = decode(fixture("up_water_meter.json"), pass_through=False)
    assert "leak" not in values(readings)


@pytest.mark.parametrize(
    "config",
    [{"metric_map": {"vol": "Volume M3"}}, {"metric_map": {"vol": ""}}, {"unknown": 1}],
)
def test_bad_config_is_refused_at_construction(config: dict) -> None:
    with pytest.raises(ValidationError):
        ChirpStackAdapter(config)


def test_config_model_instance_is_accepted() -> None:
    adapter = ChirpStackAdapter(ChirpStackConfig(metric_map={"vol": "volume_m3"}))
    payload = edited("up_water_meter.json", object={"vol": 1})
    assert values(adapter.decode_at(topic("up"), payload, RECEIVED)[0]) == {"volume_m3": 1.0}


def test_decode_is_all_or_nothing() -> None:
    adapter = ChirpStackAdapter()
    with pytest.raises(DecodeError, match="configure a codec"):
        adapter.decode(topic("up", "0004a30b001c0530"), fixture("up_no_codec.json"))
    assert len(adapter.decode(topic("up"), fixture("up_water_meter.json"))) == 4


def test_adapter_declaration() -> None:
    assert ChirpStackAdapter.kind == "chirpstack"
    assert ChirpStackAdapter.addressed_by == "external_id"
    assert ChirpStackAdapter.config_model is ChirpStackConfig
    assert ChirpStackAdapter.topic_filters == (
        "application/+/device/+/event/up",
        "application/+/device/+/event/status",
    )
