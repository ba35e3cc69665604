"""What every ``ioc`` sub-command shares: the settings, the database, the data directory.

Every sub-command gets its settings from :func:`load_settings` and its database from
:func:`need_database`; a problem the operator can fix ends the command through
:class:`SystemExit` with one line that says what to do (``main`` prints nothing else).

A running ``ioc demo`` advertises its services in ``<data dir>/services.json`` (readable by
its owner only; removed when it stops). When ``IOC_DATABASE_URL`` (or ``IOC_MQTT_URL``) is
not set, the other commands use the services of the demo that runs in the data directory
(``--data-dir``, else ``IOC_DATA_DIR``, else :func:`server.settings.default_data_dir`), so
``ioc token create`` works beside ``ioc demo`` with no configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from server.settings import ConfigFileError, Settings, data_dir

SERVICES_FILE = "services.json"


# -- the demo's services ----------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but it exists
        return True
    return True


def running_demo(directory: Path | None = None) -> dict[str, Any] | None:
    """What the demo running in ``directory`` advertises, or ``None`` (no file, a file left
    by a demo that died, or a file that is not ours to read)."""
    path = (directory or data_dir()) / SERVICES_FILE
    try:
        services = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(services, dict) or not isinstance(services.get("pid"), int):
        return None
    return services if _alive(services["pid"]) else None


@contextlib.contextmanager
def advertise_services(directory: Path, *, database_url: str | None, mqtt_url: str | None,
                       http_base: str, mqtt_admin_file: Path | None = None,
                       mqtt_simulator_url: str | None = None) -> Iterator[Path]:
    """Write ``services.json`` (mode 0600: the URLs may hold passwords) for as long as the
    block runs; remove it afterwards."""
    path = directory / SERVICES_FILE
    tmp = path.with_name(f".{SERVICES_FILE}.{os.getpid()}")
    body = json.dumps({"pid": os.getpid(), "database_url": database_url, "mqtt_url": mqtt_url,
                       "http_base": http_base,
                       "mqtt_admin_file": str(mqtt_admin_file) if mqtt_admin_file else None,
                       "mqtt_simulator_url": mqtt_simulator_url},
                      indent=2) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body)
    os.replace(tmp, path)  # readers never see half a file
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# -- settings -----------------------------------------------------------------------------


def load_settings(*, find_demo: bool = True, **overrides) -> Settings:
    """The settings from the environment (and IOC_CONFIG), with ``overrides`` on top.

    Unless ``find_demo`` is false, a database or broker URL the environment leaves unset
    is taken from the demo running in :func:`data_dir`.
    """
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            lines.append(f"  {where}: {e['msg']}")
        raise SystemExit("invalid configuration:\n" + "\n".join(lines)) from None
    except ConfigFileError as err:
        raise SystemExit(f"invalid configuration: {err}") from None
    if find_demo and not (settings.database_url and settings.mqtt_url):
        demo = running_demo()
        if demo:
            settings = settings.model_copy(update={
                "database_url": settings.database_url or demo.get("database_url"),
                "mqtt_url": settings.mqtt_url or demo.get("mqtt_url"),
            })
            if settings.mqtt_admin_file is None and demo.get("mqtt_admin_file") \
                    and settings.mqtt_url == demo.get("mqtt_url"):
                settings = settings.model_copy(
                    update={"mqtt_admin_file": Path(demo["mqtt_admin_file"])})
            if settings.mqtt_simulator_url is None and settings.mqtt_url == demo.get("mqtt_url"):
                settings = settings.model_copy(
                    update={"mqtt_simulator_url": demo.get("mqtt_simulator_url")})
    return settings


def need_database(settings: Settings) -> str:
    if not settings.database_url:
        raise SystemExit(
            f"IOC_DATABASE_URL is not set and no 'ioc demo' is running in {data_dir()}: set "
            "IOC_DATABASE_URL (e.g. postgresql://ioc@127.0.0.1:5432/ioc), or point --data-dir "
            "or IOC_DATA_DIR at the data directory of a running 'ioc demo'"
        )
    return settings.database_url


def _unreachable(err: BaseException) -> bool:
    """A service that is down or refuses us: the operator's to fix, not a bug to trace."""
    from server.cli.embedded import EmbeddedError

    kinds: list[type[BaseException]] = [OSError, EmbeddedError]
    if "psycopg" in sys.modules:
        kinds.append(sys.modules["psycopg"].OperationalError)
    if "sqlalchemy.exc" in sys.modules:  # migrations: Alembic wraps psycopg's error
        kinds.append(sys.modules["sqlalchemy.exc"].OperationalError)
    if "asyncpg" in sys.modules:
        asyncpg = sys.modules["asyncpg"]
        kinds += [asyncpg.PostgresConnectionError, asyncpg.InvalidAuthorizationSpecificationError,
                  asyncpg.InvalidCatalogNameError]
    return isinstance(err, tuple(kinds))


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a sub-command. It ends through :class:`SystemExit` with a message, or its return
    code; a service it cannot reach ends it the same way (one line, no traceback)."""
    try:
        return func(args) or 0
    except Exception as err:
        if not _unreachable(err):
            raise
        cause = getattr(err, "orig", None) or err  # SQLAlchemy's wrapper: the driver's message
        first = (str(cause) or type(cause).__name__).splitlines()[0]
        raise SystemExit(f"ioc {args.cmd}: {first}") from None


async def connect(url: str):
    import asyncpg

    from server.store.db import _init_connection

    conn = await asyncpg.connect(url, server_settings={"application_name": "ioc-cli",
                                                       "timezone": "UTC"})
    await _init_connection(conn)
    return conn
