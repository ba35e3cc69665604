"""Several server processes sharing MQTT ingest, and a dead process's share taken over.

With ``mqtt_shared_group`` set, each process subscribes to the devices' topics through
``$share/<group>/...`` under its own client id, so the broker gives each message to one
of them. mosquitto 2.0 hands shared messages round-robin to every member's *session*,
connected or not: a member that dies without unsubscribing (SIGKILL, power loss) keeps
receiving its turn, queued in its persistent session until a client with its id connects
again (checked against mosquitto 2.0.11; the code is ``subs__shared_process``, which does
not look at the connection). Nothing is lost that way (the queue and the unacknowledged
in-flight messages are delivered when the member comes back), but every other reading
would wait for a process that may never return.

So the processes watch each other through the broker and take a dead one's session over:

* each process's ingest connection carries a will, ``{"state": "offline"}`` retained on
  ``ioc/internal/v1/ingest/<group>/<client id>``, and announces ``"online"`` there after
  every connect; a graceful stop announces ``"offline"`` too, after its DISCONNECT;
* each process follows those topics on a connection of its own (``<client id>-peers``);
  a peer offline for ``GRACE_S`` is taken over: one survivor (a PostgreSQL advisory lock
  picks it when there are several) connects *with the dead peer's client id*, resuming its
  persistent session, and stores what was queued and in flight there and every new
  message of that share, through its own ingest pipeline, acknowledging after commit as
  usual;
* that borrowed connection never reconnects: when the peer comes back, its CONNECT
  takes the session back (the broker closes ours), and what we had not acknowledged yet
  goes to it; storage is idempotent on (device, metric, ts), so a reading both stored
  counts once. A borrowed connection lost to a broker restart is taken again while the
  peer's status still says offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from urllib.parse import quote

import asyncpg
import orjson

from server.ingest.routing import MqttIngest
from server.mqtt.link import CONNECT_TIMEOUT_S, Message, MqttLink

logger = logging.getLogger(__name__)

STATUS_TOPIC = "ioc/internal/v1/ingest"
GRACE_S = 1.0  # a peer's session is borrowed after it has been offline this long
RETRY_S = 5.0  # after a failed or ended take-over, before the next attempt
CHECK_S = 1.0


def status_topic(group: str, client_id: str) -> str:
    return f"{STATUS_TOPIC}/{group}/{quote(client_id, safe='')}"


def status_payload(group: str, client_id: str, state: str) -> bytes:
    return orjson.dumps({"state": state, "client_id": client_id, "group": group})


def lock_key(group: str, client_id: str) -> int:
    """A signed 64-bit advisory lock key naming one member's session."""
    digest = hashlib.blake2b(f"ioc.mqtt.share:{group}:{client_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class IngestShare:
    """This process's place in an ingest share group (see the module docstring)."""

    def __init__(self, mqtt_url: str, group: str, client_id: str, pool: asyncpg.Pool,
                 make_handler: Callable[[], MqttIngest]) -> None:
        self.mqtt_url = mqtt_url
        self.group = group
        self.client_id = client_id
        self.pool = pool
        self.make_handler = make_handler
        self.topic = status_topic(group, client_id)
        self.will = (self.topic, status_payload(group, client_id, "offline"))
        self.watch = MqttLink(mqtt_url, f"{client_id}-peers",
                              subscriptions=[f"{STATUS_TOPIC}/{group}/+"], on_messages=self._seen)
        self.ingest_link: MqttLink | None = None
        self.peers: dict[str, tuple[str, float]] = {}  # client id -> (state, monotonic since)
        self.borrowed: dict[str, asyncio.Task] = {}  # client id -> its take-over task
        self.took_over: list[str] = []  # every take-over that connected (log, tests)
        self._not_before: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._keeper: asyncio.Task | None = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self, ingest_link: MqttLink) -> None:
        self.ingest_link = ingest_link
        await self.watch.start()
        self._keeper = asyncio.create_task(self._keep(), name="mqtt.share.keeper")

    async def stop(self) -> None:
        """After the ingest link's DISCONNECT (which suppresses the will): say we left, so
        a peer takes our share while we are away instead of it queueing for us."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        for task in [*self.borrowed.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self.borrowed.values(), *self._tasks, return_exceptions=True)
        if self.watch.is_connected:
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self.watch.publish(self.topic, self.will[1], qos=1, retain=True)
        await self.watch.stop()

    def ingest_connected(self, up: bool) -> None:
        """The ingest link's on_connected: announce ourselves after every connect."""
        link = self.ingest_link
        if up and link is not None:
            task = asyncio.get_running_loop().create_task(
                self._announce(link), name="mqtt.share.announce")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _announce(self, link: MqttLink) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await link.publish(self.topic, status_payload(self.group, self.client_id,
                                                              "online"), qos=1, retain=True)

    # ---------------------------------------------------------------- peers
    async def _seen(self, messages: list[Message]) -> None:
        now = time.monotonic()
        for m in messages:
            try:
                doc = orjson.loads(m.payload) if m.payload else None
                cid, state = (doc["client_id"], doc["state"]) if doc else (None, None)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                logger.warning("ignoring a malformed ingest status on %s", m.topic)
                continue
            if cid is None or cid == self.client_id:
                continue
            if state not in ("online", "offline"):
                self.peers.pop(cid, None)
                continue
            if self.peers.get(cid, ("", 0.0))[0] != state:
                logger.info("ingest share %s: %s is %s", self.group, cid, state)
                self.peers[cid] = (state, now)
        self.watch.ack_all(messages)
        self._wake.set()

    async def _keep(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_S):
                    await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            for cid, (state, since) in list(self.peers.items()):
                if (state == "offline" and cid not in self.borrowed and now - since >= GRACE_S
                        and now >= self._not_before.get(cid, 0.0)):
                    task = asyncio.create_task(self._borrow(cid), name=f"mqtt.share.borrow[{cid}]")
                    self.borrowed[cid] = task
                    task.add_done_callback(lambda _t, cid=cid: self._ended(cid))

    def _ended(self, cid: str) -> None:
        self.borrowed.pop(cid, None)
        self._not_before[cid] = time.monotonic() + RETRY_S
        self._wake.set()

    async def _borrow(self, cid: str) -> None:
        """Serve a dead peer's session until it comes back (or the broker drops us)."""
        key = lock_key(self.group, cid)
        try:
            conn = await self.pool.acquire()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            logger.warning("cannot take over %s's ingest share yet (database: %s)", cid, err)
            return
        link = None
        locked = False
        try:
            locked = await conn.fetchval("select pg_try_advisory_lock($1)", key)
            if not locked:
                return  # another survivor serves it
            if self.peers.get(cid, ("",))[0] != "offline":
                return  # it came back while we waited for the lock
            handler = self.make_handler()
            ended = asyncio.Event()
            link = MqttLink(self.mqtt_url, cid, on_messages=handler.handle_batch,
                            on_connected=lambda up: None if up else ended.set(), reconnect=False)
            handler.link = link
            await link.start()
            async with asyncio.timeout(CONNECT_TIMEOUT_S + 1):
                await link.connected.wait()
            self.took_over.append(cid)
            logger.warning("ingest share %s: %s is gone; this process (%s) serves its share "
                           "until it reconnects", self.group, cid, self.client_id)
            await ended.wait()
            logger.info("ingest share %s: gave %s's share back (its session was taken or the "
                        "broker closed it)", self.group, cid)
        except TimeoutError:
            logger.warning("ingest share %s: could not connect as %s to take its share over",
                           self.group, cid)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            logger.warning("ingest share %s: take-over of %s failed (%s)", self.group, cid, err)
        finally:
            if link is not None:
                await link.stop()
            if locked:
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await conn.execute("select pg_advisory_unlock($1)", key)
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self.pool.release(conn)
