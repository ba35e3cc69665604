"""Delivery channels: a signed webhook, an e-mail over SMTP, the crew's live feed.

Each ``send`` returns on success and raises :class:`DeliveryError` otherwise; the worker
owns retries, backoff and fallback (one retry policy per connection: none here).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import aiosmtplib

from server.notify import signing
from server.notify.outbound import OutboundPolicy, RefusedAddress
from server.settings import SmtpSettings

USER_AGENT = "ioc-server-notify/1"


class DeliveryError(Exception):
    """One failed attempt. ``permanent``: retrying this channel cannot help (fall back now)."""

    def __init__(self, message: str, *, permanent: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class NobodyListening(DeliveryError):
    """The crew feed reached nobody: no page of the crew is open. That is the normal state
    of a crew out in the field, not a fault of the server or the network; the alarm is in
    the crew's list when one of them opens the page."""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for webhooks, and backoff covers it


class WebhookChannel:
    """POSTs through a session whose resolver refuses inner addresses (server/notify/
    outbound.py); literal addresses are checked here, as aiohttp does not resolve them."""

    def __init__(self, session: aiohttp.ClientSession, policy: OutboundPolicy | None = None) -> None:
        self.session = session
        self.policy = policy or OutboundPolicy()

    async def send(self, url: str, msg_id: str, body: bytes, *, secret: str | None,
                   timeout_s: float) -> None:
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   **signing.headers(secret, msg_id, body)}
        try:
            self.policy.check_literal(url)
        except RefusedAddress as err:
            raise DeliveryError(f"refused to post to {err}", permanent=True) from err
        try:
            async with self.session.post(
                url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                # Standard Webhooks: 410 Gone means the receiver wants no more; redirects are
                # failures (update the URL); everything else is worth a retry.
                raise DeliveryError(
                    f"HTTP {resp.status} from {url}", permanent=resp.status == 410,
                    retry_after=_retry_after(resp.headers.get("Retry-After")))
        except aiohttp.ClientConnectorError as err:
            if isinstance(err.os_error, RefusedAddress):  # the guarded resolver said no
                raise DeliveryError(f"refused to post to {url}: {err.os_error}",
                                    permanent=True) from err
            raise DeliveryError(f"{type(err).__name__} posting to {url}: {err}".rstrip(": ")) from err
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise DeliveryError(f"{type(err).__name__} posting to {url}: {err}".rstrip(": ")) from err


def thread_id(dedup_key: str) -> str:
    """One Message-ID-like id per alarm, so mail clients thread raise, ack and clear."""
    return f"<alarm-{hashlib.sha256(dedup_key.encode()).hexdigest()[:24]}@ioc>"


def _local(ts: Any, tz: ZoneInfo) -> str:
    if not ts:
        return "-"
    try:
        t = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return str(ts)
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def render_email(body: dict[str, Any], tz: ZoneInfo) -> tuple[str, str]:
    """Subject and plain text of one notification, times in the city's zone."""
    data = body["data"]
    a = data.get("alarm", {})
    event = data["event"]
    what = a.get("message") or a.get("rule") or "alarm"
    subject = f"[IOC] {event.upper()} {a.get('severity', '')}: {what} at {a.get('device')}"
    lines = [
        f"{event.replace('_', ' ').capitalize()}: {a.get('severity')} alarm {a.get('id')} "
        f"on device {a.get('device')}",
        "",
        f"Rule:       {a.get('rule')}",
        f"Message:    {a.get('message') or '-'}",
        f"Value:      {a.get('value') if a.get('value') is not None else '-'}",
        f"State:      {a.get('state')}",
        f"Raised:     {_local(a.get('raised_at'), tz)}",
    ]
    if a.get("acked_at"):
        lines.append(f"Acked:      {_local(a.get('acked_at'), tz)} by {a.get('acked_by') or '-'}")
    if a.get("cleared_at"):
        lines.append(f"Cleared:    {_local(a.get('cleared_at'), tz)}")
    if a.get("assigned_crew"):
        lines.append(f"Crew:       {a.get('assigned_crew')}")
    if data.get("escalation_level"):
        lines.append(f"Escalation: level {data['escalation_level']} "
                     f"({data.get('reason', 'not acknowledged in time')})")
    geom = a.get("geometry") or {}
    if geom.get("type") == "Point":
        lon, lat = geom["coordinates"][:2]
        lines.append(f"Location:   {lat:.6f}, {lon:.6f}")
    lines += ["", f"Dedup key:  {data.get('dedup_key')}", f"Sent:       {_local(body['timestamp'], tz)}"]
    return subject, "\n".join(lines) + "\n"


class EmailChannel:
    def __init__(self, smtp: SmtpSettings, tz: ZoneInfo) -> None:
        self.smtp = smtp
        self.tz = tz

    def message(self, to: str, msg_id: str, body: dict[str, Any]) -> EmailMessage:
        subject, text = render_email(body, self.tz)
        msg = EmailMessage()
        msg["From"] = self.smtp.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = format_datetime(datetime.now(self.tz))
        msg["Message-ID"] = make_msgid(idstring=msg_id, domain="ioc")
        # Every message its own id (a re-raised alarm must not look like a duplicate), all
        # referring to one id per dedup key, which is what clients thread on.
        thread = thread_id(body["data"]["dedup_key"])
        msg["References"] = thread
        if body["data"]["event"] != "raised":
            msg["In-Reply-To"] = thread
        msg["X-IOC-Dedup-Key"] = body["data"]["dedup_key"]
        msg["X-IOC-Event"] = body["data"]["event"]
        msg["X-IOC-Notification-Id"] = msg_id
        msg.set_content(text)
        return msg

    async def send(self, to: str, msg_id: str, body: dict[str, Any]) -> None:
        s = self.smtp
        try:
            await aiosmtplib.send(
                self.message(to, msg_id, body), hostname=s.host, port=s.port,
                username=s.username, password=s.password, use_tls=s.use_tls,
                # None: STARTTLS when the server offers it; never on an implicit-TLS link.
                start_tls=False if s.use_tls else (True if s.starttls else None),
                timeout=s.timeout_s)
        except aiosmtplib.SMTPRecipientsRefused as err:
            codes = [r.code for r in err.recipients]
            raise DeliveryError(f"the mail server refused {to}: {codes}",
                                permanent=all(500 <= c < 600 for c in codes)) from err
        except aiosmtplib.SMTPResponseException as err:
            raise DeliveryError(f"SMTP {err.code} from {s.host}:{s.port}: {err.message}",
                                permanent=500 <= err.code < 600) from err
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as err:
            raise DeliveryError(f"{type(err).__name__} sending to {s.host}:{s.port}: {err}") from err


class CrewFeedChannel:
    """The crew's own page over the websocket hub: delivered only if one of them is connected."""

    def __init__(self, hub) -> None:
        self.hub = hub

    async def send(self, crew: str, msg_id: str, body: dict[str, Any]) -> None:
        message = {"type": "notification", "id": msg_id, "event": body["data"]["event"],
                   "dedup_key": body["data"]["dedup_key"], "timestamp": body["timestamp"],
                   "alarm": body["data"].get("alarm"),
                   **({"report": body["data"]["report"]} if "report" in body["data"] else {}),
                   **({"escalation_level": body["data"]["escalation_level"]}
                      if "escalation_level" in body["data"] else {})}
        if self.hub is None or not self.hub.send_to_crew(crew, message):
            raise NobodyListening(f"no client of crew {crew} is connected")
