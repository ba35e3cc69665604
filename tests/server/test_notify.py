"""Notifications, pure parts (signing, quiet hours, backoff, e-mail rendering) and the
helpers the other notification tests share: a real webhook receiver (aiohttp) and a real
SMTP server (aiosmtpd), both startable late, and a notifier over a real database."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from server.notify.channels import EmailChannel, render_email, thread_id
from server.notify.quiet import QuietWindow
from server.notify.signing import SignatureError, check_secret, headers, new_secret, sign, verify
from server.notify.worker import backoff
from server.settings import EscalationSettings, NotifySettings, QuietHours, SmtpSettings
from tests.helpers import until
from tests.server.helpers import fast_settings, notifier_running

HCM = ZoneInfo("Asia/Ho_Chi_Minh")


# ---------------------------------------------------------------- signing
SPEC_KEY = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_BODY = b'{"test": 2432232314}'


def test_signature_matches_the_reference_vector() -> None:
    # The reference libraries' published test vector.
    assert sign(SPEC_KEY, SPEC_ID, 1614265330, SPEC_BODY) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_rotated_keys_and_rejects_tampering() -> None:
    secret, old = new_secret(), new_secret()
    now = 1_800_000_000
    h = headers(secret, "ntf_1", SPEC_BODY, now=now)
    assert h["webhook-timestamp"] == str(now)
    verify(secret, h, SPEC_BODY, now=now + 10)
    rotated = {**h, "webhook-signature": f"{sign(old, 'ntf_1', now, SPEC_BODY)} v1a,xyz "
                                         f"{h['webhook-signature']}"}
    verify(secret, rotated, SPEC_BODY, now=now)
    with pytest.raises(SignatureError, match="no v1 signature"):
        verify(secret, h, SPEC_BODY + b" ", now=now)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(secret, h, SPEC_BODY, now=now + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify(secret, {"webhook-id": "x"}, SPEC_BODY)
    with pytest.raises(ValueError, match="must not contain"):
        sign(secret, "a.b", now, SPEC_BODY)


def test_secrets_are_checked() -> None:
    check_secret(new_secret())
    with pytest.raises(ValueError, match="24 to 64 bytes"):
        check_secret("whsec_" + base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64"):
        check_secret("whsec_not base64!")


# ---------------------------------------------------------------- quiet hours
def _at(hh: int, mm: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 3, day, hh, mm, tzinfo=HCM)


def test_quiet_window_over_midnight() -> None:
    w = QuietWindow(time(22, 0), time(6, 0), HCM)
    assert not w.contains(_at(21, 59))
    assert w.contains(_at(22, 0)) and w.contains(_at(3, 0))
    assert not w.contains(_at(6, 0))
    assert w.release_at(_at(23, 30)) == _at(6, 0, day=11).astimezone(UTC)
    assert w.release_at(_at(2, 0)) == _at(6, 0).astimezone(UTC)
    assert w.release_at(_at(12, 0)) is None
    assert w.last_end(_at(12, 0)) == _at(6, 0).astimezone(UTC)
    assert w.last_end(_at(5, 0)) == _at(6, 0, day=9).astimezone(UTC)


def test_quiet_window_within_a_day_and_disabled() -> None:
    w = QuietWindow(time(12, 0), time(13, 30), HCM)
    assert w.contains(_at(12, 45)) and not w.contains(_at(13, 30))
    assert w.release_at(_at(12, 45)) == _at(13, 30).astimezone(UTC)
    assert QuietWindow(time(12, 0), time(12, 0), HCM).release_at(_at(12, 0)) is None
    off = QuietWindow.from_settings(QuietHours(enabled=False))
    assert off.release_at(_at(23, 0)) is None and off.last_end(_at(23, 0)) is None


def test_quiet_window_follows_daylight_saving() -> None:
    # Europe/Berlin springs forward on 2026-03-29: 06:00 local is then UTC+2.
    w = QuietWindow(time(22, 0), time(6, 0), ZoneInfo("Europe/Berlin"))
    before = datetime(2026, 3, 28, 23, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert w.release_at(before) == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)


def test_only_low_priority_non_critical_alarms_wait() -> None:
    w = QuietWindow.from_settings(QuietHours(min_priority=3))
    assert w.defers({"severity": "minor", "priority": 3})
    assert w.defers({"severity": "warning", "priority": 4})
    assert not w.defers({"severity": "major", "priority": 1})
    assert not w.defers({"severity": "critical", "priority": 9})


def test_quiet_hours_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        QuietHours(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="at most once"):
        NotifySettings(channel_order=["email", "email"])
    with pytest.raises(ValueError, match="positive"):
        EscalationSettings(ack_minutes={"major": 0})


# ---------------------------------------------------------------- backoff and e-mail
def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for attempt, full in [(1, 5), (2, 10), (3, 20), (4, 40), (10, 300), (30, 300)]:
        delays = [backoff(attempt, 5, 300, rng) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full / 4  # jittered, not one fixed value


def _body(event: str) -> dict:
    return {"type": f"alarm.{event}", "timestamp": "2026-03-10T16:30:00Z",
            "data": {"event": event, "dedup_key": "pressure-low:PS-0001", "escalation_level": 2,
                     "reason": "not acknowledged within 15 min",
                     "alarm": {"id": 7, "rule": "pressure-low", "device": "PS-0001",
                               "severity": "major", "state": "active_unacked", "value": 1.2,
                               "message": "pressure 1.2 bar below 1.5", "assigned_crew": "CREW-03",
                               "raised_at": "2026-03-10T16:00:00Z",
                               "geometry": {"type": "Point", "coordinates": [105.84, 21.59]}}}}


def test_email_names_the_alarm_in_local_time_and_threads_by_dedup_key() -> None:
    subject, text = render_email(_body("escalated"), HCM)
    assert subject == "[IOC] ESCALATED major: pressure 1.2 bar below 1.5 at PS-0001"
    assert "2026-03-10 23:00:00 +07" in text  # 16:00 UTC in Hồ Chí Minh time
    assert "level 2" in text and "21.590000, 105.840000" in text
    channel = EmailChannel(SmtpSettings(sender="ioc@city.example"), HCM)
    raised = channel.message("crew@example.org", "ntf_1", _body("raised"))
    acked = channel.message("crew@example.org", "ntf_2", _body("acknowledged"))
    assert raised["Message-ID"] != acked["Message-ID"]
    assert raised["References"] == acked["References"] == acked["In-Reply-To"] == \
        thread_id("pressure-low:PS-0001")
    assert acked["X-IOC-Dedup-Key"] == "pressure-low:PS-0001"


async def test_a_notifier_without_channels_runs_its_loops_and_stops_cleanly(db_url: str) -> None:
    settings = fast_settings(escalation=EscalationSettings(check_interval_s=0.05))
    async with notifier_running(db_url, settings) as (_, notifier):
        await until(lambda: notifier.escalator.scans >= 2, what="two escalation scans")
        assert {t.get_name() for t in notifier._tasks} == {
            "notify.outbox", "notify.housekeeping", "notify.escalation"}
        assert notifier._listener is not None and not notifier._listener.is_closed()
    assert not notifier._tasks
    assert notifier._listener.is_closed()
