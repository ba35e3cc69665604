"""What every ``ioc`` sub-command shares: the settings, the database, the data directory."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from server.settings import ConfigFileError, Settings


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ioc"


def load_settings(**overrides) -> Settings:
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


def need_database(settings: Settings) -> str:
    if not settings.database_url:
        raise SystemExit(
            "IOC_DATABASE_URL is not set (e.g. postgresql://ioc@127.0.0.1:5432/ioc); "
            "'ioc demo' runs with embedded services instead"
        )
    return settings.database_url

async def connect(url: str):
    import asyncpg

    from server.store.db import _init_connection

    conn = await asyncpg.connect(url, server_settings={"application_name": "ioc-cli",
                                                       "timezone": "UTC"})
    await _init_connection(conn)
    return conn
