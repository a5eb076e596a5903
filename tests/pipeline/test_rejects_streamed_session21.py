"""A window's transform rejects go to the ledger in chunks as they come (``rejects_staged``)
and replace the earlier attempt's at the window's end in one step: memory stays flat with
a day of big rejected records, and a run killed (kill -9) at any point between lists the
old ones, never old and new at once; ``--resume`` then renders each reject once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import API_KEY, amplitude, make_config, stored_counts, write_toml

from mp2amp.ledger import Ledger
from mp2amp.ledger.rejects import RejectStore
from mp2amp.load.s3sink import S3ImportSink
from mp2amp.pipeline import transform_worker
from mp2amp.pipeline.accounting import window_counts
from mp2amp.pipeline.migrate import EXIT_OK, migrate

ENV = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)
T = 1_700_000_000
N_BAD, N_GOOD = 120, 12


def _day_file(folder: Path) -> Path:
    """One day: ``N_BAD`` ~2 KB records with a NaN (non_json_value rejects), ``N_GOOD`` good."""
    folder.mkdir()
    path = folder / "day.jsonl"
    with path.open("wb") as f:
        for i in range(N_BAD):
            p = {"time": T + i, "distinct_id": f"user-{i % 7}", "$insert_id": f"bad-{i}",
                 "blob": "x" * 2000, "bad": 1}
            f.write(orjson.dumps({"event": "A", "properties": p}).replace(
                b'"bad":1', b'"bad":NaN') + b"\n")
            if i % 10 == 0:
                p = {"time": T + i, "distinct_id": f"user-{i % 7}", "$insert_id": f"good-{i}"}
                f.write(orjson.dumps({"event": "Good", "properties": p}) + b"\n")
    return path


def _row(line: int, reason: str = "missing_time", window: str = "w",
         stage: str = "transform") -> tuple[Any, ...]:
    return ("f.jsonl", line, window, stage, reason, "m", None, '{"a":1}')


# --- the ledger --------------------------------------------------------------------------


def test_staged_rejects_are_listed_only_once_committed_and_replace_the_old(
        tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {}), ("v", "file", {})])
    led.add_rejects([_row(1), _row(2), _row(9, "invalid_field", stage="amplitude"),
                     _row(50, window="v")])
    led.forget_window_outcomes("w")  # the window's new attempt
    led.stage_window_rejects([_row(2, "non_json_value"), _row(3, "non_json_value")])
    led.stage_window_rejects([_row(4, "non_json_value")])
    before = {"w": {"transform": {"missing_time": 2}, "amplitude": {"invalid_field": 1}},
              "v": {"transform": {"missing_time": 1}}}
    assert led.reject_counts() == before  # a run stopped here lists the old ones
    led.commit_window_rejects("w")
    assert led.reject_counts() == {"w": {"transform": {"non_json_value": 3},
                                         "amplitude": {"invalid_field": 1}},
                                   "v": {"transform": {"missing_time": 1}}}
    assert [r[1] for r in led.iter_rejects() if r[2] == "w"] == [2, 3, 4, 9]
    assert led._db.execute("SELECT COUNT(*) FROM rejects_staged").fetchone()[0] == 0


def test_a_killed_attempts_staged_rejects_are_dropped_and_the_old_kept(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    led.add_windows([("w", "file", {})])
    led.add_rejects([_row(1), _row(2)])
    led.forget_window_outcomes("w")
    led.stage_window_rejects([_row(3, "non_json_value")])
    led.close()  # killed mid-window: nothing committed
    assert Ledger(path, read_only=True).reject_counts() == {
        "w": {"transform": {"missing_time": 2}}}
    led = Ledger(path)  # the resume
    assert led._db.execute("SELECT COUNT(*) FROM rejects_staged").fetchone()[0] == 0
    led.forget_window_outcomes("w")
    led.stage_window_rejects([_row(4, "non_json_value")])
    led.commit_window_rejects("w")  # only this attempt's: row 3 was the killed one's
    assert [r[1] for r in led.iter_rejects()] == [4]


def test_a_windows_first_attempt_writes_its_rejects_directly(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {})])
    led.add_rejects([_row(9, "invalid_field", stage="amplitude")])  # not a transform one
    led.forget_window_outcomes("w")
    assert not led.has_transform_rejects("w")
    led.stage_window_rejects([_row(1)], direct=True)  # listed at once: nothing to keep
    assert led.reject_counts()["w"]["transform"] == {"missing_time": 1}
    assert led.has_transform_rejects("w")
    led.commit_window_rejects("w", direct=True)
    assert [r[1] for r in led.iter_rejects()] == [1, 9]
    assert led._db.execute("SELECT COUNT(*) FROM rejects_staged").fetchone()[0] == 0


def test_a_ledger_of_the_previous_version_is_read_and_resumed(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    led.add_windows([("w", "file", {})])
    led.add_rejects([_row(1)])
    led.close()
    db = sqlite3.connect(path)  # as the previous version left it: no rejects_staged
    db.executescript("DROP INDEX rejects_staged_by_window; DROP TABLE rejects_staged;")
    db.close()
    assert Ledger(path, read_only=True).reject_counts() == {  # `status`: nothing written
        "w": {"transform": {"missing_time": 1}}}
    led = Ledger(path)
    led.forget_window_outcomes("w")
    led.stage_window_rejects([_row(2, "non_json_value")])
    led.commit_window_rejects("w")
    assert led.reject_counts() == {"w": {"transform": {"non_json_value": 1}}}


def test_a_dead_letter_of_an_unfinished_batch_stays_until_its_event_has_another_outcome(
        tmp_path: Path) -> None:
    """README: a resume drops such a dead letter only "if its event, sent again, is
    accepted or parked"; refused again, it is the same row: each event counted once."""
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    led.add_windows([("w", "file", {})])
    led.mark_extracted("w", "staged", 4)
    led.batch_sent("w0/0/0", "w", 0, 3)
    led.add_rejects([(*_row(n, "invalid_field", stage="amplitude"), "w0/0/0")
                     for n in (1, 2, 3)])
    led.add_rejects([_row(4)])
    led.close()  # killed before the batch was done
    led = Ledger(path)  # the resume
    led.forget_window_outcomes("w")
    assert led.reject_counts()["w"]["amplitude"] == {"invalid_field": 3}  # still listed
    led.batch_sent("w0/0/0", "w", 0, 3)  # sent again: 1 accepted, 2 refused again, 3 parked
    led.add_rejects([(*_row(2, "invalid_field", stage="amplitude"), "w0/0/0")])
    led.park("w", "w0/0/0", orjson.dumps(["f.jsonl", 3]).decode(), b"{}", "daily_quota")
    assert led.reject_counts()["w"]["amplitude"] == {"invalid_field": 2}
    led.batch_done("w0/0/0", accepted=1, dead_lettered=1, parked=1,
                   accepted_origins=[("f.jsonl", 1)])
    assert [r[1] for r in led.iter_rejects()] == [2, 4]
    led.mark_loaded("w", {"batches": 1})
    (row,) = window_counts(led)
    assert (row.sent, sum(row.dead_lettered.values()), row.parked) == (1, 1, 1)
    assert row.balanced, row.problem()


