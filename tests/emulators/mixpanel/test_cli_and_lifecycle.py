"""`mp2amp emulate mixpanel` as a process, and the in-process start/stop API."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.errors import ConfigError, InputError

DAY = "2024-01-10"


def test_cli_prints_the_url_first_and_serves(kit: Any, tmp_path: Path) -> None:
    data = kit.build_project(tmp_path / "p", events={DAY: [kit.ev("A", 1_704_902_400)]})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp2amp", "emulate", "mixpanel", "--data", str(data), "--port", "0",
         "--service-account", "cli:pw", "--export-rate-limit", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        params = {"project_id": "4242", "from_date": DAY, "to_date": DAY}
        ok = requests.get(f"{url}/api/2.0/export", params=params, auth=("cli", "pw"), timeout=10)
        assert ok.status_code == 200 and ok.json()["event"] == "A"
        assert requests.get(f"{url}/api/2.0/export", params=params, auth=("cli", "nope"), timeout=10).status_code == 400
        requests.get(f"{url}/api/2.0/export", params=params, auth=("cli", "pw"), timeout=10)
        third = requests.get(f"{url}/api/2.0/export", params=params, auth=("cli", "pw"), timeout=10)
        assert third.status_code == 429  # --export-rate-limit 2 (per hour)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err and "project 4242" in err


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `mp2amp emulate ... &` in a script gets


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_stops_on_sigint_or_sigterm_even_started_in_the_background(
        kit: Any, tmp_path: Path, sig: signal.Signals) -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored: Python then
    # never raises KeyboardInterrupt, and this emulator once ran on after Ctrl-C / kill -INT.
    data = kit.build_project(tmp_path / "p", events={DAY: [kit.ev("A", 1_704_902_400)]})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp2amp", "emulate", "mixpanel", "--data", str(data), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("http://127.0.0.1:")
    finally:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "mixpanel emulator stopped" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("missing", [], "does not exist: run `mp2amp generate --out"),
        ("bad-json", [], "project.json: not valid JSON"),
        ("bad-field", [], "field timezone: unknown timezone 'Mars/Base'"),
        ("ok", ["--timezone", "Nowhere/City"], "unknown timezone 'Nowhere/City'"),
        ("ok", ["--service-account", "no-secret"], "service_account must be USER:SECRET"),
    ],
)
def test_cli_reports_bad_input_clearly(kit: Any, tmp_path: Path, setup: str, args: list[str], message: str) -> None:
    data = tmp_path / "p"
    if setup != "missing":
        kit.build_project(data)
    if setup == "bad-json":
        (data / "project.json").write_text("{oops")
    if setup == "bad-field":
        (data / "project.json").write_text('{"project_id": 1, "timezone": "Mars/Base"}')
    result = CliRunner().invoke(app, ["emulate", "mixpanel", "--data", str(data), "--port", "0", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_in_process_start_stop_in_the_callers_loop(kit: Any, tmp_path: Path) -> None:
    data = kit.build_project(tmp_path / "p", events={DAY: [kit.ev("A", 1_704_902_400)]})
    emulator = MixpanelEmulator(MixpanelConfig(data_dir=data, service_account="u:s"))

    async def main() -> tuple[str, str]:
        url = await emulator.start()
        try:
            async with aiohttp.ClientSession() as session, session.get(
                f"{emulator.base_url}/api/2.0/export",
                params={"project_id": "4242", "from_date": DAY, "to_date": DAY},
                headers={"Authorization": "Basic dTpz"},  # u:s
            ) as resp:
                return url, await resp.text()
        finally:
            await emulator.stop()

    url, body = asyncio.run(main())
    assert url == emulator.base_url and url.startswith("http://127.0.0.1:")
    assert '"event":"A"' in body
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/_emulator/stats", timeout=2)


def test_empty_directory_serves_an_empty_project(tmp_path: Path) -> None:
    emulator = MixpanelEmulator(MixpanelConfig(data_dir=tmp_path / "fresh", service_account="u:s"))
    with emulator.running() as url:
        info = requests.get(f"{url}/_emulator/info", timeout=10).json()
        assert info == {"project_id": 0, "timezone": "UTC", "project_timezone": "UTC", "legacy_time": False,
                        "data_group_ids": {}}
        resp = requests.get(f"{url}/api/2.0/export", auth=("u", "s"),
                            params={"project_id": "0", "from_date": DAY, "to_date": DAY}, timeout=10)
        assert resp.status_code == 200 and resp.content == b""
        assert requests.post(f"{url}/track", data={"data": '{"event":"x","properties":{}}'}, timeout=10).text == "1"
    assert (tmp_path / "fresh" / "received" / "track.jsonl").exists()


def test_config_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fail_rate must be between 0 and 1"):
        MixpanelConfig(data_dir=tmp_path, fail_rate=1.5)
    with pytest.raises(ConfigError, match="unknown fault kinds"):
        MixpanelConfig(data_dir=tmp_path, fault_kinds=("explode",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        MixpanelEmulator(MixpanelConfig(data_dir=tmp_path / "file"))
