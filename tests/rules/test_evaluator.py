"""The pure evaluator: each rule kind raising and clearing, delays, deadband, timers."""

from __future__ import annotations

import numpy as np

from rules.sun import sun_times
from tests.rules.helpers import T0, batch, engine, events

LOW = {"id": "p-low", "kind": "threshold", "select": {"kind": "pressure_sensor"},
       "metric": "pressure_bar", "below": 1.5, "low_low": 1.0, "deadband": 0.1,
       "severity": "major"}


def test_threshold_raises_escalates_and_clears_with_deadband():
    eng = engine(LOW)
    out = eng.evaluate(batch(eng, [(100, "pressure_bar", T0, 2.0), (101, "pressure_bar", T0, 1.4)]))
    assert events(out) == [("p-low", "raise", 101)]
    assert out[0].level == -1 and out[0].severity == "major" and out[0].value == 1.4
    assert "below 1.5" in out[0].text
    out = eng.evaluate(batch(eng, [(101, "pressure_bar", T0 + 1, 0.9)]))
    assert [(t.event, t.level, t.severity) for t in out] == [("raise", -2, "critical")]
    # back above low-low but within its deadband: stays low-low; then only low
    assert eng.evaluate(batch(eng, [(101, "pressure_bar", T0 + 2, 1.05)])) == []
    out = eng.evaluate(batch(eng, [(101, "pressure_bar", T0 + 3, 1.2)]))
    assert [(t.event, t.level) for t in out] == [("update", -1)]
    # above the limit but within the deadband: still low
    assert eng.evaluate(batch(eng, [(101, "pressure_bar", T0 + 4, 1.55)])) == []
    out = eng.evaluate(batch(eng, [(101, "pressure_bar", T0 + 5, 1.65)]))
    assert [(t.event, t.level) for t in out] == [("clear", 0)]


def test_readings_in_one_batch_are_seen_in_time_order_and_old_ones_ignored():
    eng = engine(LOW)
    # Out of order inside the batch: 1.4 at T0, 2.0 at T0+1 → raise then clear.
    out = eng.evaluate(batch(eng, [(100, "pressure_bar", T0 + 1, 2.0), (100, "pressure_bar", T0, 1.4)]))
    assert [t.event for t in out] == ["raise", "clear"]
    # A redelivery of the older reading changes nothing.
    assert eng.evaluate(batch(eng, [(100, "pressure_bar", T0, 1.4)])) == []


def test_bad_quality_is_not_a_process_value():
    eng = engine(LOW)
    assert eng.evaluate(batch(eng, [(100, "pressure_bar", T0, 0.0, 2)])) == []


def test_on_delay_fires_from_the_timer_and_off_delay_holds():
    eng = engine(LOW | {"on_delay": "15s", "off_delay": "1m"})
    assert eng.evaluate(batch(eng, [(100, "pressure_bar", T0, 1.2)])) == []
    assert eng.next_deadline() == T0 + 15
    assert eng.fire(T0 + 14.9) == []
    out = eng.fire(T0 + 15)
    assert events(out) == [("p-low", "raise", 100)]
    assert eng.next_deadline() == float("inf")
    # a brief return to normal does not clear (off-delay), a relapse cancels the clear
    assert eng.evaluate(batch(eng, [(100, "pressure_bar", T0 + 20, 2.0)])) == []
    assert eng.next_deadline() == T0 + 80
    assert eng.evaluate(batch(eng, [(100, "pressure_bar", T0 + 30, 1.2)])) == []
    assert eng.fire(T0 + 100) == []
    assert eng.evaluate(batch(eng, [(100, "pressure_bar", T0 + 40, 2.0)])) == []
    assert [t.event for t in eng.fire(T0 + 100)] == ["clear"]
    # a spike shorter than the on-delay never raises
    assert eng.evaluate(batch(eng, [(101, "pressure_bar", T0, 1.2)])) == []
    assert eng.evaluate(batch(eng, [(101, "pressure_bar", T0 + 5, 2.0)])) == []
    assert eng.fire(T0 + 60) == []


def test_rate_of_change():
    eng = engine({"id": "drop", "kind": "rate_of_change", "select": {"kind": "pressure_sensor"},
                  "metric": "pressure_bar", "window": "1m", "below": -0.5, "severity": "major"})
    rows = [(100, "pressure_bar", T0 + 10 * i, 3.0) for i in range(7)]
    assert eng.evaluate(batch(eng, rows)) == []
    # 1 bar lost in 30 s: -1 bar/min over the minute window's oldest sample (60 s back: -1/min)
    out = []
    for i, v in enumerate([2.7, 2.4, 2.1, 2.0, 2.0]):
        out += eng.evaluate(batch(eng, [(100, "pressure_bar", T0 + 70 + 10 * i, v)]))
    assert [t.event for t in out] == ["raise"]
    assert out[0].value < -0.5
    later = []
    for i in range(8):
        later += eng.evaluate(batch(eng, [(100, "pressure_bar", T0 + 120 + 10 * i, 2.0)]))
    assert [t.event for t in later] == ["clear"]


