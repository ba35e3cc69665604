"""The outbox worker: claim due rows, deliver, retry with backoff, fall back, fail loudly.

Claiming is one statement: ``UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)`` moves each
claimed row's ``next_attempt_at`` a lease ahead and counts the attempt, then commits.
Another worker, in this process or another server, skips locked rows and, after the
commit, no longer sees them as due; so two workers never send one row at once, and no
transaction stays open across a network call. If this process dies mid-delivery, the lease
runs out and the row is retried (at-least-once; receivers dedupe on ``webhook-id``). The
lease is longer than any channel's timeout, so a live attempt always ends first.

Each outcome is written with ``attempts`` as a fencing token: a row re-claimed after a
lapsed lease is not overwritten by the late answer of the earlier attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import asyncpg
import orjson

from server.notify.channels import (
    CrewFeedChannel,
    DeliveryError,
    EmailChannel,
    NobodyListening,
    WebhookChannel,
)
from server.notify.routing import Recipient
from server.settings import NotifySettings

logger = logging.getLogger(__name__)

CHANNELS = ("webhook", "email", "crew")
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
LEASE_MARGIN_S = 30.0

_CLAIM = """
    update notification_outbox o
    set attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
    from (select id from notification_outbox
          where status = 'pending' and next_attempt_at <= now()
          order by next_attempt_at, id
          limit $1
          for update skip locked) due
    where o.id = due.id
    returning o.id, o.alarm_id, o.event, o.channel, o.target, o.dedup_key, o.payload, o.attempts,
              o.created_at
"""

_DELIVERED = """
    update notification_outbox set status = 'delivered', delivered_at = now(), last_error = null
    where id = $1 and attempts = $2 and status = 'pending'
    returning extract(epoch from delivered_at - created_at) as seconds
"""

_RETRY = """
    update notification_outbox
    set next_attempt_at = now() + make_interval(secs => $3), last_error = $4
    where id = $1 and attempts = $2 and status = 'pending'
"""

_GIVE_UP = """
    update notification_outbox set status = $3, last_error = $4
    where id = $1 and attempts = $2 and status = 'pending'
    returning id
"""

_NEXT_CHANNEL = """
    insert into notification_outbox (alarm_id, event, channel, target, dedup_key, payload)
    values ($1, $2, $3, $4, $5, $6)
"""

_PENDING = """
    select channel, count(*) as n,
           extract(epoch from now() - min(next_attempt_at)
                   filter (where next_attempt_at <= now())) as overdue_s
    from notification_outbox where status = 'pending' group by channel
"""

# Delivered chains of closed alarms are history; open alarms keep theirs, because the
# follow-ups (ack, clear) go to whoever was told before.
_PURGE = """
    delete from notification_outbox o
    where o.status in ('delivered', 'fallback') and o.created_at < now() - make_interval(days => $1)
      and (o.alarm_id is null
           or exists (select 1 from alarms a where a.id = o.alarm_id and a.state = 'closed'))
