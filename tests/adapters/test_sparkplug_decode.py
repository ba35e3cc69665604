"""The Sparkplug B decoder's session rules, message by message (no broker, no database).

Payloads are built with the generated protobuf classes; the end-to-end check against an
independent edge node (Eclipse Tahu's client) is tests/server/test_sparkplug.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.sdk import Quality, Reading, StatusUpdate
from adapters.sparkplug import SparkplugAdapter, SparkplugConfig
from adapters.sparkplug.protocol import REBIRTH_METRIC
from adapters.sparkplug.sparkplug_b_pb2 import Payload

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
T0 = int(NOW.timestamp() * 1000)
DOUBLE, INT8, INT32, INT64, UINT64, BOOLEAN, STRING = 10, 1, 3, 4, 8, 11, 12


def payload(seq: int | None, *metrics: dict, ts: int | None = T0) -> bytes:
    p = Payload()
    if ts is not None:
        p.timestamp = ts
    if seq is not None:
        p.seq = seq
    for spec in metrics:
        m = p.metrics.add()
        for k, v in spec.items():
            setattr(m, k, v)
    return p.SerializeToString()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spb(clock) -> SparkplugAdapter:
    return SparkplugAdapter({"metric_map": {"Dimmer/Level": "dim_level_pct"}, "rebirth_interval_s": 5},
                            clock=clock)


def decode(a: SparkplugAdapter, topic: str, data: bytes):
    items, errors = a.decode_at(topic, data, NOW)
    return list(items), [str(e) for e in errors]


def readings(items) -> dict[tuple[str, str], float]:
    return {(r.device_id, r.metric): r.value for r in items if isinstance(r, Reading)}


def born(a: SparkplugAdapter, bd_seq: int = 1) -> None:
    decode(a, "spBv1.0/g/NBIRTH/e", payload(0, {"name": "bdSeq", "datatype": UINT64, "long_value": bd_seq},
                                            {"name": "Node Control/Rebirth", "datatype": BOOLEAN,
                                             "boolean_value": False}))
    items, errors = decode(a, "spBv1.0/g/DBIRTH/e/d1", payload(
        1, {"name": "Lamp/power_w", "alias": 1, "datatype": DOUBLE, "double_value": 41.5},
        {"name": "Dimmer/Level", "alias": 2, "datatype": INT32, "int_value": 70},
        {"name": "lamp_on", "alias": 3, "datatype": BOOLEAN, "boolean_value": True}))
    assert errors == []
    assert readings(items) == {("g/e/d1", "power_w"): 41.5, ("g/e/d1", "dim_level_pct"): 70.0,
                               ("g/e/d1", "lamp_on"): 1.0}
    assert StatusUpdate("g/e/d1", True, NOW) in items
    assert a.take_outgoing() == []


def test_births_register_aliases_and_data_may_carry_only_them(spb):
    born(spb)
    items, errors = decode(spb, "spBv1.0/g/DDATA/e/d1", payload(
        2, {"alias": 1, "double_value": 40.0}, {"alias": 2, "int_value": 0xFFFFFFFF, "timestamp": T0 - 5000}))
    assert errors == []
    assert readings(items) == {("g/e/d1", "power_w"): 40.0, ("g/e/d1", "dim_level_pct"): -1.0}
    assert [r.ts for r in items] == [NOW, datetime.fromtimestamp((T0 - 5000) / 1000, UTC)]
    assert spb.take_outgoing() == []


def test_seq_wraps_after_255_without_a_rebirth(spb):
    born(spb)
    for seq in [*range(2, 256), 0, 1]:
        _, errors = decode(spb, "spBv1.0/g/DDATA/e/d1", payload(seq, {"alias": 1, "double_value": 1.0}))
        assert errors == []
    assert spb.take_outgoing() == []


def test_a_gap_keeps_what_it_can_and_asks_for_one_rebirth(spb, clock):
    born(spb)
    items, errors = decode(spb, "spBv1.0/g/DDATA/e/d1", payload(7, {"alias": 1, "double_value": 39.0}))
    assert readings(items) == {("g/e/d1", "power_w"): 39.0} and errors == []  # the alias is known
    [(topic, raw)] = spb.take_outgoing()
    assert topic == "spBv1.0/g/NCMD/e"
    [m] = Payload.FromString(raw).metrics
    assert (m.name, m.datatype, m.boolean_value) == (REBIRTH_METRIC, BOOLEAN, True)
    # The stream goes on from the new seq; another gap soon after does not ask again...
    decode(spb, "spBv1.0/g/DDATA/e/d1", payload(8, {"alias": 1, "double_value": 38.0}))
    decode(spb, "spBv1.0/g/DDATA/e/d1", payload(20, {"alias": 1, "double_value": 37.0}))
    assert spb.take_outgoing() == []
    clock.t += 6  # ...until the interval has passed without a birth
    decode(spb, "spBv1.0/g/DDATA/e/d1", payload(40, {"alias": 1, "double_value": 36.0}))
    assert len(spb.take_outgoing()) == 1
    assert spb.decoder.rebirths_requested == 2


def test_data_before_birth_stores_named_metrics_and_explains_the_rest(spb):
    items, errors = decode(spb, "spBv1.0/g/DDATA/e/d9", payload(
        5, {"name": "Lamp/power_w", "double_value": 12.0}, {"alias": 7, "double_value": 3.0}))
    assert readings(items) == {("g/e/d9", "power_w"): 12.0}
    assert errors == ["metric alias 7 cannot be resolved: no birth certificate from device "
                      "'g/e/d9' yet; a rebirth was requested"]
    assert [t for t, _ in spb.take_outgoing()] == ["spBv1.0/g/NCMD/e"]


def test_unknown_and_unstorable_metrics_are_rejected_with_reasons(spb):
    born(spb)
    items, errors = decode(spb, "spBv1.0/g/DDATA/e/d1", payload(
        2, {"name": "Vendor/Serial", "datatype": STRING, "string_value": "x"},
        {"name": "power_w", "datatype": STRING, "string_value": "41"},
        {"name": "Lamp/power_w", "datatype": DOUBLE},  # no value, no is_null
        {"name": "Lamp/power_w", "datatype": DOUBLE, "is_null": True},  # unavailable: nothing
        {"alias": 99, "double_value": 1.0},
        {"double_value": 1.0},
        {"name": "bdSeq", "long_value": 3},  # bookkeeping
        {"name": "Lamp/power_w", "datatype": DOUBLE, "double_value": float("nan")}))
    assert errors == [
        "unknown metric 'Vendor/Serial': neither it nor its last '/' segment is a catalogue "
        "metric; map it in [sparkplug] metric_map",
        "metric 'power_w' is a String; only numbers and booleans can be stored",
        "metric 'Lamp/power_w' carries no value (and is_null is not set)",
        "metric alias 99 is in no birth certificate of 'g/e/d1'",
        "metric #5 has neither a name nor an alias",
    ]
    [nan] = items
    assert nan.quality is Quality.NOT_A_NUMBER


def test_signed_integers_are_twos_complement(spb):
    decode(spb, "spBv1.0/g/NBIRTH/e", payload(0))
    items, _ = decode(spb, "spBv1.0/g/DBIRTH/e/d1", payload(
        1, {"name": "a/plan", "datatype": INT8, "int_value": 0xFF},
        {"name": "b/mode", "datatype": INT64, "long_value": 2**64 - 2},
        {"name": "c/volume_vph", "datatype": UINT64, "long_value": 2**40}))
    assert readings(items) == {("g/e/d1", "plan"): -1.0, ("g/e/d1", "mode"): -2.0,
                               ("g/e/d1", "volume_vph"): float(2**40)}


def test_ndeath_of_this_birth_marks_devices_offline_a_stale_one_is_ignored(spb):
    born(spb, bd_seq=4)
    stale = payload(None, {"name": "bdSeq", "datatype": UINT64, "long_value": 3})
    assert decode(spb, "spBv1.0/g/NDEATH/e", stale) == ([], [])
    items, errors = decode(spb, "spBv1.0/g/NDEATH/e", payload(
        None, {"name": "bdSeq", "datatype": UINT64, "long_value": 4}))
    assert items == [StatusUpdate("g/e/d1", False, NOW)] and errors == []
    # After the death, data asks for a rebirth; what the last birth named is still stored.
    items, _ = decode(spb, "spBv1.0/g/DDATA/e/d1", payload(3, {"alias": 1, "double_value": 2.0}))
    assert readings(items) == {("g/e/d1", "power_w"): 2.0}
    assert len(spb.take_outgoing()) == 1


def test_a_node_with_metrics_of_its_own_has_a_status(spb):
    items, _ = decode(spb, "spBv1.0/g/NBIRTH/e", payload(
        0, {"name": "bdSeq", "long_value": 0}, {"name": "Cabinet/power_w", "alias": 1, "datatype": DOUBLE,
                                                "double_value": 900.0}))
    assert StatusUpdate("g/e", True, NOW) in items and readings(items) == {("g/e", "power_w"): 900.0}
    items, _ = decode(spb, "spBv1.0/g/NDATA/e", payload(1, {"alias": 1, "double_value": 950.0}))
    assert readings(items) == {("g/e", "power_w"): 950.0}
    items, _ = decode(spb, "spBv1.0/g/NDEATH/e", payload(None, {"name": "bdSeq", "long_value": 0}))
    assert items == [StatusUpdate("g/e", False, NOW)]


def test_ddeath_marks_the_device_offline(spb):
    born(spb)
    items, errors = decode(spb, "spBv1.0/g/DDEATH/e/d1", payload(2))
    assert items == [StatusUpdate("g/e/d1", False, NOW)] and errors == []
    decode(spb, "spBv1.0/g/DDATA/e/d1", payload(3, {"alias": 1, "double_value": 2.0}))
    assert len(spb.take_outgoing()) == 1  # data from a dead device: ask for its birth


@pytest.mark.parametrize("topic, reason", [
    ("spBv1.0/g/NBIRTH/e/d", "names a device"),
    ("spBv1.0/g/DDATA/e", "has no device id"),
    ("spBv1.0/g/XDATA/e", "unknown Sparkplug message type"),
    ("spBv1.0/g/NDATA", "is not spBv1.0/"),
    ("spBv1.0//NDATA/e", "group id '' in topic is empty"),
])
def test_bad_topics_say_why(spb, topic, reason):
    items, errors = decode(spb, topic, payload(0))
    assert items == [] and len(errors) == 1 and reason in errors[0], errors


def test_commands_and_host_states_are_not_data(spb):
    for topic in ("spBv1.0/STATE/other-host", "spBv1.0/g/NCMD/e", "spBv1.0/g/DCMD/e/d1"):
        assert decode(spb, topic, b'{"online": true}') == ([], [])


def test_garbage_is_a_decode_error(spb):
    items, errors = decode(spb, "spBv1.0/g/DDATA/e/d1", b"\xff\xff\xff")
    assert items == [] and "not a Sparkplug B protobuf Payload" in errors[0]


def test_a_command_writes_the_birth_metric_in_its_datatype(spb):
    born(spb)
    topic, raw, metric, value = spb.command("g/e/d1", "set_dim", {"level": 30})
    assert (topic, metric, value) == ("spBv1.0/g/DCMD/e/d1", "dim_level_pct", 30.0)
    [m] = Payload.FromString(raw).metrics
    assert (m.name, m.alias, m.datatype, m.int_value) == ("Dimmer/Level", 2, INT32, 30)
    topic, raw, metric, _ = spb.command("g/e/d1", "switch", {"on": False})
    [m] = Payload.FromString(raw).metrics
    assert (m.name, m.alias, m.datatype, m.boolean_value, metric) == ("lamp_on", 3, BOOLEAN, False, "lamp_on")
    # Without a birth (the node has not spoken since we started): the mapped or catalogue name.
    _, raw, _, _ = spb.command("g/e/other", "set_dim", {"level": 5})
    [m] = Payload.FromString(raw).metrics
    assert (m.name, m.HasField("alias"), m.datatype, m.double_value) == ("Dimmer/Level", False, DOUBLE, 5.0)
    with pytest.raises(ValueError, match="no Sparkplug metric write"):
        spb.command("g/e/d1", "reboot", {})


def test_host_state_is_sparkplug_3_json():
    a = SparkplugAdapter({"host_id": "scada-1"})
    assert a.host_state(True, 1700000000000) == (
        "spBv1.0/STATE/scada-1", b'{"online": true, "timestamp": 1700000000000}')
    assert SparkplugAdapter({"host_id": ""}).host_state(False, 1) is None


def test_config_rejects_bad_targets_and_host_ids():
    with pytest.raises(ValueError, match="snake_case"):
        SparkplugConfig(metric_map={"A": "Power W"})
    with pytest.raises(ValueError, match="host id"):
        SparkplugConfig(host_id="a/b")
