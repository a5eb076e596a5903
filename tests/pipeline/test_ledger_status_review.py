"""Review of the ledger, the end-of-run accounting, ``mp2amp status`` and the progress
display: what a data engineer sees of a migration that finished, crashed (kill -9), is
still running, waits for Amplitude's daily quota, sits on a read-only disk or has a
damaged ledger; and what the progress display says on a terminal and in log lines.

Each defect is a strict xfail whose reason names what is wrong and where."""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    Clock,
    Project,
    amplitude,
    crash_at_batch,
    make_config,
    mp2amp,
    stored_counts,
    write_toml,
)

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline import windows as windows_module
from mp2amp.pipeline.migrate import EXIT_OK, EXIT_PARKED, migrate
from mp2amp.pipeline.progress import Counters
from mp2amp.pipeline.status import status

ENV = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return mp2amp(*args, cwd=cwd, env=ENV, check=False)


def finished_run(project: Project, work: Path, amp: Path) -> None:
    with amplitude(amp) as url:
        assert migrate(make_config(project.events, work, url)).exit_code == EXIT_OK


# --- status on a finished migration's folder that cannot be written -----------------------


def _mount_tmpfs(where: Path) -> bool:
    where.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )


def test_status_reads_a_finished_ledger_on_a_read_only_mount(
    project: Project, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs needs root")
    try:
        work = disk / "work"
        finished_run(project, work, tmp_path / "amp")
        assert not (work / "ledger.sqlite-wal").exists()  # a clean end checkpoints the WAL
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        proc = cli("status", "--workdir", str(work), "--json")
        assert "move it away to start a new run" not in proc.stderr
        assert proc.returncode == 0, proc.stderr
        got = orjson.loads(proc.stdout)
        assert got["complete"] is True
        assert got["totals"]["sent"] == len(project.expected)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --- a damaged ledger: a message, never a traceback ---------------------------------------


def _damage_table(ledger: Path, table: str) -> None:
    """Overwrite the root page of ``table`` (page 1, the schema, stays intact: the file
    opens, and the damage shows only when that table is read)."""
    db = sqlite3.connect(ledger)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[
            0
        ]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    with open(ledger, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\x07" * size)


@pytest.mark.parametrize("command", ["status", "resume"])
def test_a_damaged_ledger_is_named_without_a_traceback(
    project: Project, tmp_path: Path, command: str
) -> None:
    work = tmp_path / "work"
    finished_run(project, work, tmp_path / "amp")
    _damage_table(work / "ledger.sqlite", "rejects")
    if command == "status":
        proc = cli("status", "--workdir", str(work))
    else:
        with amplitude(tmp_path / "amp") as url:
            cfg = write_toml(
                tmp_path / "mp2amp.toml",
                project.events,
                work,
                url,
                concurrency=make_config(project.events, work, url).run.concurrency,
            )
            proc = cli("migrate", "-c", str(cfg), "--resume", "--quiet")
    assert "Traceback" not in proc.stderr, proc.stderr[-600:]
    assert proc.returncode == 2
    assert "ledger" in proc.stderr and "damaged" in proc.stderr


# --- a migration that waits for the daily quota is not "complete" -------------------------


def test_status_is_not_complete_while_events_wait_for_the_daily_quota(
    project: Project, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    upload = {**FAST, "park_delay": 0.05, "park_retries": 2, "concurrency": 4}
    with amplitude(tmp_path / "amp", daily_quota=40, now=Clock()) as url:
        result = migrate(make_config(project.events, work, url), upload_overrides=upload)
    assert result.exit_code == EXIT_PARKED and result.totals["parked"] > 0
    got = orjson.loads(cli("status", "--workdir", str(work), "--json").stdout)
    assert got["totals"]["parked"] == result.totals["parked"]
    assert got["complete"] is False
    text = cli("status", "--workdir", str(work)).stdout
    assert "mp2amp complete" not in text


# --- status reads one state of the ledger, not pieces of several ---------------------------


def test_status_reads_one_snapshot_while_a_migration_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.sqlite"
    writer = Ledger(path)  # stands for the running migration (its own connection)
    writer.add_windows([("day.jsonl", "file", {"path": "day.jsonl"})])
    writer.mark_extracted("day.jsonl", str(tmp_path / "staged"), 3)
    writer.mark_identity(["day.jsonl"], {})
    writer.batch_sent("w0/0", "day.jsonl", 0, 3)
    writer.set_window_counts("day.jsonl", {"records_read": 3, "events_out": 3, "batches": 1})

    windows = Ledger.windows
    commits = threading.Event()

    def windows_after_the_last_batch(self: Ledger) -> Any:
        if not commits.is_set():  # the migration's last two commits land right here
            commits.set()
            writer.batch_done("w0/0", accepted=3, dead_lettered=0, parked=0)
            writer.mark_loaded("day.jsonl", {"records_read": 3, "events_out": 3, "batches": 1})
        return windows(self)

    monkeypatch.setattr(Ledger, "windows", windows_after_the_last_batch)
    try:
        got = status(tmp_path).as_dict()
    finally:
        writer.close()
    assert commits.is_set()
    # either before the commits (in progress, nothing sent) or after (complete, 3 sent)
    assert (got["complete"], got["totals"]["sent"]) in {(False, 0), (True, 3)}, got
    assert got["problems"] == []


# --- batches done/total of a window whose batch count is not known yet -------------------


def test_status_windows_never_shows_more_batches_done_than_in_all(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")  # a run stopped in the middle of a window
    ledger.add_windows([("day.jsonl", "file", {"path": "day.jsonl"})])
    ledger.mark_extracted("day.jsonl", str(tmp_path / "staged"), 5000)
    ledger.mark_identity(["day.jsonl"], {})
    for seq in range(2):
        ledger.batch_sent(f"w0/{seq}", "day.jsonl", seq, 2000)
        ledger.batch_done(f"w0/{seq}", accepted=2000, dead_lettered=0, parked=0)
    ledger.batch_sent("w0/2", "day.jsonl", 2, 1000)
    ledger.close()
    text = cli("status", "--workdir", str(tmp_path), "--windows")
    assert text.returncode == 0, text.stderr
    row = next(line for line in text.stdout.splitlines() if "day.jsonl" in line)
    assert "2/0" not in row, row
    got = orjson.loads(cli("status", "--workdir", str(tmp_path), "--json").stdout)
    window = got["windows"][0]
    assert window["batches_done"] == 2
    assert window["batches"] is None or window["batches"] >= window["batches_done"], window


# --- after kill -9 status does not name an older run as the last one ----------------------

_KILLED_RESUME = """
import os, signal, sys
from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
done = Ledger.batch_done
calls = []
def batch_done(self, batch_id, **counts):
    calls.append(batch_id)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the load
    return done(self, batch_id, **counts)
Ledger.batch_done = batch_done
from mp2amp.cli import main
sys.argv = ["mp2amp", "migrate", "-c", sys.argv[1], "--resume", "--quiet"]
main()
"""


def test_status_after_a_killed_resume_names_that_run(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=20) as url:
        config = make_config(project.events, work, url, **{"run.concurrency": 1})
        crash_at_batch(monkeypatch, 1)
        with pytest.raises(Exception, match="stopped here"):
            migrate(config)
        monkeypatch.undo()
        first = status(work).last_attempt
        assert first is not None and first["outcome"] == "crashed"

        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url, concurrency=1)
        killed_at = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", _KILLED_RESUME, str(cfg)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -9, proc.stderr[-1000:]
    seen = status(work)
    assert seen.running_pid is None
    assert seen.batches["done"] > 0  # the killed run got somewhere
    last = seen.last_attempt
    assert last is not None
    assert last["started"] >= killed_at, (
        f"status names the run of {first['started']} ({first['outcome']}: "
        f"{first.get('message')}) as the last one"
    )


# --- the terminal display never leaves the cursor hidden ----------------------------------


def _on_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``mp2amp ARGS`` with a pseudo-terminal as stdin, stdout and stderr."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, never back into pytest
        try:
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "mp2amp", *args], env)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(fd)
    _, status_ = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status_), out


