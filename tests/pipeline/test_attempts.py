"""``mp2amp status`` says how the last ``migrate`` on the work folder ended (the message of
a run under cron or systemd went to a log the next person may not have)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from migrate_kit import API_KEY, Crash, Project, amplitude, crash_at_batch, make_config

from mp2amp.errors import TerminalError
from mp2amp.pipeline.migrate import migrate
from mp2amp.pipeline.status import status


def _status_line(work: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "mp2amp", "status", "--workdir", str(work)],
                         env=dict(os.environ, AMPLITUDE_API_KEY=API_KEY), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


@pytest.mark.parametrize(("error", "outcome", "code", "message"), [
    (Crash("stopped here"), "crashed", 1, "Crash: stopped here"),
    (KeyboardInterrupt(), "stopped", 130, "stopped by Ctrl-C; resume with --resume"),
    (sqlite3.OperationalError("database or disk is full"), "stopped", 2,
     "the disk is full (writing in the work folder WORK); nothing done so far is lost"),
], ids=["crash", "interrupt", "disk-full"])
def test_a_stopped_run_is_recorded_then_the_resume_that_finishes_it(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        error: BaseException, outcome: str, code: int | None, message: str) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        crash_at_batch(monkeypatch, 2, error)
        with pytest.raises((type(error), TerminalError)):
            migrate(config)
        monkeypatch.undo()
        last = status(work).last_attempt
        assert last is not None
        assert (last["outcome"], last["exit_code"]) == (outcome, code)
        assert last["message"].startswith(message.replace("WORK", str(work)))
        assert last["started"] <= last["ended"]
        exit_part = f" \\(exit {code}\\)" if code is not None else ""
        assert re.fullmatch(f"last run: {STAMP} to {STAMP}, {outcome}{exit_part}: .+",
                            _status_line(work))
        assert migrate(config, resume=True).exit_code == 0
    assert status(work).as_dict()["last_attempt"]["outcome"] == "finished"
    assert re.fullmatch(f"last run: {STAMP} to {STAMP}, finished \\(exit 0\\)",
                        _status_line(work))


def test_a_refused_resume_is_the_last_attempt(project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, work, url)).exit_code == 0
        with pytest.raises(TerminalError):
            migrate(make_config(project.events, work, url, **{"privacy.ip": "drop"}),
                    resume=True)
    last = status(work).last_attempt
    assert last is not None and (last["outcome"], last["exit_code"]) == ("stopped", 2)
    assert "differs from the one the run started with" in last["message"]
