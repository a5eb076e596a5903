"""``mp2amp generate``'s move from ``OUT/.partial`` into ``OUT``, session 21: (a) a kill
after ``project.json``'s rename leaves a whole project beside the marker (and ``.partial``,
empty): the next run removes those two alone and refuses ``--out`` as it refuses any whole
project; (b) the move never replaces what something else put in ``--out`` meanwhile."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mp2amp.cli.generate as gen
from mp2amp.cli import app
from mp2amp.cli.generate import MOVING, PARTIAL
from shared_kit import file_tree, subprocess_env

ARGS = ["--users", "20", "--days", "2", "--seed", "3"]
# what generate prints for an --out holding a whole project (the same with or without a kill)
REFUSED = ("error: invalid configuration in mp2amp generate (1 problem(s)); fix them and run "
           "again:\n  - --out p exists and is not an empty directory; choose a new one\n")


def _generate(cwd: Path, *hook: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", "generate", "--out", "p", *ARGS],
                          cwd=cwd, env=subprocess_env(*hook), capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """The tree of a project generated with ``ARGS``, and what a second run says of it."""
    cwd = tmp_path_factory.mktemp("whole")
    proc = _generate(cwd)
    assert proc.returncode == 0, proc.stderr
    again = _generate(cwd)
    assert again.returncode == 2, again.stderr
    return file_tree(cwd / "p"), again.stderr


def _killed_after_last_rename(tmp_path: Path, partial: str = "empty") -> Path:
    """``p`` as a kill after ``project.json``'s rename leaves it: the whole project, the
    marker, and ``.partial`` empty, gone (a kill between its removal and the marker's),
    or holding a second name of ``project.json`` (a kill inside the link-then-unlink
    fallback of the move)."""
    proc = _generate(tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "p"
    (out / MOVING).touch()
    if partial != "gone":
        (out / PARTIAL).mkdir()
    if partial == "linked":
        os.link(out / "project.json", out / PARTIAL / "project.json")
    return out


@pytest.mark.parametrize("partial", ["empty", "gone", "linked"])
def test_a_kill_after_the_last_rename_is_refused_like_any_whole_project(
        tmp_path: Path, whole: tuple[dict[str, str], str], partial: str) -> None:
    out = _killed_after_last_rename(tmp_path, partial)
    proc = _generate(tmp_path)
    assert (proc.returncode, proc.stderr) == (2, REFUSED)
    assert proc.stderr == whole[1]  # as for a project never killed
    assert file_tree(out) == whole[0]  # the marker and .partial gone, the project kept
    again = _generate(tmp_path)  # nothing left to clear: the same answer
    assert (again.returncode, again.stderr, file_tree(out)) == (2, REFUSED, whole[0])


def _user_file(out: Path) -> None:
    (out / "notes.txt").write_text("mine", encoding="utf-8")


def _user_file_in_partial(out: Path) -> None:
    (out / PARTIAL / "notes.txt").write_text("mine", encoding="utf-8")


def _copy_of_project_json_in_partial(out: Path) -> None:
    shutil.copy(out / "project.json", out / PARTIAL / "project.json")


def _link_of_a_user_file_in_partial(out: Path) -> None:
    (out.parent / "mine.json").write_text("mine", encoding="utf-8")
    os.link(out.parent / "mine.json", out / PARTIAL / "schema.json")


def _marker_with_data(out: Path) -> None:
    (out / MOVING).write_text("mine", encoding="utf-8")


def _marker_is_a_symlink(out: Path) -> None:
    (out.parent / "mine").write_text("", encoding="utf-8")
    (out / MOVING).unlink()
    (out / MOVING).symlink_to(out.parent / "mine")


def _partial_is_a_symlink(out: Path) -> None:
    (out.parent / "empty").mkdir()
    (out / PARTIAL).rmdir()
    (out / PARTIAL).symlink_to(out.parent / "empty")


def _project_json_is_a_symlink(out: Path) -> None:
    shutil.move(out / "project.json", out.parent / "project.json")
    (out / "project.json").symlink_to(out.parent / "project.json")


@pytest.mark.parametrize("add", [
    _user_file, _user_file_in_partial, _copy_of_project_json_in_partial,
    _link_of_a_user_file_in_partial, _marker_with_data, _marker_is_a_symlink,
    _partial_is_a_symlink, _project_json_is_a_symlink,
], ids=lambda f: f.__name__.strip("_"))
def test_anything_else_beside_a_finished_move_keeps_everything(
        tmp_path: Path, add: object) -> None:
    out = _killed_after_last_rename(tmp_path)
    add(out)  # type: ignore[operator]
    before = file_tree(tmp_path)  # what lies beside p too (symlink targets)
    proc = _generate(tmp_path)
    assert (proc.returncode, proc.stderr) == (2, REFUSED)
    assert file_tree(tmp_path) == before


# a sitecustomize for the generate subprocess: once the move's marker is written (its
# folder sync is the next call), another writer puts NAME into --out
_PUT_IN_OUT = """
import os
_fsync = os.fsync
def fsync(fd):
    _fsync(fd)
    put = os.path.join("p", os.environ["PUT_IN_OUT"])
    if os.path.exists(os.path.join("p", ".partial-moving")) and not os.path.lexists(put):
        if os.environ["PUT_IN_OUT"] == "truth":
            os.mkdir(put)  # an empty folder: os.rename would replace it
        else:
            with open(put, "w") as f:
                f.write("mine")
os.fsync = fsync
"""


def _moved_over(name: str) -> str:
    return (f"error: cannot move p/{PARTIAL}/{name} into --out p (File exists: something "
            "else writes there); the project there is incomplete: choose a new --out\n")


@pytest.mark.parametrize("name", ["schema.json", "truth"], ids=["file", "empty-folder"])
def test_the_move_never_replaces_what_another_writer_put_in_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The old move (``Path.rename``) replaced the file, or the empty folder, and exited 0."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_PUT_IN_OUT, encoding="utf-8")
    monkeypatch.setenv("PUT_IN_OUT", name)
    proc = _generate(tmp_path, tmp_path / "hook")
    assert (proc.returncode, proc.stderr) == (2, _moved_over(name))
    out = tmp_path / "p"
    if name == "truth":
        assert list((out / "truth").iterdir()) == []
    else:
        assert (out / name).read_text(encoding="utf-8") == "mine"
    assert not (out / MOVING).exists() and not (out / PARTIAL).exists()
    assert "project.json" not in {p.name for p in out.iterdir()}  # incomplete, as said


def _no_renameat2(monkeypatch: pytest.MonkeyPatch, fallback: str) -> None:
    """Take away renameat2 (an older libc), and hard links too with ``no-link``."""
    monkeypatch.setattr(gen, "_renameat2", lambda: None)
    if fallback == "no-link":
        def link(*_: object, **__: object) -> None:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        monkeypatch.setattr(os, "link", link)


def _put_in_out(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    fsync = os.fsync

    def put(fd: int) -> None:
        fsync(fd)
        if (Path("p") / MOVING).exists() and not os.path.lexists(Path("p") / name):
            if name == "truth":
                (Path("p") / name).mkdir()
            else:
                (Path("p") / name).write_text("mine", encoding="utf-8")
    monkeypatch.setattr(os, "fsync", put)


@pytest.mark.parametrize("fallback", ["link", "no-link"])
@pytest.mark.parametrize("name", [None, "schema.json", "truth"],
                         ids=["nothing", "file", "empty-folder"])
def test_without_renameat2_the_move_still_never_replaces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole: tuple[dict[str, str], str],
        fallback: str, name: str | None) -> None:
    monkeypatch.chdir(tmp_path)
    _no_renameat2(monkeypatch, fallback)
    if name is not None:
        _put_in_out(monkeypatch, name)
    result = CliRunner().invoke(app, ["generate", "--out", "p", *ARGS])
    out = tmp_path / "p"
    if name is None:
        assert result.exit_code == 0, result.stderr
        assert file_tree(out) == whole[0]
        return
    assert (result.exit_code, result.stderr) == (2, _moved_over(name))
    if name == "truth":
        assert list((out / "truth").iterdir()) == []
    else:
        assert (out / name).read_text(encoding="utf-8") == "mine"
    assert not (out / MOVING).exists() and not (out / PARTIAL).exists()


# a sitecustomize for the generate subprocess: SIGKILL right after the move's Nth entry
# (session 20's hook wrapped os.rename, which the no-replace move no longer calls)
_KILL_AFTER_MOVE = """
import os, signal
import mp2amp.cli.generate as gen
_move = gen._rename_no_replace
_moved = []
def move(src, dst):
    _move(src, dst)
    _moved.append(src)
    if len(_moved) == int(os.environ["KILL_AFTER_MOVES"]):
        os.kill(os.getpid(), signal.SIGKILL)
gen._rename_no_replace = move
"""


@pytest.mark.parametrize("moves", [1, 5, 6])
def test_a_real_kill_during_the_move_is_cleared_by_the_next_run(
        tmp_path: Path, whole: tuple[dict[str, str], str], moves: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL in a real run after the first, fifth and last (``project.json``) of six
    moves: cut short, the next run generates the project; after the last, it is whole
    beside the marker and an empty ``.partial``, and the next run refuses it as whole."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_KILL_AFTER_MOVE, encoding="utf-8")
    monkeypatch.setenv("KILL_AFTER_MOVES", str(moves))
    proc = _generate(tmp_path, tmp_path / "hook")
    assert proc.returncode == -9, proc.stderr
    out = tmp_path / "p"
    left = {p.name for p in (out / PARTIAL).iterdir()}
    assert (out / MOVING).is_file() and ("project.json" in left) == (moves < 6)
    assert len(left) == 6 - moves
    proc = _generate(tmp_path)
    assert (proc.returncode, proc.stderr) == ((0, "") if moves < 6 else (2, REFUSED))
    assert file_tree(out) == whole[0]
