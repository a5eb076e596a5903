"""The session 15 rerun fixes beyond the reviewer's pinned tests: the API key bound once
Amplitude accepted a batch (and only its salted digest kept), a project folder moved whole
with windows still to stage, ledgers of an earlier mp2amp, and inputs gone before staging."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from migrate_kit import Crash, crash_at_batch
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.config import load_config
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.pipeline.api_key_binding import API_KEY_META
from mp2amp.pipeline.fingerprint import FOLDER_META, run_fingerprint
from mp2amp.pipeline.migrate import upload_settings
from shared_kit import clean_env
from shared_kit import free_port as _free_port
from shared_kit import ledger_meta as _meta
from shared_kit import stop_at_second_staging as _stop_at_second_staging
from shared_kit import stored_by_source_id as _stored

KEY = "fixes-key-a"


def _write_days(folder: Path, days: int = 3, per_day: int = 30) -> set[str]:
    folder.mkdir(parents=True)
    ids = set()
    for d in range(1, days + 1):
        lines = []
        for i in range(per_day):
            ids.add(f"ev-{d}-{i}")
            lines.append(json.dumps({"event": "Played", "properties": {
                "time": 1709251200 + d * 86400 + i * 60, "distinct_id": f"user-{d}-{i:03d}",
                "$insert_id": f"ev-{d}-{i}"}}))
        (folder / f"2024-03-0{d}.jsonl").write_text("\n".join(lines) + "\n")
    return ids


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)




def _emulator(data: Path, key: str = KEY, port: int = 0) -> AmplitudeEmulator:
    return AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=key, port=port))



def _set_meta(ledger: Path, key: str, value: str | None) -> None:
    with sqlite3.connect(ledger) as db:
        if value is None:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))



# --- the API key --------------------------------------------------------------------------


def _crashed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: int) -> Path:
    """A run with KEY stopped as Amplitude accepted its second batch; returns its config."""
    clean_env(monkeypatch, KEY)
    _write_days(tmp_path / "events")
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}"]\n[amplitude]\n'
                   f'api_host = "http://127.0.0.1:{port}"\n[run]\nworkdir = '
                   f'"{tmp_path / "work"}"\nconcurrency = 2\n')
    with _emulator(tmp_path / "amp-a", KEY, port).running():
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            _invoke("migrate", "-c", str(cfg), "--quiet")
        monkeypatch.undo()
    return cfg


def test_the_ledger_keeps_a_salted_digest_of_the_key_never_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    cfg = _crashed_run(tmp_path, monkeypatch, port)
    ledger = tmp_path / "work" / "ledger.sqlite"
    assert KEY.encode() not in ledger.read_bytes()
    salt, _, digest = _meta(ledger)[API_KEY_META].partition(":")
    assert salt and digest and KEY not in digest
    clean_env(monkeypatch, KEY)  # the same key: the run goes on
    with _emulator(tmp_path / "amp-a", KEY, port).running():
        run = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
    assert run.exit_code == 0, run.stderr[-1500:]
    clean_env(monkeypatch, "fixes-key-b")
    refused = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
    message = " ".join(refused.stderr.split())
    assert refused.exit_code == 2
    assert "AMPLITUDE_API_KEY" in message and "new work folder" in message, message


def test_a_ledger_without_the_digest_records_it_at_the_next_accepted_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An earlier mp2amp recorded no digest: the past cannot be checked, nothing is said,
    and the key of the resume binds the run from then on."""
    port = _free_port()
    cfg = _crashed_run(tmp_path, monkeypatch, port)
    ledger = tmp_path / "work" / "ledger.sqlite"
    _set_meta(ledger, API_KEY_META, None)
    clean_env(monkeypatch, KEY)
    with _emulator(tmp_path / "amp-a", KEY, port).running():
        run = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
    assert run.exit_code == 0, run.stderr[-1500:]
    assert API_KEY_META in _meta(ledger)
    clean_env(monkeypatch, "fixes-key-b")
    assert _invoke("migrate", "-c", str(cfg), "--resume", "--quiet").exit_code == 2


def test_the_s3_import_sink_needs_no_key_on_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)
    _write_days(tmp_path / "events")
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}"]\n[amplitude]\n'
                   f'output_dir = "{tmp_path / "out"}"\n[run]\nworkdir = "{tmp_path / "work"}"\n')
    assert _invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 0
    assert _invoke("migrate", "-c", str(cfg), "--resume", "--quiet").exit_code == 0
    assert API_KEY_META not in _meta(tmp_path / "work" / "ledger.sqlite")


# --- a project folder moved whole -----------------------------------------------------------


