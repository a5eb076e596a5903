"""The fixes of the session 19 review (test_workfolder_session19_review.py), each pinned
at the unit or CLI level: inputs that are a work folder's own refused by name, the
leftovers' removal judged by the run's windows, only the scratch folder the ledger names
removed, a user's dead-letters.jsonl refused by a new run, a copy edited in place stopped
before the load, and FILE.changed never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    TIMEZONE,
    Project,
    amplitude,
    arrival_order,
    assert_exactly_once,
    copy_events,
    make_config,
    mp2amp,
)

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger, WindowRow
from mp2amp.pipeline.changed_copy import check_copy_text, move_aside
from mp2amp.pipeline.migrate import migrate
from mp2amp.pipeline.scratch import SCRATCH_META, scratch_folder
from mp2amp.pipeline.staged_names import remove_leftovers, staged_path

ENV = {**os.environ, "AMPLITUDE_API_KEY": API_KEY}


def test_inputs_that_are_all_a_work_folders_own_are_refused_by_name(
        project: Project, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    copy_events(project, proj / "export")  # the work folder's own export/ folder
    with amplitude(tmp_path / "amp") as url:
        (proj / "mp2amp.toml").write_text(
            f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["export"]\n'
            f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "."\n')
        run = mp2amp("migrate", cwd=proj, env=ENV, check=False)
        assert run.returncode == 2, run.stderr
        inputs = sorted((proj / "export").iterdir())
        assert run.stderr == (
            f"error: every file the inputs list ({proj / 'export'}: {len(inputs)} file(s), "
            f"such as {inputs[0]}) is a work folder's own (its staged/, "
            "scratch/ or export/ folder, its ledger or dead letters), which are never read "
            "as events; nothing was read or sent: set [source] files to the exported "
            "events, or [run] workdir to another folder\n")
        assert not list(arrival_order(tmp_path / "amp"))
    assert not (proj / "ledger.sqlite").exists()


def _row(window_id: str, staged: Path | None) -> WindowRow:
    return WindowRow(window_id=window_id, kind="file", seq=1, state="extracted",
                     staged_path=None if staged is None else str(staged), records=1,
                     spec={}, counts={})


def test_leftovers_removed_are_the_run_windows_own_only(tmp_path: Path) -> None:
    work = tmp_path / "work"
    copy = staged_path(work, "/data/a.jsonl")
    staged = copy.parent
    staged.mkdir(parents=True)
    copy.write_text("kept: the window's copy\n")
    ours = [copy.with_name(copy.name + ".part"), copy.with_name(copy.stem + ".merged.jsonl"),
            copy.with_name(copy.name + ".round0")]
    for path in ours:
        path.write_text("a killed run's\n")
    runs = staged / ".stage-ab12cd_9"
    runs.mkdir()
    (runs / "run-00000").write_text("sorted\n")
    mine = {"dump.json.part": "mine", "events-2024010100.jsonl": "mine",
            "other-0123456789.jsonl.part": "another run's window"}
    for name, text in mine.items():
        (staged / name).write_text(text)
    (staged / ".stage-backup").mkdir()
    (staged / ".stage-backup" / "keep.txt").write_text("mine")
    (staged / ".stage-zz99yy88").mkdir()  # mkdtemp's shape, but not runs in it
    (staged / ".stage-zz99yy88" / "notes.txt").write_text("mine")
    remove_leftovers(staged, [_row("/data/a.jsonl", copy)])
    assert sorted(p.name for p in staged.iterdir()) == sorted(
        [copy.name, ".stage-backup", ".stage-zz99yy88", *mine])
    assert (staged / ".stage-zz99yy88" / "notes.txt").read_text() == "mine"


def test_only_the_scratch_folder_the_ledger_names_is_removed(tmp_path: Path) -> None:
    work = tmp_path / "work"
    scratch = work / "scratch"
    for name in ("run-abcd1234", "run-zzzz9999", "run-2023-benchmarks"):
        (scratch / name).mkdir(parents=True)
        (scratch / name / "f").write_text("x")
    ledger = Ledger(work / "ledger.sqlite")
    try:
        ledger.set_meta(SCRATCH_META, "run-abcd1234")  # a killed run's
        with scratch_folder(work, ledger) as made:
            assert ledger.get_meta(SCRATCH_META) == Path(made).name
            assert sorted(p.name for p in scratch.iterdir()) == sorted(
                ["run-zzzz9999", "run-2023-benchmarks", Path(made).name])
        ledger.set_meta(SCRATCH_META, "../../elsewhere")  # never a path out of scratch/
        with scratch_folder(work, ledger):
            pass
    finally:
        ledger.close()
    assert sorted(p.name for p in scratch.iterdir()) == ["run-2023-benchmarks",
                                                         "run-zzzz9999"]


def test_a_new_run_refuses_a_dead_letters_file_in_the_work_folder_by_name(
        project: Project, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dead-letters.jsonl").write_text("mine\n")
    with amplitude(tmp_path / "amp") as url:
        toml = tmp_path / "mp2amp.toml"
        toml.write_text(
            f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{project.events}"]\n'
            f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{home}"\n')
        run = mp2amp("migrate", "-c", str(toml), env=ENV, check=False)
        assert run.returncode == 2, run.stderr
        assert f"{home / 'dead-letters.jsonl'} exists" in run.stderr
        assert "move that file elsewhere" in run.stderr
        assert not list(arrival_order(tmp_path / "amp"))
    assert (home / "dead-letters.jsonl").read_text() == "mine\n"
    assert not (home / "ledger.sqlite").exists()


def test_a_copy_changed_again_is_moved_aside_under_a_free_name(tmp_path: Path) -> None:
    copy = tmp_path / "w-0123456789.jsonl"
    names = []
    for text in ("first", "second", "third"):
        copy.write_text(text)
        names.append(move_aside(copy).name)
    assert names == [f"{copy.name}.changed", f"{copy.name}.changed.2",
                     f"{copy.name}.changed.3"]
    assert [(tmp_path / n).read_text() for n in names] == ["first", "second", "third"]


def test_a_copy_is_checked_against_its_first_reading_and_recorded_anew_when_staged_again(
        tmp_path: Path) -> None:
    work = tmp_path / "work"
    copy = staged_path(work, "w")
    copy.parent.mkdir(parents=True)
    copy.write_text("line\n")
    ledger = Ledger(work / "ledger.sqlite")
    try:
        ledger.replace_windows([("w", "file", {"path": "w"})])
        ledger.mark_extracted("w", str(copy), 1, {"path": "w", "digest": "d1"})
        check_copy_text(ledger, "w", 1, 111, staged_now=True)  # recorded
        check_copy_text(ledger, "w", 1, 111, staged_now=False)  # as recorded
        check_copy_text(ledger, "w", 1, 222, staged_now=True)  # staged again in this run
        ledger.mark_extracted("w", str(copy), 1, {"path": "w", "digest": "d2"})
        check_copy_text(ledger, "w", 1, 333, staged_now=False)  # another staging: recorded
        with pytest.raises(TerminalError, match=r"holds the 1 lines staged into it, but "
                           r"their text is not what was staged") as stop:
            check_copy_text(ledger, "w", 1, 444, staged_now=False)
        assert f"moved to {copy.name}.changed beside it" in str(stop.value)
        assert not copy.exists() and copy.with_name(copy.name + ".changed").exists()
    finally:
        ledger.close()


def test_a_resume_removes_a_killed_merges_round_of_its_own_window_only(
        project: Project, tmp_path: Path) -> None:
    """The end-to-end half of the leftovers' test: a round a killed merge of one of the
    run's windows left is removed; one of a name no window of the run has is the user's."""
    work = tmp_path / "w"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        assert migrate(cfg, upload_overrides=FAST).exit_code == 0
        ledger = Ledger(work / "ledger.sqlite")
        try:
            window_id = ledger.windows()[0].window_id
        finally:
            ledger.close()
        staged = work / "staged"
        ours = staged / (staged_path(Path(), window_id).name + ".round1")
        theirs = staged / "day-0123456789.jsonl.round1"
        for path in (ours, theirs):
            path.write_text("{}\n")
        assert migrate(cfg, resume=True, upload_overrides=FAST).exit_code == 0
        assert_exactly_once(url, project.expected)
    assert not ours.exists()
    assert theirs.read_text() == "{}\n"
