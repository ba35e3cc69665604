"""Lighting schedules, pure: step times at each lamp, exceptions, and the lighting rule
checking lamps against their schedule rather than the sun."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from pydantic import ValidationError

from rules.schedules import Assignments, Plan, Profile, local_night, parse_at
from rules.sun import sun_times
from tests.rules.helpers import batch, engine

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
NIGHT = {"steps": [{"at": "dusk+10m", "level": 100}, {"at": "23:00", "level": 50},
                   {"at": "05:00", "level": 100}, {"at": "dawn-10m", "level": 0}]}
LAT, LON = 21.59, 105.85  # Thái Nguyên


def utc(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def hm(t: float, tz=HCM) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%H:%M")


def test_step_times_are_parsed_and_written_one_way():
    assert parse_at("dusk+10m").text == "dusk+10m"
    assert parse_at(" Sunset - 5 min ").text == "dusk-5m"
    assert parse_at("dawn+1h").text == "dawn+1h"
    assert parse_at("dusk+90s").text == "dusk+90s"
    assert parse_at("5:30").text == "05:30"
    for bad, why in (("noon", "not a step time"), ("dusk+7h", "at most 6h"), ("24:00", "not a step"),
                     ("dusk+ten", "a duration")):
        with pytest.raises(ValueError, match=why):
            parse_at(bad)


def test_profiles_are_refused_with_the_field_that_is_wrong():
    cases = [
        ({"steps": []}, ("steps",), "at least 1"),
        ({"steps": [{"at": "dusk", "level": 120}]}, ("steps", 0, "level"), "less than or equal to 100"),
        ({"steps": [{"at": "dusk", "level": True}]}, ("steps", 0, "level"), "not true or false"),
        ({"steps": [{"at": "midnight", "level": 5}]}, ("steps", 0, "at"), "not a step time"),
        ({"steps": [{"at": "dawn", "level": 0}, {"at": "dusk", "level": 100}]}, ("steps",),
         "order of a night"),
        ({"steps": [{"at": "05:00", "level": 0}, {"at": "18:00", "level": 100}]}, ("steps",),
         "noon to noon"),
        ({"steps": [{"at": "dusk", "level": 1}], "exceptions": [
            {"date": "02-09", "steps": [{"at": "dawn", "level": 0}, {"at": "dusk", "level": 9}]}]},
         ("exceptions", 0, "steps"), "order of a night"),
        ({"steps": [{"at": "dusk", "level": 1}], "exceptions": [{"steps": [{"at": "dusk", "level": 1}]}]},
         ("exceptions", 0), "needs date"),
        ({"steps": [{"at": "dusk", "level": 1}], "exceptions": [
            {"date": "2027-02-30", "steps": [{"at": "dusk", "level": 1}]}]},
         ("exceptions", 0, "date"), "not a date of the calendar"),
        ({"steps": [{"at": "dusk", "level": 1}], "exceptions": [
            {"from": "2027-02-10", "to": "2027-02-05", "steps": [{"at": "dusk", "level": 1}]}]},
         ("exceptions", 0), "before from"),
    ]
    for doc, loc, words in cases:
        with pytest.raises(ValidationError) as err:
            Profile.model_validate(doc)
        first = err.value.errors()[0]
        assert first["loc"] == loc and words in first["msg"], (doc, first)


def test_the_example_night_at_a_lamp_in_thai_nguyen():
    plan = Plan(Profile.model_validate(NIGHT), HCM)
    night = local_night(HCM, datetime(2026, 12, 5, 20, tzinfo=HCM))
    times, steps = plan.occurrences(night, LAT, LON)
    _, sunset = sun_times(np.array([utc("2026-12-05T05:00:00+00:00")]), LAT, LON)
    sunrise, _ = sun_times(np.array([utc("2026-12-06T05:00:00+00:00")]), LAT, LON)
    assert times[0, 0] == (sunset[0] + 600) // 60 * 60  # floored to the minute
    assert [hm(t) for t in times[:, 0]] == [hm(sunset[0] + 600), "23:00", "05:00", hm(sunrise[0] - 600)]
    assert list(steps.levels) == [100, 50, 100, 0]
    # what is in force, and what comes next, at a few moments of that night
    for at, level, nxt, nxt_level in (("2026-12-05T15:00", 0, hm(sunset[0] + 600), 100),
                                      ("2026-12-05T22:59", 100, "23:00", 50),
                                      ("2026-12-06T03:00", 50, "05:00", 100),
                                      ("2026-12-06T09:00", 0, None, 100)):
        t = datetime.fromisoformat(at).replace(tzinfo=HCM).timestamp()
        cur, nx = plan.current(t, LAT, LON), plan.next(t, LAT, LON)
        assert cur[1][0] == level, at
        assert nx[1][0] == nxt_level and (nxt is None or hm(nx[0][0]) == nxt), at
    share = plan.night_plan(night, LAT, LON)["energy_share"]
    assert 0.6 < share < 0.8  # 6 of 13 hours at half power, a few minutes dark at each end


def test_a_clock_step_never_switches_lamps_on_after_dawn():
    """Oslo at midsummer: dawn-10m is long before 05:00, so the 05:00 step lasts no time."""
    oslo = ZoneInfo("Europe/Oslo")
    plan = Plan(Profile.model_validate(NIGHT), oslo)
    night = local_night(oslo, datetime(2026, 6, 21, 20, tzinfo=oslo))
    times, _ = plan.occurrences(night, 59.91, 10.75)
    assert hm(times[2, 0], oslo) == hm(times[3, 0], oslo) < "04:00"
    t = datetime(2026, 6, 22, 5, 30, tzinfo=oslo).timestamp()
    assert plan.current(t, 59.91, 10.75)[1][0] == 0  # off, as dawn-10m left it


def test_exceptions_replace_the_nights_they_cover():
    doc = {**NIGHT, "exceptions": [
        {"name": "Tết", "from": "2027-02-05", "to": "2027-02-10",
         "steps": [{"at": "dusk", "level": 100}, {"at": "dawn", "level": 0}]},
        {"name": "Quốc khánh", "date": "09-02", "steps": [{"at": "dusk", "level": 100},
                                                          {"at": "dawn", "level": 0}]}]}
    plan = Plan(Profile.model_validate(doc), HCM)
    for day, exception in ((datetime(2027, 2, 4), None), (datetime(2027, 2, 5), "Tết"),
                           (datetime(2027, 2, 10), "Tết"), (datetime(2027, 2, 11), None),
                           (datetime(2027, 9, 2), "Quốc khánh"), (datetime(2031, 9, 2), "Quốc khánh")):
        night = local_night(HCM, day.replace(hour=20, tzinfo=HCM))
        p = plan.night_plan(night, LAT, LON)
        assert p["exception"] == exception, day
        assert len(p["steps"]) == (2 if exception else 4)
    # at 01:00 of a Tết night the lamps are at 100 %, not the ordinary night's 50 %
    assert plan.level_at(datetime(2027, 2, 7, 1, tzinfo=HCM).timestamp(), LAT, LON)[0] == 100
    assert plan.level_at(datetime(2027, 2, 12, 1, tzinfo=HCM).timestamp(), LAT, LON)[0] == 50


def test_lamps_agree_with_the_plan_and_spread_with_the_sun():
    plan = Plan(Profile.model_validate(NIGHT), HCM)
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(21.4, 21.8, 500), rng.uniform(105.6, 106.1, 500)
    lamps = plan.lamps(lat, lon)
    t = datetime(2026, 12, 5, 16, 0, tzinfo=HCM).timestamp()
    a, b = plan.current(t, lat, lon), lamps.current(t)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    nxt = lamps.next(t)[0]
    # the eastern lamps see sunset first: dusk+10m spreads over a minute or two, not more
    assert 0 < nxt.max() - nxt.min() <= 180


RULE = {"id": "lamp-sched", "kind": "lighting_schedule", "select": {"kind": "streetlight"},
        "margin": "10m", "severity": "warning"}


def _with_profile(eng, doc, keys):
    tbl = eng.table
    slots = tbl.slots(np.array(keys))
    eng.set_schedules(Assignments.build([("ward-night", Plan(Profile.model_validate(doc), HCM),
                                          np.array(keys), tbl.lat[slots], tbl.lon[slots])]))


def test_the_rule_checks_a_lamp_against_its_schedule_not_the_sun():
    eng = engine(RULE)
    # lamps 10 and 11 follow a profile that switches off at 01:00; 12 and 13 follow the sun
    _with_profile(eng, {"steps": [{"at": "dusk", "level": 100}, {"at": "01:00", "level": 0}]}, [10, 11])
    two_am = datetime(2026, 12, 6, 2, tzinfo=HCM).timestamp()
    out = eng.evaluate(batch(eng, [(10, "lamp_on", two_am, 1.0), (11, "lamp_on", two_am, 0.0),
                                   (12, "lamp_on", two_am, 1.0), (13, "lamp_on", two_am, 0.0)]))
    got = sorted((t.device, t.level, t.details.get("schedule"), t.text) for t in out)
    assert got == [
        (10, 1, "ward-night", "lamp on while its lighting schedule ward-night has it off"),
        (13, -1, None, "lamp off at night (outage)"),
    ]
    # at 23:00 the profile has them on: an off lamp of the profile is an outage, with the level
    eleven = datetime(2026, 12, 5, 23, tzinfo=HCM).timestamp()
    out = eng.evaluate(batch(eng, [(11, "lamp_on", eleven + 86400, 0.0)]))
    assert [(t.device, t.level) for t in out] == [(11, -1)]
    assert out[0].details == {"check": "night_outage", "schedule": "ward-night", "expected_level": 100.0,
                              "since": out[0].details["since"]}
    assert out[0].text == "lamp off while its lighting schedule ward-night has it at 100 %"
    # within the margin of the 01:00 switch-off nothing is decided either way
    at_one = datetime(2026, 12, 8, 1, 5, tzinfo=HCM).timestamp()
    assert eng.evaluate(batch(eng, [(11, "lamp_on", at_one, 1.0)])) == []


def test_the_rule_can_be_told_to_follow_the_sun_only():
    eng = engine({**RULE, "schedules": False})
    _with_profile(eng, {"steps": [{"at": "dusk", "level": 100}, {"at": "01:00", "level": 0}]}, [10])
    two_am = datetime(2026, 12, 6, 2, tzinfo=HCM).timestamp()
    out = eng.evaluate(batch(eng, [(10, "lamp_on", two_am, 1.0), (11, "lamp_on", two_am, 0.0)]))
    assert [(t.device, t.level) for t in out] == [(11, -1)]
