"""``ioc demo`` as a person runs it: a subprocess, ready, then Ctrl-C with nothing left."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from server.cli.embedded import free_port

pytestmark = pytest.mark.slow


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def _session(link: str) -> str:
    """What the map does with the printed link: trade its sign-in token for a session (the
    cookie's value). The link's token itself opens nothing else, and only once."""
    sign_in = link.split("?token=", 1)[1]
    assert _get(link.split("?")[0].rstrip("/") + "/api/v1/me", sign_in)[0] == 401
    req = urllib.request.Request(link.split("?")[0].rstrip("/") + "/api/v1/session", method="POST",
                                 headers={"Authorization": f"Bearer {sign_in}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 201
        cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    again = urllib.request.Request(req.full_url, method="POST", headers=req.headers)
    try:
        urllib.request.urlopen(again, timeout=5)
        raise AssertionError("a sign-in link works once")
    except urllib.error.HTTPError as err:
        assert err.code in (401, 409)
    return cookie.split(";", 1)[0].split("=", 1)[1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_serves_the_city_and_stops_cleanly(tmp_path, sig):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env["PYTHONUNBUFFERED"] = "1"
    log = open(tmp_path / "demo.log", "wb")  # closed once the process exits
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "demo", "--port", str(port), "--data-dir",
         str(tmp_path / "data"), "--devices", "300", "--no-simulator"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        deadline = time.monotonic() + 120
        token = None
        while time.monotonic() < deadline:
            text = (tmp_path / "demo.log").read_text(errors="replace")
            m = re.search(r"IOC map: +(\S+)", text)
            if m and "admin token:" in text and _get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                token = _session(m.group(1))
                break
            assert proc.poll() is None, text
            time.sleep(0.3)
        assert token, (tmp_path / "demo.log").read_text()
        devices = (f"http://127.0.0.1:{port}/api/v1/devices?bbox=105.80,21.55,105.88,21.63"
                   "&kind=streetlight&limit=50000")
        status, body = _get(devices, token)
        assert status == 200
        assert b'"streetlight"' in body
        # CONTRACT: the demo prints an admin token; it works as a bearer and expires.
        admin = re.search(r"admin token: +(\S+)", (tmp_path / "demo.log").read_text()).group(1)
        status, body = _get(f"http://127.0.0.1:{port}/api/v1/tokens", admin)
        assert status == 200, body
        mine = [t for t in json.loads(body)["tokens"] if t["name"] == "demo admin (expires)"]
        assert mine and mine[0]["role"] == "admin" and mine[0]["expires_at"], body
        # Another ioc command beside the demo, with no IOC_DATABASE_URL, finds its database.
        services = tmp_path / "data" / "services.json"
        assert stat.S_IMODE(services.stat().st_mode) == 0o600
        crew = subprocess.run(
            [sys.executable, "-m", "server", "token", "create", "--role", "crew", "--crew", "CREW-01",
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, env=env, timeout=60)
        assert crew.returncode == 0, crew.stderr
        status, body = _get(devices, crew.stdout.strip())
        assert status == 200, body
        assert b'"streetlight"' in body
        if sig == signal.SIGINT:
            # The city's last day, written in the background: lamps as they were 12 h ago.
            # (The SIGTERM run stops while it is still being written.)
            # (its own line, not the migrations' "rule history: …")
            written, log_file = re.compile(r"history: [\d,]+ readings"), tmp_path / "demo.log"
            while not written.search(log_file.read_text()) and time.monotonic() < deadline + 90:
                assert proc.poll() is None
                time.sleep(0.5)
            then = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 12 * 3600))
            status, body = _get(f"http://127.0.0.1:{port}/api/v1/state?at={then}&kind=streetlight",
                                token)
            assert status == 200, body
            lamps = json.loads(body)["features"]
            assert len(lamps) == 300
            assert sum(f["properties"]["values"].get("lamp_on") is not None for f in lamps) > 250
            assert sum(f["properties"]["status"] == "online" for f in lamps) > 250
    finally:
        descendants = []
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        # The demo starts its services in their own sessions; find them by data dir too.
        data = str(tmp_path / "data")
        services = [p for p in psutil.process_iter(["cmdline"])
                    if p.info["cmdline"] and any(data in a for a in p.info["cmdline"])]
        names = " ".join(" ".join(p.info["cmdline"]) for p in services)
        assert "postgres" in names and "mosquitto" in names, names
        proc.send_signal(sig)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "demo.log").read_text()
    _gone, alive = psutil.wait_procs(descendants + services, timeout=10)
    assert not alive, f"left running after {sig.name}: {[p.cmdline() for p in alive]}"
    assert not (tmp_path / "data" / "services.json").exists()
    assert "seeding the synthetic city" in (tmp_path / "demo.log").read_text()
