"""Issue 15: a demo data directory made before passwords (``initdb --auth=trust``) is not
trusted any more once a second run starts it: the superuser gets a generated password and
pg_hba.conf scram-sha-256."""

from __future__ import annotations

import stat
import subprocess

import psycopg
import pytest

from server.cli import embedded


def test_a_trust_cluster_from_an_earlier_version_is_switched_to_passwords(tmp_path):
    pg = embedded.EmbeddedPostgres(tmp_path / "old", fast_unsafe=True)
    embedded._own(pg.data_dir)
    subprocess.run(embedded._as_service_user([
        str(embedded.postgres_bindir() / "initdb"), "-D", str(pg.pgdata), "-U", pg.superuser,
        "--auth=trust", "--no-instructions"]), check=True, capture_output=True, cwd="/")
    assert not pg.password_file.exists()
    pg.start()
    try:
        assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
        with psycopg.connect(pg.url(), connect_timeout=5) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        for url in (f"postgresql://{pg.superuser}@{pg.host}:{pg.port}/postgres",
                    f"postgresql://{pg.superuser}:wrong@{pg.host}:{pg.port}/postgres"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(url, connect_timeout=5).close()
    finally:
        pg.stop()
