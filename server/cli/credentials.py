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
    g = sub.add_parser("gateway", help="a gateway's own broker account (dynamic security): "
                                       "prints its password")
    g.add_argument("name", help="its MQTT user name (a Sparkplug edge node: any name)")
    g.add_argument("--role", choices=["chirpstack", "sparkplug"], required=True)
    d = sub.add_parser("dynsec-file", help="write mosquitto's dynamic-security.json with every "
                                           "device (before the broker first starts)")
    d.add_argument("path", type=Path)
    d.add_argument("--admin-user", default="ioc-admin")
    d.add_argument("--server-user", help="the server's MQTT account (default: from IOC_MQTT_URL)")
    d.add_argument("--admin-file", type=Path,
                   help="write the new admin's {username, password} here (mode 0600; the "
                        "server's IOC_MQTT_ADMIN_FILE) instead of printing it")
    d.add_argument("--if-missing", action="store_true", help="do nothing if PATH exists")
    d.add_argument("--owner", metavar="UID:GID", help="give both files to the broker's user")
    c.set_defaults(func=cmd_credentials)


def cmd_credentials(args: argparse.Namespace) -> int:
    import asyncio

    settings = load_settings()
    url = need_database(settings)
    from server.mqtt.dynsec import DynSec, DynSecError

    try:
        dyn = DynSec.from_settings(settings)
        return asyncio.run(_run(url, settings.mqtt_url, args, dyn))
    except (CredentialError, DynSecError) as err:
        raise SystemExit(f"ioc credentials: {err}") from None


async def _run(url: str, mqtt_url: str | None, args: argparse.Namespace, dyn=None) -> int:
    conn = await connect(url)
    try:
        if args.credentials_cmd == "issue":
            ids = list(args.devices)
            if args.kind:
                ids += [r["id"] for r in await conn.fetch(
                    "select id from devices where kind = $1 order by id", args.kind)]
            passwords = await issue(conn, ids, "cli")
            if dyn is not None:  # the broker takes the new passwords at once
                await dyn.set_passwords(passwords)
            for dev, password in passwords.items():
                print(f"{dev}\t{password}")
        elif args.credentials_cmd == "gateway":
            from server.mqtt.dynsec import GATEWAY_ROLES, new_password

            if dyn is None:
                raise CredentialError("gateway accounts need the broker's dynamic-security admin: "
                                      "set IOC_MQTT_ADMIN_FILE (the demo does)")
            password = new_password()
            await dyn.add_account(args.name, password, GATEWAY_ROLES[args.role])
            print(f"{args.name}\t{password}")
        elif args.credentials_cmd == "dynsec-file":
            await _dynsec_file(conn, args, mqtt_url)
        elif args.credentials_cmd == "revoke":
            gone = await revoke(conn, args.devices, "cli")
            if dyn is not None and gone:  # no password: cannot log in; disconnected now
                await dyn.remove_devices(gone)
                await dyn.add_devices(gone)
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


async def _dynsec_file(conn, args: argparse.Namespace, mqtt_url: str | None) -> None:
    """The plugin's file for a broker set up by hand: a new admin (its password printed
    once, for IOC_MQTT_ADMIN_FILE), the server's account and every device."""
    import json

    from server.mqtt.dynsec import ADMIN_ROLE, SERVER_ROLE, config_document, device_hashes, new_password
    from server.registry.credentials import mosquitto_hash, write_private

    if args.if_missing and args.path.exists():
        print(f"{args.path} exists: unchanged")
        return
    user = args.server_user
    password = None
    if mqtt_url and not user:
        from server.mqtt.link import parse_mqtt_url

        parts = parse_mqtt_url(mqtt_url)
        user, password = parts["username"], parts["password"]
    if not user or not password:
        raise CredentialError("the server's account comes from IOC_MQTT_URL "
                              "(mqtt://user:password@host:port)")
    admin_password = new_password()
    accounts = {args.admin_user: (mosquitto_hash(admin_password), [ADMIN_ROLE]),
                user: (mosquitto_hash(password), [SERVER_ROLE])}
    doc = config_document(accounts, await device_hashes(conn))
    owner = tuple(int(x) for x in args.owner.split(":")) if args.owner else None
    write_private(args.path, json.dumps(doc, indent=1), owner)
    admin = json.dumps({"username": args.admin_user, "password": admin_password})
    if args.admin_file:
        write_private(args.admin_file, admin)
        print(f"wrote {args.path} ({len(doc['clients'])} accounts) and {args.admin_file}")
    else:
        print(admin)


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
