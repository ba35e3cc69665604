"""Schema upgrades through Alembic, and the catalogue sync that follows them.

Runs synchronously with psycopg, before any event loop exists (``ioc migrate``, ``ioc
demo``), so no second loop is ever created.
"""

from __future__ import annotations

from importlib import resources

import psycopg
from alembic import command
from alembic.config import Config

from server.store import catalog


def sqlalchemy_url(url: str) -> str:
    """postgresql://… → the SQLAlchemy URL for the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("migrations")))
    # ConfigParser interpolation would choke on a % in a password.
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
    sync_catalog(url)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute("select version_num from alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


def sync_catalog(url: str) -> None:
    """Upsert the kinds and metrics of ``server.store.catalog`` (never deletes: data may use them)."""
    with psycopg.connect(url) as conn, conn.transaction():
        for m in catalog.METRICS:
            conn.execute(
                """insert into metrics (name, unit, value_type, description)
                   values (%s, %s, %s, %s)
                   on conflict (name) do update
                   set unit = excluded.unit, value_type = excluded.value_type,
                       description = excluded.description""",
                (m.name, m.unit, m.value_type, m.description),
            )
        for k in catalog.KINDS:
            conn.execute(
                """insert into kinds (kind, label_en, label_vi, metrics, expected_interval_s)
                   values (%s, %s, %s, %s, %s)
                   on conflict (kind) do update
                   set label_en = excluded.label_en, label_vi = excluded.label_vi,
                       metrics = excluded.metrics,
                       expected_interval_s = excluded.expected_interval_s""",
                (k.kind, k.label_en, k.label_vi,
                 list(k.metrics) if k.metrics is not None else None, k.expected_interval_s),
            )
