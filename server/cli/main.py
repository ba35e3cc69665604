"""The ``ioc`` command line. The event loop is started here, by ``web.run_app``, only."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from server.cli.common import load_settings, need_database, run_command
from server.settings import ROLES, choose_data_dir, default_data_dir

logger = logging.getLogger("ioc")


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from server.http.app import create_app
    from server.runtime.eventloop import new_event_loop

    settings = load_settings(http_host=args.host, http_port=args.port)
    need_database(settings)
    web.run_app(create_app(settings), host=settings.http_host, port=settings.http_port,
                access_log=None, print=lambda *_: None, loop=new_event_loop(settings.event_loop))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from server.store import migrate

    url = need_database(load_settings())
    if args.downgrade:
        migrate.downgrade(url, args.downgrade)
    else:
        migrate.upgrade(url, args.revision)
    print(f"schema at revision {migrate.current(url)}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from server.registry.seed import seed_city

    url = need_database(load_settings())
    counts = seed_city(url, streetlights=args.devices, seed=args.seed, replace=args.replace,
                       progress=True)
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


def parse_expiry(text: str | None):
    """``--expires``: a duration from now (``30m``, ``12h``, ``90d``) or an RFC 3339 time."""
    import re
    from datetime import UTC, datetime, timedelta

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return datetime.now(UTC) + timedelta(**{unit: float(m.group(1))})
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"--expires {text!r}: give a duration (30m, 12h, 90d, 2w) or an RFC 3339 "
                         "time (2027-01-31T00:00:00Z)") from None
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    if t <= datetime.now(UTC):
        raise SystemExit(f"--expires {text!r} has passed: give a time in the future")
    return t


def cmd_token(args: argparse.Namespace) -> int:
    import psycopg

    from server.http.auth import create_token_sync, sign_in_link_sync

    settings = load_settings()
    url = need_database(settings)
    if args.token_cmd == "create":
        print(create_token_sync(url, args.role, args.name, args.crew,
                                expires_at=parse_expiry(args.expires)))
        return 0
    if args.token_cmd == "link":
        from server.cli.common import running_demo

        demo = running_demo() or {}
        base = demo.get("http_base") or f"http://{settings.http_host}:{settings.http_port}"
        minutes = args.minutes or settings.security.sign_in_minutes
        print(sign_in_link_sync(url, base, role=args.role, minutes=minutes))
        return 0
    with psycopg.connect(url) as conn:
        if args.token_cmd == "list":
            rows = conn.execute(
                "select id, name, role, prefix, created_at, last_used_at, revoked_at, kind, "
                "expires_at, expires_at <= now() from api_tokens order by id").fetchall()
            for r in rows:
                state = "revoked" if r[6] else "expired" if r[9] else "active"
                until = f"  until {r[8]:%Y-%m-%d %H:%M}" if r[8] else ""
                used = f"  used {r[5]:%Y-%m-%d %H:%M}" if r[5] else ""
                print(f"{r[0]:>5}  {r[3]}…  {r[2]:<10}  {r[7]:<7}  {state:<7}  {r[1]}  "
                      f"created {r[4]:%Y-%m-%d %H:%M}{until}{used}")
            return 0
        row = conn.execute(
            "update api_tokens set revoked_at = now() where (id::text = %s or prefix = %s) "
            "and revoked_at is null returning id", (args.token, args.token)).fetchone()
        if not row:
            raise SystemExit(f"no active token with id or prefix {args.token!r}")
        # The pages signed in with it are signed out too.
        conn.execute("update api_tokens set revoked_at = now() where parent_id = %s "
                     "and revoked_at is null", (row[0],))
        print(f"revoked token {row[0]}")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from server.store.compress import compress_due

    settings = load_settings()
    url = need_database(settings)
    after = settings.storage.compress_after_days if args.after_days is None else args.after_days

    async def run():
        conn = await asyncpg.connect(url)
        try:
            return await compress_due(conn, compress_after_days=after)
        finally:
            await conn.close()

    r = asyncio.run(run())
    if not r.days:
        print("nothing to compress: no closed day has rows in the row store")
        return 0
    rate = r.points / r.encode_seconds if r.encode_seconds else 0
    print(f"compressed {', '.join(map(str, r.days))}: {r.points:,} points into {r.segments:,} "
          f"segments in {r.seconds:.1f} s (encoding {rate:,.0f} points/s)")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``ioc audit verify``: recompute the hash chains; non-zero at the first broken link."""
    import asyncio

    import asyncpg

    from server.store import chain

    url = need_database(load_settings())

    async def run():
        conn = await asyncpg.connect(url)
        try:
            return await chain.verify_all(conn)
        finally:
            await conn.close()

    verdicts = asyncio.run(run())
    for v in verdicts:
        print(v)
    return 0 if all(v.ok for v in verdicts) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from server.cli.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ioc", description="IOC realtime GIS and telemetry server")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(*DATA_DIR_ARGS, default=None, **DATA_DIR_OPTIONS)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the server against IOC_DATABASE_URL / IOC_MQTT_URL")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="everything on one machine: private PostGIS, mosquitto, "
                                    "synthetic city, simulated devices, server and map")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--devices", type=int, default=5000, help="streetlights in the synthetic city")
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--no-simulator", action="store_true", help="do not simulate devices")
    d.add_argument("--no-history", action="store_true",
                   help="do not write the city's last day of readings and alarms")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("migrate", help="upgrade the schema (Alembic)")
    m.add_argument("--revision", default="head")
    m.add_argument("--downgrade", metavar="REV", help="downgrade to REV (e.g. -1 or base)")
    m.set_defaults(func=cmd_migrate)

    sd = sub.add_parser("seed", help="load the synthetic city into IOC_DATABASE_URL")
    sd.add_argument("--devices", type=int, default=5000)
    sd.add_argument("--seed", type=int, default=42)
    sd.add_argument("--replace", action="store_true", help="replace an existing city")
    sd.set_defaults(func=cmd_seed)

    c = sub.add_parser("compress", help="compress every closed day of telemetry due now "
                                        "(the server also does it every [storage] compress_every_s)")
    c.add_argument("--after-days", type=int, default=None, metavar="N",
                   help="days after its end a day counts as closed (default: [storage] "
                        "compress_after_days)")
    c.set_defaults(func=cmd_compress)

    t = sub.add_parser("token", help="API tokens")
    tsub = t.add_subparsers(dest="token_cmd", required=True)
    tc = tsub.add_parser("create", help="print a new bearer token")
    tc.add_argument("--role", required=True, choices=ROLES)
    tc.add_argument("--name")
    tc.add_argument("--crew", help="the crew a crew-role token acts for")
    tc.add_argument("--expires", metavar="WHEN",
                    help="when it stops working: 30m, 12h, 90d, 2w or an RFC 3339 time "
                         "(default: never)")
    tl = tsub.add_parser("link", help="print a sign-in link for the map: valid for minutes, once "
                                      "(the page trades it for a session)")
    tl.add_argument("--role", default="admin", choices=[r for r in ROLES if r != "crew"])
    tl.add_argument("--minutes", type=float, help="default: [security] sign_in_minutes (15)")
    tsub.add_parser("list", help="list tokens (never their secrets)")
    tr = tsub.add_parser("revoke", help="revoke a token by id or prefix")
    tr.add_argument("token")
    t.set_defaults(func=cmd_token)

    a = sub.add_parser("audit", help="the audit log")
    asub = a.add_subparsers(dest="audit_cmd", required=True)
    asub.add_parser("verify", help="check the hash chains of the audit log and alarm events; "
                                   "exit status 1 at the first broken link")
    a.set_defaults(func=cmd_audit)

    # Sub-commands with their own modules; each imports its heavy parts when it runs.
    from server.cli import credentials, io
    from server.simulate import cli as simulate

    for module in (simulate, io, credentials):
        module.register(sub)
    _everywhere(p)
    return p


DATA_DIR_ARGS = ("--data-dir",)
DATA_DIR_OPTIONS = dict(
    type=Path, metavar="DIR",
    help="the data directory of 'ioc demo': where it keeps its services' files and where the "
         f"other commands find a running demo's services (default: IOC_DATA_DIR, else "
         f"{default_data_dir()})")


def _everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``--data-dir`` after any sub-command too (``ioc token create --data-dir X``).

    SUPPRESS: a sub-command that is not given the option must not reset the value given
    before it (``ioc --data-dir X token create``).
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "--data-dir" not in sub._option_string_actions:
                    sub.add_argument(*DATA_DIR_ARGS, default=argparse.SUPPRESS, **DATA_DIR_OPTIONS)
                _everywhere(sub)



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    choose_data_dir(args.data_dir)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # pymodbus logs an ERROR for every unanswered request; our poller logs a unit's
    # unavailability once and its recovery once instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # aiomqtt warns on every publish while more than 10 are pending, which a fleet of
    # simulated devices always has; connection errors still show.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
