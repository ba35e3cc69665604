"""Shared plumbing for the benchmarks in ``bench/``: the whole stack on this machine.

:class:`Stack` starts a private PostgreSQL+PostGIS cluster and a private mosquitto in a
temporary directory (``server.cli.embedded``), creates and migrates databases, seeds the
synthetic city, and runs ``ioc serve`` as a separate process (``python -m server serve``)
so the server's CPU and memory can be measured on their own. Everything listens on
loopback only and everything is stopped on exit, also on Ctrl-C, SIGTERM or an error.

PostgreSQL runs with its production durability settings: fsync, full_page_writes and
synchronous_commit stay ON (``EmbeddedPostgres(fast_unsafe=False)``), so every commit
the benchmarks count waited for its WAL flush, as it would in production.

The figures are printed beside this machine's own baselines (see ``bench/ingest.py``), so
a ratio means something on any machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
# ``python bench/x.py`` puts bench/ first on sys.path, where a script named like a package
# (bench/tiles.py) would shadow it: the repository root goes in front.
if sys.path[:1] != [str(REPO)]:
    sys.path.insert(0, str(REPO))

from server.cli.embedded import EmbeddedMosquitto, EmbeddedPostgres, free_port  # noqa: E402
from server.http.auth import create_token_sync  # noqa: E402
from server.registry.seed import seed_city  # noqa: E402
from server.store import migrate  # noqa: E402 - after the path fix above

# Wide enough for the tables when the output goes to a file or a pipe (rich would use 80).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 130)


def log(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")


# ---------------------------------------------------------------- signals
class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same unwinding as Ctrl-C so ``finally`` blocks run."""


def _on_sigterm(signum, frame):  # pragma: no cover - signal handler
    raise Terminated()


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


def run_on_stack(bench, args, **stack_options) -> int:
    """A benchmark's ``main``: ``bench(args, stack)`` on a fresh :class:`Stack`, stopped on
    exit, Ctrl-C or SIGTERM; returns the process exit code (what ``bench`` returns, else 0)."""
    install_signal_handlers()
    try:
        with Stack(keep=args.keep, **stack_options) as stack:
            rc = asyncio.run(bench(args, stack))
            if args.keep:
                log(f"logs kept in {stack.dir}")
            return rc or 0
    except KeyboardInterrupt:
        console.print("[red]interrupted; everything stopped[/red]")
        return 130


