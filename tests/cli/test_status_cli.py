"""``mp2amp status`` on ledgers it must refuse: a clear message, exit 2, and the file left
exactly as it was (``status`` only reads)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.ledger import Ledger


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def refused(workdir: Path) -> str:
    ledger = workdir / "ledger.sqlite"
    before = ledger.read_bytes()
    result = invoke("status", "--workdir", str(workdir))
    assert result.exit_code == 2 and result.stdout == ""
    as_json = invoke("status", "--workdir", str(workdir), "--json")
    assert as_json.exit_code == 2
    doc = orjson.loads(as_json.stdout)  # stdout is one JSON object: the error
    assert doc["exit_code"] == 2
    assert (doc["error"]["kind"], doc["error"]["type"]) == ("terminal", "TerminalError")
    assert ledger.read_bytes() == before
    # nothing new beside it (a WAL ledger's own -wal/-shm files may appear while read)
    assert {p.name for p in workdir.iterdir()} <= {
        "ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"}
    return " ".join(result.stderr.split())


def test_an_empty_ledger_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ledger.sqlite").write_bytes(b"")
    message = refused(tmp_path)
    assert f"{tmp_path / 'ledger.sqlite'} is not an mp2amp ledger (an empty file)" in message
    assert "point --workdir at the work folder of an mp2amp run" in message


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("CREATE TABLE orders (id INTEGER)")
    db.commit()
    db.close()
    message = refused(tmp_path)
    assert "is not an mp2amp ledger (a database with the tables orders)" in message


def test_a_window_with_damaged_counts_is_named(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("2024-01-01", "day", {}), ("2024-01-02", "day", {})])
    ledger.close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("UPDATE windows SET counts = '{\"read\": 3' WHERE window_id = '2024-01-02'")
    db.commit()
    db.close()
    message = refused(tmp_path)
    assert "is damaged: window 2024-01-02 has unreadable spec or counts" in message


def test_status_of_a_good_ledger_still_reads_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("2024-01-01", "day", {})])
    ledger.close()
    result = invoke("status", "--workdir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    got = orjson.loads(result.stdout)
    assert [w["window"] for w in got["windows"]] == ["2024-01-01"]
    assert got["complete"] is False


def test_status_says_when_a_migration_is_running_in_the_folder(tmp_path: Path) -> None:
    """'in progress' could be a live run or a dead one; the lock a running migrate holds
    tells them apart (status only asks for a shared lock, never takes it)."""
    import os

    from mp2amp.pipeline.worklock import WorkLock

    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("2024-01-01", "day", {})])
    ledger.close()
    assert orjson.loads(invoke("status", "--workdir", str(tmp_path), "--json").stdout)[
        "running_pid"] is None
    lock = WorkLock(tmp_path)
    try:
        result = invoke("status", "--workdir", str(tmp_path))
        assert f"running now: mp2amp migrate, pid {os.getpid()}" in result.stdout
        got = orjson.loads(invoke("status", "--workdir", str(tmp_path), "--json").stdout)
        assert got["running_pid"] == os.getpid()
    finally:
        lock.release()
    assert "running now" not in invoke("status", "--workdir", str(tmp_path)).stdout


@pytest.mark.parametrize("read_only", [False, True])
def test_the_ledger_refuses_a_foreign_database_and_leaves_it_alone(
        tmp_path: Path, read_only: bool) -> None:
    from mp2amp.errors import TerminalError

    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(TerminalError, match="is not an mp2amp ledger"):
        Ledger(path, read_only=read_only)
    assert path.read_bytes() == before


def test_migrate_may_start_in_an_empty_ledger_file(tmp_path: Path) -> None:
    (tmp_path / "ledger.sqlite").write_bytes(b"")  # e.g. a run killed while creating it
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("a", "file", {})])
    assert [w.window_id for w in ledger.windows()] == ["a"]
    ledger.close()


def _status_words(workdir: Path) -> str:
    result = invoke("status", "--workdir", str(workdir))
    assert result.exit_code == 0
    return " ".join(result.stdout.split())


def test_a_run_killed_before_it_planned_its_windows_reads_as_not_started(
        tmp_path: Path) -> None:
    Ledger(tmp_path / "ledger.sqlite").close()  # created, no plan and no fingerprint yet
    words = _status_words(tmp_path)
    assert "windows none planned; batches done 0, in flight 0" in words
    assert ("mp2amp not started: the last run stopped before it planned its windows; run "
            "`mp2amp migrate` again (with or without --resume)") in words
    assert "in progress" not in words


def test_a_run_that_planned_no_windows_has_nothing_to_migrate(tmp_path: Path) -> None:
    from mp2amp.pipeline.fingerprint import FINGERPRINT_META

    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.set_meta(FINGERPRINT_META, "{}")  # the plan (no windows) and its settings
    ledger.close()
    words = _status_words(tmp_path)
    assert "windows none planned" in words
    assert "mp2amp nothing to migrate: the run planned no windows" in words