# --- migrate -----------------------------------------------------------------------------


def test_migrate_writes_a_windows_rejects_in_chunks_not_at_its_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transform_worker, "CHUNK_LINES", 8)  # ~8 KB chunks: ~4 rejects each
    staged: list[int] = []
    stage = RejectStore.stage_window_rejects

    def counting(self: Ledger, rows: Any, *, direct: bool = False) -> None:
        staged.append(len(rows))
        stage(self, rows, direct=direct)

    monkeypatch.setattr(RejectStore, "stage_window_rejects", counting)
    events = _day_file(tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(events, tmp_path / "work", url))
        assert len(stored_counts(url)) == N_GOOD
    assert result.exit_code == EXIT_OK
    assert result.totals["rejected"] == N_BAD and result.totals["sent"] == N_GOOD
    assert sum(staged) == N_BAD and max(staged) <= 8, staged  # never the whole window
    dead = (tmp_path / "work" / "dead-letters.jsonl").read_bytes().splitlines()
    assert len(dead) == N_BAD


_KILLED = """
import os, signal, sys
from mp2amp.ledger.rejects import RejectStore
from mp2amp.pipeline import transform_worker
transform_worker.CHUNK_LINES = 8
at = sys.argv[2]
calls = []
stage, commit = RejectStore.stage_window_rejects, RejectStore.commit_window_rejects
def staging(self, rows, **kw):
    stage(self, rows, **kw)
    calls.append(len(rows))
    if at == "staging" and len(calls) == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-window: some of its rejects staged
def committing(self, window_id, **kw):
    commit(self, window_id, **kw)
    if at == "committed":
        os.kill(os.getpid(), signal.SIGKILL)  # rejects committed, the window not loaded
RejectStore.stage_window_rejects, RejectStore.commit_window_rejects = staging, committing
from mp2amp.cli import main
sys.argv = ["mp2amp", "migrate", "-c", sys.argv[1], "--quiet"] + sys.argv[3:]
main()
"""


