"""``mp2amp migrate`` and ``mp2amp status``: exit codes and messages, against an in-process
Amplitude emulator."""

from __future__ import annotations

import gzip
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator

KEY = "cli-test-key"
TZ = "America/Los_Angeles"


@pytest.fixture(scope="module")
def day_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-project")
    subprocess.run([sys.executable, "-m", "mp2amp", "generate", "--out", str(root / "p"),
                    "--users", "40", "--days", "2", "--seed", "9", "--timezone", TZ],
                   check=True, capture_output=True, timeout=120)
    return root / "p" / "events"


@pytest.fixture(scope="module")
def amp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path_factory.mktemp("amp"),
                                            api_key=KEY))
    with emu.running() as url:
        yield url


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AMPLITUDE_API_KEY", "MIXPANEL_SERVICE_ACCOUNT", "MIXPANEL_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AMPLITUDE_API_KEY", KEY)


def config(tmp_path: Path, files: Path, url: str, **run: Any) -> Path:
    extra = "".join(f"{k} = {v}\n" for k, v in run.items())
    path = tmp_path / "mp2amp.toml"
    path.write_text(f'[mixpanel]\ntimezone = "{TZ}"\n[source]\nfiles = ["{files}"]\n'
                    f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{tmp_path / "work"}"\n'
                    + extra)
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_migrate_then_status_json(env: None, tmp_path: Path, day_files: Path,
                                  amp_url: str) -> None:
    cfg = config(tmp_path, day_files, amp_url)
    run = invoke("migrate", "-c", str(cfg), "--json")
    assert run.exit_code == 0, run.stderr
    result = orjson.loads(run.stdout)
    assert result["exit_code"] == 0 and result["totals"]["balanced"] is True
    assert result["resumed"] is False and result["problems"] == []
    assert result["totals"]["sent"] > 100

    status = invoke("status", "-c", str(cfg), "--json")
    assert status.exit_code == 0, status.stderr
    got = orjson.loads(status.stdout)
    assert got["complete"] is True and got["problems"] == []
    assert got["ledger"] == str(tmp_path / "work" / "ledger.sqlite")
    assert got["states"] == {"loaded": 2}
    assert got["batches"]["in_flight"] == 0 and got["batches"]["done"] > 0
    assert {k: got["totals"][k] for k in ("read", "sent", "rejected", "balanced")} == {
        k: result["totals"][k] for k in ("read", "sent", "rejected", "balanced")}

    text = invoke("status", "-c", str(cfg), "--windows")
    assert text.exit_code == 0
    assert "windows loaded 2; batches done" in text.stdout and "in flight 0" in text.stdout

    # a second run in the same work folder without --resume is refused
    again = invoke("migrate", "-c", str(cfg))
    assert again.exit_code == 2
    assert "already holds a migration; continue it with `mp2amp migrate --resume`" in \
        " ".join(again.stderr.split())

    # resuming a finished run sends nothing again and still adds up
    resumed = invoke("migrate", "-c", str(cfg), "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    after = orjson.loads(resumed.stdout)
    assert after["resumed"] is True and after["load"]["requests"] == 0
    assert after["totals"] == result["totals"]


def test_resume_with_nothing_to_resume(env: None, tmp_path: Path, day_files: Path,
                                       amp_url: str) -> None:
    cfg = config(tmp_path, day_files, amp_url)
    result = invoke("migrate", "-c", str(cfg), "--resume")
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "error: nothing to resume:" in message
    assert "run `mp2amp migrate` without --resume to start" in message
    assert not (tmp_path / "work" / "ledger.sqlite").exists()


def test_missing_api_key(env: None, tmp_path: Path, day_files: Path, amp_url: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMPLITUDE_API_KEY")
    cfg = config(tmp_path, day_files, amp_url)
    result = invoke("migrate", "-c", str(cfg))
    assert result.exit_code == 2
    assert "set AMPLITUDE_API_KEY in the environment" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "work").exists()


def test_invalid_api_key_stops_then_resume_finishes(env: None, tmp_path: Path,
                                                    day_files: Path, amp_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path, day_files, amp_url)
    monkeypatch.setenv("AMPLITUDE_API_KEY", "not-the-key")
    refused = invoke("migrate", "-c", str(cfg), "--quiet")
    assert refused.exit_code == 2
    assert "api key" in refused.stderr.lower() and "Traceback" not in refused.stderr
    monkeypatch.setenv("AMPLITUDE_API_KEY", KEY)
    resumed = invoke("migrate", "-c", str(cfg), "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert orjson.loads(resumed.stdout)["totals"]["balanced"] is True


def test_status_on_an_empty_folder(env: None, tmp_path: Path) -> None:
    result = invoke("status", "--workdir", str(tmp_path))
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert f"error: no migration in {tmp_path} (no ledger.sqlite)" in message
    as_json = invoke("status", "--workdir", str(tmp_path), "--json")
    assert as_json.exit_code == 2
    doc = orjson.loads(as_json.stdout)  # stdout is one JSON object: the error
    assert doc["exit_code"] == 2
    assert (doc["error"]["kind"], doc["error"]["type"]) == ("terminal", "TerminalError")
    assert doc["error"]["message"] in " ".join(result.stderr.split())


def test_daily_quota_exit_3(env: None, tmp_path: Path, day_files: Path) -> None:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY,
                                            daily_quota=20))
    with emu.running() as url:
        cfg = config(tmp_path, day_files, url)
        result = invoke("migrate", "-c", str(cfg), "--quiet")
    assert result.exit_code == 3, result.stderr
    assert "wait for Amplitude's daily quota; run `mp2amp migrate --resume` later" in \
        " ".join(result.stderr.split())


