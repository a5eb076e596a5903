"""Crash and resume at chosen instants, in combined situations (review, session 17).

Each test stops ``migrate`` at one instant (an exception raised from the ledger step that
instant is about, as a kill -9 there would leave the ledger, or a real signal to a real
``mp2amp migrate`` process), then resumes and checks what the README promises.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    Crash,
    Project,
    amplitude,
    assert_exactly_once,
    copy_events,
    crash_on_call,
    get_json,
    make_config,
)

from mp2amp.errors import InputError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate


def status_json(work: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "status", "--workdir", str(work),
                           "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(orjson.loads(proc.stdout))


def _cut_short(path: Path) -> None:
    """A gzip file cut before its end (a download cut short)."""
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])


# --- damaged_files = "stop" and a run killed after the damaged file was staged ----------------


def test_a_damaged_file_staged_by_a_killed_run_still_stops_the_resume(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first file is a .gz cut short; the run dies right after it is staged (while the
    next file is staged). README: with ``damaged_files = "stop"`` (the default) such a file
    "stops `migrate` before anything of it is sent". The resume must stop the same way."""
    events = copy_events(project, tmp_path / "events")
    _cut_short(sorted(events.iterdir())[0])
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, work, url)
        with monkeypatch.context() as m:
            crash_on_call(m, Ledger, "mark_extracted", 2)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=FAST)
        with pytest.raises(InputError, match="cut short"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        assert get_json(url + "/_emulator/stats")["events_stored"] == 0


# --- SIGTERM while the S3-import files are being cut ------------------------------------------


def test_sigterm_while_import_files_are_cut_keeps_the_lock_until_nothing_writes(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README (Stopping): the run lets go of the work folder's lock "only when nothing writes
    there". With ``[amplitude] output_dir``, the import files are cut by ``sink.close`` in a
    thread; a SIGTERM (``docker stop``) then cancels the await, the run releases the lock
    and the thread goes on writing ``mp2amp-a1-*`` files and the converter config, while a
    ``--resume`` (a restart policy) may already have taken the folder and removed attempt
    1's files. The lock must be held while the sink writes."""
    from mp2amp.load.s3sink import S3ImportSink
    from mp2amp.pipeline.stopping import Terminated
    from mp2amp.pipeline.worklock import running_pid

    work, out = tmp_path / "work", tmp_path / "out"
    cfg = make_config(project.events, work, "http://127.0.0.1:9", **{
        "amplitude.output_dir": str(out)})
    original = S3ImportSink.close
    seen: dict[str, Any] = {}

    def close(self: S3ImportSink, progress: Any = None) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # docker stop, as the files are being cut
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and running_pid(work) is not None:
            time.sleep(0.01)
        seen["lock_holder_while_writing"] = running_pid(work)
        return original(self, progress)

    monkeypatch.setattr(S3ImportSink, "close", close)
    with pytest.raises(Terminated):
        migrate(cfg)
    assert seen["lock_holder_while_writing"] is not None, (
        "the run let go of its work folder while its import files were still being written")


# --- kill -9 mid-load, `mp2amp status`, then two resumes in a row (a regression guard) --------


def test_status_after_kill9_then_two_resumes(project: Project, tmp_path: Path) -> None:
    """A real ``mp2amp migrate`` killed (SIGKILL) with batches in flight: ``status`` says no
    migrate runs there, the last run's end is not recorded, and its counts are the
    ledger's (what Amplitude holds is at least what it calls sent, at most that plus the
    batches in flight). Two resumes in a row: the first delivers the rest, the second sends
    nothing; each event once."""
    import sqlite3

    from migrate_kit import write_toml

    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    with amplitude(tmp_path / "amp", latency_ms=150) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url, concurrency=4)
        env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)
        args = [sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "--quiet", "--json"]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        done = 0
        while proc.poll() is None and time.monotonic() < deadline and done < 3:
            time.sleep(0.01)
            if ledger.exists():
                try:
                    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
                    try:
                        done = db.execute("SELECT COUNT(*) FROM batches WHERE state = 'done'"
                                          ).fetchone()[0]
                    finally:
                        db.close()
                except sqlite3.OperationalError:
                    done = 0
        assert proc.poll() is None, "the run ended before the kill"
        proc.kill()
        proc.communicate(timeout=30)
        st = status_json(work)
        assert st["running_pid"] is None and not st["complete"]
        assert st["last_attempt"]["outcome"] == "running" and st["last_attempt"]["ended"] is None
        stored = get_json(url + "/_emulator/stats")["events_stored"]
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
        try:
            in_flight = sum(n for (n,) in db.execute(
                "SELECT events FROM batches WHERE state = 'sent'"))
        finally:
            db.close()
        assert st["batches"]["done"] >= 3
        assert st["totals"]["sent"] <= stored <= st["totals"]["sent"] + in_flight
        first = subprocess.run([*args, "--resume"], env=env, capture_output=True, timeout=120)
        second = subprocess.run([*args, "--resume"], env=env, capture_output=True, timeout=120)
        for run in (first, second):
            assert run.returncode == 0, run.stderr.decode()[-2000:]
            assert orjson.loads(run.stdout)["totals"]["balanced"]
        assert orjson.loads(second.stdout)["load"]["batches"] == 0
        assert_exactly_once(url, project.expected)
    st = status_json(work)
    assert st["complete"] and st["last_attempt"]["outcome"] == "finished"


