"""Helpers the tests of every folder share: the app behind a real HTTP server, waits on
conditions, database reads, an MQTT publisher, the API's auth header and command polling.

Database access comes twice: ``q``/``count``/``execute`` for plain tests, ``aq``/``acount``/
``aexecute`` for async ones (the same psycopg query in a worker thread, so the event loop that serves the app
under test never blocks on the database). A waited-for condition that reads the database
goes to ``wait_for(..., blocking=True)`` for the same reason.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
from aiohttp.test_utils import TestClient, TestServer

from server.http.app import create_app
from server.mqtt.link import parse_mqtt_url

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def running(settings):
    """The whole app (cleanup contexts included) behind a real HTTP server."""
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def wait_for(predicate, within: float = 15.0, interval: float = 0.05, *,
                   blocking: bool = False, what: str = "condition"):
    """Poll ``predicate`` until it is truthy and return its value; fail after ``within`` s.

    The predicate may return an awaitable (it is awaited). ``blocking=True`` says it reads
    the database: it then runs in a worker thread, never on the event loop.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await asyncio.to_thread(predicate) if blocking else predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {within} s")
        await asyncio.sleep(interval)


async def until(predicate, within: float = 60.0, interval: float = 0.05, what: str = "condition"):
    """``wait_for`` with a deadline generous for a busy machine (the notification tests')."""
    return await wait_for(predicate, within, interval, what=what)


async def wait_connected(client):
    from server.keys import MQTT

    link = client.app[MQTT]
    await asyncio.wait_for(link.connected.wait(), 15)


def q(url, sql, *args):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def count(url, sql="select count(*) from telemetry", *args) -> int:
    return q(url, sql, *args)[0][0]


def execute(url, sql, *args) -> None:
    """One statement (a write, DDL) in its own committed transaction."""
    with psycopg.connect(url) as conn:
        conn.execute(sql, args)


async def aq(url, sql, *args):
    """``q`` for async tests: the same rows, read off the event loop."""
    return await asyncio.to_thread(q, url, sql, *args)


async def aexecute(url, sql, *args) -> None:
    """``execute`` for async tests, off the event loop."""
    await asyncio.to_thread(execute, url, sql, *args)


async def acount(url, sql="select count(*) from telemetry", *args) -> int:
    return (await aq(url, sql, *args))[0][0]


@asynccontextmanager
async def publisher(broker_url):
    async with aiomqtt.Client(**parse_mqtt_url(broker_url),
                              identifier="pub-" + uuid.uuid4().hex[:6]) as c:
        yield c


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def command_status(client, token: str, cmd_id: str) -> dict:
    resp = await client.get(f"/api/v1/commands/{cmd_id}", headers=auth(token))
    assert resp.status == 200
    return await resp.json()


async def until_status(client, token: str, cmd_id: str, *statuses: str, within: float = 30.0) -> dict:
    last: dict[str, Any] = {}

    async def poll() -> bool:
        last.update(await command_status(client, token, cmd_id))
        return last["status"] in statuses

    deadline = asyncio.get_running_loop().time() + within
    while not await poll():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"command {cmd_id} still {last.get('status')} after {within} s: {last}")
        await asyncio.sleep(0.1)
    return last