def _project(folder: Path, url: str) -> set[str]:
    ids = _write_days(folder / "events")
    (folder / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events/*.jsonl"]\n[amplitude]\napi_host = "{url}"\n')
    return ids


def test_a_moved_project_stages_its_pending_windows_where_they_are_now(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, KEY)
    old, new = tmp_path / "disk1" / "proj", tmp_path / "disk2" / "proj"
    with _emulator(tmp_path / "amp").running() as url:
        ids = _project(old, url)
        _stop_at_second_staging(monkeypatch)
        assert _invoke("migrate", "-c", str(old / "mp2amp.toml"), "--quiet").exit_code == 130
        monkeypatch.undo()
        clean_env(monkeypatch, KEY)
        new.parent.mkdir()
        shutil.move(str(old), str(new))
        (new / "events" / "2024-03-09.jsonl").write_text("")  # added since: named, not read
        run = _invoke("migrate", "-c", str(new / "mp2amp.toml"), "--resume", "--json")
        assert run.exit_code == 0, run.stderr[-1500:]
        stored = _stored(url)
    assert set(stored) == ids and set(stored.values()) == {1}
    result = json.loads(run.stdout)
    assert result["inputs_not_in_run"] == [str(new / "events" / "2024-03-09.jsonl")]
    assert result["inputs_changed_since_staged"] == []
    assert _meta(new / ".mp2amp" / "ledger.sqlite")[FOLDER_META] == str(old.resolve())


def test_a_moved_project_whose_inputs_are_named_by_absolute_paths_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, KEY)
    old, new = tmp_path / "disk1" / "proj", tmp_path / "disk2" / "proj"
    with _emulator(tmp_path / "amp").running() as url:
        _project(old, url)
        cfg = old / "mp2amp.toml"
        cfg.write_text(cfg.read_text().replace("events/*.jsonl", f"{old}/events/*.jsonl"))
        _stop_at_second_staging(monkeypatch)
        assert _invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 130
        monkeypatch.undo()
        clean_env(monkeypatch, KEY)
        new.parent.mkdir()
        shutil.move(str(old), str(new))
        run = _invoke("migrate", "-c", str(new / "mp2amp.toml"), "--resume", "--quiet")
    message = " ".join(run.stderr.split())
    assert run.exit_code == 2
    assert f"is in {new.resolve()} now" in message and "relative" in message, message


def test_a_ledger_of_an_earlier_mp2amp_with_absolute_locations_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before locations were kept relative to the config file's folder, the fingerprint
    held them as absolute paths: such a run resumes where it is (and records the folder)."""
    clean_env(monkeypatch, KEY)
    proj = tmp_path / "proj"
    with _emulator(tmp_path / "amp").running() as url:
        ids = _project(proj, url)
        cfg = proj / "mp2amp.toml"
        _stop_at_second_staging(monkeypatch)
        assert _invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 130
        monkeypatch.undo()
        clean_env(monkeypatch, KEY)
        ledger = proj / ".mp2amp" / "ledger.sqlite"
        config = load_config(cfg, env={"AMPLITUDE_API_KEY": KEY})
        absolute = run_fingerprint(config, upload_settings(config))
        assert absolute["source"]["files"] == [f"{proj.resolve()}/events/*.jsonl"]
        _set_meta(ledger, "fingerprint", json.dumps(absolute, sort_keys=True))
        _set_meta(ledger, FOLDER_META, None)
        run = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
        assert run.exit_code == 0, run.stderr[-1500:]
        stored = _stored(url)
    assert set(stored) == ids and set(stored.values()) == {1}
    meta = _meta(ledger)
    assert meta[FOLDER_META] == str(proj.resolve())
    assert json.loads(meta["fingerprint"])["source"]["files"] == ["events/*.jsonl"]


# --- inputs changed after they were staged ------------------------------------------------


def test_a_planned_size_of_an_earlier_mp2amp_still_names_a_file_changed_since(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The size is now taken as a file is staged; a file appended to after that is named."""
    clean_env(monkeypatch, KEY)
    _write_days(tmp_path / "events")
    with _emulator(tmp_path / "amp").running() as url:
        cfg = tmp_path / "mp2amp.toml"
        cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}"]\n[amplitude]\n'
                       f'api_host = "{url}"\n[run]\nworkdir = "{tmp_path / "work"}"\n')
        assert _invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 0
        day = tmp_path / "events" / "2024-03-01.jsonl"
        with day.open("a") as f:
            f.write(json.dumps({"event": "Played", "properties": {
                "time": 1709600000, "distinct_id": "late", "$insert_id": "late-1"}}) + "\n")
        again = _invoke("migrate", "-c", str(cfg), "--resume", "--json")
    assert again.exit_code == 0, again.stderr[-1500:]
    assert json.loads(again.stdout)["inputs_changed_since_staged"] == [str(day)]
