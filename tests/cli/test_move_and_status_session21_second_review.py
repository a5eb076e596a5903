"""Session 21, second review of two fixes: ``mp2amp generate``'s no-replace final move
(bcdc47f, 5702366) and ``mp2amp status``'s lock checks around its read (99c8db6).

Each defect is a strict xfail whose reason names it; the unmarked tests are guards the
review checked and found right. Everything runs through the real CLI (subprocesses, or
typer's CliRunner); the hooks are test-side sitecustomize files on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))  # migrate_kit

from migrate_kit import API_KEY, amplitude, small_events, write_toml

from mp2amp.cli import app
from mp2amp.cli.generate import MOVING, PARTIAL
from shared_kit import file_tree, subprocess_env

ARGS = ["--users", "20", "--days", "2", "--seed", "3"]
REFUSED = ("error: invalid configuration in mp2amp generate (1 problem(s)); fix them and run "
           "again:\n  - --out p exists and is not an empty directory; choose a new one\n")


def _mp2amp(cwd: Path, *args: str, hooks: tuple[Path, ...] = (), **extra: str
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", *args], cwd=cwd,
                          env=subprocess_env(*hooks, **extra), capture_output=True, text=True,
                          timeout=120)


def _hook(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cwd = tmp_path_factory.mktemp("whole")
    proc = _mp2amp(cwd, "generate", "--out", "p", *ARGS)
    assert proc.returncode == 0, proc.stderr
    return file_tree(cwd / "p")


# --- generate: guards ---------------------------------------------------------------------

# renameat2 taken away (an older libc): the move links then unlinks each file; SIGKILL
# right after the Nth link, before its unlink
_KILL_AFTER_LINK = """
import os, signal
import mp2amp.cli.generate as gen
gen._renameat2 = lambda: None
_link = os.link
_links = []
def link(*args, **kwargs):
    _link(*args, **kwargs)
    _links.append(args)
    if len(_links) == int(os.environ["KILL_AFTER_LINKS"]):
        os.kill(os.getpid(), signal.SIGKILL)
os.link = link
"""


@pytest.mark.parametrize("links", [1, 2], ids=["schema.json", "project.json"])
def test_a_kill_between_link_and_unlink_of_the_fallback_is_cleared_by_the_next_run(
        tmp_path: Path, whole: dict[str, str], links: int) -> None:
    """Guard: files are linked after the folders, project.json last; a kill -9 between
    the link and the unlink of schema.json (cut short: generated again) or of project.json
    (whole: refused as whole) leaves nothing of the generation behind after the next run."""
    hook = _hook(tmp_path / "hook", _KILL_AFTER_LINK)
    proc = _mp2amp(tmp_path, "generate", "--out", "p", *ARGS, hooks=(hook,),
                   KILL_AFTER_LINKS=str(links))
    assert proc.returncode == -9, proc.stderr
    out = tmp_path / "p"
    assert (out / MOVING).is_file() and (out / PARTIAL).is_dir()
    again = _mp2amp(tmp_path, "generate", "--out", "p", *ARGS)
    assert (again.returncode, again.stderr) == ((0, "") if links == 1 else (2, REFUSED))
    assert file_tree(out) == whole


def test_out_on_tmpfs_through_a_symlink_is_generated_and_then_refused_whole(
        tmp_path: Path, whole: dict[str, str]) -> None:
    """Guard: --out a symlink (kept) to a folder on tmpfs (/dev/shm)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    import tempfile

    with tempfile.TemporaryDirectory(dir=shm) as target:
        (tmp_path / "p").symlink_to(target)
        proc = _mp2amp(tmp_path, "generate", "--out", "p", *ARGS)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "p").is_symlink() and file_tree(Path(target)) == whole
        again = _mp2amp(tmp_path, "generate", "--out", "p", *ARGS)
        assert (again.returncode, again.stderr) == (2, REFUSED)
        assert file_tree(Path(target)) == whole


# --- generate: defects --------------------------------------------------------------------

def test_blank_out_is_not_told_to_leave_a_required_option_out(tmp_path: Path) -> None:
    proc = _mp2amp(tmp_path, "generate", "--out", "", *ARGS)
    assert proc.returncode == 2
    assert "--out: must be a path, got a blank value ''" in proc.stderr
    without = _mp2amp(tmp_path, "generate", *ARGS)  # what leaving it out does
    assert without.returncode == 2 and "Missing option '--out'" in without.stderr
    assert "leave the option out" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_dangling_symlink_out_is_named_as_given(tmp_path: Path) -> None:
    (tmp_path / "p").symlink_to(tmp_path / "unmounted")
    proc = _mp2amp(tmp_path, "generate", "--out", "p", *ARGS)
    assert proc.returncode == 2
    assert (tmp_path / "p").is_symlink() and not (tmp_path / "unmounted").exists()
    assert PARTIAL not in proc.stderr, proc.stderr
    assert "--out p " in proc.stderr and "File exists" not in proc.stderr, proc.stderr
    assert "is a symlink to a missing folder" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "p"]


