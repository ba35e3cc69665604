"""``ioc credentials``: per-device MQTT passwords and the broker's password and ACL files."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.cli.common import connect, load_settings, need_database
from server.registry.credentials import (
    CredentialError,
    export_files,
    issue,
    reload_broker,
    revoke,
)


def register(subparsers) -> None:
    c = subparsers.add_parser(
        "credentials", help="per-device MQTT passwords and the broker's password/ACL files",
        description="A device logs in to the broker with its id and a password issued here. "
                    "Passwords are printed once and stored only hashed.")
    sub = c.add_subparsers(dest="credentials_cmd", required=True)
    i = sub.add_parser("issue", help="new passwords for devices (printed once: id and password)")
    i.add_argument("devices", nargs="*", metavar="DEVICE")
    i.add_argument("--kind", help="every device of this kind, as well")
    r = sub.add_parser("revoke", help="remove devices' passwords (export again to apply)")
    r.add_argument("devices", nargs="+", metavar="DEVICE")
    sub.add_parser("list", help="devices that have a password, and when it was issued")
    e = sub.add_parser("export", help="write mosquitto's password_file and acl_file")
    e.add_argument("--password-file", type=Path, required=True)
    e.add_argument("--acl-file", type=Path, required=True)
    e.add_argument("--server-user", help="the server's MQTT account (default: from IOC_MQTT_URL)")
    e.add_argument("--server-password", help="its password (default: from IOC_MQTT_URL)")
    e.add_argument("--reload-pid", type=int, metavar="PID",
                   help="send SIGHUP to this mosquitto afterwards so it rereads the files")
    c.set_defaults(func=cmd_credentials)


def cmd_credentials(args: argparse.Namespace) -> int:
    import asyncio

    settings = load_settings()
    url = need_database(settings)
    try:
        return asyncio.run(_run(url, settings.mqtt_url, args))
    except CredentialError as err:
        raise SystemExit(f"ioc credentials: {err}") from None


async def _run(url: str, mqtt_url: str | None, args: argparse.Namespace) -> int:
    conn = await connect(url)
    try:
        if args.credentials_cmd == "issue":
            ids = list(args.devices)
            if args.kind:
                ids += [r["id"] for r in await conn.fetch(
                    "select id from devices where kind = $1 order by id", args.kind)]
            for dev, password in (await issue(conn, ids, "cli")).items():
                print(f"{dev}\t{password}")
        elif args.credentials_cmd == "revoke":
            gone = await revoke(conn, args.devices, "cli")
            print(f"revoked {len(gone)}: {' '.join(gone)}" if gone else "no such credentials")
        elif args.credentials_cmd == "list":
            for r in await conn.fetch("select device_id, issued_at, issued_by "
                                      "from device_credentials order by device_id"):
                print(f"{r['device_id']}\t{r['issued_at']:%Y-%m-%d %H:%M}\t{r['issued_by'] or ''}")
        else:
            user, password = _server_account(args, mqtt_url)
            n = await export_files(conn, args.password_file, args.acl_file, user, password)
            print(f"wrote {args.password_file} ({n} device(s) and {user}) and {args.acl_file}")
            if args.reload_pid:
                reload_broker(args.reload_pid)
    finally:
        await conn.close()
    return 0


def _server_account(args: argparse.Namespace, mqtt_url: str | None) -> tuple[str, str]:
    user, password = args.server_user, args.server_password
    if mqtt_url and (user is None or password is None):
        from server.mqtt.link import parse_mqtt_url

        parts = parse_mqtt_url(mqtt_url)
        user = user or parts["username"]
        password = password or parts["password"]
    if not user or not password:
        raise CredentialError(
            "the server needs its own account on a broker with authentication: put it in "
            "IOC_MQTT_URL (mqtt://user:password@host:port) or give --server-user and "
            "--server-password")
    return user, password
