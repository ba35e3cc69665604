"""The ``ioc`` command line. The event loop is started here, by ``web.run_app``, only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from server.settings import ROLES, ConfigFileError, Settings

logger = logging.getLogger("ioc")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ioc"


def _settings(**overrides) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            lines.append(f"  {where}: {e['msg']}")
        raise SystemExit("invalid configuration:\n" + "\n".join(lines)) from None
    except ConfigFileError as err:
        raise SystemExit(f"invalid configuration: {err}") from None


def _need_db(settings: Settings) -> str:
    if not settings.database_url:
        raise SystemExit(
            "IOC_DATABASE_URL is not set (e.g. postgresql://ioc@127.0.0.1:5432/ioc); "
            "'ioc demo' runs with embedded services instead"
        )
    return settings.database_url


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from server.app import create_app
    from server.eventloop import new_event_loop

    settings = _settings(http_host=args.host, http_port=args.port)
    _need_db(settings)
    web.run_app(create_app(settings), host=settings.http_host, port=settings.http_port,
                access_log=None, print=lambda *_: None, loop=new_event_loop(settings.event_loop))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from server import migrate

    url = _need_db(_settings())
    if args.downgrade:
        migrate.downgrade(url, args.downgrade)
    else:
        migrate.upgrade(url, args.revision)
    print(f"schema at revision {migrate.current(url)}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from server.seed import seed_city

    url = _need_db(_settings())
    counts = seed_city(url, streetlights=args.devices, seed=args.seed, replace=args.replace,
                       progress=True)
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    import psycopg

    from server.auth import create_token_sync

    url = _need_db(_settings())
    if args.token_cmd == "create":
        print(create_token_sync(url, args.role, args.name, args.crew))
        return 0
    with psycopg.connect(url) as conn:
        if args.token_cmd == "list":
            rows = conn.execute(
                "select id, name, role, prefix, created_at, last_used_at, revoked_at "
                "from api_tokens order by id").fetchall()
            for r in rows:
                state = "revoked" if r[6] else "active"
                print(f"{r[0]:>5}  {r[3]}…  {r[2]:<10}  {state:<7}  {r[1]}  "
                      f"created {r[4]:%Y-%m-%d %H:%M}")
            return 0
        row = conn.execute(
            "update api_tokens set revoked_at = now() where (id::text = %s or prefix = %s) "
            "and revoked_at is null returning id", (args.token, args.token)).fetchone()
        if not row:
            raise SystemExit(f"no active token with id or prefix {args.token!r}")
        print(f"revoked token {row[0]}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from server.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ioc", description="IOC realtime GIS and telemetry server")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the server against IOC_DATABASE_URL / IOC_MQTT_URL")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="everything on one machine: private PostGIS, mosquitto, "
                                    "synthetic city, simulated devices, server and map")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--data-dir", type=Path, default=None,
                   help=f"where the private services keep data (default {default_data_dir()})")
    d.add_argument("--devices", type=int, default=5000, help="streetlights in the synthetic city")
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--no-simulator", action="store_true", help="do not simulate devices")
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

    t = sub.add_parser("token", help="API tokens")
    tsub = t.add_subparsers(dest="token_cmd", required=True)
    tc = tsub.add_parser("create", help="print a new bearer token")
    tc.add_argument("--role", required=True, choices=ROLES)
    tc.add_argument("--name")
    tc.add_argument("--crew", help="the crew a crew-role token acts for")
    tsub.add_parser("list", help="list tokens (never their secrets)")
    tr = tsub.add_parser("revoke", help="revoke a token by id or prefix")
    tr.add_argument("token")
    t.set_defaults(func=cmd_token)

    for extra in _extra_commands():
        extra(sub)
    return p


def _extra_commands():
    """Sub-commands that live in their own modules (simulate, import)."""
    found = []
    # server.io_cli: import, export and credentials
    for name in ("server.simulate.cli", "server.io_cli"):
        try:
            mod = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue
            raise
        found.append(mod.register)
    return found


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
