"""The simulator's pure parts: patterns, faults and the world, with no services."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from server.simulate.faults import FAULT_KINDS, FaultBook
from server.simulate.fleet import Fleet
from server.simulate.patterns import Patterns
from server.simulate.world import World
from server.store.catalog import KINDS, METRIC_NAMES
from tests.server.helpers import CENTRE, HCM, city_rows, local


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.from_rows(city_rows())


def world(fleet: Fleet, seed: int = 42) -> World:
    return World(fleet, Patterns(fleet, seed), FaultBook(fleet, seed, interval_s=None))


def test_lamps_on_at_night_off_at_noon(fleet):
    p = Patterns(fleet)
    night, late, noon = p.streetlight(local(10, 22)), p.streetlight(local(11, 2)), \
        p.streetlight(local(11, 12))
    rated = fleet.groups["streetlight"].prop("rated_power_w", 100)
    assert night["lamp_on"].all() and (night["dim_level_pct"] == 100).all()
    assert np.allclose(night["power_w"], rated, rtol=0.08)
    assert late["lamp_on"].all() and (late["dim_level_pct"] == 50).all()
    assert np.allclose(late["power_w"], rated / 2, rtol=0.08)
    assert not noon["lamp_on"].any() and (noon["power_w"] == 0).all()
    assert not night["lamp_fault"].any() and not night["driver_fault"].any()


def test_same_seed_same_values_other_seed_other_noise(fleet):
    t = local(10, 22, 17)
    a, b, c = Patterns(fleet, 42), Patterns(fleet, 42), Patterns(fleet, 7)
    for kind in fleet.groups:
        va, vb = a.values(kind, t), b.values(kind, t)
        assert va.keys() == vb.keys()
        for m in va:
            np.testing.assert_array_equal(va[m], vb[m])
    assert not np.array_equal(a.streetlight(t)["power_w"], c.streetlight(t)["power_w"])


def test_metric_names_are_the_contracts(fleet):
    p = Patterns(fleet)
    declared = {k.kind: set(k.metrics or ()) for k in KINDS}
    for kind in fleet.groups:
        names = set(p.values(kind, local(10, 9)))
        assert names <= METRIC_NAMES, names - METRIC_NAMES
        if declared.get(kind):
            assert names <= declared[kind], (kind, names - declared[kind])


def test_water_night_minimum_below_morning_peak(fleet):
    p = Patterns(fleet)
    night = p.water_meter(local(10, 3))["flow_m3h"].mean()
    morning = p.water_meter(local(10, 7))["flow_m3h"].mean()
    evening = p.water_meter(local(10, 19, 30))["flow_m3h"].mean()
    assert night < morning / 3 and night < evening / 3
    assert (p.pressure_sensor(local(10, 3))["pressure_bar"]
            > p.pressure_sensor(local(10, 7))["pressure_bar"]).all()
    fm = p.flow_meter(local(10, 3))["flow_m3h"], p.flow_meter(local(10, 7))["flow_m3h"]
    assert (fm[0] < fm[1]).all()
    battery = p.water_meter(local(10, 12))["battery_pct"]
    assert ((battery > 70) & (battery <= 97)).all()


def test_counters_never_go_backwards(fleet):
    p = Patterns(fleet)
    start = local(10, 0)
    counters = {"streetlight": ("energy_kwh", "burning_hours"), "water_meter": ("volume_m3",),
                "flow_meter": ("volume_m3",)}
    last: dict = {}
    for step in range(0, 2 * 86400, 600):  # every 10 min over two days and two midnights
        for kind, metrics in counters.items():
            vals = p.values(kind, start + step)
            for m in metrics:
                if (kind, m) in last:
                    assert (vals[m] >= last[kind, m] - 1e-9).all(), (kind, m, step)
                last[kind, m] = vals[m]
    # a 120 W lamp burns about 12 h a night, 5 of them at half power
    day = p.streetlight(start + 86400)["energy_kwh"] - p.streetlight(start)["energy_kwh"]
    assert 0.85 < day.max() < 1.3


def test_traffic_env_camera_believable(fleet):
    p = Patterns(fleet)
    day, night = p.traffic_controller(local(10, 17, 30)), p.traffic_controller(local(10, 3))
    assert day["mode"][0] == 7 and night["mode"][0] == 8
    assert day["volume_vph"][0] > 5 * night["volume_vph"][0]
    assert 0 <= p.road_segment(local(10, 17))["congestion_level"][0] <= 4
    noon, dawn = p.env_sensor(local(10, 14, 30)), p.env_sensor(local(10, 5))
    assert 27 < noon["temperature_c"][0] < 31 and 17 < dawn["temperature_c"][0] < 21
    assert noon["humidity_pct"][0] < dawn["humidity_pct"][0]
    assert p.env_sensor(local(10, 17))["pm25_ugm3"][0] > p.env_sensor(local(10, 3))["pm25_ugm3"][0]
    cams = p.camera(local(10, 12))
    np.testing.assert_array_equal(cams["online"], cams["recording"])


def test_cabinet_trip_darkens_every_lamp_of_that_cabinet(fleet):
    w = world(fleet)
    t = local(10, 22)
    before = w.values("lighting_cabinet", t)["power_w"].copy()
    fault = w.faults.inject("cabinet_trip", "LC-0001", now=t, duration_s=300)
    lamps, cabs = w.values("streetlight", t), w.values("lighting_cabinet", t)
    fed = fleet.lamp_cabinet == fleet.groups["lighting_cabinet"].index["LC-0001"]
    assert fed.sum() == 6
    assert not lamps["lamp_on"][fed].any() and (lamps["power_w"][fed] == 0).all()
    assert lamps["lamp_fault"][fed].all()
    assert lamps["lamp_on"][~fed].all() and not lamps["lamp_fault"][~fed].any()
    assert cabs["breaker_tripped"].tolist() == [True, False]
    assert cabs["power_w"][0] < 20 < before[0] and cabs["current_l1_a"][0] < 0.1
    assert cabs["power_w"][1] == pytest.approx(before[1], rel=0.05)
    assert {("streetlight", int(i)) for i in np.flatnonzero(fed)} <= w.faults.changed
    w.advance(t + 301)
    assert fault not in w.faults.active
    assert w.values("streetlight", t + 301)["lamp_on"].all()


def test_lamp_fault_and_day_burner(fleet):
    w = world(fleet)
    w.faults.inject("lamp_fault", "SL-1002", now=local(10, 22))
    lamps = w.values("streetlight", local(10, 22))
    i = fleet.groups["streetlight"].index["SL-1002"]
    assert lamps["lamp_fault"][i] and not lamps["lamp_on"][i] and lamps["power_w"][i] == 0
    assert lamps["lamp_fault"].sum() == 1
    w.faults.inject("day_burner", "SL-2001", now=local(10, 12))
    noon = w.values("streetlight", local(10, 12))
    j = fleet.groups["streetlight"].index["SL-2001"]
    assert noon["lamp_on"].tolist().count(True) == 1 and noon["lamp_on"][j]


def test_main_burst_drops_nearby_pressure_over_a_minute(fleet):
    w = world(fleet)
    t = local(10, 11)
    base = w.values("pressure_sensor", t)["pressure_bar"].copy()
    flow = w.values("flow_meter", t)["flow_m3h"].copy()
    w.faults.inject("main_burst", CENTRE, now=t)
    ids = fleet.groups["pressure_sensor"].ids
    half = w.values("pressure_sensor", t + 30)["pressure_bar"]
    full = w.values("pressure_sensor", t + 90)["pressure_bar"]
    drop = dict(zip(ids, base - full, strict=True))
    assert 1.0 <= drop["PS-MID"] < drop["PS-NEAR"] <= 1.5 + 0.05
    assert abs(drop["PS-FAR"]) < 0.1
    assert 0.4 < base[ids.index("PS-NEAR")] - half[ids.index("PS-NEAR")] < 0.9
    assert w.values("flow_meter", t + 90)["flow_m3h"][0] > flow[0] + 20


def test_nan_silent_and_flash(fleet):
    w = world(fleet)
    t = local(10, 11)
    w.faults.inject("sensor_nan", "PS-FAR", now=t)
    assert np.isnan(w.values("pressure_sensor", t)["pressure_bar"]).tolist() == [
        True, False, False]  # ids sort as PS-FAR, PS-MID, PS-NEAR
    w.faults.inject("silent", "WM-0002", now=t)
    assert w.silent("water_meter").tolist() == [False, False, True, False]
    w.faults.inject("controller_flash", "TC-0001", now=t)
    assert w.values("traffic_controller", t)["mode"][0] == 3
    assert w.faults.clear() == 3 and not w.silent("water_meter").any()
    with pytest.raises(ValueError, match="needs a streetlight"):
        w.faults.inject("lamp_fault", "LC-0001", now=t)
    with pytest.raises(ValueError, match="unknown fault kind"):
        w.faults.inject("meteor", now=t)


def test_fault_schedule_is_deterministic(fleet):
    def run(seed: int) -> list[tuple]:
        book = FaultBook(fleet, seed, interval_s=60)
        start, seen = local(10, 0), []
        for s in range(0, 3600, 5):
            book.advance(start + s)
            seen += [(f.kind, f.device, round(f.start)) for f in book.active
                     if (f.kind, f.device, round(f.start)) not in seen]
        return seen

    first = run(1)
    assert first == run(1) and first != run(2)
    assert 30 < len(first) < 100  # one a minute on average over an hour
    assert {k for k, _, _ in first} <= set(FAULT_KINDS)


def test_the_first_scheduled_fault_comes_within_half_a_minute(fleet):
    """Whoever starts the demo sees an alarm soon, whatever the mean interval."""
    for seed in range(5):
        book = FaultBook(fleet, seed, interval_s=3600)
        start = local(10, 0)
        for s in range(0, 31):
            book.advance(start + s)
        assert len(book.active) == 1, seed
        assert book.active[0].start <= start + 30


def test_set_dim_command_holds_the_level(fleet):
    w = world(fleet)
    t = local(10, 21)
    rated = fleet.groups["streetlight"].prop("rated_power_w", 100)
    w.set_dim(0, 30.0)
    lamps = w.values("streetlight", t)
    assert lamps["dim_level_pct"][0] == 30 and lamps["power_w"][0] == pytest.approx(
        rated[0] * 0.3, rel=0.05)
    assert (lamps["dim_level_pct"][1:] == 100).all()
    assert not w.values("streetlight", local(11, 12))["lamp_on"][0]  # off by day


def test_sun_times_match_thai_nguyen(fleet):
    p = Patterns(fleet)
    k = p.sun.day_index(local(21, 12))  # the March equinox: ~12 h of night
    rise = datetime.fromtimestamp(p.sun.sunrise(k), HCM)
    sset = datetime.fromtimestamp(p.sun.sunset(k), HCM)
    assert timedelta(hours=5, minutes=50) < rise - rise.replace(hour=0, minute=0) \
        < timedelta(hours=6, minutes=15)
    assert timedelta(hours=17, minutes=55) < sset - sset.replace(hour=0, minute=0) \
        < timedelta(hours=18, minutes=20)