# ---------------------------------------------------------------- CPU accounting
def _proc_cpu(p: psutil.Process, with_reaped_children: bool = False) -> float:
    t = p.cpu_times()
    total = t.user + t.system
    if with_reaped_children:  # exited children the process waited for (postgres backends)
        total += t.children_user + t.children_system
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used by ``pid`` and all its live descendants, plus descendants it reaped.

    The postmaster reaps its backends and autovacuum workers, so their CPU stays counted
    after they exit; a process that dies between two snapshots loses at most its last
    interval.
    """
    try:
        root = psutil.Process(pid)
        total = _proc_cpu(root, with_reaped_children=True)
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += _proc_cpu(child)
        return total
    except psutil.Error:
        return 0.0


def own_cpu_seconds() -> float:
    """This process alone (not its children: the publishers are measured separately)."""
    return _proc_cpu(psutil.Process())


@dataclass
class CpuSnapshot:
    wall: float
    groups: dict[str, float]
    busy: float  # whole machine, CPU seconds not idle (all cores)


def system_busy_seconds() -> float:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle


def cpu_snapshot(groups: dict[str, list[int]]) -> CpuSnapshot:
    """CPU seconds per named group of process trees (``"bench"`` with pid 0 = this process)."""
    out = {}
    for name, pids in groups.items():
        out[name] = sum(own_cpu_seconds() if pid == 0 else tree_cpu_seconds(pid) for pid in pids)
    return CpuSnapshot(time.monotonic(), out, system_busy_seconds())


def cpu_percent(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, float]:
    """Per group, % of one core over a..b; ``"machine"`` is % of one core too (max 100 × cores)."""
    wall = max(b.wall - a.wall, 1e-9)
    out = {k: 100 * (b.groups.get(k, 0.0) - v) / wall for k, v in a.groups.items()}
    out["machine"] = 100 * (b.busy - a.busy) / wall
    return out


# ---------------------------------------------------------------- Prometheus text
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` → value; labelled series are also summed under the bare name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2), float(m.group(3))
        if labels:
            out[name + labels] = value
            out[name] = out.get(name, 0.0) + value
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------- the server process
class ServerProcess:
    """``python -m server serve`` in its own session, logging to a file."""

    def __init__(self, database_url: str, mqtt_url: str, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.mqtt_url = mqtt_url
        self.port = free_port()
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        env = {
            **os.environ,
            "IOC_DATABASE_URL": self.database_url,
            "IOC_MQTT_URL": self.mqtt_url,
            "IOC_HTTP_HOST": "127.0.0.1",
            "IOC_HTTP_PORT": str(self.port),
            **self.extra_env,
        }
        env.pop("IOC_CONFIG", None)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve"], env=env, cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.ps = psutil.Process(self.proc.pid)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"ioc serve exited while starting{self.tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError as err:
                last = str(err)
            time.sleep(0.2)
        raise RuntimeError(f"ioc serve not ready within {timeout:.0f} s ({last}){self.tail()}")

    def rss_mb(self) -> float:
        try:
            return self.ps.memory_info().rss / 2**20 if self.ps else 0.0
        except psutil.Error:
            return 0.0

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {self.log_path} ---\n" + "\n".join(text)

    def stop(self, timeout: float = 30) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # aiohttp: graceful shutdown, the writer drains
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- the stack
class Stack:
    """PostgreSQL (fsync on) + mosquitto in a temp dir, databases, and the server process.

    Use as a context manager; ``keep=True`` leaves the temp dir (logs) in place.
    """

    def __init__(self, *, keep: bool = False, data_dir: Path | None = None,
                 mosquitto_conf: str = "") -> None:
        self.keep = keep
        self._own_dir = data_dir is None
        self.dir = Path(data_dir or tempfile.mkdtemp(prefix="ioc-bench-"))
        self.pg = EmbeddedPostgres(self.dir / "pg", fast_unsafe=False)
        # extra_conf lines come after the shipped ones (mosquitto keeps the last value)
        self.mqtt = EmbeddedMosquitto(self.dir / "mqtt", extra_conf=mosquitto_conf)
        self.servers: list[ServerProcess] = []

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        log(f"starting PostgreSQL (fsync on) and mosquitto in {self.dir}")
        self.pg.start()
        self.mqtt.start()

    @property
    def postgres_pid(self) -> int:
        assert self.pg.proc is not None
        return self.pg.proc.pid  # setpriv execs postgres: the same pid is the postmaster

    @property
    def mosquitto_pid(self) -> int:
        assert self.mqtt.proc is not None
        return self.mqtt.proc.pid

    def create_database(self, name: str, *, migrate_schema: bool = True) -> str:
        url = self.pg.create_database(name)
        if migrate_schema:
            migrate.upgrade(url)
        return url

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')

    def checkpoint(self) -> None:
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute("checkpoint")

    def seed(self, url: str, streetlights: int) -> dict[str, int]:
        return seed_city(url, streetlights=streetlights)

    def token(self, url: str, role: str = "admin") -> str:
        return create_token_sync(url, role, "bench")

    def start_server(self, url: str, extra_env: dict[str, str] | None = None) -> ServerProcess:
        srv = ServerProcess(url, self.mqtt.url, self.dir / f"server-{len(self.servers)}.log",
                            extra_env)
        self.servers.append(srv)
        srv.start()
        return srv

    def stop(self) -> None:
        for srv in reversed(self.servers):
            with contextlib.suppress(Exception):
                srv.stop()
        with contextlib.suppress(Exception):
            self.mqtt.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()
        if self._own_dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- printing
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    return t


def machine_line() -> str:
    import platform

    mem = psutil.virtual_memory().total / 2**30
    return (f"{platform.node()}: {psutil.cpu_count()} cores ({psutil.cpu_count(logical=False)} "
            f"physical), {mem:.1f} GiB RAM, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")
