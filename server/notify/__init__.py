"""Alarm notifications: outbox, channels (webhook, SMTP, crew feed), routing, escalation.

- :class:`Notifier` (``app[keys.NOTIFIER]``, handed to the alarm engine when the app is
  wired): :meth:`Notifier.enqueue` (``outbox.py``), which the engine calls inside each
  transition's transaction, routes new alarms to a crew and writes outbox rows; the
  outbox worker (``worker.py``: claim, deliver, back off, fall back, fail loudly) and the
  escalation loop (``escalation.py``).
- Channels (``channels.py``): Standard Webhooks-signed POSTs (``signing.py``), e-mail over
  SMTP (aiosmtplib), the crew's live feed through the websocket hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from server import keys
from server.notify.channels import CrewFeedChannel, EmailChannel, WebhookChannel
from server.notify.escalation import Escalator
from server.notify.outbound import GuardedResolver, OutboundPolicy
from server.notify.outbox import WAKE_CHANNEL, Enqueuer
from server.notify.worker import OutboxWorker
from server.settings import NotifySettings

__all__ = ["Notifier", "notify_ctx"]

logger = logging.getLogger(__name__)

GAUGE_INTERVAL_S = 5.0
PURGE_INTERVAL_S = 3600.0


class Notifier:
    """One server's notification machinery; enqueueing needs none of it to be running."""

    def __init__(self, pool: asyncpg.Pool, settings: NotifySettings, metrics, *, hub=None,
                 database_url: str | None = None, name: str = "notify",
                 allow_outbound: Sequence[str] = ()) -> None:
        self.pool = pool
        # Webhooks reach public addresses only, unless [security] allow_outbound says more.
        self.outbound = OutboundPolicy(allow_outbound)
        self.settings = settings
        self.metrics = metrics
        self.database_url = database_url
        self.name = name
        self.enqueuer = Enqueuer(settings)
        self._session: aiohttp.ClientSession | None = None
        self._listener: asyncpg.Connection | None = None
        self._tasks: set[asyncio.Task] = set()
        self.hub = hub
        self.worker: OutboxWorker | None = None
        self.escalator = Escalator(pool, settings, self.enqueuer, metrics)

    async def enqueue(self, conn: asyncpg.Connection, alarm: dict[str, Any],
                      event: str) -> dict[str, Any] | None:
        """Queue the notifications of one alarm transition, inside the caller's transaction.

        ``alarm`` is the alarm as the API shows it; ``event`` one of
        server.settings.NOTIFY_EVENTS. On "raised" with no ``assigned_crew`` it routes the
        alarm (ward crew, else nearest available crew), sets alarms.assigned_crew, records an
        ``assigned`` alarm event and returns ``{"assigned_crew": id}``; otherwise None.
        Shelved, suppressed and out-of-service alarms are not announced. Low priorities
        wait out quiet hours. Needs nothing of the notifier to be running.
        """
        return await self.enqueuer.enqueue(conn, alarm, event)

    async def start(self) -> None:
        s = self.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=GuardedResolver(self.outbound)))
        email = None
        if s.smtp is not None:
            email = EmailChannel(s.smtp, self.enqueuer.quiet.tz)
        webhook = WebhookChannel(self._session, self.outbound)
        self.worker = OutboxWorker(self.pool, s, self.metrics, webhook=webhook, email=email,
                                   crew=CrewFeedChannel(self.hub), name=self.name)
        for hook in s.webhooks:
            if not hook.secret:
                logger.warning("webhook %r (%s) has no secret: its requests are not signed",
                               hook.name, hook.url)
        await self._listen()
        self._spawn(self.worker.run(), "outbox")
        self._spawn(self._housekeeping(), "housekeeping")
        if s.escalation.enabled:
            self._spawn(self.escalator.run(), "escalation")

    def _spawn(self, coro, what: str) -> None:
        task = asyncio.create_task(coro, name=f"{self.name}.{what}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s stopped", task.get_name(), exc_info=task.exception())

    async def _listen(self) -> None:
        """Wake the worker the moment a transaction with new rows commits (any server)."""
        if not self.database_url:
            return
        try:
            self._listener = await asyncpg.connect(self.database_url)
            await self._listener.add_listener(WAKE_CHANNEL, lambda *_: self.wake())
        except (asyncpg.PostgresError, OSError) as err:
            logger.warning("notification outbox: LISTEN failed (%s); polling every %.1f s",
                           err, self.settings.poll_interval_s)
            self._listener = None

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def _housekeeping(self) -> None:
        since_purge = PURGE_INTERVAL_S
        while True:
            try:
                await self.worker.refresh_gauges()
                if since_purge >= PURGE_INTERVAL_S:
                    since_purge = 0.0
                    purged = await self.worker.purge()
                    if purged:
                        logger.info("notification outbox: purged %d delivered rows", purged)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
                logger.warning("notification outbox housekeeping failed: %s", err)
            await asyncio.sleep(GAUGE_INTERVAL_S)
            since_purge += GAUGE_INTERVAL_S

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.worker is not None:
            await self.worker.drain(5.0)
        if self._listener is not None:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await self._listener.close(timeout=5)
        if self._session is not None:
            await self._session.close()


async def notify_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    notifier = Notifier(app[keys.DB], settings.notify, app[keys.METRICS], hub=app.get(keys.HUB),
                        database_url=settings.database_url,
                        allow_outbound=settings.security.allow_outbound)
    app[keys.NOTIFIER] = notifier
    await notifier.start()
    try:
        yield
    finally:
        await notifier.stop()
