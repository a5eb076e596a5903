"""The fixes for tests/test_session15_review_c.py beyond its pinned tests: the key digest
recorded as a batch is sent (kept after a crash, dropped only when every answer refused
the key), ``--new-api-key`` for a key regenerated for the same project, loaded windows
staged again kept loaded, an earlier mp2amp's merge steps rebuilt from its chain."""

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
from mp2amp.ledger import Ledger
from mp2amp.pipeline.api_key_binding import API_KEY_META
from mp2amp.pipeline.restage import _stepwise_order
from shared_kit import clean_env
from shared_kit import free_port as _free_port
from shared_kit import ledger_meta as _meta
from shared_kit import stored_by_source_id as _stored

KEY, NEW_KEY = "fixes-c-key-a", "fixes-c-key-regenerated"
T0 = 1709251200


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)



def _emulator(data: Path, key: str, port: int = 0) -> AmplitudeEmulator:
    return AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=key, port=port))



def _write_days(folder: Path, days: int = 3, per_day: int = 30) -> set[str]:
    folder.mkdir(parents=True)
    ids = set()
    for d in range(1, days + 1):
        ids |= {f"ev-{d}-{i}" for i in range(per_day)}
        (folder / f"2024-03-0{d}.jsonl").write_text("".join(json.dumps({
            "event": "Played", "properties": {
                "time": T0 + d * 86400 + i * 60, "distinct_id": f"user-{d}-{i:03d}",
                "$insert_id": f"ev-{d}-{i}"}}) + "\n" for i in range(per_day)))
    return ids



def _config(tmp_path: Path, api_host: str, **amplitude: str) -> Path:
    cfg = tmp_path / "mp2amp.toml"
    extra = "".join(f'{k} = "{v}"\n' for k, v in amplitude.items())
    cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}"]\n[amplitude]\n'
                   f'api_host = "{api_host}"\n{extra}[run]\nworkdir = "{tmp_path / "work"}"\n'
                   "concurrency = 2\n")
    return cfg


# --- the API key ------------------------------------------------------------------------------


def _crashed_at_second_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             port: int) -> Path:
    clean_env(monkeypatch, KEY)
    _write_days(tmp_path / "events")
    cfg = _config(tmp_path, f"http://127.0.0.1:{port}")
    with _emulator(tmp_path / "amp", KEY, port).running():
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            _invoke("migrate", "-c", str(cfg), "--quiet")
        monkeypatch.undo()
    return cfg


def test_a_key_refused_after_batches_went_out_under_it_keeps_the_run_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key the first attempt sent under is now refused (revoked, say): what went out
    before may be in its project, so the digest stays and another key is still refused."""
    port = _free_port()
    cfg = _crashed_at_second_batch(tmp_path, monkeypatch, port)
    ledger = tmp_path / "work" / "ledger.sqlite"
    digest = _meta(ledger)[API_KEY_META]
    clean_env(monkeypatch, KEY)
    with _emulator(tmp_path / "amp", NEW_KEY, port).running():  # KEY is invalid now
        refused = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
        assert refused.exit_code == 2 and "API key" in refused.stderr
        assert _meta(ledger)[API_KEY_META] == digest
        clean_env(monkeypatch, "fixes-c-some-other-key")
        other = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
    assert other.exit_code == 2
    assert "is not the key this run started with" in " ".join(other.stderr.split())


def test_new_api_key_resumes_with_a_key_regenerated_for_the_same_project(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()
    cfg = _crashed_at_second_batch(tmp_path, monkeypatch, port)
    ledger = tmp_path / "work" / "ledger.sqlite"
    clean_env(monkeypatch, NEW_KEY)  # the project's key was regenerated
    with _emulator(tmp_path / "amp", NEW_KEY, port).running() as url:
        refused = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
        message = " ".join(refused.stderr.split())
        assert refused.exit_code == 2 and "--new-api-key" in message, message
        run = _invoke("migrate", "-c", str(cfg), "--resume", "--new-api-key", "--quiet")
        assert run.exit_code == 0, run.stderr[-1500:]
        # a warning on stderr (pytest captures the log)
        assert "now goes on under the AMPLITUDE_API_KEY set now" in caplog.text
        assert set(_stored(url)) == {f"ev-{d}-{i}" for d in (1, 2, 3) for i in range(30)}
        # bound to the new key from now on
        assert _invoke("migrate", "-c", str(cfg), "--resume", "--quiet").exit_code == 0
        clean_env(monkeypatch, KEY)
        assert _invoke("migrate", "-c", str(cfg), "--resume", "--quiet").exit_code == 2
    assert KEY.encode() not in ledger.read_bytes() and NEW_KEY.encode() not in \
        ledger.read_bytes()


def test_new_api_key_without_resume_is_refused(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, KEY)
    _write_days(tmp_path / "events")
    cfg = _config(tmp_path, "http://127.0.0.1:9")
    run = _invoke("migrate", "-c", str(cfg), "--new-api-key", "--quiet")
    assert run.exit_code == 2 and "--new-api-key goes with --resume" in run.stderr
    assert not (tmp_path / "work").exists()


# --- loaded windows staged again ------------------------------------------------------------


def test_a_finished_api_run_whose_staged_files_were_freed_sends_nothing_on_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, KEY)
    ids = _write_days(tmp_path / "events")
    with _emulator(tmp_path / "amp", KEY).running() as url:
        cfg = _config(tmp_path, url)
        assert _invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 0
        shutil.rmtree(tmp_path / "work" / "staged")
        again = _invoke("migrate", "-c", str(cfg), "--resume", "--json")
        stored = _stored(url)
    assert again.exit_code == 0, again.stderr[-1500:]
    doc = json.loads(again.stdout)
    assert (doc["load"]["sent"], doc["load"]["requests"]) == (0, 0)  # replayed, not re-cut
    assert doc["totals"]["balanced"] is True
    assert set(stored) == ids and set(stored.values()) == {1}


def test_a_loaded_window_unstaged_is_loaded_again_once_staged(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        ledger.add_windows([(n, "file", {"path": n}) for n in "ab"])
        for n in "ab":
            ledger.mark_extracted(n, f"/s/{n}", 3)
        ledger.mark_loaded("a", {"records_read": 3})
        for n in "ab":
            ledger.mark_pending(n)
        assert {w.window_id: w.state for w in ledger.windows()} == {
            "a": "pending", "b": "pending"}
        for n in "ab":
            ledger.mark_extracted(n, f"/t/{n}", 3)
        rows = {w.window_id: w for w in ledger.windows()}
        assert (rows["a"].state, rows["a"].counts) == ("loaded", {"records_read": 3})
        assert rows["b"].state == "extracted"
        ledger.mark_pending("a")  # once more: still remembered
        ledger.mark_extracted("a", "/u/a", 3)
        assert ledger.window("a").state == "loaded"  # type: ignore[union-attr]
    finally:
        ledger.close()


# --- an earlier mp2amp's merge steps ----------------------------------------------------------


def test_merge_steps_are_rebuilt_from_the_chain() -> None:
    assert _stepwise_order({"c": "b", "b": "a"}) == {"a": ["a", "b", "c"]}
    assert _stepwise_order({"c": "a", "b": "a"}) == {"a": ["a", "c", "b"]}  # refused
    assert _stepwise_order({"d": "c", "b": "a", "c": "a"}) == {"a": ["a", "b", "c", "d"]}
