"""Topology and neighbourhood incidents over member alarms (pure)."""

from __future__ import annotations

from rules.devices import distance_m
from tests.rules.helpers import T0, batch, engine

LAMP_FAULT = {"id": "lamp-fault", "kind": "fault", "select": {"kind": "streetlight"},
              "metric": "lamp_fault", "severity": "minor"}
FEEDER = {"id": "feeder-dark", "kind": "topology", "member": "lamp-fault", "min_count": 4,
          "within": "5m", "severity": "critical"}


def test_one_incident_on_the_parent_children_suppressed_by_design():
    eng = engine(LAMP_FAULT, FEEDER)
    # Two lamps fail early: ordinary alarms.
    out = eng.evaluate(batch(eng, [(10, "lamp_fault", T0, 1.0), (11, "lamp_fault", T0, 1.0)]))
    assert [(t.rule, t.event, t.incident_rule) for t in out] == [
        ("lamp-fault", "raise", None), ("lamp-fault", "raise", None)]
    # The rest of the feeder goes dark in one batch: the incident first, then its children.
    out = eng.evaluate(batch(eng, [(k, "lamp_fault", T0 + 60, 1.0) for k in (12, 13, 14, 15)]))
    assert out[0].rule == "feeder-dark" and out[0].event == "raise" and out[0].device == 1
    assert out[0].children == (10, 11, 12, 13, 14, 15)
    raises = [t for t in out if t.rule == "lamp-fault" and t.event == "raise"]
    assert len(raises) == 4 and all(t.incident_device == 1 for t in raises)
    suppress = [t for t in out if t.event == "suppress"]
    assert sorted(t.device for t in suppress) == [10, 11]
    # Power back: the lamps clear, the incident with the last one.
    out = eng.evaluate(batch(eng, [(k, "lamp_fault", T0 + 600, 0.0) for k in range(10, 15)]))
    assert [t.rule for t in out] == ["lamp-fault"] * 5
    out = eng.evaluate(batch(eng, [(15, "lamp_fault", T0 + 601, 0.0)]))
    assert [(t.rule, t.event) for t in out] == [("lamp-fault", "clear"), ("feeder-dark", "clear")]


def test_children_failing_slowly_are_not_an_incident():
    eng = engine(LAMP_FAULT, FEEDER)
    out = []
    for i, k in enumerate((10, 11, 12, 13)):
        out += eng.evaluate(batch(eng, [(k, "lamp_fault", T0 + i * 400, 1.0)]))
    assert {t.rule for t in out} == {"lamp-fault"}


def test_neighbourhood_incident_at_the_weighted_centroid():
    drop = {"id": "drop", "kind": "threshold", "select": {"kind": "pressure_sensor"},
            "metric": "pressure_bar", "below": 2.0, "severity": "major"}
    burst = {"id": "burst", "kind": "neighbourhood", "member": "drop", "min_count": 2,
             "radius_m": 500, "within": "3m", "severity": "critical"}
    eng = engine(drop, burst)
    # Sensors 0..3 are 300 m apart; 1 and 2 drop, 1 (0.5 below) more than 2 (0.1 below).
    out = eng.evaluate(batch(eng, [(101, "pressure_bar", T0, 1.5), (102, "pressure_bar", T0, 1.9),
                                   (100, "pressure_bar", T0, 3.0)]))
    inc = out[0]
    assert inc.rule == "burst" and inc.children == (101, 102)
    assert inc.device == 101  # nearest the estimate
    lon1, lon2 = eng.table.lon[eng.table.slot(101)], eng.table.lon[eng.table.slot(102)]
    assert lon1 < inc.point[0] < (lon1 + lon2) / 2  # pulled towards the bigger drop
    assert distance_m(inc.point[0], inc.point[1], lon1, 21.55) < 100
    assert all(t.incident_device == 101 for t in out if t.rule == "drop")
    # A third sensor nearby joins the incident instead of making another.
    out = eng.evaluate(batch(eng, [(103, "pressure_bar", T0 + 5, 1.0)]))
    assert [(t.rule, t.incident_device) for t in out] == [("drop", 101)]
