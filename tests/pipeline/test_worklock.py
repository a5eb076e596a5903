"""One migrate per work folder; a killed run's lock and half-staged files do not linger."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from migrate_kit import FAST, Project, amplitude, assert_exactly_once, make_config

from mp2amp.errors import TerminalError
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.windows import staged_path
from mp2amp.pipeline.worklock import LOCK_NAME, WorkLock

HOLD = "from pathlib import Path; from mp2amp.pipeline.worklock import WorkLock; " \
       "import sys, time; WorkLock(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"


def test_second_lock_is_refused_until_released(tmp_path: Path) -> None:
    first = WorkLock(tmp_path)
    with pytest.raises(TerminalError, match=r"another `mp2amp migrate` \(pid \d+\) is running"):
        WorkLock(tmp_path)
    first.release()
    WorkLock(tmp_path).release()


def test_kill9_frees_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TerminalError, match=f"pid {holder.pid}"):
            WorkLock(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 5
    while True:  # the kernel drops the lock with the process
        try:
            WorkLock(tmp_path).release()
            break
        except TerminalError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_migrate_refuses_a_busy_work_folder(project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    lock = WorkLock(work)
    try:
        cfg = make_config(project.events, work, "http://127.0.0.1:9")
        with pytest.raises(TerminalError, match="is running in"):
            migrate(cfg, upload_overrides=FAST)
        assert not (work / "ledger.sqlite").exists()
    finally:
        lock.release()


def test_half_staged_leftovers_are_removed(project: Project, tmp_path: Path) -> None:
    staged = tmp_path / "work" / "staged"
    (staged / ".stage-dead1234").mkdir(parents=True)  # a window's sort runs (mkdtemp)
    (staged / ".stage-dead1234" / "run-00000").write_bytes(b"[1,2]\tpartial\n")
    first = str(sorted(project.events.iterdir())[0])  # a window of this run, half staged
    staged_path(tmp_path / "work", first).with_suffix(".jsonl.part").write_bytes(b"half")
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(project.events, tmp_path / "work", url),
                         upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
    left = sorted(p.name for p in staged.iterdir())
    assert not [n for n in left if n.startswith(".stage-") or n.endswith(".part")], left
    assert (tmp_path / "work" / LOCK_NAME).exists()
