"""Review of 70491a1 (resume: the API key bound, a project folder moved whole, sizes taken
when staged, inputs gone before staging) and 5a6d6c4 (overlapping windows' merge order)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.ledger import Ledger
from shared_kit import clean_env
from shared_kit import free_port as _free_port
from shared_kit import stop_at_second_staging as _stop_at_second_staging
from shared_kit import stored_by_source_id as _stored

KEY, OTHER_KEY = "review-c-key-a", "review-c-key-b"
T0 = 1709251200


class Crash(Exception):
    """Stands for a crash (kill -9, OOM) at a chosen moment."""


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _emulator(data: Path, key: str = KEY, port: int = 0) -> AmplitudeEmulator:
    return AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=key, port=port))


def _write_days(folder: Path, days: int = 3, per_day: int = 30) -> set[str]:
    folder.mkdir(parents=True)
    ids = set()
    for d in range(1, days + 1):
        lines = []
        for i in range(per_day):
            ids.add(f"ev-{d}-{i}")
            lines.append(json.dumps({"event": "Played", "properties": {
                "time": T0 + d * 86400 + i * 60, "distinct_id": f"user-{d}-{i:03d}",
                "$insert_id": f"ev-{d}-{i}"}}))
        (folder / f"2024-03-0{d}.jsonl").write_text("\n".join(lines) + "\n")
    return ids




def _crash_at_first_accepted_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Amplitude answered 200 to the first batch; the process dies before the ledger's
    transaction that records it commits (the digest's own transaction)."""
    def crash(self: Ledger, batch_id: str, **counts: int) -> str:
        raise Crash(batch_id)

    monkeypatch.setattr(Ledger, "batch_done", crash)


# --- 70491a1 (a): the API key ---------------------------------------------------------------


def test_a_crash_as_the_first_batch_is_accepted_still_binds_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    clean_env(monkeypatch, KEY)
    _write_days(tmp_path / "events")
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}"]\n[amplitude]\n'
                   f'api_host = "http://127.0.0.1:{port}"\n[run]\nworkdir = '
                   f'"{tmp_path / "work"}"\nconcurrency = 1\n')
    with _emulator(tmp_path / "amp-a", KEY, port).running() as url:
        _crash_at_first_accepted_batch(monkeypatch)
        with pytest.raises(Crash):
            _invoke("migrate", "-c", str(cfg), "--quiet")
        monkeypatch.undo()
        in_project_a = _stored(url)
    assert in_project_a  # Amplitude took the first batch into project A
    clean_env(monkeypatch, OTHER_KEY)  # cron's environment has another project's key
    with _emulator(tmp_path / "amp-b", OTHER_KEY, port).running() as url:
        run = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
        in_project_b = _stored(url)
    assert (run.exit_code, in_project_b) == (2, {}), (
        f"resumed with exit {run.exit_code}: {len(in_project_a)} events in project A, "
        f"{len(in_project_b)} in project B")


# --- 70491a1 (b): locations relative to the config file's folder ----------------------------


