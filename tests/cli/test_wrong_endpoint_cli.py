"""A wrong ``amplitude.api_host`` path stops ``mp2amp migrate`` instead of dead-lettering
every batch (Amplitude answers a wrong path with 400 "Invalid request path")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator

KEY = "endpoint-test-key"
TZ = "America/Los_Angeles"


def _config(tmp_path: Path, files: Path, host: str) -> Path:
    path = tmp_path / "mp2amp.toml"
    path.write_text(f'[mixpanel]\ntimezone = "{TZ}"\n[source]\nfiles = ["{files}"]\n'
                    f'[amplitude]\napi_host = "{host}"\n[run]\nworkdir = "{tmp_path / "work"}"\n')
    return path


def test_a_path_in_api_host_stops_the_run_and_resume_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run([sys.executable, "-m", "mp2amp", "generate", "--out", str(tmp_path / "p"),
                    "--users", "20", "--days", "1", "--seed", "3", "--timezone", TZ],
                   check=True, capture_output=True, timeout=120)
    files = tmp_path / "p" / "events"
    monkeypatch.setenv("AMPLITUDE_API_KEY", KEY)
    emulator = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY))
    runner = CliRunner()
    with emulator.running() as url:
        # "https://api2.amplitude.com/2" is an easy mistake: the request goes to /2/batch
        cfg = _config(tmp_path, files, url + "/2")
        stopped = runner.invoke(app, ["migrate", "-c", str(cfg), "--quiet"],
                                catch_exceptions=False)
        assert stopped.exit_code == 2, stopped.stderr
        message = " ".join(stopped.stderr.split())
        assert "400 'Invalid request path'" in message and "amplitude.api_host" in message
        assert "--resume" in message and "Traceback" not in message
        dead = tmp_path / "work" / "dead-letters.jsonl"
        assert not dead.exists() or dead.read_bytes() == b""
        cfg = _config(tmp_path, files, url)
        resumed = runner.invoke(app, ["migrate", "-c", str(cfg), "--resume", "--json"],
                                catch_exceptions=False)
        assert resumed.exit_code == 0, resumed.stderr
        result = orjson.loads(resumed.stdout)
        assert result["totals"]["balanced"] and result["totals"]["dead_lettered"] == 0
        assert result["totals"]["sent"] > 0
