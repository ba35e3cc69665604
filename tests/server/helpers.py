"""Helpers the tests of tests/server share: alarm rules and reads, the notification tests'
real webhook receiver and SMTP server and a notifier over a real database, and the small
city of the simulator tests."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import yaml
from aiohttp import web
from aiosmtpd.controller import Controller

from server.notify import Notifier
from server.notify.escalation import SELECT_ALARM
from server.runtime.metrics import Registry
from server.settings import EscalationSettings, NotifySettings, QuietHours, SmtpSettings
from server.store.db import create_pool
from tests.helpers import iso, q


# ---------------------------------------------------------------- alarms
def write_rules(path, *rules) -> str:
    path.write_text(yaml.safe_dump({"rules": list(rules)}, sort_keys=False))
    return str(path)


def first(url: str, kind: str, n: int = 1) -> list[str]:
    return [r[0] for r in q(url, "select id from devices where kind = %s order by id limit %s",
                            kind, n)]


async def send(pub, device: str, values: dict, ts: datetime | None = None) -> None:
    msg = {"values": values} | ({"ts": iso(ts)} if ts else {})
    await pub.publish(f"ioc/v1/{device}/telemetry", orjson.dumps(msg), qos=1)


def state_of(url: str, rule: str, device: str) -> str | None:
    rows = q(url, "select state from alarms where rule = %s and device = %s order by id desc "
                  "limit 1", rule, device)
    return rows[0][0] if rows else None



# ---------------------------------------------------------------- notifications
class Receiver:
    """A real HTTP webhook receiver on a fixed port, which may be started late."""

    def __init__(self, port: int, status: int = 200, delay_s: float = 0.0) -> None:
        self.port = port
        self.status = status
        self.delay_s = delay_s
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(({k.lower(): v for k, v in request.headers.items()}, body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=self.status, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class _MailHandler:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        msg["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(msg)
        return "250 Message accepted for delivery"


class Mailbox:
    """A real SMTP server (aiosmtpd) on a fixed port, which may be started late."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.handler = _MailHandler()
        self.controller: Controller | None = None

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return self.handler.messages

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    async def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        await asyncio.to_thread(self.controller.start)

    async def stop(self) -> None:
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop)


# The tests' webhook receivers listen on loopback, which the notifier refuses unless allowed
# (server/notify/outbound.py): the tests allow-list their own, as an administrator would.
RECEIVERS = ("127.0.0.0/8",)


def fast_settings(**kw: Any) -> NotifySettings:
    """Quick retries and polling, no quiet hours or escalation unless asked for."""
    kw.setdefault("backoff_initial_s", 0.1)
    kw.setdefault("backoff_max_s", 0.4)
    kw.setdefault("poll_interval_s", 0.1)
    kw.setdefault("quiet_hours", QuietHours(enabled=False))
    kw.setdefault("escalation", EscalationSettings(enabled=False))
    return NotifySettings(**kw)


def smtp(port: int) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, sender="ioc@city.example", timeout_s=5)


@asynccontextmanager
async def notifier_running(url: str, settings: NotifySettings, *, hub=None, start: bool = True,
                           allow_outbound=RECEIVERS):
    pool = await create_pool(url, min_size=1, max_size=6)
    notifier = Notifier(pool, settings, Registry(), hub=hub, database_url=url,
                        allow_outbound=allow_outbound)
    try:
        if start:
            await notifier.start()
        yield pool, notifier
    finally:
        await notifier.stop()
        await pool.close()


async def new_alarm(conn, device: str, *, rule: str = "pressure-low", severity: str = "major",
                    priority: int = 2, assigned_crew: str | None = None, **cols: Any) -> dict:
    """An alarm row as the engine would write it, returned as the API shows it."""
    names = ["rule", "device", "severity", "priority", "message", "value", "dedup_key",
             "assigned_crew", *cols]
    values = [rule, device, severity, priority, f"{rule} on {device}", 1.2, f"{rule}:{device}",
              assigned_crew, *cols.values()]
    params = ", ".join(f"${i + 1}" for i in range(len(values)))
    alarm_id = await conn.fetchval(
        f"insert into alarms ({', '.join(names)}, geom) values ({params}, "
        f"(select geom from devices where id = $2)) returning id", *values)
    return dict(await conn.fetchrow(SELECT_ALARM, alarm_id))


async def raise_alarm(pool, notifier, device: str, **kw: Any) -> tuple[dict, dict | None]:
    """Insert an alarm and enqueue "raised" in one transaction, as the engine does."""
    async with pool.acquire() as conn, conn.transaction():
        alarm = await new_alarm(conn, device, **kw)
        result = await notifier.enqueue(conn, alarm, "raised")
    return alarm, result


async def transition(pool, notifier, alarm_id: int, event: str, sql: str | None = None) -> dict:
    async with pool.acquire() as conn, conn.transaction():
        if sql:
            await conn.execute(f"update alarms set {sql} where id = $1", alarm_id)
        alarm = dict(await conn.fetchrow(SELECT_ALARM, alarm_id))
        await notifier.enqueue(conn, alarm, event)
    return alarm


async def outbox(pool, alarm_id: int | None = None) -> list[dict]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select * from notification_outbox where ($1::bigint is null or alarm_id = $1) "
            "order by id", alarm_id)
    return [dict(r) for r in rows]


def spec_signature(secret: str, hdrs: dict[str, str], body: bytes) -> str:
    """The signature computed from the spec's text alone, independent of server code."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{hdrs['webhook-id']}.{hdrs['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def window_around(now: datetime, tz: ZoneInfo) -> QuietHours:
    local = now.astimezone(tz)
    return QuietHours(start=(local - timedelta(hours=1)).time().replace(second=0, microsecond=0),
                      end=(local + timedelta(hours=1)).time().replace(second=0, microsecond=0),
                      timezone=str(tz), min_priority=3)


# ---------------------------------------------------------------- the simulator's small city
HCM = ZoneInfo("Asia/Ho_Chi_Minh")
CENTRE = (105.84, 21.59)


def local(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 3, day, hour, minute, tzinfo=HCM).timestamp()


def offset(dx_m: float, dy_m: float) -> tuple[float, float]:
    lat = CENTRE[1] + dy_m / 111_320
    return CENTRE[0] + dx_m / (111_320 * np.cos(np.radians(lat))), lat


def city_rows() -> list[dict]:
    """Two cabinets of six lamps, sensors placed at known distances from the centre."""
    rows = []

    def add(id_, kind, where=(0, 0), parent=None, **props):
        lon, lat = offset(*where)
        rows.append({"id": id_, "kind": kind, "parent": parent, "lon": lon, "lat": lat,
                     "properties": props})

    for c in (1, 2):
        add(f"LC-{c:04d}", "lighting_cabinet", (c * 300, 0))
        for i in range(6):
            add(f"SL-{c}{i:03d}", "streetlight", (c * 300 + 20 * i, 10), f"LC-{c:04d}",
                rated_power_w=90 if i % 2 else 120)
    add("PS-NEAR", "pressure_sensor", (100, 0))
    add("PS-MID", "pressure_sensor", (0, 400))
    add("PS-FAR", "pressure_sensor", (3000, 0))
    add("FM-0001", "flow_meter", (800, 0))
    for i in range(4):
        add(f"WM-{i:04d}", "water_meter", (50 * i, -100))
    add("TC-0001", "traffic_controller", (0, 50))
    add("RS-0001", "road_segment", (0, 60), lanes=2)
    add("ENV-0001", "env_sensor", (0, 70))
    add("CAM-0001", "camera", (0, 80))
    return rows