def test_moving_only_the_config_file_resumes_inputs_named_by_absolute_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~/mp2amp.toml names /home/u/exports/*.jsonl by its absolute path; the admin moves
    the config into ~/configs/ (the work folder is set explicitly). Nothing the run reads
    moved: before 70491a1 this resumed."""
    clean_env(monkeypatch, KEY)
    home = tmp_path / "home"
    ids = _write_days(home / "exports")
    with _emulator(tmp_path / "amp").running() as url:
        cfg = home / "mp2amp.toml"
        cfg.write_text(f'[source]\nfiles = ["{home.resolve()}/exports/*.jsonl"]\n'
                       f'[amplitude]\napi_host = "{url}"\n'
                       f'[run]\nworkdir = "{tmp_path / "work"}"\n')
        _stop_at_second_staging(monkeypatch)
        assert _invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 130
        monkeypatch.undo()
        clean_env(monkeypatch, KEY)
        (home / "configs").mkdir()
        moved = home / "configs" / "mp2amp.toml"
        shutil.move(str(cfg), str(moved))
        run = _invoke("migrate", "-c", str(moved), "--resume", "--quiet")
        stored = _stored(url)
    assert run.exit_code == 0, " ".join(run.stderr.split())[-600:]
    assert set(stored) == ids and set(stored.values()) == {1}


# --- 70491a1 (d): an input gone before it was staged ------------------------------------------


def _part_files(folder: Path) -> None:
    """Two part files of one Data Pipelines day: their times interleave (merged)."""
    folder.mkdir(parents=True)
    for n, part in enumerate(("part-0.jsonl", "part-1.jsonl")):
        (folder / part).write_text("".join(json.dumps({"event": "Played", "properties": {
            "time": T0 + 2 * i + n, "distinct_id": f"u{i}", "$insert_id": f"p{n}-{i}"}}) + "\n"
            for i in range(20)))


def test_a_gone_part_file_merged_into_another_is_not_called_never_staged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, KEY)
    _part_files(tmp_path / "day")
    with _emulator(tmp_path / "amp").running() as url:
        cfg = tmp_path / "mp2amp.toml"
        cfg.write_text(f'[source]\nfiles = ["{tmp_path / "day"}/*.jsonl"]\n[amplitude]\n'
                       f'api_host = "{url}"\n[run]\nworkdir = "{tmp_path / "work"}"\n')
        first = _invoke("migrate", "-c", str(cfg), "--json")
        assert first.exit_code == 0, first.stderr[-800:]
        assert json.loads(first.stdout)["identity"]["overlapping_windows_merged"]
        # space freed: the staged files go; a part file was archived away meanwhile
        shutil.rmtree(tmp_path / "work" / "staged")
        (tmp_path / "day" / "part-1.jsonl").unlink()
        run = _invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
    message = " ".join(run.stderr.split())
    assert run.exit_code == 2, message
    assert "not staged yet" not in message and "gone too" in message, message


# --- 5a6d6c4: a resumed import-file run ---------------------------------------------------------


def test_a_finished_import_file_run_is_not_rewritten_after_its_staged_files_are_freed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)
    _write_days(tmp_path / "events", days=2, per_day=10)
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(f'[source]\nfiles = ["{tmp_path / "events"}"]\n[amplitude]\n'
                   f'output_dir = "{tmp_path / "out"}"\n[run]\nworkdir = "{tmp_path / "work"}"\n')
    first = _invoke("migrate", "-c", str(cfg), "--json")
    assert first.exit_code == 0, first.stderr[-800:]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    shutil.rmtree(tmp_path / "work" / "staged")  # README: staged files may be deleted
    again = _invoke("migrate", "-c", str(cfg), "--resume", "--json")
    assert again.exit_code == 0, again.stderr[-800:]
    load = json.loads(again.stdout)["load"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == written, load
    assert load["events"] == 0 and load.get("files_removed_from_earlier_attempts") is None


def test_an_earlier_chain_merge_already_in_window_order_is_remade_not_refused(
        tmp_path: Path) -> None:
    from mp2amp.pipeline.restage import restage_missing

    work = tmp_path / "work"
    (work / "staged").mkdir(parents=True)
    ledger = Ledger(work / "ledger.sqlite")
    ledger.add_windows([(n, "file", {"path": n}) for n in "abc"])
    # what an earlier mp2amp left: {b, c} merged into b, then {a, b} into a (no
    # line_ordered meta); a's merged file [a, b, c] is in window order either way
    ledger.mark_extracted("a", str(work / "staged" / "a.merged"), 3)
    for n in "bc":
        (work / "staged" / f"{n}.away").write_bytes(b"")
        ledger.mark_extracted(n, str(work / "staged" / f"{n}.away"), 0)
    ledger.restage([], {"c": "b"})
    ledger.restage([], {"b": "a"})
    ledger.batch_sent("batch-a-0", "a", 0, 3)
    assert "a.merged" not in {p.name for p in (work / "staged").iterdir()}  # freed
    try:
        restage_missing(ledger, work)  # stages a, b, c again, to be merged in one pass
    finally:
        ledger.close()
