"""``ioc`` sub-commands find a running demo's services through its data directory.

The demo advertises them with :func:`server.cli.common.advertise_services` (the same call
``ioc demo`` makes; tests/server/test_demo.py runs the real demo end to end); here the
session's PostgreSQL stands in for the demo's, and the commands run through ``main`` with
no IOC_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys

import asyncpg
import psycopg
import pytest

from server.cli import common
from server.cli.common import SERVICES_FILE, advertise_services
from server.cli.embedded import free_port
from server.cli.main import main
from server.http.auth import TokenStore
from server.settings import choose_data_dir


@pytest.fixture
def no_ioc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IOC_DATABASE_URL", "IOC_MQTT_URL", "IOC_CONFIG", "IOC_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield
    choose_data_dir(None)  # main() remembers --data-dir; the next test starts clean


def _authenticate(url: str, token: str):
    async def run():
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            return await TokenStore(pool).authenticate(token)
        finally:
            await pool.close()

    return asyncio.run(run())


def test_token_commands_use_the_running_demos_database(tmp_path, db_url, mosquitto, no_ioc_env,
                                                       capsys):
    with psycopg.connect(db_url) as conn:
        conn.execute("insert into crews (id, name) values ('X', 'Crew X')")
    with advertise_services(tmp_path, database_url=db_url, mqtt_url=mosquitto.url,
                            http_base="http://127.0.0.1:8080") as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the URLs may carry passwords
        assert main(["token", "create", "--role", "crew", "--crew", "X", "--name", "van 7",
                     "--data-dir", str(tmp_path)]) == 0
        token = capsys.readouterr().out.strip()
        assert main(["--data-dir", str(tmp_path), "token", "list"]) == 0
        listed = capsys.readouterr().out
        settings = common.load_settings()
    assert not path.exists()  # gone once the demo stops
    assert token
    assert "crew" in listed and "van 7" in listed and "active" in listed
    assert (settings.database_url, settings.mqtt_url) == (db_url, mosquitto.url)
    who = _authenticate(db_url, token)
    assert who is not None and (who.role, who.crew, who.name) == ("crew", "X", "van 7")


def test_ioc_data_dir_points_at_the_demo(tmp_path, db_url, no_ioc_env, monkeypatch, capsys):
    monkeypatch.setenv("IOC_DATA_DIR", str(tmp_path))
    with advertise_services(tmp_path, database_url=db_url, mqtt_url=None, http_base="http://x"):
        assert main(["token", "create", "--role", "viewer"]) == 0
    token = capsys.readouterr().out.strip()
    who = _authenticate(db_url, token)
    assert who is not None and who.role == "viewer"


def test_environment_wins_over_the_demo(tmp_path, db_url, no_ioc_env, monkeypatch):
    monkeypatch.setenv("IOC_DATABASE_URL", db_url)
    with advertise_services(tmp_path, database_url="postgresql://elsewhere@127.0.0.1:1/x",
                            mqtt_url="mqtt://127.0.0.1:1884", http_base="http://x"):
        choose_data_dir(tmp_path)
        settings = common.load_settings()
    assert settings.database_url == db_url
    assert settings.mqtt_url == "mqtt://127.0.0.1:1884"  # unset in the environment: the demo's


def test_a_dead_demos_file_is_ignored_and_the_message_says_both_ways(tmp_path, db_url, no_ioc_env):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (tmp_path / SERVICES_FILE).write_text(
        f'{{"pid": {int(gone.stdout)}, "database_url": "{db_url}", "mqtt_url": null}}')
    with pytest.raises(SystemExit) as exc:
        main(["token", "list", "--data-dir", str(tmp_path)])
    message = str(exc.value)
    assert "IOC_DATABASE_URL is not set" in message
    assert str(tmp_path) in message
    assert "--data-dir" in message and "IOC_DATA_DIR" in message


def test_nothing_advertised(tmp_path, no_ioc_env):
    with pytest.raises(SystemExit, match="no 'ioc demo' is running in"):
        main(["--data-dir", str(tmp_path / "none"), "migrate"])


@pytest.mark.parametrize("argv", [["token", "list"], ["export"]])
def test_an_unreachable_database_ends_a_command_with_one_line(argv, no_ioc_env, monkeypatch):
    monkeypatch.setenv("IOC_DATABASE_URL", f"postgresql://ioc@127.0.0.1:{free_port()}/ioc")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = str(exc.value)
    assert message.startswith(f"ioc {argv[0]}: ") and "\n" not in message
    assert "refused" in message.lower() or "failed" in message.lower()


def test_photos_live_in_the_data_directory_unless_configured(tmp_path, no_ioc_env, monkeypatch):
    monkeypatch.setenv("IOC_DATA_DIR", str(tmp_path))
    settings = common.load_settings(find_demo=False)
    assert settings.reports.photo_dir == tmp_path.resolve() / "report-photos"
    monkeypatch.setenv("IOC_REPORTS__PHOTO_DIR", str(tmp_path / "elsewhere"))
    assert common.load_settings(find_demo=False).reports.photo_dir == tmp_path / "elsewhere"