HIDE, SHOW = b"\x1b[?25l", b"\x1b[?25h"


@pytest.mark.parametrize("case", ["no_api_key", "used_workdir"])
def test_a_refused_migrate_on_a_terminal_shows_the_cursor_again(
    project: Project, tmp_path: Path, case: str
) -> None:
    work = tmp_path / "work"
    env = dict(ENV, TERM="xterm-256color", COLUMNS="100")
    if case == "no_api_key":
        env.pop("AMPLITUDE_API_KEY")
    else:
        finished_run(project, work, tmp_path / "amp")
    write_toml(tmp_path / "mp2amp.toml", project.events, work, "http://127.0.0.1:9")
    code, out = _on_a_terminal(["migrate"], tmp_path, env)
    assert code == 2, out[-500:]
    assert b"error:" in out
    if HIDE in out:
        assert SHOW in out[out.rindex(HIDE) :], f"the cursor stays hidden: {out[-300:]!r}"


# --- ETA on a resume ---------------------------------------------------------------------


class Recorder:
    """A reporter that keeps what each update showed."""

    tick = 0.0

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int, float | None]] = []

    def update(self, counters: Counters) -> None:
        self.seen.append((counters.phase, counters.done, counters.total, counters.eta()))

    def close(self, counters: Counters) -> None:
        return None