"""


def backoff(attempt: int, initial: float, maximum: float, rng: random.Random = random) -> float:
    """Exponential, capped, with jitter in [delay/2, delay] so retries of a burst spread out."""
    delay = min(maximum, initial * 2 ** max(0, attempt - 1))
    return rng.uniform(delay / 2, delay)


class OutboxWorker:
    def __init__(self, pool: asyncpg.Pool, settings: NotifySettings, metrics, *,
                 webhook: WebhookChannel, email: EmailChannel | None, crew: CrewFeedChannel,
                 name: str = "notify") -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.webhook = webhook
        self.email = email
        self.crew = crew
        self.name = name
        timeouts = [w.timeout_s for w in settings.webhooks] + [settings.webhook_timeout_s]
        if settings.smtp:
            timeouts.append(settings.smtp.timeout_s)
        self.lease_s = max(timeouts) + LEASE_MARGIN_S
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task] = set()
        self.attempts = 0  # for tests and logs: attempts this worker made

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        s = self.settings
        while True:
            self._wake.clear()  # before claiming: a wake-up during the claim is not lost
            free = s.concurrency - len(self._inflight)
            claimed = await self._claim(min(free, s.batch_size)) if free > 0 else []
            for row in claimed:
                task = asyncio.create_task(self._attempt(row), name=f"{self.name}.deliver[{row['id']}]")
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if claimed and len(claimed) == min(free, s.batch_size):
                await asyncio.sleep(0)  # more may be due: claim again at once
                continue
            waiters = [asyncio.ensure_future(self._wake.wait())]
            waiters += list(self._inflight)
            await asyncio.wait(waiters, timeout=s.poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
            if not waiters[0].done():
                waiters[0].cancel()

    async def drain(self, within_s: float) -> None:
        """Let in-flight attempts finish (each is bounded by its channel's timeout)."""
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=within_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _claim(self, n: int) -> list[asyncpg.Record]:
        try:
            async with self.pool.acquire() as conn:
                return await conn.fetch(_CLAIM, n, self.lease_s)
        except DB_ERRORS as err:
            logger.warning("notification outbox: cannot claim rows (%s); retrying", err)
            await asyncio.sleep(self.settings.poll_interval_s)
            return []

    # ------------------------------------------------------------------ one attempt
    async def _attempt(self, row: asyncpg.Record) -> None:
        try:
            await self._attempt_once(row)
        except DB_ERRORS as err:
            # The claim stands: when its lease runs out the row is due again (at-least-once).
            logger.warning("notification %s: outcome not recorded (%s); it is retried after "
                           "its lease of %.0f s", row["id"], err, self.lease_s)

    async def _attempt_once(self, row: asyncpg.Record) -> None:
        channel = row["channel"]
        self.attempts += 1
        try:
            await self._send(row)
        except DeliveryError as err:
            await self._failed(row, err)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug in a channel must not kill the worker
            logger.exception("notification %s: unexpected error on %s", row["id"], channel)
            await self._failed(row, DeliveryError(f"{type(err).__name__}: {err}"))
        else:
            async with self.pool.acquire() as conn:
                seconds = await conn.fetchval(_DELIVERED, row["id"], row["attempts"])
            self.metrics.notify_delivered.labels(channel).inc()
            if seconds is not None:
                self.metrics.notify_latency.labels(channel).observe(float(seconds))
            logger.info("notification %s (%s %s, alarm %s) delivered by %s to %s after %d attempt(s)",
                        row["id"], row["event"], row["dedup_key"], row["alarm_id"], channel,
                        row["target"], row["attempts"])

    async def _send(self, row: asyncpg.Record) -> None:
        payload = row["payload"]
        msg_id = f"ntf_{row['id']}"
        body = payload["body"]
        channel, target = row["channel"], row["target"]
        if channel == "webhook":
            secret, timeout_s = await self._webhook_secret(Recipient.from_json(payload["recipient"]))
            await self.webhook.send(target, msg_id, orjson.dumps(body), secret=secret,
                                    timeout_s=timeout_s)
        elif channel == "email":
            if self.email is None:
                raise DeliveryError("no SMTP server is configured (notify.smtp)", permanent=True)
            await self.email.send(target, msg_id, body)
        elif channel == "crew":
            await self.crew.send(target, msg_id, body)
        else:
            raise DeliveryError(f"unknown channel {channel!r}", permanent=True)

    async def _webhook_secret(self, r: Recipient) -> tuple[str | None, float]:
        s = self.settings
        if r.kind == "webhook":
            hook = next((w for w in s.webhooks if w.name == r.key), None)
            if hook is None:
                raise DeliveryError(f"webhook {r.key!r} is no longer configured", permanent=True)
            return hook.secret, hook.timeout_s
        if r.kind == "contact":
            c = next((c for c in s.escalation.contacts if c.name == r.key), None)
            return (c.webhook_secret if c else None), s.webhook_timeout_s
        async with self.pool.acquire() as conn:
            secret = await conn.fetchval(
                "select contacts->>'webhook_secret' from crews where id = $1", r.key)
        return secret, s.webhook_timeout_s

    async def _failed(self, row: asyncpg.Record, err: DeliveryError) -> None:
        s = self.settings
        channel = row["channel"]
        self.metrics.notify_attempt_errors.labels(channel).inc()
        error = str(err)[:1000]
        if not err.permanent and row["attempts"] < s.max_attempts:
            delay = backoff(row["attempts"], s.backoff_initial_s, s.backoff_max_s)
            if err.retry_after is not None:
                delay = max(delay, min(err.retry_after, s.backoff_max_s))
            async with self.pool.acquire() as conn:
                await conn.execute(_RETRY, row["id"], row["attempts"], delay, error)
            if isinstance(err, NobodyListening):  # the normal case: one line when it ends
                logger.debug("notification %s: crew %s has no page open (attempt %d of %d); "
                             "trying again in %.1f s", row["id"], row["target"], row["attempts"],
                             s.max_attempts, delay)
            else:
                logger.info("notification %s (alarm %s, %s) by %s to %s failed (attempt %d of %d): "
                            "%s; retry in %.1f s", row["id"], row["alarm_id"], row["dedup_key"],
                            channel, row["target"], row["attempts"], s.max_attempts, error, delay)
            return
        await self._give_up(row, error, nobody_listening=isinstance(err, NobodyListening))

    async def _give_up(self, row: asyncpg.Record, error: str, *, nobody_listening: bool = False) -> None:
        payload = row["payload"]
        rest: list[dict[str, Any]] = payload.get("fallback") or []
        channel = row["channel"]
        recipient = Recipient.from_json(payload["recipient"])
        async with self.pool.acquire() as conn, conn.transaction():
            status = "fallback" if rest else "failed"
            if await conn.fetchval(_GIVE_UP, row["id"], row["attempts"], status, error) is None:
                return  # re-claimed by another worker after a lapsed lease: its answer counts
            if rest:
                nxt, remaining = rest[0], rest[1:]
                # The channels that failed before travel along: the last one's log line says
                # whether a real delivery failed or only nobody had the crew page open.
                failed = [*payload.get("failed_channels", []), channel]
                await conn.execute(_NEXT_CHANNEL, row["alarm_id"], row["event"], nxt["channel"],
                                   nxt["target"], row["dedup_key"],
                                   {**payload, "fallback": remaining, "failed_channels": failed})
                await conn.execute("select pg_notify('ioc_notify_outbox', '')")
            elif row["alarm_id"] is not None:
                await conn.execute(
                    "insert into alarm_events (alarm_id, event, actor, reason, details) "
                    "values ($1, 'notification_failed', 'notifier', $2, $3)",
                    row["alarm_id"], f"{row['event']} notification to {recipient} failed on every "
                    f"channel; last error: {error}",
                    {"recipient": recipient.as_json(), "event": row["event"], "outbox_id": row["id"],
                     "last_channel": channel, "dedup_key": row["dedup_key"]})
        if rest:
            self.metrics.notify_fallbacks.labels(channel).inc()
            logger.warning("notification %s (alarm %s, %s) to %s: giving up on %s (%s); falling "
                           "back to %s", row["id"], row["alarm_id"], row["dedup_key"], recipient,
                           channel, error, rest[0]["channel"])
        elif nobody_listening and not payload.get("failed_channels"):
            self.metrics.notify_failed.labels(channel).inc()
            logger.info("alarm %s (%s): the %s notification was not pushed to crew %s, whose page "
                        "nobody had open (%d attempts); the alarm waits in the crew's list",
                        row["alarm_id"], row["dedup_key"], row["event"], row["target"],
                        row["attempts"])
        else:
            self.metrics.notify_failed.labels(channel).inc()
            logger.error("NOTIFICATION FAILED: %s of alarm %s (%s) to %s failed on every channel; "
                         "last error on %s: %s", row["event"], row["alarm_id"], row["dedup_key"],
                         recipient, channel, error)

    # ------------------------------------------------------------------ housekeeping
    async def refresh_gauges(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_PENDING)
        counts = {ch: 0 for ch in CHANNELS}
        overdue = 0.0
        for r in rows:
            counts[r["channel"]] = r["n"]
            overdue = max(overdue, float(r["overdue_s"] or 0))
        for ch, n in counts.items():
            self.metrics.notify_pending.labels(ch).set(n)
        self.metrics.notify_oldest_due_s.set(overdue)

    async def purge(self) -> int:
        async with self.pool.acquire() as conn:
            result = await conn.execute(_PURGE, self.settings.retention_days)
        return int(result.split()[-1])
