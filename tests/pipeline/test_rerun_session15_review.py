"""A migration run over days: ``mp2amp migrate`` then ``--resume`` under change (session 15
review). Real CLI runs (in process) against the in-process Amplitude emulator.

Each xfail test asserts the behaviour the README promises and fails on the current code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from migrate_kit import Crash, crash_at_batch
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from shared_kit import clean_env
from shared_kit import free_port as _free_port
from shared_kit import stop_at_second_staging as _stop_at_second_staging
from shared_kit import stored_by_source_id as _stored

KEY = "review-key-a"
DAYS = 3
PER_DAY = 30


def _write_days(folder: Path, days: int = DAYS, per_day: int = PER_DAY) -> set[str]:
    """Day files of simple events (one user per event); returns their insert_ids."""
    folder.mkdir(parents=True)
    ids = set()
    for d in range(1, days + 1):
        lines = []
        for i in range(per_day):
            iid = f"ev-{d}-{i}"
            ids.add(iid)
            lines.append(json.dumps({"event": "Played", "properties": {
                "time": 1709251200 + d * 86400 + i * 60, "distinct_id": f"user-{d}-{i:03d}",
                "$insert_id": iid}}))
        (folder / f"2024-03-0{d}.jsonl").write_text("\n".join(lines) + "\n")
    return ids


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)




def _emulator(data: Path, key: str = KEY, port: int = 0) -> AmplitudeEmulator:
    return AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=key, port=port))


# --- the project folder moved -------------------------------------------------------------


def test_a_project_folder_moved_whole_resumes(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, KEY)
    old = tmp_path / "disk1" / "proj"
    ids = _write_days(old / "events")
    with _emulator(tmp_path / "amp").running() as url:
        (old / "mp2amp.toml").write_text(
            f'[source]\nfiles = ["events/*.jsonl"]\n[amplitude]\napi_host = "{url}"\n'
            "[run]\nconcurrency = 2\n")
        monkeypatch.chdir(old)
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            _invoke("migrate", "--quiet")
        monkeypatch.undo()
        clean_env(monkeypatch, KEY)
        # to a bigger disk: the whole folder, config, inputs and work folder together
        new = tmp_path / "disk2" / "proj"
        new.parent.mkdir()
        shutil.move(str(old), str(new))
        monkeypatch.chdir(new)
        run = _invoke("migrate", "--resume", "--quiet")
        assert run.exit_code == 0, run.stderr[-1500:]
        stored = _stored(url)
        assert set(stored) == ids and set(stored.values()) == {1}


# --- the Amplitude project changed ----------------------------------------------------------


def test_a_resume_with_another_amplitude_api_key_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, KEY)
    _write_days(tmp_path / "events")
    port = _free_port()
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}"]\n[amplitude]\n'
                   f'api_host = "http://127.0.0.1:{port}"\n[run]\nworkdir = '
                   f'"{tmp_path / "work"}"\nconcurrency = 2\n')
    with _emulator(tmp_path / "amp-a", KEY, port).running() as url:
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            _invoke("migrate", "-c", str(cfg), "--quiet")
        monkeypatch.undo()
        in_a = _stored(url)
    assert in_a
    # the shell of the resume holds the key of another project (staging vs production)
    clean_env(monkeypatch, "review-key-b")
    with _emulator(tmp_path / "amp-b", "review-key-b", port).running() as url:
        run = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
        in_b = _stored(url)
    assert run.exit_code == 2 and "AMPLITUDE_API_KEY" in run.stderr, (
        f"exit {run.exit_code}: {len(in_a)} events went to project A, {len(in_b)} to "
        f"project B ({len(set(in_a) & set(in_b))} to both)")
    assert not in_b


def test_a_wrong_api_key_refused_at_once_can_be_corrected_on_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side of the test above: a key that Amplitude refused before it accepted
    anything must stay correctable by ``--resume`` (the run stops at the first answer and
    the work folder then holds a migration), whatever the fix for the above."""
    ids = _write_days(tmp_path / "events")
    with _emulator(tmp_path / "amp").running() as url:
        cfg = tmp_path / "mp2amp.toml"
        cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}"]\n[amplitude]\n'
                       f'api_host = "{url}"\n[run]\nworkdir = "{tmp_path / "work"}"\n')
        clean_env(monkeypatch, "a-typo-in-the-key")
        wrong = _invoke("migrate", "-c", str(cfg), "--quiet")
        assert wrong.exit_code == 2, wrong.stderr[-1500:]
        assert not _stored(url)
        clean_env(monkeypatch, KEY)
        right = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
        assert right.exit_code == 0, right.stderr[-1500:]
        stored = _stored(url)
        assert set(stored) == ids and set(stored.values()) == {1}


# --- inputs that changed or went away -------------------------------------------------------



def test_a_file_appended_to_before_it_was_staged_is_not_named_as_changed_since(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, KEY)
    ids = _write_days(tmp_path / "events")
    last = tmp_path / "events" / f"2024-03-0{DAYS}.jsonl"
    with _emulator(tmp_path / "amp").running() as url:
        cfg = tmp_path / "mp2amp.toml"
        cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}"]\n[amplitude]\n'
                       f'api_host = "{url}"\n[run]\nworkdir = "{tmp_path / "work"}"\n')
        _stop_at_second_staging(monkeypatch)
        assert _invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 130
        monkeypatch.undo()
        clean_env(monkeypatch, KEY)
        # the day file was still being written when the run started: its last records come
        # in before the resume stages it
        with last.open("a") as f:
            f.write(json.dumps({"event": "Played", "properties": {
                "time": 1709600000, "distinct_id": "late-user", "$insert_id": "late-1"}}) + "\n")
        first = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
        assert first.exit_code == 0, first.stderr[-1500:]
        assert set(_stored(url)) == ids | {"late-1"}  # the added record was migrated
        # a later resume (events parked for the quota, say) reads the same ledger
        again = _invoke("migrate", "-c", str(cfg), "--resume", "--json")
        assert again.exit_code == 0, again.stderr[-1500:]
        assert json.loads(again.stdout)["inputs_changed_since_staged"] == [], (
            "named as changed since it was staged, with records 'not in it' that were sent")


def test_an_input_gone_before_it_was_staged_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, KEY)
    _write_days(tmp_path / "events")
    with _emulator(tmp_path / "amp").running() as url:
        cfg = tmp_path / "mp2amp.toml"
        cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}/*.jsonl"]\n[amplitude]\n'
                       f'api_host = "{url}"\n[run]\nworkdir = "{tmp_path / "work"}"\n')
        _stop_at_second_staging(monkeypatch)
        assert _invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 130
        monkeypatch.undo()
        clean_env(monkeypatch, KEY)
        (tmp_path / "events" / "2024-03-02.jsonl").unlink()  # cleaned up by someone
        run = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
    assert run.exit_code == 2
    message = " ".join(run.stderr.split())
    assert "2024-03-02.jsonl" in message
    assert "check the path and run again" not in message, message
    assert "restore" in message and "new work folder" in message, message