def test_the_eta_of_a_resume_counts_only_this_runs_progress(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    finished_run(project, work, tmp_path / "amp")
    staged = sorted((work / "staged").iterdir())
    assert len(staged) == 3
    for path in staged[1:]:  # deleted to free space: staged again on --resume
        path.unlink()
    stage = windows_module.stage

    def slow_stage(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.6)
        return stage(*args, **kwargs)

    monkeypatch.setattr(windows_module, "stage", slow_stage)
    recorder = Recorder()
    with amplitude(tmp_path / "amp2") as url:
        result = migrate(make_config(project.events, work, url), resume=True, reporter=recorder)
    assert result.exit_code == EXIT_OK
    extract = [s for s in recorder.seen if s[0] == "extract"]
    _phase, done, total, eta = extract[0]
    assert (done, total) == (1, 3)  # the window this run did not have to stage
    # 2 windows of 0.6 s are ahead: an ETA under 0.3 s is not an estimate
    assert eta is None or eta >= 0.3, f"ETA {eta:.4f} s before this run staged anything"


# --- passing edge cases -------------------------------------------------------------------


def test_status_while_a_migration_runs_reads_growing_counts_and_the_pid(
    project: Project, tmp_path: Path
) -> None:
    """Polled while a migration runs in another process (WAL: readers never block the
    writer): every status reads, with the run's pid, counts only grow, `mp2amp status`
    works mid-load, and the last one agrees with the run's own result."""
    work = tmp_path / "work"
    # 700 ms a request: the load lasts long enough for a cold `mp2amp status` started at
    # the first batch in flight to read it on a loaded machine (400 ms once was not)
    with amplitude(tmp_path / "amp", latency_ms=700) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url, concurrency=1)
        run = subprocess.Popen(
            [sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "--quiet", "--json"],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seen: list[dict[str, Any]] = []
        mid_load_cli: subprocess.CompletedProcess[str] | None = None
        errors: list[str] = []
        try:
            deadline = time.monotonic() + 90
            while run.poll() is None and time.monotonic() < deadline:
                try:
                    got = status(work).as_dict()
                except TerminalError as exc:  # before the run created its ledger
                    errors.append(str(exc))
                else:
                    seen.append(got)
                    if mid_load_cli is None and got["batches"]["in_flight"]:
                        mid_load_cli = cli("status", "--workdir", str(work), "--json")
                time.sleep(0.02)
            out, err = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert run.returncode == EXIT_OK, err.decode()[-1000:]
    final = orjson.loads(out)
    assert all(e.startswith("no migration in") for e in errors), set(errors)
    assert mid_load_cli is not None, "no status saw a batch in flight"
    assert mid_load_cli.returncode == 0, mid_load_cli.stderr
    assert orjson.loads(mid_load_cli.stdout)["running_pid"] == run.pid
    running = [s for s in seen if s["running_pid"] is not None]
    assert running and all(s["running_pid"] == run.pid for s in running)
    sent = [s["totals"]["sent"] for s in seen]
    done = [s["batches"]["done"] for s in seen]
    assert sent == sorted(sent) and done == sorted(done)
    assert any(0 < n < final["totals"]["sent"] for n in sent), "no status saw the run mid-load"
    assert all(not s["problems"] for s in seen)
    after = status(work).as_dict()
    assert after["running_pid"] is None and after["complete"] is True
    assert after["totals"] == final["totals"]
    assert after["last_attempt"]["outcome"] == "finished"


def test_resumes_after_crashes_count_each_event_once_in_ledger_and_dead_letters(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two crashes right after a 200 (the batch is not recorded done), each followed by a
    resume: the batches sent again are not counted twice, the per-window check adds up,
    status agrees with the run, and each rejected record is in dead-letters.jsonl once."""
    work = tmp_path / "work"
    upload = {**FAST, "max_events": 100, "min_id_length": None}  # short ids: dead letters
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        for n in (2, 3):
            crash_at_batch(monkeypatch, n)
            with pytest.raises(Exception, match="stopped here"):
                migrate(cfg, resume=(work / "ledger.sqlite").exists(), upload_overrides=upload)
            monkeypatch.undo()
        result = migrate(cfg, resume=True, upload_overrides=upload)
        stored = stored_counts(url)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    t = result.totals
    assert t["balanced"] and t["dead_lettered"] > 0
    assert set(stored.values()) == {1}
    assert t["sent"] == len(stored)  # accepted once each, though some batches went twice
    assert t["read"] == (
        t["sent"]
        + t["identity"]
        + t["duplicate"]
        + t["skipped"]
        + t["rejected"]
        + t["dead_lettered"]
        + t["parked"]
    )
    assert status(work).totals == t
    rows = [orjson.loads(line) for line in (work / "dead-letters.jsonl").read_bytes().splitlines()]
    keys = [(r["source"], r["line"]) for r in rows]
    assert len(keys) == len(set(keys)) == t["rejected"] + t["dead_lettered"]
    assert all(isinstance(r["line"], int) and r["line"] >= 1 and r["source"] for r in rows)


def test_status_of_a_folder_without_a_migration_is_a_message(tmp_path: Path) -> None:
    """A run never started: exit 2 with the README's message, nothing created."""
    for args in (
        ("status", "--workdir", str(tmp_path / "none")),
        ("status", "--workdir", str(tmp_path / "none"), "--json"),
    ):
        proc = cli(*args)
        assert proc.returncode == 2
        if "--json" in args:  # one JSON object on stdout: the error
            doc = orjson.loads(proc.stdout)
            assert doc["exit_code"] == 2
            assert (doc["error"]["kind"], doc["error"]["type"]) == ("terminal", "TerminalError")
            assert doc["error"]["message"].startswith("no migration in")
        else:
            assert proc.stdout == ""
        assert "no migration in" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "none").exists()


def test_status_of_a_ledger_from_a_newer_mp2amp_is_refused_untouched(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("a", "file", {})])
    ledger.set_meta("schema_version", "2")
    ledger.close()
    before = (tmp_path / "ledger.sqlite").read_bytes()
    proc = cli("status", "--workdir", str(tmp_path), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    doc = orjson.loads(proc.stdout)  # one JSON object on stdout: the error
    assert doc["exit_code"] == 2
    assert (doc["error"]["kind"], doc["error"]["type"]) == ("terminal", "TerminalError")
    assert "schema version 2" in proc.stderr
    assert (tmp_path / "ledger.sqlite").read_bytes() == before


def test_counters_eta_and_rate_never_divide_by_zero_or_go_negative() -> None:
    c = Counters()
    assert c.eta() is None and c.rate() >= 0.0
    c.begin("load", 0)
    assert c.eta() is None and c.rate() >= 0.0
    c.begin("load", 10)
    c.done = 12  # more done than planned (never shown past the total)
    assert c.eta() == 0.0
    c.begin("load", 10)
    c.sent = -0  # nothing accepted yet
    assert c.rate() == 0.0
