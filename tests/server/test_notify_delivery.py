"""Delivery through the outbox against real receivers: a webhook and an SMTP server that
come up late, fallback to the next channel, failure on every channel, dedup keys, and two
workers sharing one outbox."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from server.notify.signing import new_secret, verify
from server.settings import WebhookChannel
from tests.helpers import aexecute, free_port, until
from tests.server.helpers import (
    Mailbox,
    Receiver,
    fast_settings,
    new_alarm,
    notifier_running,
    outbox,
    raise_alarm,
    smtp,
    spec_signature,
    transition,
)

CREW = "CREW-T1"


async def add_crew(pool, crew_id: str = CREW, **contacts: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "insert into crews (id, name, contacts) values ($1, $2, $3)",
            crew_id, f"Test crew {crew_id}", contacts)


def metric(notifier, name: str, **labels: str) -> float:
    value = notifier.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_webhook_delivered_after_the_receiver_was_down(db_url: str) -> None:
    secret = new_secret()
    receiver = Receiver(free_port())
    settings = fast_settings(max_attempts=50,
                             webhooks=[WebhookChannel(name="ticketing", url=receiver.url, secret=secret)])
    async with notifier_running(db_url, settings) as (pool, notifier):
        alarm, _ = await raise_alarm(pool, notifier, "PS-0001")
        # Nobody listens yet: attempts fail and are retried with backoff. The row's attempts
        # count claims, so a third may still be in flight: wait for three failures.
        await until(lambda: metric(notifier, "ioc_notification_attempt_errors_total",
                                   channel="webhook") >= 3, what="three failed attempts")
        rows = await _row_with(pool, alarm["id"], lambda r: r["attempts"] >= 3)
        assert rows["status"] == "pending" and "127.0.0.1" in rows["last_error"]
        await receiver.start()
        try:
            await until(lambda: receiver.requests, what="the webhook")
            row = await until(lambda: _row_with(pool, alarm["id"], lambda r: r["status"] == "delivered"),
                              what="the row marked delivered")
        finally:
            await receiver.stop()
    assert row["attempts"] >= 4 and row["last_error"] is None
    assert len(receiver.requests) == 1
    hdrs, body = receiver.requests[0]
    # Verified from the spec's text alone, and by the receiver-side helper integrators get.
    assert hdrs["webhook-signature"] == spec_signature(secret, hdrs, body)
    verify(secret, hdrs, body)
    assert hdrs["webhook-id"] == f"ntf_{row['id']}"
    assert abs(int(hdrs["webhook-timestamp"]) - time.time()) < 300
    assert hdrs["content-type"] == "application/json"
    doc = orjson.loads(body)
    assert doc["type"] == "alarm.raised"
    assert doc["data"]["dedup_key"] == "pressure-low:PS-0001"
    assert doc["data"]["alarm"]["id"] == alarm["id"]
    assert doc["data"]["alarm"]["severity"] == "major"
    assert metric(notifier, "ioc_notifications_delivered_total", channel="webhook") == 1


async def test_email_delivered_after_the_mail_server_was_down(db_url: str) -> None:
    mailbox = Mailbox(free_port())
    settings = fast_settings(max_attempts=50, smtp=smtp(mailbox.port), channel_order=["email", "crew"])
    async with notifier_running(db_url, settings) as (pool, notifier):
        await add_crew(pool, email="crew-t1@city.example")
        alarm, _ = await raise_alarm(pool, notifier, "PS-0002", assigned_crew=CREW)
        # The row's attempts count claims, so a third may still be in flight: wait for three
        # failures (a third that met the mail server just started would deliver at 3).
        await until(lambda: metric(notifier, "ioc_notification_attempt_errors_total",
                                   channel="email") >= 3, what="three failed attempts")
        row = await _row_with(pool, alarm["id"], lambda r: r["attempts"] >= 3)
        assert row["channel"] == "email" and row["status"] == "pending"
        assert "127.0.0.1" in row["last_error"]
        await mailbox.start()
        try:
            await until(lambda: mailbox.messages, what="the e-mail")
            row = await until(lambda: _row_with(pool, alarm["id"], lambda r: r["status"] == "delivered"),
                              what="the row marked delivered")
        finally:
            await mailbox.stop()
    assert row["attempts"] >= 4
    [msg] = mailbox.messages
    assert msg["To"] == "crew-t1@city.example" and msg["From"] == "ioc@city.example"
    assert msg["Subject"].startswith("[IOC] RAISED major: pressure-low on PS-0002")
    assert msg["X-IOC-Dedup-Key"] == "pressure-low:PS-0002"
    assert f"alarm {alarm['id']} on device PS-0002" in msg.get_content()


async def test_a_failing_webhook_falls_back_to_email(db_url: str) -> None:
    broken = Receiver(free_port(), status=500)
    mailbox = Mailbox(free_port())
    secret = new_secret()
    settings = fast_settings(max_attempts=3, smtp=smtp(mailbox.port))
    await broken.start()
    await mailbox.start()
    try:
        async with notifier_running(db_url, settings) as (pool, notifier):
            await add_crew(pool, email="crew-t1@city.example", webhook=broken.url,
                           webhook_secret=secret)
            alarm, _ = await raise_alarm(pool, notifier, "PS-0003", assigned_crew=CREW)
            await until(lambda: mailbox.messages, what="the fallback e-mail")
            rows = await until(lambda: _all_settled(pool, alarm["id"]), what="settled rows")
            assert metric(notifier, "ioc_notification_fallbacks_total", channel="webhook") == 1
    finally:
        await broken.stop()
        await mailbox.stop()
    assert [(r["channel"], r["status"], r["attempts"]) for r in rows] == [
        ("webhook", "fallback", 3), ("email", "delivered", 1)]
    assert "HTTP 500" in rows[0]["last_error"]
    assert rows[1]["payload"]["fallback"] == [{"channel": "crew", "target": CREW}]
    assert {r["dedup_key"] for r in rows} == {"pressure-low:PS-0003"}
    # Three signed attempts of one message (same id, each signed for its own timestamp).
    assert len(broken.requests) == 3
    assert len({h["webhook-id"] for h, _ in broken.requests}) == 1
    for hdrs, body in broken.requests:
        assert hdrs["webhook-signature"] == spec_signature(secret, hdrs, body)
    assert mailbox.messages[0]["To"] == "crew-t1@city.example"


async def test_gone_falls_back_at_once_and_every_channel_failing_is_loud(db_url: str, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.notify")
    gone = Receiver(free_port(), status=410)  # Standard Webhooks: stop sending to it
    dead_smtp = free_port()  # nothing listens there
    settings = fast_settings(max_attempts=2, smtp=smtp(dead_smtp))
    await gone.start()
    try:
        async with notifier_running(db_url, settings) as (pool, notifier):  # hub=None: feed down
            await add_crew(pool, email="crew-t1@city.example", webhook=gone.url)
            alarm, _ = await raise_alarm(pool, notifier, "PS-0004", assigned_crew=CREW)
            rows = await until(lambda: _all_settled(pool, alarm["id"], n=3), what="three settled rows")
            assert metric(notifier, "ioc_notifications_failed_total", channel="crew") == 1
            async with pool.acquire() as conn:
                events = await conn.fetch(
                    "select reason, details from alarm_events where alarm_id = $1 "
                    "and event = 'notification_failed'", alarm["id"])
    finally:
        await gone.stop()
    assert [(r["channel"], r["status"], r["attempts"]) for r in rows] == [
        ("webhook", "fallback", 1), ("email", "fallback", 2), ("crew", "failed", 2)]
    assert "no client of crew CREW-T1 is connected" in rows[2]["last_error"]
    [event] = events
    assert "failed on every channel" in event["reason"]
    assert event["details"]["recipient"] == {"kind": "crew", "key": CREW}
    assert event["details"]["outbox_id"] == rows[2]["id"]
    # The crew feed was the last resort after real failures: one ERROR line, naming the alarm.
    [loud] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "NOTIFICATION FAILED" in loud.getMessage()
    assert "pressure-low:PS-0004" in loud.getMessage()
    fallbacks = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(fallbacks) == 2  # webhook → email → crew, each line naming the alarm
    assert all(f"alarm {alarm['id']}, pressure-low:PS-0004" in m for m in fallbacks), fallbacks


async def test_a_crew_page_nobody_has_open_is_not_an_error(db_url: str, caplog) -> None:
    """The crew feed was the only channel and nobody had the page open: the row fails as
    before (an alarm event says so), but the log says it plainly, in one INFO line (the
    retries are DEBUG)."""
    caplog.set_level(logging.INFO, logger="server.notify")
    settings = fast_settings(max_attempts=2, channel_order=["crew"])
    async with notifier_running(db_url, settings) as (pool, notifier):  # hub=None: feed down
        await add_crew(pool)
        alarm, _ = await raise_alarm(pool, notifier, "PS-0005", assigned_crew=CREW)
        [row] = await until(lambda: _all_settled(pool, alarm["id"], n=1), what="the settled row")
        assert metric(notifier, "ioc_notifications_failed_total", channel="crew") == 1
        async with pool.acquire() as conn:
            events = await conn.fetchval(
                "select count(*) from alarm_events where alarm_id = $1 "
                "and event = 'notification_failed'", alarm["id"])
    assert (row["channel"], row["status"], row["attempts"]) == ("crew", "failed", 2)
    assert events == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    said = [r.getMessage() for r in caplog.records
            if r.levelno >= logging.INFO and "CREW-T1" in r.getMessage()]
    assert said == [f"alarm {alarm['id']} (pressure-low:PS-0005): the raised notification was "
                    f"not pushed to crew {CREW}, whose page nobody had open (2 attempts); the "
                    "alarm waits in the crew's list"]


async def test_dedup_key_ties_raise_ack_and_clear(db_url: str) -> None:
    receiver = Receiver(free_port())
    mailbox = Mailbox(free_port())
    settings = fast_settings(smtp=smtp(mailbox.port), channel_order=["email"],
                             webhooks=[WebhookChannel(name="ticketing", url=receiver.url,
                                                      secret=new_secret())])
    await receiver.start()
    await mailbox.start()
    try:
        async with notifier_running(db_url, settings) as (pool, notifier):
            await add_crew(pool, email="crew-t1@city.example")
            alarm, _ = await raise_alarm(pool, notifier, "PS-0005", assigned_crew=CREW)
            await transition(pool, notifier, alarm["id"], "acknowledged",
                             "state = 'active_acked', acked_at = now(), acked_by = 'op-1'")
            await transition(pool, notifier, alarm["id"], "cleared",
                             "state = 'closed', active = false, cleared_at = now()")
            await until(lambda: len(receiver.requests) == 3 and len(mailbox.messages) == 3,
                        what="three webhooks and three e-mails")
            rows = await outbox(pool, alarm["id"])
    finally:
        await receiver.stop()
        await mailbox.stop()
    bodies = [orjson.loads(b) for _, b in receiver.requests]
    assert sorted(b["type"] for b in bodies) == ["alarm.acknowledged", "alarm.cleared", "alarm.raised"]
    assert {b["data"]["dedup_key"] for b in bodies} == {"pressure-low:PS-0005"}
    assert len({h["webhook-id"] for h, _ in receiver.requests}) == 3  # three events, three ids
    acked = next(b for b in bodies if b["type"] == "alarm.acknowledged")
    assert acked["data"]["alarm"]["acked_by"] == "op-1"
    assert {m["X-IOC-Dedup-Key"] for m in mailbox.messages} == {"pressure-low:PS-0005"}
    assert len({m["References"] for m in mailbox.messages}) == 1
    assert {r["dedup_key"] for r in rows} == {"pressure-low:PS-0005"}
    assert sorted(r["event"] for r in rows) == ["acknowledged", "acknowledged", "cleared", "cleared",
                                               "raised", "raised"]


async def test_two_workers_never_deliver_one_row_twice(db_url: str) -> None:
    receiver = Receiver(free_port(), delay_s=0.01)
    settings = fast_settings(batch_size=4, concurrency=8,
                             webhooks=[WebhookChannel(name="ticketing", url=receiver.url)])
    n = 120
    await receiver.start()
    try:
        # Two notifiers with their own pools and LISTEN connections: two server processes.
        async with notifier_running(db_url, settings, start=False) as (pool, first), \
                notifier_running(db_url, settings, start=False) as (_, second):
            async with pool.acquire() as conn, conn.transaction():
                for i in range(n):
                    alarm = await new_alarm(conn, f"PS-{i:04d}")
                    await first.enqueue(conn, alarm, "raised")
            await asyncio.gather(first.start(), second.start())
            await until(lambda: len(receiver.requests) >= n, what=f"{n} webhooks")
            rows = await until(lambda: _all_delivered(pool, n), what="every row delivered")
            attempts = (first.worker.attempts, second.worker.attempts)
    finally:
        await receiver.stop()
    ids = [h["webhook-id"] for h, _ in receiver.requests]
    assert len(ids) == len(set(ids)) == n
    assert sum(attempts) == n  # no row was attempted twice, by either worker
    assert all(r["attempts"] == 1 for r in rows)


async def _row_with(pool, alarm_id: int, pred):
    rows = await outbox(pool, alarm_id)
    return next((r for r in rows if pred(r)), None)


async def _all_settled(pool, alarm_id: int, n: int = 2):
    rows = await outbox(pool, alarm_id)
    if len(rows) >= n and all(r["status"] != "pending" for r in rows):
        return rows
    return None


async def _all_delivered(pool, n: int):
    rows = await outbox(pool)
    if len(rows) == n and all(r["status"] == "delivered" for r in rows):
        return rows
    return None


async def test_crew_feed_delivered_when_the_crew_page_connects(db_url, make_settings, token_for):
    """The live feed over the real websocket hub: not delivered while no client of the crew
    is connected (retried), delivered once the crew's page connects."""
    from server import keys
    from tests.helpers import running

    await aexecute(db_url, "insert into crews (id, name) values (%s, 'Test crew')", CREW)
    token = await token_for(db_url, "crew", crew=CREW)
    notify = fast_settings(max_attempts=50, channel_order=["crew"])
    async with running(make_settings(db_url, mqtt_url=None, notify=notify)) as client:
        pool = client.app[keys.DB]
        notifier = client.app[keys.NOTIFIER]
        alarm, _ = await raise_alarm(pool, notifier, "PS-0007", assigned_crew=CREW)
        row = await until(lambda: _row_with(pool, alarm["id"], lambda r: r["attempts"] >= 2),
                          what="two attempts with nobody connected")
        assert row["status"] == "pending" and "no client of crew" in row["last_error"]
        async with client.ws_connect("/api/v1/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
            while True:
                msg = await asyncio.wait_for(ws.receive_json(), 60)
                if msg.get("type") == "notification":
                    break
        row = await until(lambda: _row_with(pool, alarm["id"], lambda r: r["status"] == "delivered"),
                          what="the row marked delivered")
    assert msg["id"] == f"ntf_{row['id']}" and msg["event"] == "raised"
    assert msg["dedup_key"] == "pressure-low:PS-0007"
    assert msg["alarm"]["id"] == alarm["id"] and msg["alarm"]["assigned_crew"] == CREW


async def test_old_deliveries_of_closed_alarms_are_purged_open_ones_kept(db_url: str) -> None:
    async with notifier_running(db_url, fast_settings(retention_days=30)) as (pool, notifier):
        async with pool.acquire() as conn:
            closed = await new_alarm(conn, "PS-0008", state="closed")
            still_open = await new_alarm(conn, "PS-0009")
            for alarm, status in [(closed, "delivered"), (closed, "failed"),
                                  (still_open, "delivered")]:
                await conn.execute(
                    "insert into notification_outbox (alarm_id, event, channel, target, dedup_key, "
                    "payload, status, created_at) values ($1, 'raised', 'crew', 'X', $2, '{}', $3, "
                    "now() - interval '31 days')", alarm["id"], alarm["dedup_key"], status)
        assert await notifier.worker.purge() == 1
        left = [(r["alarm_id"], r["status"]) for r in await outbox(pool)]
    # A failure stays for review; an open alarm keeps who was told, for its follow-ups.
    assert sorted(left) == sorted([(closed["id"], "failed"), (still_open["id"], "delivered")])