def test_stale_fires_at_the_deadline_and_clears_on_data():
    eng = engine({"id": "silent", "kind": "stale", "select": {"kind": "pressure_sensor"},
                  "missed_intervals": 3, "severity": "minor"})
    eng.evaluate(batch(eng, [(100, "pressure_bar", T0, 2.0), (101, "pressure_bar", T0 + 5, 2.0)]))
    assert eng.next_deadline() == T0 + 30  # 3 × 10 s
    out = eng.fire(T0 + 30)
    assert events(out) == [("silent", "raise", 100)]
    assert out[0].value == 30
    assert eng.next_deadline() == T0 + 35
    out = eng.evaluate(batch(eng, [(100, "pressure_bar", T0 + 40, 2.0)]))
    assert events(out) == [("silent", "clear", 100)]


def test_fault_metric_quality_and_offline():
    eng = engine(
        {"id": "lamp-fault", "kind": "fault", "select": {"kind": "streetlight"},
         "metric": "lamp_fault", "severity": "minor"},
        {"id": "sensor-bad", "kind": "fault", "select": {"kind": "pressure_sensor"},
         "metric": "pressure_bar", "offline": True, "severity": "minor"},
    )
    out = eng.evaluate(batch(eng, [(10, "lamp_fault", T0, 1.0), (11, "lamp_fault", T0, 0.0),
                                   (100, "pressure_bar", T0, 0.0, 2)]))
    assert sorted(events(out)) == [("lamp-fault", "raise", 10), ("sensor-bad", "raise", 100)]
    out = eng.evaluate(batch(eng, [(10, "lamp_fault", T0 + 1, 0.0), (100, "pressure_bar", T0 + 1, 2.0)]))
    assert sorted(events(out)) == [("lamp-fault", "clear", 10), ("sensor-bad", "clear", 100)]
    # offline from the link; a retained "offline" (a broker replay) never raises
    assert eng.status([101], [False], [T0 + 2], [True]) == []
    out = eng.status([101], [False], [T0 + 2], [False])
    assert events(out) == [("sensor-bad", "raise", 101)] and "offline" in out[0].text
    out = eng.evaluate(batch(eng, [(101, "pressure_bar", T0 + 3, 2.0)]))
    assert events(out) == [("sensor-bad", "clear", 101)]


def test_state_match():
    eng = engine({"id": "flash", "kind": "state", "select": {"kind": "traffic_controller"},
                  "metric": "mode", "in": [1, 3, 4], "severity": "major"})
    assert eng.evaluate(batch(eng, [(200, "mode", T0, 7)])) == []
    assert events(eng.evaluate(batch(eng, [(200, "mode", T0 + 1, 3)]))) == [("flash", "raise", 200)]
    assert eng.evaluate(batch(eng, [(200, "mode", T0 + 2, 4)])) == []
    assert events(eng.evaluate(batch(eng, [(200, "mode", T0 + 3, 8)]))) == [("flash", "clear", 200)]


def test_lighting_schedule_uses_the_sun_at_each_lamp():
    eng = engine({"id": "lamp-sched", "kind": "lighting_schedule", "select": {"kind": "streetlight"},
                  "margin": "20m", "severity": "warning"})
    rise, set_ = sun_times(T0, 21.5, 105.8)
    noon, midnight = (rise + set_) / 2, set_ + 4 * 3600
    out = eng.evaluate(batch(eng, [(10, "lamp_on", noon, 1.0), (11, "lamp_on", noon, 0.0)]))
    assert [(t.device, t.level) for t in out] == [(10, 1)]
    assert "day-burner" in out[0].text
    out = eng.evaluate(batch(eng, [(10, "lamp_on", midnight, 1.0), (11, "lamp_on", midnight, 0.0)]))
    assert sorted((t.device, t.event, t.level) for t in out) == [(10, "clear", 0), (11, "raise", -1)]
    # ten minutes after sunset a lamp still off is within the margin: no verdict
    assert eng.evaluate(batch(eng, [(12, "lamp_on", set_ + 600, 0.0)])) == []


def test_sun_times_agree_with_astral():
    from datetime import UTC, datetime

    from astral import Observer
    from astral.sun import sun

    for lat, lon, day in [(21.59, 105.85, "2026-06-21"), (52.37, 4.9, "2026-03-01"),
                          (-33.9, 151.2, "2026-09-09")]:
        d = datetime.fromisoformat(day).date()
        s = sun(Observer(lat, lon), date=d)
        noon_utc = datetime(d.year, d.month, d.day, 12, tzinfo=UTC).timestamp() - lon / 360 * 86400
        rise, set_ = sun_times(np.array([noon_utc]), lat, lon)
        for ours, theirs in ((rise[0], s["sunrise"]), (set_[0], s["sunset"])):
            diff = (ours - theirs.timestamp() + 43200) % 86400 - 43200
            assert abs(diff) < 90, (lat, lon, day, diff)
