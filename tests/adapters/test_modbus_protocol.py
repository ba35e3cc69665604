"""Pure Modbus planning and decoding: profiles, the read planner, registers → readings."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient as C

from adapters.modbus.profile import builtin_profiles, load_profile, parse_profile_ref
from adapters.modbus.protocol import (
    InvalidCommand,
    Point,
    ReadRequest,
    command_value,
    decode_request,
    decode_value,
    encode_command,
    fault_request,
    plan_reads,
    resolve,
)
from adapters.sdk import ConfigError, DecodeError, Quality

TS = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
BUILTINS = [
    "dali_gateway",
    "eastron_sdm120",
    "eastron_sdm630",
    "keller_series30",
    "siemens_mag6000",
    "vaisala_aqt530",
]


def test_builtin_profiles_all_load() -> None:
    assert builtin_profiles() == BUILTINS
    for name in BUILTINS:
        umap = resolve(name)
        assert umap.requests and umap.metrics


def test_sdm120_test_vector() -> None:
    (req,) = resolve("eastron_sdm120").requests
    assert (req.function, req.address) == (4, 0)
    regs = [0] * req.count
    regs[0:2] = [0x4366, 0x3334]
    volts = next(r for r in decode_request(req, regs, "LC-1", TS) if r.metric == "voltage_l1_v")
    assert volts.value == pytest.approx(230.2, abs=1e-9)  # float32 noise rounded away
    assert volts.quality is Quality.OK and volts.device_id == "LC-1" and volts.ts == TS


def test_sdm630_is_one_aligned_request_within_80_registers() -> None:
    umap = resolve("eastron_sdm630")
    assert len(umap.requests) <= 2
    for req in umap.requests:
        assert req.function == 4
        assert req.address % 2 == 0 and req.count % 2 == 0 and req.count <= 80
    assert set(umap.metrics) == {
        "voltage_l1_v",
        "voltage_l2_v",
        "voltage_l3_v",
        "current_l1_a",
        "current_l2_a",
        "current_l3_a",
        "power_w",
        "power_factor",
        "frequency_hz",
        "energy_import_kwh",
    }


def _points(addresses: list[int], kind: str = "float32", function: int = 4) -> list[Point]:
    return [Point(f"m{i}", function, a, kind) for i, a in enumerate(addresses)]


def test_planner_splits_at_the_register_limit_and_aligns() -> None:
    pts = _points([0, 2, 76, 78, 80, 200])
    plan = plan_reads(pts, max_registers=80, alignment=2, max_gap=80)
    assert [(r.address, r.count) for r in plan] == [(0, 80), (80, 2), (200, 2)]
    odd = plan_reads([Point("x", 4, 3, "uint16")], max_registers=80, alignment=2)
    assert [(r.address, r.count) for r in odd] == [(2, 2)]


def test_planner_keeps_function_codes_apart_and_respects_gaps() -> None:
    pts = _points([0, 10], function=3) + _points([0], function=4)
    plan = plan_reads(pts, max_gap=8)  # registers 2..9 are the gap
    assert [(r.function, r.address, r.count) for r in plan] == [(3, 0, 12), (4, 0, 2)]
    assert len(plan_reads(_points([0, 10], function=3), max_gap=7)) == 2


@settings(max_examples=300, deadline=None)
@given(
    addresses=st.lists(st.integers(0, 400), min_size=1, max_size=40),
    max_registers=st.integers(4, 125),
    alignment=st.sampled_from([1, 2]),
    max_gap=st.integers(0, 20),
)
def test_planner_covers_every_point_within_limits(
    addresses: list[int], max_registers: int, alignment: int, max_gap: int
) -> None:
    pts = _points(addresses)
    plan = plan_reads(pts, max_registers=max_registers, alignment=alignment, max_gap=max_gap)
    assert sorted(p.metric for r in plan for p in r.points) == sorted(p.metric for p in pts)
    for r in plan:
        assert r.count <= max_registers
        assert r.address % alignment == 0 and r.count % alignment == 0
        for p in r.points:
            assert r.address <= p.address and p.address + p.count <= r.address + r.count


def test_word_order_float64_and_scaling() -> None:
    big = Point("flow", 3, 0, "float32", scale=3600)
    little = Point("flow", 3, 0, "float32", word_order="little")
    assert decode_value(big, C.convert_to_registers(0.5, C.DATATYPE.FLOAT32)) == (1800.0, Quality.OK)
    cdab = C.convert_to_registers(12.5, C.DATATYPE.FLOAT32, word_order="little")
    assert cdab == [0x0000, 0x4148]
    assert decode_value(little, cdab) == (12.5, Quality.OK)
    total = Point("volume_m3", 3, 0, "float64")
    regs = C.convert_to_registers(123456.789, C.DATATYPE.FLOAT64)
    assert decode_value(total, regs) == (123456.789, Quality.OK)
    tenth = Point("pm25_ugm3", 3, 0, "int16", scale=0.1)
    assert decode_value(tenth, [3]) == (0.3, Quality.OK)
    assert decode_value(tenth, [0xFFFE]) == (-0.2, Quality.OK)  # signed


def test_nan_inf_and_sentinels_are_never_numbers() -> None:
    p = Point("pressure_bar", 3, 2, "float32")
    assert decode_value(p, [0x7FC0, 0]) == (0.0, Quality.NOT_A_NUMBER)
    assert decode_value(p, [0x7F80, 0]) == (0.0, Quality.OUT_OF_RANGE)
    assert decode_value(p, [0xFF80, 0]) == (0.0, Quality.OUT_OF_RANGE)
    no2 = Point("no2_ppb", 3, 0, "int16", invalid=frozenset({32767}))
    assert decode_value(no2, [32767]) == (0.0, Quality.OUT_OF_RANGE)
    assert decode_value(no2, [41]) == (41.0, Quality.OK)
    aqt = resolve("vaisala_aqt530")
    assert [(r.address, r.count) for r in aqt.requests] == [(0, 1), (8, 4)]


def test_bits_and_dali_addressing() -> None:
    umap = resolve("dali_gateway?channel=1&short_address=12")
    (req,) = umap.requests
    assert (req.function, req.address, req.count) == (3, 7000 + 1200 + 5, 2)
    got = {r.metric: r.value for r in decode_request(req, [0b0110, 70], "SL-1", TS)}
    assert got == {"driver_fault": 0.0, "lamp_fault": 1.0, "lamp_on": 1.0, "dim_level_pct": 70.0}
    assert umap.commands["set_dim"].address == 8215
    with pytest.raises(ConfigError, match="short_address=64"):
        resolve("dali_gateway?short_address=64")
    with pytest.raises(ConfigError, match="unknown profile parameter"):
        resolve("keller_series30?channel=1")
    with pytest.raises(ConfigError, match="not an integer"):
        parse_profile_ref("dali_gateway?channel=one")


def test_short_reply_and_faults() -> None:
    (req,) = resolve("keller_series30").requests
    with pytest.raises(DecodeError):
        decode_request(req, [0, 0], "PS-1", TS)
    faults = fault_request(req, "PS-1", TS)
    assert {r.metric for r in faults} == {"pressure_bar", "temperature_c"}
    assert all(r.quality is Quality.FAULT and r.value == 0.0 for r in faults)


def test_command_encoding_checks_arguments() -> None:
    cmd = resolve("dali_gateway").commands["set_dim"]
    assert encode_command(cmd, {"level": 50}) == [50]
    assert command_value(cmd, {"level": 49.6}) == 50.0
    for bad in ({}, {"level": "50"}, {"level": True}, {"level": 101}, {"level": math.nan}):
        with pytest.raises(InvalidCommand):
            encode_command(cmd, bad)


def test_profile_file_with_a_bad_field_names_file_and_field(tmp_path) -> None:
    doc = json.loads(
        json.dumps(
            {
                "word_order": "big",
                "blocks": [
                    {
                        "function": 3,
                        "points": [
                            {"metric": "pressure_bar", "address": 2, "type": "float32"},
                            {"metric": "temperature_c", "address": 6, "type": "float33"},
                        ],
                    }
                ],
            }
        )
    )
    path = tmp_path / "my_meter.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    assert str(path) in str(err.value) and "blocks.0.points.1.type" in str(err.value)

    doc["blocks"][0]["points"][1]["type"] = "float32"
    path.write_text(json.dumps(doc))
    assert [r.address for r in resolve(str(path)).requests] == [2, 6]  # max_gap 0

    doc["blocks"][0]["function"] = 5
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"blocks\.0\.function"):
        load_profile(str(path))
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="line 1"):
        load_profile(str(path))
    with pytest.raises(ConfigError, match="eastron_sdm630"):
        load_profile("no_such_profile")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_profile(str(tmp_path / "missing.json"))


def test_profile_rules() -> None:
    from adapters.modbus.profile import ProfileSpec

    base = {"blocks": [{"function": 3, "points": [{"metric": "a", "address": 0, "type": "bits"}]}]}
    with pytest.raises(ValueError, match="bit"):
        ProfileSpec.model_validate(base)
    dupes = {
        "blocks": [
            {
                "function": 3,
                "points": [
                    {"metric": "a", "address": 0, "type": "uint16"},
                    {"metric": "a", "address": 1, "type": "uint16"},
                ],
            }
        ]
    }
    with pytest.raises(ValueError, match="unique"):
        ProfileSpec.model_validate(dupes)
    wide = {
        "commands": {"x": {"address": 0, "type": "float32", "function": 6, "result": "x"}},
        "blocks": base["blocks"],
    }
    with pytest.raises(ValueError):
        ProfileSpec.model_validate(wide)
    assert ReadRequest(3, 0, 1, ()).count == 1
