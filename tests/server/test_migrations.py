"""Migrations: upgrade builds what the metadata declares; the newest downgrades cleanly."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from server.store import migrate
from server.store.schema import metadata


def _include(obj, name, type_, reflected, compare_to):
    from geoalchemy2 import alembic_helpers

    if type_ == "table" and (name == "spatial_ref_sys" or (name or "").startswith("telemetry_p")):
        return False
    return alembic_helpers.include_object(obj, name, type_, reflected, compare_to)


def test_schema_matches_metadata(db_url):
    engine = sa.create_engine(migrate.sqlalchemy_url(db_url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"include_object": _include,
                                                         "compare_type": True})
            assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()


def test_newest_migration_downgrades_and_upgrades_again(db_url):
    script = ScriptDirectory.from_config(migrate.alembic_config(db_url))
    head = script.get_current_head()
    assert migrate.current(db_url) == head
    migrate.downgrade(db_url, "-1")
    assert migrate.current(db_url) == script.get_revision(head).down_revision
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == head


def test_partitions_and_retention_functions(db_url):
    with psycopg.connect(db_url) as conn:
        part = conn.execute("select ioc_ensure_telemetry_partition('2026-01-15')").fetchone()[0]
        assert part == "telemetry_p20260115"
        # idempotent
        conn.execute("select ioc_ensure_telemetry_partition('2026-01-15')")
        conn.execute("insert into telemetry (device_key, metric_id, ts, value) "
                     "values (1, 1, '2026-01-15T12:00:00Z', 1.0)")
        dropped = conn.execute("select ioc_drop_telemetry_partitions('2026-01-16T00:00:00Z')"
                               ).fetchone()[0]
        assert dropped == 1
        assert conn.execute("select to_regclass('telemetry_p20260115')").fetchone()[0] is None


def test_catalog_synced(db_url):
    with psycopg.connect(db_url) as conn:
        kinds = {r[0] for r in conn.execute("select kind from kinds")}
        metric = conn.execute("select value_type from metrics where name = 'lamp_on'").fetchone()
    assert {"streetlight", "lighting_cabinet", "camera", "water_pipe"} <= kinds
    assert metric == ("bool",)
