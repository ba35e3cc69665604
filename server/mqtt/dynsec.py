"""The broker's accounts through mosquitto's dynamic security plugin.

Why the dynamic security plugin (and not a reloaded password/ACL file or an auth plugin):
it ships with mosquitto 2.0 (Debian's package and the eclipse-mosquitto image), it changes
clients and roles at run time through JSON commands on ``$CONTROL/dynamic-security/v1``
with no restart and no reload (a SIGHUP reload leaves a revoked password valid until the
signal is handled, and is a process signal the server may not be allowed to send), and
deleting a client disconnects it at once. An external auth plugin would be one more thing
to build and run.

Accounts (roles in brackets; every role is scoped to its topics):

* each device: user name = its id, its own role ``device:{id}``: publish
  ``ioc/v1/{id}/telemetry``, ``…/status``, ``…/commands/+/result``; subscribe to
  ``ioc/v1/{id}/commands`` only. (mosquitto 2.0's plugin has no ``%u`` patterns, hence
  one role per device.)
* the server [``ioc-server``]: everything it publishes and reads, nothing of ``$CONTROL``;
* the dynsec admin [``admin``]: ``$CONTROL/dynamic-security/#`` only; the server uses it
  to create and delete device accounts;
* the simulator [``ioc-simulator``]: the native topics of every device;
* ChirpStack gateways [``ioc-chirpstack``]: ``application/+/device/+/event/+`` out,
  ``application/+/device/+/command/+`` in;
* Sparkplug edge nodes [``ioc-sparkplug``]: ``spBv1.0/+/{N,D}{BIRTH,DATA,DEATH}/…`` out,
  ``spBv1.0/+/{N,D}CMD/…`` and ``spBv1.0/STATE/+`` in.

The plugin saves its whole file after every command that changes something, so a command
costs time in proportion to the number of accounts: the full set is written as a file
before the broker starts (:func:`config_document`, ``ioc credentials dynsec-file``), and
only the changes of a running system go through commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

CONTROL = "$CONTROL/dynamic-security/v1"
RESPONSE = CONTROL + "/response"
#: Commands per control message: each answer comes back in one message.
CHUNK = 200

ADMIN_ROLE = "admin"
SERVER_ROLE = "ioc-server"
SIMULATOR_ROLE = "ioc-simulator"
CHIRPSTACK_ROLE = "ioc-chirpstack"
SPARKPLUG_ROLE = "ioc-sparkplug"
GATEWAY_ROLES = {"chirpstack": CHIRPSTACK_ROLE, "sparkplug": SPARKPLUG_ROLE}
DEVICE_ROLE_PREFIX = "device:"

DEFAULT_ACL = {"publishClientSend": False, "publishClientReceive": True,
               "subscribe": False, "unsubscribe": True}


class DynSecError(RuntimeError):
    """The broker refused a command or did not answer."""


def _acl(kind: str, topic: str) -> dict:
    return {"acltype": kind, "topic": topic, "allow": True}


def _pub(*topics: str) -> list[dict]:
    return [_acl("publishClientSend", t) for t in topics]


def _sub(*topics: str) -> list[dict]:
    return [_acl("subscribePattern", t) for t in topics]


def device_role(device_id: str) -> dict:
    base = f"ioc/v1/{device_id}"
    return {"rolename": DEVICE_ROLE_PREFIX + device_id,
            "acls": [*_pub(f"{base}/telemetry", f"{base}/status", f"{base}/commands/+/result"),
                     _acl("subscribeLiteral", f"{base}/commands")]}


def service_roles() -> list[dict]:
    sp_out = [f"spBv1.0/+/{k}/+" for k in ("NBIRTH", "NDATA", "NDEATH")]
    sp_out += [f"spBv1.0/+/{k}/+/+" for k in ("DBIRTH", "DDATA", "DDEATH")]
    control = "$CONTROL/dynamic-security/#"
    return [
        {"rolename": ADMIN_ROLE,
         "acls": [*_pub(control), _acl("publishClientReceive", control), *_sub(control)]},
        # '#' matches no topic that starts with '$': the server never sees $CONTROL or
        # $SYS; $share/... is how several server processes split the ingest.
        {"rolename": SERVER_ROLE, "acls": [*_pub("#"), *_sub("#", "$share/#")]},
        {"rolename": SIMULATOR_ROLE,
         "acls": [*_pub("ioc/v1/+/telemetry", "ioc/v1/+/status", "ioc/v1/+/commands/+/result"),
                  *_sub("ioc/v1/+/commands")]},
        {"rolename": CHIRPSTACK_ROLE,
         "acls": [*_pub("application/+/device/+/event/+"),
                  *_sub("application/+/device/+/command/+")]},
        {"rolename": SPARKPLUG_ROLE,
         "acls": [*_pub(*sp_out), *_sub("spBv1.0/+/NCMD/+", "spBv1.0/+/DCMD/+/+",
                                        "spBv1.0/STATE/+")]},
    ]


def _hashed_client(username: str, mosquitto_hash: str | None, roles: Sequence[str]) -> dict:
    """A client entry of the plugin's file; ``mosquitto_hash`` as server.registry.credentials
    makes it (``$7$iterations$salt$hash``: the plugin's own PBKDF2-SHA512)."""
    client: dict[str, Any] = {"username": username, "roles": [{"rolename": r} for r in roles]}
    if mosquitto_hash:
        _, _, iterations, salt, digest = mosquitto_hash.split("$")
        client.update(password=digest, salt=salt, iterations=int(iterations))
    return client


def config_document(accounts: dict[str, tuple[str, Sequence[str]]],
                    devices: Iterable[tuple[str, str | None]]) -> dict:
    """The plugin's whole file: service ``accounts`` {user: (hash, roles)} and every device
    (id, hash or None: a device without a password cannot log in yet)."""
    clients = [_hashed_client(u, h, roles) for u, (h, roles) in accounts.items()]
    roles = service_roles()
    for dev, hashed in devices:
        if dev in accounts:
            continue  # a device named like a service account must not replace it
        roles.append(device_role(dev))
        clients.append(_hashed_client(dev, hashed, [DEVICE_ROLE_PREFIX + dev]))
    return {"clients": clients, "roles": roles, "groups": [], "defaultACLAccess": DEFAULT_ACL}


async def device_hashes(conn) -> list[tuple[str, str | None]]:
    rows = await conn.fetch("select d.id, c.password_hash from devices d left join "
                            "device_credentials c on c.device_id = d.id order by d.id")
    return [(r["id"], r["password_hash"]) for r in rows]


# -- the admin file ----------------------------------------------------------------------


def read_admin_file(path: Path) -> tuple[str, str]:
    """``{"username", "password"}`` of the dynsec admin (a file the owner alone reads)."""
    try:
        doc = json.loads(Path(path).read_text())
        return str(doc["username"]), str(doc["password"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DynSecError(f"cannot read the broker admin file {path}: {err}") from None


def new_password() -> str:
    return secrets.token_urlsafe(18)


# -- the client --------------------------------------------------------------------------


def tls_context(ca_file: Path | None, cert_file: Path | None = None,
                key_file: Path | None = None) -> ssl.SSLContext:
    """Verify the broker against ``ca_file`` (else the system's CAs); a client certificate
    when ``cert_file`` is given."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


class DynSec:
    """Sends commands as the dynsec admin: one short connection per batch of commands
    (changes are rare; nothing stays connected)."""

    def __init__(self, hostname: str, port: int, username: str, password: str,
                 tls: ssl.SSLContext | None = None, timeout_s: float = 10.0) -> None:
        self.hostname, self.port = hostname, port
        self.username, self.password = username, password
        self.tls = tls
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings) -> DynSec | None:
        """The admin client the settings describe, or None (a broker set up by hand)."""
        if not settings.mqtt_url or not settings.mqtt_admin_file:
            return None
        from server.mqtt.topics import parse_mqtt_url

        p = parse_mqtt_url(settings.mqtt_url)
        user, password = read_admin_file(settings.mqtt_admin_file)
        return cls(p["hostname"], p["port"], user, password, mqtt_tls(settings))

    async def run(self, commands: Sequence[dict]) -> list[dict]:
        """Send the commands; their answers in order (each may hold an ``error``)."""
        import aiomqtt

        out: list[dict] = []
        if not commands:
            return out
        async with self._lock, aiomqtt.Client(
                self.hostname, self.port, username=self.username, password=self.password,
                identifier=f"ioc-dynsec-{uuid.uuid4().hex[:8]}", tls_context=self.tls,
                timeout=self.timeout_s) as client:
            await client.subscribe(RESPONSE, qos=1)
            for i in range(0, len(commands), CHUNK):
                chunk = [dict(c) for c in commands[i:i + CHUNK]]
                tag = uuid.uuid4().hex
                chunk[0]["correlationData"] = tag
                await client.publish(CONTROL, json.dumps({"commands": chunk}), qos=1)
                async with asyncio.timeout(self.timeout_s + len(chunk) * 0.2):
                    async for msg in client.messages:
                        answers = json.loads(msg.payload).get("responses", [])
                        if answers and answers[0].get("correlationData") == tag:
                            out += answers
                            break
        return out

    async def checked(self, commands: Sequence[dict], tolerate: Iterable[str] = ()) -> list[dict]:
        """Like :meth:`run`; an error other than those named (substrings) raises."""
        tolerate = tuple(tolerate)
        answers = await self.run(commands)
        for cmd, ans in zip(commands, answers, strict=False):
            err = ans.get("error")
            if err and not any(t in err for t in tolerate):
                raise DynSecError(f"{cmd['command']} {cmd.get('username') or cmd.get('rolename')}"
                                  f": {err}")
        return answers

    # -- what the rest of the server asks for
    async def add_devices(self, ids: Sequence[str]) -> None:
        cmds: list[dict] = []
        for dev in ids:
            role = device_role(dev)
            cmds.append({"command": "createRole", **role})
            cmds.append({"command": "createClient", "username": dev,
                         "roles": [{"rolename": role["rolename"]}]})
        await self.checked(cmds, tolerate=("already exists",))

    async def remove_devices(self, ids: Sequence[str]) -> None:
        """Delete the devices' accounts: the broker disconnects them at once."""
        cmds: list[dict] = []
        for dev in ids:
            cmds.append({"command": "deleteClient", "username": dev})
            cmds.append({"command": "deleteRole", "rolename": DEVICE_ROLE_PREFIX + dev})
        await self.checked(cmds, tolerate=("not found",))

    async def set_passwords(self, passwords: dict[str, str]) -> None:
        """New passwords for devices (their accounts are created when missing)."""
        await self.add_devices(list(passwords))
        await self.checked([{"command": "setClientPassword", "username": u, "password": p}
                            for u, p in passwords.items()])

    async def add_account(self, username: str, password: str, role: str) -> None:
        await self.checked([{"command": "createClient", "username": username,
                             "password": password, "roles": [{"rolename": role}]}])

    async def reconcile(self, device_ids: Iterable[str]) -> tuple[int, int]:
        """Make the broker's device accounts those of the registry: (created, deleted)."""
        answers = await self.checked([{"command": "listClients", "verbose": False, "count": -1},
                                      {"command": "listRoles", "verbose": False, "count": -1}])
        clients = set(answers[0].get("data", {}).get("clients", []))
        roles = answers[1].get("data", {}).get("roles", [])
        have = {r[len(DEVICE_ROLE_PREFIX):] for r in roles if r.startswith(DEVICE_ROLE_PREFIX)}
        want = set(device_ids)
        missing = sorted(d for d in want if d not in have or d not in clients)
        stale = sorted(have - want)
        if stale:
            await self.remove_devices(stale)
        if missing:
            await self.add_devices(missing)
        return len(missing), len(stale)


def mqtt_tls(settings) -> ssl.SSLContext | None:
    """The TLS context ``IOC_MQTT_URL=mqtts://…`` asks for, else None."""
    if not settings.mqtt_url or not settings.mqtt_url.startswith("mqtts://"):
        return None
    return tls_context(settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file)


# -- in the server ------------------------------------------------------------------------

DYNSEC: web.AppKey[DynSec | None] = web.AppKey("dynsec", object)  # type: ignore[arg-type]


#: Set once the broker's device accounts follow the registry (tests wait on it).
FOLLOWING: web.AppKey[asyncio.Event] = web.AppKey("dynsec_following", asyncio.Event)
DELETED_CHANNEL = "ioc_devices_deleted"  # migrations/versions/0009_devices_deleted_notify.py


async def dynsec_ctx(app: web.Application) -> AsyncIterator[None]:
    """The admin client when the settings name one; device accounts reconciled with the
    registry in the background: what changed while the server was down, then after every
    deletion any process commits (``ioc_devices_deleted``), so a device deleted by the CLI
    or by hand is off the broker at once too."""
    from server import keys

    settings = app[keys.SETTINGS]
    dyn = DynSec.from_settings(settings)
    app[DYNSEC] = dyn
    following = app[FOLLOWING] = asyncio.Event()
    task = None
    if dyn is not None:
        async def reconcile() -> None:
            async with app[keys.DB].acquire() as conn:
                ids = [r["id"] for r in await conn.fetch("select id from devices")]
            try:
                created, deleted = await dyn.reconcile(ids)
            except Exception as err:  # logged; the next notification or start tries again
                logger.warning("broker accounts not reconciled: %s", err)
                return
            if created or deleted:
                logger.info("broker accounts: %d device(s) added, %d removed", created, deleted)

        async def follow() -> None:
            import asyncpg

            wake = asyncio.Event()
            while True:
                try:
                    conn = await asyncpg.connect(settings.database_url)
                except (OSError, asyncpg.PostgresError) as err:
                    logger.warning("cannot listen for device deletions (%s); retrying", err)
                    await asyncio.sleep(2)
                    continue
                try:
                    await conn.add_listener(DELETED_CHANNEL, lambda *_: wake.set())
                    while not conn.is_closed():
                        await reconcile()
                        following.set()
                        with contextlib.suppress(TimeoutError):
                            # Woken by a deletion; now and then to notice a lost connection.
                            await asyncio.wait_for(wake.wait(), 30)
                        wake.clear()
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close()

        task = asyncio.create_task(follow(), name="dynsec-follow")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def devices_changed(app: web.Application, *, added: Sequence[str] = (),
                          removed: Sequence[str] = ()) -> None:
    """Tell the broker (when the server administers it) about created or deleted devices.
    A failure is logged, never the request's: the next start reconciles."""
    dyn = app.get(DYNSEC)
    if dyn is None:
        return

    async def change(added: Sequence[str], removed: Sequence[str]) -> None:
        try:
            if removed:
                await dyn.remove_devices(list(removed))
            if added:
                await dyn.add_devices(list(added))
        except Exception as err:  # logged; the next start reconciles
            logger.error("broker accounts not updated (%d added, %d removed): %s",
                         len(added), len(removed), err)

    # Removals are awaited: a deleted device is off the broker when the request answers.
    # A new account has no password yet (it cannot log in), and the plugin saves its
    # whole file per command: a large import's accounts are made in the background.
    if len(added) > INLINE_ADDS:
        task = asyncio.create_task(change(added, ()), name="dynsec-add")
        _background.add(task)
        task.add_done_callback(_background.discard)
        added = ()
    await change(added, removed)


INLINE_ADDS = 100
_background: set[asyncio.Task] = set()
