"""The ISA-18.2 lifecycle functions (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rules import lifecycle as lc

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def alarm(**kw):
    base = {"id": 7, "state": "active_unacked", "active": True, "severity": "major",
            "shelved_until": None, "suppressed": False, "out_of_service": False,
            "acked_by": None, "assigned_crew": None, "work_state": None}
    return base | kw


def apply(a, change):
    return a | change.updates


def test_ack_then_clear_closes():
    a = alarm()
    a = apply(a, lc.acknowledge(a, actor="op", now=NOW))
    assert a["state"] == "active_acked" and a["acked_by"] == "op"
    with pytest.raises(lc.LifecycleError) as err:
        lc.acknowledge(a, actor="op2", now=NOW)
    assert isinstance(err.value, lc.NotApplicable) and "already acknowledged (by op)" in err.value.message
    a = apply(a, lc.cleared(a, value=1.0, message="ok", now=NOW))
    assert a["state"] == "closed" and a["closed_at"] == NOW


def test_clear_unacked_waits_for_ack_and_can_realarm():
    a = alarm()
    a = apply(a, lc.cleared(a, value=None, message="", now=NOW))
    assert a["state"] == "rtn_unacked" and not a["active"]
    ch = lc.raised(a, severity="major", value=1.0, message="again", now=NOW)
    assert ch.notify == "raised" and ch.updates["state"] == "active_unacked"
    a = apply(apply(a, ch), lc.cleared(a | ch.updates, value=None, message="", now=NOW))
    a = apply(a, lc.acknowledge(a, actor="op", now=NOW))
    assert a["state"] == "closed"
    with pytest.raises(lc.LifecycleError):
        lc.acknowledge(a, actor="op", now=NOW)


def test_raise_is_idempotent_and_escalation_realarms():
    a = alarm(state="active_acked")
    assert lc.raised(a, severity="major", value=1, message="", now=NOW) is None
    up = lc.raised(a, severity="critical", value=1, message="", now=NOW)
    assert up.updates["state"] == "active_unacked" and up.notify == "raised"
    down = lc.raised(a, severity="minor", value=1, message="", now=NOW)
    assert down.event == "severity" and down.notify is None and "state" not in down.updates


def test_unannunciated_alarms_close_on_return_to_normal():
    for kw in ({"suppressed": True}, {"out_of_service": True},
               {"shelved_until": NOW + timedelta(minutes=5)}):
        a = alarm(**kw)
        assert lc.cleared(a, value=None, message="", now=NOW).updates["state"] == "closed"


def test_shelve_limits_and_unshelve():
    a = alarm()
    with pytest.raises(lc.LifecycleError) as err:
        lc.shelve(a, minutes=600, max_minutes=480, now=NOW, reason=None)
    assert isinstance(err.value, lc.BadArgument) and "480" in err.value.message
    with pytest.raises(lc.LifecycleError):
        lc.shelve(a, minutes="ten", max_minutes=480, now=NOW, reason=None)
    a = apply(a, lc.shelve(a, minutes=30, max_minutes=480, now=NOW, reason="sensor being replaced"))
    assert a["shelved_until"] == NOW + timedelta(minutes=30)
    assert not lc.annunciated(a, NOW) and lc.annunciated(a, NOW + timedelta(minutes=31))
    a = apply(a, lc.unshelve(a, now=NOW))
    with pytest.raises(lc.LifecycleError):
        lc.unshelve(a, now=NOW)


def test_work_order_is_separate_from_ack():
    a = alarm()
    with pytest.raises(lc.LifecycleError):
        lc.work(a, state="in_progress")
    a = apply(a, lc.assign(a, crew="crew-01"))
    assert a["work_state"] == "open" and a["state"] == "active_unacked"
    a = apply(a, lc.work(a, state="in_progress"))
    with pytest.raises(lc.LifecycleError) as err:
        lc.work(a, state="fixed")
    assert isinstance(err.value, lc.BadArgument)
    assert a["state"] == "active_unacked"
