"""Helpers the fault tests share: child ``ioc serve`` processes, a steady QoS 1 publisher
in a thread, and what the server stored and reports."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg

from bench.common import ServerProcess

RATE = 2_000  # messages/s, as the issue asks
VALUES_PER_MESSAGE = 2
SETTLE_S = 90.0  # how long a fault's backlog may take to drain on a loaded 2-core machine


def lamp_ids(url: str, n: int = 100) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select id from devices where kind = 'streetlight' order by id "
                            "limit %s", (n,)).fetchall()
    return [r[0] for r in rows]


def stored(url: str) -> tuple[int, int]:
    """(readings stored, distinct (device, metric, ts) among them)."""
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*), count(distinct (device_key, metric_id, ts)) "
                            "from telemetry").fetchone()


def wait_stored(url: str, expected: int, server: ServerProcess, within: float = SETTLE_S):
    deadline = time.monotonic() + within
    got = (-1, -1)
    while time.monotonic() < deadline:
        with suppress(psycopg.OperationalError):
            got = stored(url)
            if got[0] >= expected:
                break
        time.sleep(0.5)
    assert got[0] == expected, (
        f"stored {got[0]} of {expected} readings within {within:.0f} s{server.tail(30)}")
    assert got[0] == got[1], f"{got[0] - got[1]} readings stored twice"


def readyz(server: ServerProcess) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.base_url + "/readyz", timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())
    except OSError as err:
        return 0, {"error": str(err)}


def wait_not_ready(server: ServerProcess, fault: str, within: float = 30.0) -> dict:
    """/readyz's 503 body, once the server reports the fault; fails if it never does."""
    deadline = time.monotonic() + within
    status, body = readyz(server)
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = readyz(server)
    assert status == 503, f"/readyz never reported {fault}: {body}"
    return body


def metric(server: ServerProcess, token: str, name: str) -> float | None:
    req = urllib.request.Request(server.base_url + "/metrics",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


# Every Publisher started, for tests/faults/conftest.py to stop after a failed test.
publishers: list[Publisher] = []


class Publisher:
    """Publishes ``RATE`` messages/s for ``seconds`` from a thread, QoS 1, in a persistent
    session, so a broker restart costs nothing: paho keeps what the broker has not
    acknowledged and sends it again on reconnect. ``acked`` counts what the broker took."""

    def __init__(self, broker_url: str, device_ids: list[str], seconds: float,
                 rate: int = RATE) -> None:
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.device_ids = device_ids
        self.total = int(rate * seconds)
        self.rate = rate
        self.sent = 0
        self.acked = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="fault-pub-" + uuid.uuid4().hex[:8],
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1.0)
        self.client.on_publish = self._on_publish
        self.client.connect(host, int(port), keepalive=30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="fault-publisher", daemon=True)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        publishers.append(self)

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        with self._lock:
            self.acked += 1

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        base_ms = int(time.time() * 1000)
        n_dev = len(self.device_ids)
        while self.sent < self.total and not self._stop.is_set():
            due = min(self.total, int((time.monotonic() - t0) * self.rate) + 1)
            while self.sent < due:
                n = self.sent
                dev = self.device_ids[n % n_dev]
                # One millisecond per round of devices: (device, ts) never repeats.
                payload = orjson.dumps({"ts": base_ms + n // n_dev,
                                        "values": {"power_w": 40.0 + n % 7,
                                                   "dim_level_pct": n % 100}})
                self.client.publish(f"ioc/v1/{dev}/telemetry", payload, qos=1)
                self.sent += 1
            time.sleep(0.005)

    def wait_sent(self, seconds: float, within: float = 60.0) -> None:
        """Until ``seconds`` more of the stream have been published (all of it at most):
        a fault then lasts, or hits, a known share of the stream rather than wall time."""
        target = min(self.total, self.sent + int(seconds * self.rate))
        deadline = time.monotonic() + within
        while self.sent < target:
            assert time.monotonic() < deadline, f"published {self.sent}/{target} within {within} s"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.loop_stop()
        self.client.disconnect()

    def finish(self, within: float = 60.0) -> int:
        """Wait until every message was published and acknowledged by the broker."""
        self._thread.join(within)
        deadline = time.monotonic() + within
        while self.acked < self.total and time.monotonic() < deadline:
            time.sleep(0.1)
        self.client.loop_stop()
        self.client.disconnect()
        assert self.acked == self.total, f"the broker acknowledged {self.acked}/{self.total}"
        return self.total * VALUES_PER_MESSAGE


@contextmanager
def serving(tmp_path: Path, database_url: str, mqtt_url: str, client_id: str | None = None):
    server = ServerProcess(database_url, mqtt_url, tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log",
                           extra_env={"IOC_MQTT_CLIENT_ID": client_id or "ioc-fault-"
                                      + uuid.uuid4().hex[:8]})
    server.start(timeout=90)
    try:
        yield server
    finally:
        if server.proc and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()


def token(url: str) -> str:
    from server.http.auth import create_token_sync

    return create_token_sync(url, "viewer", "fault-test")