def test_out_under_a_dangling_symlink_is_refused_with_the_other_problems(
        tmp_path: Path) -> None:
    """--out p/q, p a symlink to a missing folder: named as given, in generate's one
    report with its other problems."""
    (tmp_path / "p").symlink_to(tmp_path / "unmounted")
    proc = _mp2amp(tmp_path, "generate", "--out", "p/q", "--users", "0", "--days", "2")
    assert (proc.returncode, proc.stderr) == (2, (
        "error: invalid configuration in mp2amp generate (2 problem(s)); fix them and run "
        "again:\n  - --out p/q cannot be created: p is a symlink to a missing folder "
        f"({tmp_path / 'unmounted'}); mount it or choose another --out\n"
        "  - --users must be between 1 and 10,000,000, got 0\n"))
    assert list(tmp_path.iterdir()) == [tmp_path / "p"]


def test_a_blank_required_text_option_is_not_told_to_leave_it_out() -> None:
    """No text option is required today; one that becomes so gets no such advice."""
    from types import SimpleNamespace

    from mp2amp.cli import _blank_problem

    token = SimpleNamespace(opts=["--token"], required=True, default=None)
    assert _blank_problem(token, " ") == ("--token: must be the project token, got a blank "
                                          "value ' ' (an unset variable?); give one")


# --- status -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_events(tmp_path_factory.mktemp("events"))


def _migrate(cfg: Path, *args: str) -> object:
    return CliRunner().invoke(app, ["migrate", "--config", str(cfg), "--quiet", *args],
                              env={"AMPLITUDE_API_KEY": API_KEY})


# in the status subprocess only: its lock probe (running_pid's shared flock, or its
# F_OFD_GETLK test) lasts 3 s instead of microseconds, so that a migrate can start
# meanwhile, as one may at any poll of a monitoring loop
_SLOW_PROBE = """
import os
if os.environ.get("PROBING"):
    import fcntl, time
    def slow():
        open(os.environ["PROBING"], "w").close()
        time.sleep(3)
    _flock, _fcntl = fcntl.flock, fcntl.fcntl
    def flock(fd, op):
        _flock(fd, op)
        if op & fcntl.LOCK_SH:
            slow()
    def fcntl_(fd, cmd, arg=0):
        answer = _fcntl(fd, cmd, arg)
        if cmd == getattr(fcntl, "F_OFD_GETLK", None):
            slow()
        return answer
    fcntl.flock, fcntl.fcntl = flock, fcntl_
"""


def test_status_never_makes_a_starting_migrate_refuse(
        events: Path, tmp_path: Path) -> None:
    hook = _hook(tmp_path / "hook", _SLOW_PROBE)
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", events, tmp_path / "work", url)
        first = _migrate(cfg)
        assert first.exit_code == 0, first.stderr  # type: ignore[attr-defined]
        probing = tmp_path / "probing"
        status = subprocess.Popen(
            [sys.executable, "-m", "mp2amp", "status", "--config", str(cfg), "--json"],
            cwd=tmp_path, env=subprocess_env(hook, PROBING=str(probing)), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not probing.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert probing.exists()
            resumed = _migrate(cfg, "--resume")  # nothing else runs in the folder
        finally:
            out, err = status.communicate(timeout=60)
    assert (status.returncode, json.loads(out)["complete"]) == (0, True), err
    assert resumed.exit_code == 0, resumed.stderr  # type: ignore[attr-defined]


_KILL_BEFORE_PLAN = """
import os, signal
import mp2amp.pipeline.migrate as m
def plan_or_check(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
m.plan_or_check = plan_or_check
"""


def test_a_run_killed_before_planning_is_unbalanced_and_killed(
        events: Path, tmp_path: Path) -> None:
    """Guard: kill -9 after the run recorded its start, before it planned its windows:
    `status --json` (exit 0) says balanced false, no lock held, the run not ended."""
    hook = _hook(tmp_path / "hook", _KILL_BEFORE_PLAN)
    cfg = write_toml(tmp_path / "mp2amp.toml", events, tmp_path / "work", "http://127.0.0.1:9")
    killed = _mp2amp(tmp_path, "migrate", "--config", str(cfg), "--quiet", hooks=(hook,),
                     AMPLITUDE_API_KEY=API_KEY)
    assert killed.returncode == -9, killed.stderr
    proc = _mp2amp(tmp_path, "status", "--config", str(cfg), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["complete"], doc["totals"]["balanced"], doc["totals"]["windows"],
            doc["running_pid"], doc["last_attempt"]["outcome"]) == (
        False, False, 0, None, "running")


@pytest.mark.parametrize("ofd", [True, False], ids=["ofd", "flock-fallback"])
def test_running_pid_sees_a_held_lock_and_its_release(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ofd: bool) -> None:
    """Guard: with OFD locks (Linux) or without them (the shared-flock probe)."""
    from mp2amp.pipeline import worklock

    if not ofd:
        monkeypatch.setattr(worklock, "_OFD_GETLK", None)
        monkeypatch.setattr(worklock, "_OFD_SETLK", None)
    assert worklock.running_pid(tmp_path) is None
    lock = worklock.WorkLock(tmp_path)
    try:
        assert worklock.running_pid(tmp_path) == os.getpid()
    finally:
        lock.release()
    assert worklock.running_pid(tmp_path) is None
    worklock.WorkLock(tmp_path).release()  # the probes left nothing held