# --- around the fixes ---------------------------------------------------------------------


def test_a_kill_after_a_merge_was_recorded_leaves_no_replaced_staged_files(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the ledger points at a merged file, before the files it replaced are
    removed (and with a big merge's round left behind): the resume removes them, each
    event once; a file of another name in staged/ is left as it is."""
    from migrate_kit import assert_exactly_once, split_days

    events = split_days(project.events, tmp_path / "events", slice(0, 1))
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, work, url)
        with monkeypatch.context() as m:
            # the merge's transaction committed (ledger.restage runs inside it since
            # session 19, with the merged copy's checksum): killed as the first file it
            # replaced is to be removed
            crash_on_call(m, Path, "unlink", 1, when=lambda path, *a, **k: re.search(
                r"-[0-9a-f]{10}\.jsonl$", path.name) is not None)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=FAST)
        staged = work / "staged"
        ledger = Ledger(work / "ledger.sqlite")
        try:
            used = {Path(str(w.staged_path)).name for w in ledger.windows()}
        finally:
            ledger.close()
        replaced = {p.name for p in staged.iterdir()} - used
        assert len(replaced) == 2, replaced  # the two halves of the split day
        head = next(n for n in used if n.endswith(".merged.jsonl"))
        (staged / f"{head}.round0").write_bytes(b"x")
        (staged / "notes.txt").write_text("mine")
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == 0
        assert_exactly_once(url, project.expected)
        assert {p.name for p in staged.iterdir()} == used | {"notes.txt"}


def test_a_config_corrected_before_anything_was_staged_is_planned_again(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that staged and sent nothing (killed as its first window was to be recorded
    staged) resumes under a corrected config (the right input folder): its windows are
    the new config's, each event once."""
    from migrate_kit import assert_exactly_once

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    first = sorted(project.events.iterdir())[0]
    (wrong / first.name).write_bytes(first.read_bytes())
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        with monkeypatch.context() as m:
            crash_on_call(m, Ledger, "mark_extracted", 1)
            with pytest.raises(Crash):
                migrate(make_config(wrong, work, url), upload_overrides=FAST)
        result = migrate(make_config(project.events, work, url), resume=True,
                         upload_overrides=FAST)
        assert result.exit_code == 0
        assert_exactly_once(url, project.expected)
        ledger = Ledger(work / "ledger.sqlite")
        try:
            assert len(ledger.windows()) == len(list(project.events.iterdir()))
        finally:
            ledger.close()
        assert len(list((work / "staged").iterdir())) == len(list(project.events.iterdir()))


def test_a_config_changed_after_a_window_was_staged_is_still_refused(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a window is staged the run's settings are fixed: a changed session gap is
    refused on resume, as before."""
    from mp2amp.errors import TerminalError

    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        with monkeypatch.context() as m:
            crash_on_call(m, Ledger, "mark_extracted", 2)
            with pytest.raises(Crash):
                migrate(make_config(project.events, work, url), upload_overrides=FAST)
        changed = make_config(project.events, work, url,
                              **{"transform.session_gap_minutes": 5})
        with pytest.raises(TerminalError, match="differs from the one the run started"):
            migrate(changed, resume=True, upload_overrides=FAST)
        assert get_json(url + "/_emulator/stats")["events_stored"] == 0
