"""Per-device MQTT credentials, and the mosquitto password and ACL files made from them.

A device logs in to the broker with its device id as user name and a random password the
server generates and shows once (``ioc credentials issue``). The database keeps only the
hash, already in mosquitto's own format (PBKDF2-SHA512, ``$7$iterations$salt$hash``, as
``mosquitto_passwd`` writes it), so the broker's password file can be rebuilt at any time
from the database without anyone knowing a password (``ioc credentials export``).

The ACL lets each device publish only its own topics of the native convention and read
only its own commands; the server's account (the user of ``IOC_MQTT_URL``) may do anything:

    ioc/v1/{id}/telemetry, ioc/v1/{id}/status, ioc/v1/{id}/commands/{cmd}/result  (write)
    ioc/v1/{id}/commands                                                           (read)

mosquitto rereads both files on SIGHUP, so issuing a credential and exporting the files
never disconnects anyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import signal
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from server.store.audit import audit

# mosquitto_passwd's default. The passwords are 144-bit random strings, so no amount of
# iterations matters against guessing them; a low count keeps a reconnect storm of
# 100,000 devices after a broker restart cheap for the broker (it hashes on every CONNECT).
ITERATIONS = 101
SALT_BYTES = 12  # as mosquitto_passwd


class CredentialError(ValueError):
    """A request a person must fix (unknown devices, no server account); says which."""


def new_password() -> str:
    return secrets.token_urlsafe(18)


def mosquitto_hash(password: str, *, salt: bytes | None = None,
                   iterations: int = ITERATIONS) -> str:
    """The password as a line of mosquitto's password file expects it after ``user:``."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(got, base64.b64decode(digest))


async def issue(conn: asyncpg.Connection, device_ids: Sequence[str], actor: str
                ) -> dict[str, str]:
    """New passwords for these devices (replacing any old one); {device id: password}."""
    ids = list(dict.fromkeys(device_ids))
    if not ids:
        raise CredentialError("name at least one device")
    found = {r["id"] for r in await conn.fetch(
        "select id from devices where id = any($1::text[])", ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise CredentialError(f"no device(s) {', '.join(missing[:20])}; nothing was issued")
    passwords = {i: new_password() for i in ids}
    async with conn.transaction():
        await conn.executemany(
            """insert into device_credentials (device_id, password_hash, issued_by)
               values ($1, $2, $3)
               on conflict (device_id) do update
               set password_hash = excluded.password_hash, issued_at = now(),
                   issued_by = excluded.issued_by""",
            [(i, mosquitto_hash(p), actor) for i, p in passwords.items()])
        await audit(conn, actor, "credentials.issue", target=f"{len(ids)} device(s)",
                    device=ids[0] if len(ids) == 1 else None, details={"ids": ids[:100]})
    return passwords


async def revoke(conn: asyncpg.Connection, device_ids: Sequence[str], actor: str) -> list[str]:
    async with conn.transaction():
        rows = await conn.fetch("delete from device_credentials where device_id = any($1::text[]) "
                                "returning device_id", list(device_ids))
        gone = sorted(r["device_id"] for r in rows)
        if gone:
            await audit(conn, actor, "credentials.revoke", target=f"{len(gone)} device(s)",
                        device=gone[0] if len(gone) == 1 else None, details={"ids": gone[:100]})
    return gone


async def password_file(conn: asyncpg.Connection, server_user: str, server_password: str) -> str:
    """mosquitto's password file: the server's account, then every device with a credential."""
    if ":" in server_user:
        raise CredentialError("an MQTT user name for the password file cannot contain ':'")
    lines = [f"{server_user}:{mosquitto_hash(server_password)}"]
    async for r in _credentials(conn):
        if r["device_id"] == server_user:
            continue  # a device named like the server account must not replace it
        lines.append(f"{r['device_id']}:{r['password_hash']}")
    return "\n".join(lines) + "\n"


async def _credentials(conn: asyncpg.Connection):
    async with conn.transaction(readonly=True):
        async for r in conn.cursor(
                "select device_id, password_hash from device_credentials order by device_id",
                prefetch=5000):
            yield r


def acl_file(server_user: str) -> str:
    # ``pattern`` lines apply to every authenticated client with %u replaced by its user
    # name, so one rule set covers any number of devices. Device ids cannot hold MQTT
    # wildcards or '/' (server/registry/devices.py ID_RE), so %u never widens a topic.
    return f"""# Written by ioc-server (ioc credentials export); do not edit by hand.
# The server's own account: everything.
user {server_user}
topic readwrite #

# Every other client is a device logged in with its id: its own topics only.
pattern write ioc/v1/%u/telemetry
pattern write ioc/v1/%u/status
pattern write ioc/v1/%u/commands/+/result
pattern read ioc/v1/%u/commands
"""


def write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` atomically with a file only its owner can read (it holds hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


async def export_files(conn: asyncpg.Connection, password_path: Path, acl_path: Path,
                       server_user: str, server_password: str,
                       owner: tuple[int, int] | None = None) -> int:
    """Write both files; the number of device accounts in them."""
    text = await password_file(conn, server_user, server_password)
    write_private(password_path, text, owner)
    write_private(acl_path, acl_file(server_user), owner)
    return text.count("\n") - 1


def reload_broker(pid: int) -> None:
    """Ask a running mosquitto to reread its password and ACL files."""
    os.kill(pid, signal.SIGHUP)
