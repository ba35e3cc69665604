"""Private PostgreSQL+PostGIS and mosquitto processes for ``ioc demo`` and the tests.

Both run on free loopback ports, keep their files in a data directory, and are stopped
in order by their owner. PostgreSQL refuses to run as root, so as root the services run
as the unprivileged system user ``ioc`` (created on first use) through ``setpriv``; the
capability CAP_DAC_READ_SEARCH is kept so a data directory under a private home such as
``/root/.local/share/ioc`` can still be reached.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SERVICE_USER = "ioc"


class EmbeddedError(RuntimeError):
    """A private service could not be set up or started; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
                  what: str = "service", log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = _tail(log) if log else ""
            raise EmbeddedError(f"{what} exited with code {proc.returncode} while starting{tail}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n--- last lines of " + str(path) + " ---\n" + "\n".join(text)


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        check=True,
    )
    return pwd.getpwnam(SERVICE_USER)


def _as_service_user(cmd: list[str]) -> list[str]:
    """Wrap ``cmd`` so it runs unprivileged when we are root; unchanged otherwise."""
    if not _running_as_root():
        return cmd
    _ensure_service_user()
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [
        setpriv, f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--clear-groups",
        "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", *cmd,
    ]


def _own(path: Path) -> None:
    """Give ``path`` (a directory we created) to the service user when we are root."""
    path.mkdir(parents=True, exist_ok=True)
    if _running_as_root():
        pw = _ensure_service_user()
        for p in [path, *path.rglob("*")]:
            os.chown(p, pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def postgres_major() -> int:
    """The major version of the server binaries :func:`postgres_bindir` finds."""
    out = subprocess.run([str(postgres_bindir() / "postgres"), "--version"], capture_output=True,
                         text=True, check=True).stdout  # "postgres (PostgreSQL) 15.8 (Debian …)"
    match = re.search(r"\) (\d+)", out)
    return int(match.group(1)) if match else 0


def postgres_bindir() -> Path:
    """The newest PostgreSQL server binaries (Debian keeps them off PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("postgres")
    if found:
        return Path(os.path.realpath(found)).parent
    raise EmbeddedError(
        "PostgreSQL server binaries not found: install postgresql and its PostGIS package "
        "(make demo does this), or set IOC_DATABASE_URL to an existing database"
    )


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` owned by this process."""

    superuser = SERVICE_USER

    def __init__(self, data_dir: Path, *, port: int | None = None, fast_unsafe: bool = False):
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self.port = port
        self.host = "127.0.0.1"
        # fsync off: only for throw-away test clusters, never for the demo's data.
        self.fast_unsafe = fast_unsafe
        self.proc: subprocess.Popen | None = None

    @property
    def password_file(self) -> Path:
        """The superuser's password, generated at initdb (mode 0600)."""
        return self.data_dir / "password"

    def url(self, dbname: str = "postgres") -> str:
        # A cluster made before passwords (trust) gets its file when it starts
        # (_secure_old_cluster); until then it has none.
        try:
            secret = ":" + self.password_file.read_text().strip()
        except FileNotFoundError:
            secret = ""
        return f"postgresql://{self.superuser}{secret}@{self.host}:{self.port}/{dbname}"

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialized():
            return
        bindir = postgres_bindir()
        if not (bindir.parent.parent.parent / "share").exists() and not list(
            Path("/usr/share/postgresql").glob("*/extension/postgis.control")
        ):
            logger.warning("PostGIS extension files not found; migrations will fail")
        import secrets

        from server.registry.credentials import write_private

        # No trust: every login, local ones included, proves the generated password
        # (scram-sha-256); the URLs the demo hands out carry it.
        write_private(self.password_file, secrets.token_urlsafe(24) + "\n")
        _own(self.data_dir)
        cmd = _as_service_user([
            str(bindir / "initdb"), "-D", str(self.pgdata), "-U", self.superuser,
            "--auth=scram-sha-256", f"--pwfile={self.password_file}", "--encoding=UTF8",
            "--locale=C.UTF-8", "--no-instructions",
        ])
        with open(self.data_dir / "initdb.log", "wb") as log:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        if done.returncode != 0:
            raise EmbeddedError("initdb failed" + _tail(self.data_dir / "initdb.log"))

    def _stop_leftover(self) -> None:
        """Stop a postmaster a killed earlier run left on this data directory."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, 0)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (ProcessLookupError, PermissionError, OSError):
            return
        if b"postgres" not in cmdline:
            return
        logger.warning("stopping a PostgreSQL (pid %s) left running on %s", pid, self.pgdata)
        os.kill(pid, signal.SIGINT)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def start(self, timeout: float = 60) -> None:
        self.init()
        self._stop_leftover()
        self.port = self.port or free_port()
        opts = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "work_mem": "16MB",
            "maintenance_work_mem": "256MB",
            # Ingest inserts all over the telemetry primary key (one insertion point per device
            # and metric), so the first commits after a checkpoint write a full-page image of
            # each leaf they touch: at 15,000 readings/s the soak saw 0.7-2.6 s stalls at every
            # WAL-triggered checkpoint (every ~4.5 min with 2GB). Checkpoints by time, every 15
            # minutes, make them rare, and lz4 compresses the page images several times faster
            # than pglz ("on"), which ran inside the committing backend.
            "max_wal_size": "6GB",
            "checkpoint_timeout": "15min",
            "wal_compression": "lz4" if postgres_major() >= 15 else "on",
            "log_min_messages": "warning",
            "log_min_error_statement": "panic",
            "max_locks_per_transaction": "256",
        }
        if self.fast_unsafe:
            opts.update(fsync="off", full_page_writes="off", synchronous_commit="off")
        args = [str(postgres_bindir() / "postgres"), "-D", str(self.pgdata)]
        for k, v in opts.items():
            args += ["-c", f"{k}={v}"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            _as_service_user(args), stdout=log, stderr=subprocess.STDOUT, cwd="/",
            start_new_session=True,  # Ctrl-C reaches us; we stop it after the server
        )
        log.close()
        wait_for_port(self.host, self.port, timeout, self.proc, "PostgreSQL", self.log_path)
        self._secure_old_cluster(timeout)
        self._wait_ready(timeout)

    def _secure_old_cluster(self, timeout: float) -> None:
        """A data directory an earlier version made with ``--auth=trust`` (a demo's, reused
        by a second run): give the superuser a generated password and switch pg_hba.conf to
        scram-sha-256, once, so no local user is trusted any more."""
        hba = self.pgdata / "pg_hba.conf"
        lines = hba.read_text().splitlines()

        def trusted(line: str) -> bool:
            return not line.lstrip().startswith("#") and line.split()[-1:] == ["trust"]

        if not any(trusted(ln) for ln in lines):
            return
        import secrets

        import psycopg
        from psycopg import sql

        from server.registry.credentials import write_private

        logger.warning("switching %s from trust to scram-sha-256 authentication", self.pgdata)
        if not self.password_file.exists():
            write_private(self.password_file, secrets.token_urlsafe(24) + "\n")
        password = self.password_file.read_text().strip()
        trust_url = f"postgresql://{self.superuser}@{self.host}:{self.port}/postgres"
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = psycopg.connect(trust_url, autocommit=True, connect_timeout=2)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with conn:
            conn.execute("set password_encryption = 'scram-sha-256'")
            conn.execute(sql.SQL("alter role {} password {}").format(
                sql.Identifier(self.superuser), sql.Literal(password)))
            hba.write_text("\n".join(" ".join([*ln.split()[:-1], "scram-sha-256"])
                                     if trusted(ln) else ln for ln in lines) + "\n")
            conn.execute("select pg_reload_conf()")

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise EmbeddedError(
                        "PostgreSQL did not accept connections" + _tail(self.log_path)
                    ) from None
                time.sleep(0.1)

    def create_database(self, name: str, template: str | None = None) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if not exists:
                stmt = sql.SQL("create database {}").format(sql.Identifier(name))
                if template:
                    stmt = sql.SQL("create database {} template {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                conn.execute(stmt)
        return self.url(name)

    def stop(self, timeout: float = 30) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back clients, checkpoint, exit
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


MOSQUITTO_CONF = """\
# Written by ioc-server; private broker for the embedded demo and tests.
listener {port} {host}
allow_anonymous {anonymous}
persistence true
persistence_location {persistence}/
autosave_interval 30
# A persistent session keeps what it missed while the server was down. mosquitto's default
# queue (1,000 messages) would drop most of a 30 s restart at 10,000 msg/s; 0 = unlimited
# count, bounded by bytes instead.
max_queued_messages 0
max_queued_bytes 1073741824
# Unacknowledged QoS 1 messages in flight to one client. The server acknowledges only
# after commit, so this window is what backpressure lets through while the database is
# slow: enough for ~1 s at 10,000 msg/s, small enough to bound the server's memory.
max_inflight_messages 10000
max_keepalive 120
log_dest stdout
log_type error
log_type warning
log_type notice
"""


DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


def dynsec_plugin() -> str:
    found = glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")
    return DYNSEC_PLUGIN if Path(DYNSEC_PLUGIN).exists() or not found else found[0]


#: The broker accounts of a secured embedded broker: (user name, dynsec role).
SERVICE_ACCOUNTS = {"admin": ("ioc-admin", "admin"), "server": ("ioc-server", "ioc-server"),
                    "simulator": ("ioc-simulator", "ioc-simulator")}


class EmbeddedMosquitto:
    """A mosquitto broker in ``data_dir`` owned by this process."""

    def __init__(self, data_dir: Path, *, port: int | None = None, extra_conf: str = "",
                 auth: bool = False, dynsec: bool = False):
        self.data_dir = Path(data_dir).resolve()
        self.host = "127.0.0.1"
        self.port = port
        self.extra_conf = extra_conf
        # auth: no anonymous clients; users and topics from the password and ACL files that
        # server/registry/credentials.py writes (install_auth), reread on SIGHUP.
        self.auth = auth
        # dynsec: no anonymous clients; accounts and roles from mosquitto's dynamic security
        # plugin (server/mqtt/dynsec.py), changed at run time by the server as admin.
        self.dynsec = dynsec
        self.log_path = self.data_dir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def url_for(self, user: str, password: str, scheme: str = "mqtt", port: int | None = None) -> str:
        from urllib.parse import quote

        return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:" \
               f"{port or self.port}"

    # -- dynamic security
    @property
    def dynsec_file(self) -> Path:
        return self.data_dir / "dynamic-security.json"

    @property
    def admin_file(self) -> Path:
        """The dynsec admin's {username, password} (IOC_MQTT_ADMIN_FILE), mode 0600."""
        return self.data_dir / "admin.json"

    @property
    def accounts_file(self) -> Path:
        return self.data_dir / "accounts.json"

    def accounts(self) -> dict[str, tuple[str, str]]:
        """{"admin"|"server"|"simulator": (user, password)}: generated on first use and kept
        in the data directory (mode 0600), so a second run reuses them."""
        import json

        from server.registry.credentials import new_password, write_private

        try:
            doc = json.loads(self.accounts_file.read_text())
            accounts = {k: (doc[k]["username"], doc[k]["password"]) for k in SERVICE_ACCOUNTS}
        except (OSError, ValueError, KeyError, TypeError):
            accounts = {k: (user, new_password()) for k, (user, _) in SERVICE_ACCOUNTS.items()}
            write_private(self.accounts_file, json.dumps(
                {k: {"username": u, "password": p} for k, (u, p) in accounts.items()}, indent=2))
        user, password = accounts["admin"]
        write_private(self.admin_file, json.dumps({"username": user, "password": password}))
        return accounts

    def write_dynsec(self, devices) -> dict[str, tuple[str, str]]:
        """The plugin's file, made afresh from the service accounts and ``devices`` ((id,
        password hash or None), from the registry: the source of truth) before the broker
        starts; the accounts."""
        import json

        from server.mqtt.dynsec import config_document
        from server.registry.credentials import mosquitto_hash, write_private

        accounts = self.accounts()
        hashed = {user: (mosquitto_hash(pw), [SERVICE_ACCOUNTS[k][1]])
                  for k, (user, pw) in accounts.items()}
        owner = None
        if _running_as_root():
            pw = _ensure_service_user()
            owner = (pw.pw_uid, pw.pw_gid)
        write_private(self.dynsec_file, json.dumps(config_document(hashed, devices)), owner)
        return accounts

    @property
    def password_file(self) -> Path:
        return self.data_dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.data_dir / "acl"

    def install_auth(self, password_text: str, acl_text: str) -> None:
        """Replace the password and ACL files; a running broker rereads them (SIGHUP)."""
        from server.registry.credentials import write_private

        owner = None
        if _running_as_root():
            pw = _ensure_service_user()
            owner = (pw.pw_uid, pw.pw_gid)
        write_private(self.password_file, password_text, owner)
        write_private(self.acl_file, acl_text, owner)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def start(self, timeout: float = 20) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise EmbeddedError(
                "mosquitto not found: install it (make demo does), or set IOC_MQTT_URL"
            )
        persistence = self.data_dir / "persistence"
        persistence.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        conf = self.data_dir / "mosquitto.conf"
        auth_conf = ""
        if self.auth:
            for path in (self.password_file, self.acl_file):
                if not path.exists():  # nobody may connect until credentials are installed
                    path.touch(mode=0o600)
            auth_conf = f"password_file {self.password_file}\nacl_file {self.acl_file}\n"
        if self.dynsec:
            if not self.dynsec_file.exists():
                self.write_dynsec([])
            auth_conf += f"plugin {dynsec_plugin()}\nplugin_opt_config_file {self.dynsec_file}\n"
        conf.write_text(
            MOSQUITTO_CONF.format(port=self.port, host=self.host, persistence=persistence,
                                  anonymous="false" if self.auth or self.dynsec else "true")
            + auth_conf + self.extra_conf
        )
        _own(self.data_dir)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            _as_service_user([binary, "-c", str(conf)]), stdout=log, stderr=subprocess.STDOUT,
            cwd="/", start_new_session=True,
        )
        log.close()
        wait_for_port(self.host, self.port, timeout, self.proc, "mosquitto", self.log_path)

    def stop(self, timeout: float = 10) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: mosquitto saves its persistence file and exits
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
