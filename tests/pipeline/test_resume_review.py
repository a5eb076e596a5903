"""Adversarial review of resume, restaging, damaged files, fingerprint and stopping:
combinations of the features, each run end to end against the Amplitude emulator."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import pytest
from migrate_kit import Project, amplitude, assert_exactly_once, make_config

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate


class Crash(Exception):
    pass


def _crash_at_batch(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    done = Ledger.batch_done
    calls: list[int] = []

    def crash(self: Ledger, batch_id: str, **counts: int) -> str:
        calls.append(1)
        if len(calls) == n:
            raise Crash("stopped here")
        return done(self, batch_id, **counts)

    monkeypatch.setattr(Ledger, "batch_done", crash)


def _copy(project: Project, dest: Path) -> Path:
    shutil.copytree(project.events, dest)
    return dest


def _windows(work: Path) -> list[Any]:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        return ledger.windows()
    finally:
        ledger.close()


def _drop_last(path: Path, n: int) -> bytes:
    """Rewrite the gzip file ``path`` without its last ``n`` records; returns the original."""
    original = path.read_bytes()
    lines = gzip.decompress(original).splitlines(keepends=True)
    path.write_bytes(gzip.compress(b"".join(lines[:-n])))
    return original


# --- a source changed since its batches were cut --------------------------------------


def test_a_changed_source_stops_every_resume_not_only_the_first(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_restaged stopped the first resume, then left the window pending with the new
    record count: the next resume (the source still changed) staged it without any check
    and cut other batches under the names of the done ones."""
    events = _copy(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        _crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(config)
        monkeypatch.undo()
        shutil.rmtree(work / "staged")
        first = sorted(events.iterdir())[0]
        original = _drop_last(first, 5)
        with pytest.raises(TerminalError, match="the source changed since"):
            migrate(config, resume=True)
        with pytest.raises(TerminalError, match="the source changed since"):
            migrate(config, resume=True)  # still changed: still refused
        first.write_bytes(original)
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)


def test_a_changed_source_staged_again_by_a_run_killed_before_its_check_still_stops(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check ran only at the end of the identity pass: a run killed (SIGTERM, kill -9,
    a full disk) after the changed window was staged again, but before the check, left it
    staged with the new count, and the next resume loaded it unchecked."""
    from mp2amp.pipeline import migrate as migrate_module

    events = _copy(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        _crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(config)
        monkeypatch.undo()
        shutil.rmtree(work / "staged")
        first = sorted(events.iterdir())[0]
        original = _drop_last(first, 5)

        def killed(*args: Any) -> None:
            raise Crash("killed after the restaging, before its check")

        monkeypatch.setattr(migrate_module, "check_restaged", killed)
        with pytest.raises(Crash):
            migrate(config, resume=True)
        monkeypatch.undo()
        with pytest.raises(TerminalError, match="the source changed since"):
            migrate(config, resume=True)
        first.write_bytes(original)
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)


# --- fingerprint ----------------------------------------------------------------------


def test_the_identity_tables_content_counts_in_the_fingerprint(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: what decides the batches includes "the identity table", and the fingerprint
    counts the files the settings name by their content; the identity table counted by its
    path only, so a table replaced between a run and its resume was taken in silently
    (the done batches with the old user_ids, the rest with the new)."""
    table = tmp_path / "mappings.jsonl.gz"
    shutil.copy(project.root / "identity" / "mappings.jsonl.gz", table)
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url,
                             **{"source.identity_table": str(table)})
        _crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(config)
        monkeypatch.undo()
        rows = gzip.decompress(table.read_bytes()).splitlines(keepends=True)
        table.write_bytes(gzip.compress(b"".join(rows[: len(rows) // 2])))
        with pytest.raises(TerminalError, match="differs from the one the run started with"):
            migrate(config, resume=True)
