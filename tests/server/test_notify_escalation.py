"""Escalation after the acknowledgement deadline (a short one in these settings), against
the synthetic city, a real SMTP server and two notifiers sharing the database."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from server.settings import EscalationContact, EscalationSettings
from tests.helpers import free_port, until
from tests.server.helpers import (
    Mailbox,
    fast_settings,
    notifier_running,
    raise_alarm,
    smtp,
    transition,
    window_around,
)

SUPERVISOR = "SUP-01"


async def _add_supervisor(pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """insert into crews (id, name, location, escalation_level, contacts)
               select $1, 'Duty supervisor', ST_Centroid(ST_Collect(location)), 2, $2 from crews""",
            SUPERVISOR, {"email": "sup@city.example"})


async def _escalations(pool, alarm_id: int) -> list[dict]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("select actor, reason, details from alarm_events "
                                "where alarm_id = $1 and event = 'escalated' order by id", alarm_id)
    return [dict(r) for r in rows]


async def _device(pool, n: int) -> str:
    async with pool.acquire() as conn:
        return await conn.fetchval("select id from devices where kind = 'pressure_sensor' "
                                   "order by id offset $1 limit 1", n)


def _settings(mailbox: Mailbox, minutes: float, max_level: int, contacts=()):
    return fast_settings(
        smtp=smtp(mailbox.port), channel_order=["email", "crew"],
        escalation=EscalationSettings(ack_minutes={"major": minutes}, check_interval_s=0.1,
                                      max_level=max_level, contacts=list(contacts)))


async def test_unacknowledged_alarm_escalates_once_per_level_and_an_ack_prevents_it(
        city_db_url: str) -> None:
    mailbox = Mailbox(free_port())
    duty = EscalationContact(level=2, name="duty-officer", email="duty@city.example")
    settings = _settings(mailbox, minutes=0.02, max_level=2, contacts=[duty])  # 1.2 s
    await mailbox.start()
    try:
        # Two notifiers on one database, as two servers: still one escalation per level.
        async with notifier_running(city_db_url, settings) as (pool, first), \
                notifier_running(city_db_url, settings) as (_, second):
            await _add_supervisor(pool)
            late, routed = await raise_alarm(pool, first, await _device(pool, 0))
            acked, _ = await raise_alarm(pool, first, await _device(pool, 1))
            await transition(pool, first, acked["id"], "acknowledged",
                             "state = 'active_acked', acked_at = now(), acked_by = 'op-1'")
            await until(lambda: mailbox.to("sup@city.example") and mailbox.to("duty@city.example"),
                        what="escalation e-mails to the supervisor and the duty officer")
            # Both loops keep scanning well past the deadline: nothing more happens.
            scans = first.escalator.scans + second.escalator.scans
            await until(lambda: first.escalator.scans + second.escalator.scans >= scans + 10,
                        what="ten more scans")
            late_events = await _escalations(pool, late["id"])
            acked_events = await _escalations(pool, acked["id"])
            escalations = sum(n.metrics.registry.get_sample_value(
                "ioc_alarm_escalations_total", {"level": "2"}) or 0 for n in (first, second))
    finally:
        await mailbox.stop()
    assert acked_events == []
    [event] = late_events
    assert event["actor"] == "notifier"
    assert event["reason"] == "not acknowledged within 0.02 min"
    assert event["details"]["level"] == 2 and event["details"]["from_level"] == 1
    assert event["details"]["targets"][0].startswith(f"crew {SUPERVISOR} (nearest available crew")
    assert event["details"]["targets"][1] == "contact duty-officer"
    assert escalations == 1
    [sup_mail] = mailbox.to("sup@city.example")
    assert sup_mail["Subject"].startswith("[IOC] ESCALATED major")
    assert sup_mail["X-IOC-Dedup-Key"] == late["dedup_key"]
    assert "Escalation: level 2 (not acknowledged within 0.02 min)" in sup_mail.get_content()
    assert len(mailbox.to("duty@city.example")) == 1
    # The first-line crew had the raise and nothing about the acknowledged alarm's escalation.
    crew_mail = f"crew{routed['assigned_crew'][-2:]}@ioc.example"
    assert [m["X-IOC-Event"] for m in mailbox.to(crew_mail)
            if m["X-IOC-Dedup-Key"] == late["dedup_key"]] == ["raised"]


async def test_acknowledging_after_an_escalation_stops_the_next_level(city_db_url: str) -> None:
    mailbox = Mailbox(free_port())
    director = EscalationContact(level=3, name="director", email="director@city.example")
    settings = _settings(mailbox, minutes=0.05, max_level=3, contacts=[director])  # 3 s per level
    await mailbox.start()
    try:
        async with notifier_running(city_db_url, settings) as (pool, notifier):
            await _add_supervisor(pool)
            stopped, _ = await raise_alarm(pool, notifier, await _device(pool, 0))
            control, _ = await raise_alarm(pool, notifier, await _device(pool, 1))
            await until(lambda: _escalations(pool, stopped["id"]), what="level 2")
            await transition(pool, notifier, stopped["id"], "acknowledged",
                             "state = 'active_acked', acked_at = now(), acked_by = 'sup'")
            # The control alarm, raised with it and never acknowledged, reaches level 3 ...
            await until(lambda: _level(pool, control["id"], 3), what="the control alarm at level 3")
            await until(lambda: mailbox.to("director@city.example"), what="the director's e-mail")
            # ... and one scan later the acknowledged one has certainly been looked at again.
            scans = notifier.escalator.scans
            await until(lambda: notifier.escalator.scans >= scans + 2, what="two more scans")
            stopped_levels = [e["details"]["level"] for e in await _escalations(pool, stopped["id"])]
            control_levels = [e["details"]["level"] for e in await _escalations(pool, control["id"])]
    finally:
        await mailbox.stop()
    assert stopped_levels == [2]
    assert control_levels == [2, 3]
    director_mail = mailbox.to("director@city.example")
    assert [m["X-IOC-Dedup-Key"] for m in director_mail] == [control["dedup_key"]]
    # The supervisor, told of the escalation, is also told it was acknowledged.
    sup_events = sorted(m["X-IOC-Event"] for m in mailbox.to("sup@city.example")
                        if m["X-IOC-Dedup-Key"] == stopped["dedup_key"])
    assert sup_events == ["acknowledged", "escalated"]


async def _level(pool, alarm_id: int, level: int) -> bool:
    return any(e["details"]["level"] == level for e in await _escalations(pool, alarm_id))


async def test_low_priorities_do_not_escalate_in_quiet_hours_but_critical_ones_do(
        city_db_url: str) -> None:
    mailbox = Mailbox(free_port())
    settings = _settings(mailbox, minutes=0.01, max_level=2)
    settings.escalation.ack_minutes["minor"] = 0.01
    settings.escalation.ack_minutes["critical"] = 0.01
    settings = settings.model_copy(update={
        "quiet_hours": window_around(datetime.now(UTC), ZoneInfo("Asia/Ho_Chi_Minh"))})
    async with notifier_running(city_db_url, settings) as (pool, notifier):
        await _add_supervisor(pool)
        low, _ = await raise_alarm(pool, notifier, await _device(pool, 0), severity="minor",
                                   priority=3)
        critical, _ = await raise_alarm(pool, notifier, await _device(pool, 1),
                                        severity="critical", priority=3)
        await until(lambda: _escalations(pool, critical["id"]), what="the critical escalation")
        scans = notifier.escalator.scans
        await until(lambda: notifier.escalator.scans >= scans + 3, what="three more scans")
        assert await _escalations(pool, low["id"]) == []
