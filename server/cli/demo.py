"""``ioc demo``: the whole system on one machine with no configuration.

Order of start: private PostgreSQL (unless IOC_DATABASE_URL), private mosquitto (unless
IOC_MQTT_URL), migrations, the synthetic city (first run), a sign-in link for the map, the
server (with the simulator inside it). Stop order is the reverse. Ctrl-C or SIGTERM at
any point stops everything that was started, and nothing is left running.

While the map comes up, the city's last day of history is written in the background
(:mod:`server.simulate.history`; what is missing of it on later starts), so the time
slider has a day to replay from the first minute.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.cli.embedded import EmbeddedMosquitto, EmbeddedPostgres
from server.http.auth import create_token_sync, sign_in_link_sync
from server.runtime.eventloop import new_event_loop
from server.store import migrate

logger = logging.getLogger("ioc.demo")

DEMO_RULES = Path(__file__).parent / "demo_rules.yaml"
DEMO_TOKEN_HOURS = 12  # the printed admin token's life; the sign-in link lives minutes


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def history_ctx(began: datetime, demo_rules: bool):
    """A cleanup context writing the city's last day before ``began`` (when this start
    began, before any live reading) in a background task; stopping the server stops it
    between two hours of history, and the next start resumes there."""
    from server import keys
    from server.simulate.history import backfill

    async def run(app) -> None:
        await asyncio.sleep(1)  # the map first
        rules = {}
        if demo_rules:
            from server.alarms.rulefiles import read_rule_file

            rules = {r.id: r for r in read_rule_file(DEMO_RULES)[0] or []}
        try:
            report = await backfill(app[keys.SETTINGS].database_url, app[keys.DB], began,
                                    rules=rules, progress=logger.debug)
        except Exception:
            logger.exception("the demo city's history could not be written")
            return
        if report.points:
            logger.info("history: %s readings and %d alarms of the city's last day written in "
                        "%.0f s", f"{report.points:,}", report.alarms, report.seconds)

    async def ctx(app) -> AsyncIterator[None]:
        task = asyncio.create_task(run(app), name="demo.history")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return ctx


def _device_hashes(url: str) -> list[tuple[str, str | None]]:
    """Every device and its MQTT password hash (None: no password issued yet)."""
    import psycopg

    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(
            "select d.id, c.password_hash from devices d left join device_credentials c "
            "on c.device_id = d.id order by d.id")]


def run_demo(args: argparse.Namespace) -> int:
    from aiohttp import web

    from server.cli.common import advertise_services, load_settings
    from server.http.app import create_app
    from server.settings import data_dir

    home = data_dir()
    home.mkdir(parents=True, exist_ok=True)
    # The demo's own services, never those of another demo this data directory advertises.
    settings = load_settings(find_demo=False, http_host=args.host, http_port=args.port)
    # SIGTERM before the server runs must also clean up the services already started.
    signal.signal(signal.SIGTERM, _interrupt)
    services: list[EmbeddedPostgres | EmbeddedMosquitto] = []
    try:
        updates: dict = {}
        if not settings.database_url:
            pg = EmbeddedPostgres(home / "postgres")
            logger.info("starting PostgreSQL in %s", pg.data_dir)
            pg.start()
            services.append(pg)
            updates["database_url"] = pg.create_database("ioc")
        settings = settings.model_copy(update=updates)
        url = settings.database_url
        migrate.upgrade(url)
        from server.registry.seed import is_seeded, seed_city

        if not is_seeded(url):
            logger.info("seeding the synthetic city (%d streetlights)", args.devices)
            counts = seed_city(url, streetlights=args.devices, seed=args.seed, progress=True)
            logger.info("seeded %s devices", sum(counts.values()))
        if not settings.mqtt_url:
            # No anonymous clients: every device, the server and the simulator log in with
            # their own accounts (mosquitto's dynamic security plugin, server/mqtt/dynsec.py).
            mq = EmbeddedMosquitto(home / "mosquitto", dynsec=True)
            accounts = mq.write_dynsec(_device_hashes(url))
            mq.start()
            services.append(mq)
            logger.info("mosquitto on %s (authenticated clients only)", mq.url)
            settings = settings.model_copy(update={
                "mqtt_url": mq.url_for(*accounts["server"]),
                "mqtt_simulator_url": mq.url_for(*accounts["simulator"]),
                "mqtt_admin_file": mq.admin_file})
        if not args.no_simulator:
            settings = settings.model_copy(update={"simulate": True})
        demo_rules = not settings.rules.paths
        if demo_rules:  # the demo's alarm rules, unless IOC_CONFIG names others
            settings = settings.model_copy(update={"rules": settings.rules.model_copy(
                update={"paths": [str(DEMO_RULES)]})})
        shown_host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
        base = f"http://{shown_host}:{settings.http_port}"
        # Not the admin token itself: a sign-in link, good for minutes and once (the page
        # trades it for a session cookie), so a terminal's scrollback holds nothing lasting.
        minutes = settings.security.sign_in_minutes
        link = sign_in_link_sync(url, base, role="admin", name="demo-admin", minutes=minutes)
        # CONTRACT: the demo prints an admin token. It expires (DEMO_TOKEN_HOURS), so a
        # forgotten terminal's scrollback does not hold a lasting key to the city.
        expires = datetime.now(UTC) + timedelta(hours=DEMO_TOKEN_HOURS)
        admin = create_token_sync(url, "admin", "demo admin (expires)", expires_at=expires)

        def banner(*_):
            print(f"\n  IOC map:     {link}\n"
                  f"               (a sign-in link: once, within {minutes:g} minutes; "
                  "`ioc token link` prints another)\n"
                  f"  admin token: {admin}\n"
                  f"               (expires in {DEMO_TOKEN_HOURS} h; "
                  "`ioc token create --role admin --expires 12h` prints another)\n"
                  f"  API:         {base}/api/v1/devices  (Authorization: Bearer <token>)\n"
                  "  Ctrl-C stops everything.\n", flush=True)

        app = create_app(settings)
        if not args.no_history:  # history ends where this start's live readings begin
            app.cleanup_ctx.append(history_ctx(datetime.now(UTC), demo_rules))
        # While it runs, the other ioc commands find its database and broker here.
        with advertise_services(home, database_url=url, mqtt_url=settings.mqtt_url, http_base=base,
                                mqtt_admin_file=settings.mqtt_admin_file,
                                mqtt_simulator_url=settings.mqtt_simulator_url):
            web.run_app(app, host=settings.http_host, port=settings.http_port,
                        access_log=None, print=banner, loop=new_event_loop(settings.event_loop))
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the clean shutdown of the services short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for svc in reversed(services):
            svc.stop()
        logger.info("stopped")
        sys.stdout.flush()
    return 0
