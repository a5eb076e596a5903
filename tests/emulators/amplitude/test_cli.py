"""``mp2amp emulate amplitude`` as a person runs it: a real process on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson


def _run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mp2amp", "emulate", "amplitude", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_serves_prints_url_first_and_saves_on_interrupt(tmp_path: Path) -> None:
    data = tmp_path / "amp"
    proc = _run("--port", "0", "--data", str(data), "--api-key", "cli-key",
                "--secret-key", "cli-secret", "--timezone", "Europe/Berlin")
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        body = orjson.dumps({"api_key": "cli-key", "events": [
            {"event_type": "Opened", "device_id": "cli-device-1", "insert_id": "i-1"}]})
        req = urllib.request.Request(url + "/batch", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as res:
            assert orjson.loads(res.read())["events_ingested"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    state = orjson.loads((data / "state.json").read_bytes())
    assert state["events_stored"] == 1


def test_stops_and_saves_on_sigint_even_started_in_the_background(tmp_path: Path) -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored.
    data = tmp_path / "amp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp2amp", "emulate", "amplitude", "--port", "0", "--data",
         str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (data / "state.json").exists()


def test_bad_settings_are_reported_without_a_traceback(tmp_path: Path) -> None:
    proc = _run("--data", str(tmp_path / "amp"), "--timezone", "Mars/Olympus",
                "--fail-rate", "1.5")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "Mars/Olympus" in err and "fail_rate" in err
    assert "Traceback" not in err


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run("--port", str(port), "--data", str(tmp_path / "amp"))
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_segmentation_cost_budgets_are_flags(tmp_path: Path) -> None:
    """--segmentation-cost-per-5min: a 10-day query costs 10, so a budget of 15 answers the
    second one 429 with a Retry-After (the reference's budgets are the defaults)."""
    import base64
    import urllib.error
    import urllib.parse

    proc = _run("--port", "0", "--data", str(tmp_path / "amp"), "--secret-key", "s",
                "--api-key", "k", "--segmentation-cost-per-5min", "15")
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        query = urllib.parse.urlencode({"e": orjson.dumps({"event_type": "_all"}).decode(),
                                        "start": "20240101", "end": "20240110"})
        auth = base64.b64encode(b"k:s").decode()

        def ask() -> int:
            req = urllib.request.Request(f"{url}/api/2/events/segmentation?{query}",
                                         headers={"Authorization": f"Basic {auth}"})
            try:
                with urllib.request.urlopen(req, timeout=30) as res:
                    return int(res.status)
            except urllib.error.HTTPError as exc:
                assert exc.code != 429 or exc.headers.get("Retry-After")
                return int(exc.code)

        assert [ask(), ask()] == [200, 429]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