def test_resume_with_other_batch_settings_is_refused(env: None, tmp_path: Path,
                                                     day_files: Path, amp_url: str) -> None:
    cfg = config(tmp_path, day_files, amp_url, concurrency=2)
    assert invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 0
    changed = invoke("migrate", "-c", str(cfg), "--resume", "--concurrency", "3")
    assert changed.exit_code == 2
    message = " ".join(changed.stderr.split())
    assert "differs from the one the run started with in what decides its batches" in message
    assert '"concurrency":2' in message.replace(" ", "") and "Traceback" not in changed.stderr


def test_a_window_that_does_not_add_up_exits_1_and_is_named(env: None, tmp_path: Path,
                                                            day_files: Path,
                                                            amp_url: str) -> None:
    cfg = config(tmp_path, day_files, amp_url)
    assert invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 0
    # the ledger loses 5 accepted events of the first window's first batch
    ledger = sqlite3.connect(tmp_path / "work" / "ledger.sqlite")
    with ledger:
        window, batch, accepted = ledger.execute(
            "SELECT window_id, batch_id, accepted FROM batches WHERE state = 'done' "
            "ORDER BY window_id, seq LIMIT 1").fetchone()
        ledger.execute("UPDATE batches SET accepted = ? WHERE batch_id = ?",
                       (accepted - 5, batch))
    ledger.close()

    text = invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
    assert text.exit_code == 1, text.stderr
    message = " ".join(text.stderr.split())
    assert f"does not add up: {window}: read " in message
    read = int(message.split(f"{window}: read ")[1].split()[0])
    assert f"{window}: read {read} but accounted for {read - 5} " in message

    as_json = invoke("migrate", "-c", str(cfg), "--resume", "--json")
    assert as_json.exit_code == 1
    result = orjson.loads(as_json.stdout)
    assert result["exit_code"] == 1 and result["totals"]["balanced"] is False
    assert [p.split(": read ")[0] for p in result["problems"]] == [window]


def test_import_files_in_text_mode(env: None, tmp_path: Path, day_files: Path) -> None:
    out = tmp_path / "out"
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "{TZ}"\n[source]\nfiles = ["{day_files}"]\n'
                   f'[amplitude]\noutput_dir = "{out}"\n[run]\nworkdir = "{tmp_path / "w"}"\n')
    result = invoke("migrate", "-c", str(cfg))
    assert result.exit_code == 0, result.stderr
    stdout = " ".join(result.stdout.split())
    files = sorted(out.glob("mp2amp-a1-*.json.gz"))
    assert files
    for path in files:
        assert f"{path} (" in stdout
    assert f"wrote {sum(1 for _ in _events(files)):,} events in {len(files)} file(s) to {out}:" \
        in stdout
    assert f"converter config: {out / 'amplitude-converter-config.json'}" in stdout
    stderr = " ".join(result.stderr.split())
    assert "warning: all " in stderr and "under Amplitude's 1 MB minimum" in stderr
    # the last plain progress line: the files phase (the merge that cuts the files, after
    # the write phase) counts the events in files, all of them at the end
    lines = [line for line in result.stderr.splitlines() if line.startswith("mp2amp: t=")]
    final = lines[-1]
    done, total = final.split(" done=")[1].split()[0].split("/")
    assert " phase=files " in final
    assert done == total == str(sum(1 for _ in _events(files)))


def _events(files: list[Path]) -> Iterator[bytes]:
    for path in files:
        yield from gzip.decompress(path.read_bytes()).splitlines()
