"""Session 21 fixes around the three review defects: the cases beside each that the review
tests do not pin (an emptied ledger beside a run's files, migrate's own wording, a plan of
no windows, a killed run still named killed, a run that starts and ends within one read)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline import status as status_module
from mp2amp.pipeline.accounting import totals
from mp2amp.pipeline.attempts import finished, record_attempt, record_start
from mp2amp.pipeline.fingerprint import FINGERPRINT_META
from mp2amp.pipeline.worklock import LOCK_NAME, WorkLock


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def header_only(path: Path) -> None:
    """A WAL database with a header and no tables: a ledger copied without its -wal."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t(x)")
    db.execute("DROP TABLE t")
    db.close()
    assert path.stat().st_size > 0


def test_a_header_only_ledger_is_damaged_for_status_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    header_only(path)
    before = path.read_bytes()
    for kwargs in ({"read_only": True}, {"create": False}):
        with pytest.raises(TerminalError) as err:
            Ledger(path, **kwargs)
        said = str(err.value)
        assert said.startswith(f"the ledger {path} is damaged (it holds no tables: a copy cut "
                               "short, or made without its ledger.sqlite-wal file)"), said
        assert "empty" not in said
    assert path.read_bytes() == before


def test_resume_names_an_empty_ledger_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"")
    with pytest.raises(TerminalError, match=r"is damaged \(it is empty: a copy cut short"):
        Ledger(path, create=False)
    assert path.read_bytes() == b""


def test_status_of_an_empty_ledger_beside_a_runs_files_is_damaged(tmp_path: Path) -> None:
    """migrate refuses both an empty ledger and a missing one there: moving it away (the
    advice for an empty file in a fresh folder) would not start a new run."""
    (tmp_path / LOCK_NAME).write_text("")
    (tmp_path / "dead-letters.jsonl").write_text('{"reason": "x"}\n')
    (tmp_path / "ledger.sqlite").write_bytes(b"")
    run = invoke("status", "--workdir", str(tmp_path))
    assert run.exit_code == 2
    said = " ".join(run.stderr.split())
    assert (f"the ledger {tmp_path / 'ledger.sqlite'} is damaged (it is empty, while the work "
            "folder holds an earlier run's staged copies or downloads") in said, said
    assert "move the file away" not in said
    assert (tmp_path / "ledger.sqlite").read_bytes() == b""


def test_a_plan_of_no_windows_adds_up_and_no_plan_does_not(tmp_path: Path) -> None:
    assert totals([])["balanced"] is True  # migrate's result: always after its plan
    assert totals([], planned=False)["balanced"] is False
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.set_meta(FINGERPRINT_META, "{}")  # planned, and the plan had no window
    ledger.close()
    assert status_module.status(tmp_path).totals["balanced"] is True


def test_a_killed_run_is_still_named_killed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("a.jsonl", "file", {})])
    ledger.batch_sent("w0/0", "a.jsonl", 0, 10)
    record_start(ledger, 1.0e9)
    ledger.close()  # kill -9: no end recorded, no lock held
    said = " ".join(invoke("status", "--workdir", str(tmp_path)).stdout.split())
    assert "its end is not recorded: it was killed" in said, said
    assert "sent but not confirmed 1 (sent again by --resume)" in said, said
    lock = WorkLock(tmp_path)  # the same ledger while a run holds the folder
    try:
        said = " ".join(invoke("status", "--workdir", str(tmp_path)).stdout.split())
    finally:
        lock.release()
    assert "last run: started 2001-09-09 01:46:40 UTC; it is running now" in said, said
    assert "in flight 1" in said, said


def test_a_run_that_starts_and_ends_within_one_read_is_not_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No lock before the read nor after it, yet the snapshot caught the run going."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("a.jsonl", "file", {})])
    record_start(ledger, 1.0e9)
    original = status_module.last_attempt

    def then_the_run_ends(db: Ledger) -> Any:
        seen = original(db)
        record_attempt(ledger, 1.0e9, finished(0))
        return seen

    monkeypatch.setattr(status_module, "last_attempt", then_the_run_ends)
    try:
        run = invoke("status", "--workdir", str(tmp_path), "--json")
    finally:
        ledger.close()
    assert run.exit_code == 0, run.output
    doc = json.loads(run.stdout)
    assert (doc["last_attempt"]["outcome"], doc["running_pid"]) == ("finished", None)
