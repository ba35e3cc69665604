"""Restore after a restart, from plain data: the stored alarms and readings in, the rule
engine's state and what to close out; nothing fires twice."""

from __future__ import annotations

from rules.models import parse_rule
from rules.restore import DeviceState, OpenAlarm, Snapshot, restore, restored_level
from tests.rules.helpers import METRICS, T0, batch, engine, events

LOW = {"id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
       "metric": "pressure_bar", "below": 1.5, "low_low": 1.0, "deadband": 0.1,
       "severity": "major"}
SILENT = {"id": "silent", "kind": "stale", "select": {"kind": "pressure_sensor"},
          "missed_intervals": 3, "severity": "minor"}


def alarm(id_: int, rule: str, device: str, key: int | None, value: float | None = 1.4,
          severity: str = "major", active: bool = True) -> OpenAlarm:
    return OpenAlarm(id_, rule, device, key, severity, active, T0 - 60, value)


def test_an_open_alarm_is_restored_and_not_raised_again():
    eng = engine(LOW)
    out = restore(eng, Snapshot(open=[alarm(7, "p-low", "PS-1", 101)]), {"p-low"}, now=T0)
    assert out.closing == [] and out.shelves == []
    assert eng.level("p-low", 101) == -1
    # Still low after the restart: nothing new; back to normal: the stored alarm clears.
    assert eng.evaluate(batch(eng, [(101, "pressure_bar", T0, 1.3)])) == []
    assert events(eng.evaluate(batch(eng, [(101, "pressure_bar", T0 + 1, 2.0)]))) == \
        [("p-low", "clear", 101)]


def test_low_low_comes_back_as_its_level():
    rule = parse_rule(LOW)
    assert restored_level(rule, "critical", 0.9) == -2
    assert restored_level(rule, "major", 1.4) == -1
    assert restored_level(rule, "major", None) == -1


def test_alarms_of_deleted_or_unselected_devices_are_closed():
    eng = engine(LOW)
    snap = Snapshot(open=[alarm(1, "p-low", "PS-gone", None), alarm(2, "p-low", "SL-0", 10),
                          alarm(3, "p-low", "PS-2", 102)])
    out = restore(eng, snap, {"p-low"}, now=T0)
    assert out.closing == [(1, "device PS-gone no longer exists"),
                           (2, "rule p-low no longer selects SL-0")]
    assert eng.level("p-low", 102) == -1 and eng.level("p-low", 10) == 0


def test_rules_not_fresh_keep_their_state():
    eng = engine(LOW)
    out = restore(eng, Snapshot(open=[alarm(1, "p-low", "PS-gone", None)]), set(), now=T0)
    assert out.closing == [] and eng.level("p-low", 101) == 0


def test_shelves_come_back_as_a_heap():
    eng = engine(LOW)
    out = restore(eng, Snapshot(shelves=[(T0 + 30, 5), (T0 + 10, 6), (T0 + 20, 4)]), {"p-low"},
                  now=T0)
    assert out.shelves[0] == (T0 + 10, 6) and sorted(out.shelves) == \
        [(T0 + 10, 6), (T0 + 20, 4), (T0 + 30, 5)]


def test_latest_readings_are_replayed_without_emitting_then_fire_once():
    eng = engine(LOW)
    state = DeviceState(101, values={"pressure_bar": 1.2}, times={"pressure_bar": T0 * 1000},
                        quality={"pressure_bar": 0}, last_seen=T0)
    restore(eng, Snapshot(states=[state], metric_ids=frozenset({METRICS["pressure_bar"].id})),
            {"p-low"}, now=T0)
    # Replayed, not emitted: the condition is known but not raised yet. The raise lost
    # with the previous process comes from fire() (due at once, no on-delay), once.
    assert eng.level("p-low", 101) == 0
    assert events(eng.fire(T0 + 1)) == [("p-low", "raise", 101)]
    assert eng.level("p-low", 101) == -1 and eng.fire(T0 + 2) == []
    assert eng.evaluate(batch(eng, [(101, "pressure_bar", T0 + 3, 1.2)])) == []


def test_stale_deadlines_count_from_last_seen_plus_the_servers_downtime():
    eng = engine(SILENT)
    states = [DeviceState(100, last_seen=T0), DeviceState(101, last_seen=T0 + 5)]
    restore(eng, Snapshot(states=states, all_metrics=True), {"silent"}, now=T0 + 10, grace=100)
    assert eng.next_deadline() == T0 + 30 + 100


def test_an_offline_device_without_a_recorded_change_counts_from_now():
    eng = engine({"id": "sensor-bad", "kind": "fault", "select": {"kind": "pressure_sensor"},
                  "metric": "pressure_bar", "offline": True, "severity": "minor"})
    restore(eng, Snapshot(states=[DeviceState(100, status="offline")]), {"sensor-bad"}, now=T0)
    out = eng.fire(T0)
    assert events(out) == [("sensor-bad", "raise", 100)]
    assert out[0].details["since"] == T0