def _killed(cfg: Path, at: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(cfg), at, *args], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]


def _rows(ledger: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(ledger)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_kill9_mid_window_keeps_the_old_rejects_and_resume_replaces_them_once(
        tmp_path: Path) -> None:
    events = _day_file(tmp_path / "events")
    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", events, work, url)
        _killed(cfg, "committed")  # the first attempt's rejects are the window's
        assert _rows(ledger, "SELECT state FROM windows") != [("loaded",)]
        # mark them, and add one the new attempt will not find: old and new can be told
        db = sqlite3.connect(ledger)
        with db:
            db.execute("UPDATE rejects SET message = 'old' WHERE stage = 'transform'")
            db.execute("INSERT INTO rejects(source, line, window_id, stage, reason, message) "
                       "SELECT source, 999999, window_id, stage, reason, 'old' FROM rejects "
                       "LIMIT 1")
        db.close()
        _killed(cfg, "staging", "--resume")  # kill -9 with the new attempt's rejects staged
        old = _rows(ledger, "SELECT message, COUNT(*) FROM rejects GROUP BY message")
        assert old == [("old", N_BAD + 1)]  # all the old kept, none of the new yet
        assert _rows(ledger, "SELECT COUNT(*) FROM rejects_staged")[0][0] > 0
        seen = subprocess.run([sys.executable, "-m", "mp2amp", "status", "--workdir",
                               str(work), "--json"], env=ENV, capture_output=True, timeout=60)
        assert orjson.loads(seen.stdout)["totals"]["rejected"] == N_BAD + 1

        done = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                               "--resume", "--json"], env=ENV, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(stored_counts(url)) == N_GOOD
    result = orjson.loads(done.stdout)
    assert result["totals"]["rejected"] == N_BAD and result["totals"]["balanced"]
    dead = [orjson.loads(line) for line in (work / "dead-letters.jsonl").read_bytes()
            .splitlines()]
    assert len(dead) == N_BAD == len({(d["source"], d["line"]) for d in dead})
    assert all(d["message"] != "old" and d["reason"] == "non_json_value" for d in dead)
    assert _rows(ledger, "SELECT COUNT(*) FROM rejects_staged") == [(0,)]


def test_kill9_in_a_windows_first_attempt_then_resume_lists_each_reject_once(
        tmp_path: Path) -> None:
    events = _day_file(tmp_path / "events")
    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", events, work, url)
        _killed(cfg, "staging")  # rejects written straight in: those found so far listed
        so_far = _rows(ledger, "SELECT COUNT(*) FROM rejects WHERE stage = 'transform'")[0][0]
        assert 0 < so_far < N_BAD
        assert _rows(ledger, "SELECT COUNT(*) FROM rejects_staged") == [(0,)]
        done = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                               "--resume", "--json"], env=ENV, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(stored_counts(url)) == N_GOOD
    assert orjson.loads(done.stdout)["totals"]["rejected"] == N_BAD
    dead = [orjson.loads(line) for line in (work / "dead-letters.jsonl").read_bytes()
            .splitlines()]
    assert len(dead) == N_BAD == len({(d["source"], d["line"]) for d in dead})


def test_an_error_mid_chunk_in_the_import_files_sink_lists_the_rejects_found_before_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: a run stopped by an error "lists what it rejected so far": also the rejects
    of the chunk it stopped in, on a window's first attempt (S3-import sink)."""
    monkeypatch.setattr(transform_worker, "CHUNK_LINES", 8)
    write = S3ImportSink.write_encoded
    calls: list[int] = []

    def failing(self: S3ImportSink, data: bytes, time_ms: int) -> None:
        calls.append(1)
        if len(calls) == 5:  # good-40, right after bad-40, in the same chunk
            raise OSError("disk gone")
        write(self, data, time_ms)

    monkeypatch.setattr(S3ImportSink, "write_encoded", failing)
    events = _day_file(tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url, pytest.raises(OSError, match="disk gone"):
        migrate(make_config(events, work, url,
                            **{"amplitude.output_dir": str(tmp_path / "out")}))
    lines = events.read_bytes().splitlines()
    found = {n for n, raw in enumerate(lines, 1) if b"NaN" in raw
             and int(orjson.loads(raw.replace(b"NaN", b"0"))["properties"]["$insert_id"][4:])
             <= 40}
    dead = [orjson.loads(line) for line in (work / "dead-letters.jsonl").read_bytes()
            .splitlines()]
    assert len(found) == 41 and found <= {d["line"] for d in dead}
