"""``mp2amp generate`` killed outright (kill -9, power loss) while it moves the project from
``OUT/.partial`` into ``OUT``: the next run with the same arguments clears the half-moved
project and generates it again; a folder holding anything else is refused, nothing deleted."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mp2amp.cli.generate import MOVING, PARTIAL, _move_entries
from mp2amp.errors import InputError
from shared_kit import file_tree, subprocess_env

ARGS = ["--users", "20", "--days", "2", "--seed", "3"]
# the top-level entries of a generated project (project.json moved last)
ENTRIES = ["events", "identity", "profiles", "schema.json", "truth", "project.json"]
REFUSED = "--out p exists and is not an empty directory; choose a new one"


def _generate(cwd: Path, out: str = "p", *hook: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", "generate", "--out", out, *ARGS],
                          cwd=cwd, env=subprocess_env(*hook), capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tree of a project generated with ``ARGS`` and never stopped."""
    cwd = tmp_path_factory.mktemp("whole")
    proc = _generate(cwd)
    assert proc.returncode == 0, proc.stderr
    return file_tree(cwd / "p")


def _half_moved(tmp_path: Path, still_partial: list[str], marker: bool = True) -> Path:
    """``p`` as a kill during the move leaves it: ``still_partial`` not yet moved out of
    ``.partial``, the rest in ``p`` (with the marker written before the first rename)."""
    proc = _generate(tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "p"
    (out / PARTIAL).mkdir()
    for name in still_partial:
        (out / name).rename(out / PARTIAL / name)
    if marker:
        (out / MOVING).touch()
    return out


@pytest.mark.parametrize("still_partial", [
    ENTRIES,  # killed right after the marker was written
    ["schema.json", "truth", "project.json"],
    ["project.json"],  # killed before the last rename
], ids=["nothing-moved", "half-moved", "all-but-project-json"])
def test_a_move_cut_short_is_cleared_and_generated_again(
        tmp_path: Path, whole: dict[str, str], still_partial: list[str]) -> None:
    out = _half_moved(tmp_path, still_partial)
    proc = _generate(tmp_path)
    assert proc.returncode == 0, proc.stderr  # was 2: "--out p exists and is not empty"
    assert file_tree(out) == whole  # no .partial, no marker, the project whole


# The real-kill test of the move is in test_generate_move_session21.py (it kills at each
# no-replace move, project.json's included).


def _user_file(out: Path) -> None:
    (out / "notes.txt").write_text("mine", encoding="utf-8")


def _user_file_in_a_moved_folder(out: Path) -> None:
    (out / "events" / "notes.txt").write_text("mine", encoding="utf-8")


def _user_file_in_partial(out: Path) -> None:
    (out / PARTIAL / "truth" / "notes.txt").write_text("mine", encoding="utf-8")


def _symlink_named_as_a_day_file(out: Path) -> None:
    (out.parent / "mine.jsonl.gz").write_text("mine", encoding="utf-8")
    (out / "events" / "2024-01-09.jsonl.gz").symlink_to(out.parent / "mine.jsonl.gz")


def _moved_folder_is_a_symlink(out: Path) -> None:
    shutil.move(out / "identity", out.parent / "identity")
    (out / "identity").symlink_to(out.parent / "identity")


def _marker_with_data(out: Path) -> None:
    (out / MOVING).write_text("mine", encoding="utf-8")


@pytest.mark.parametrize("add", [
    _user_file, _user_file_in_a_moved_folder, _user_file_in_partial,
    _symlink_named_as_a_day_file, _moved_folder_is_a_symlink, _marker_with_data,
], ids=lambda f: f.__name__.strip("_"))
def test_anything_else_beside_a_move_cut_short_is_refused_and_nothing_deleted(
        tmp_path: Path, add: object) -> None:
    out = _half_moved(tmp_path, ["schema.json", "truth", "project.json"])
    add(out)  # type: ignore[operator]
    before = file_tree(tmp_path)  # the user's files beside p too (symlink targets)
    proc = _generate(tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert REFUSED in proc.stderr
    assert "Traceback" not in proc.stderr
    assert file_tree(tmp_path) == before


def test_a_whole_project_is_refused_even_with_the_marker(tmp_path: Path) -> None:
    """``project.json`` in ``p`` marks a whole project: kept, even beside a marker and a
    ``.partial`` holding only generated files (a kill after the last rename)."""
    out = _half_moved(tmp_path, [])
    shutil.copytree(out / "truth", out / PARTIAL / "truth")
    before = file_tree(out)
    proc = _generate(tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert REFUSED in proc.stderr
    assert file_tree(out) == before


def test_generated_names_without_the_marker_are_refused(tmp_path: Path) -> None:
    """Without the marker (only a move writes it) a folder that merely looks half moved is
    a user's: refused, nothing deleted."""
    out = _half_moved(tmp_path, ["schema.json", "truth", "project.json"], marker=False)
    before = file_tree(out)
    proc = _generate(tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert REFUSED in proc.stderr
    assert file_tree(out) == before


def test_a_move_refused_by_an_entry_put_in_out_removes_its_marker(tmp_path: Path) -> None:
    """A rename that fails (a user's folder in the way) is an error, and the marker goes:
    what is in ``--out`` then is not ours alone, so a later run must refuse it."""
    partial, out = tmp_path / "out" / PARTIAL, tmp_path / "out"
    (partial / "truth").mkdir(parents=True)
    (partial / "truth" / "summary.json").write_text("{}", encoding="utf-8")
    (out / "truth").mkdir()
    (out / "truth" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InputError, match="the project there is incomplete"):
        _move_entries(partial, out)
    assert not (out / MOVING).exists()
    assert (out / "truth" / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_finished_move_leaves_no_marker(tmp_path: Path, whole: dict[str, str]) -> None:
    proc = _generate(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert MOVING not in whole
    assert file_tree(tmp_path / "p") == whole
