"""The work folder's staged/ is mp2amp's only when it carries the marker a run writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from migrate_kit import FAST, Project, amplitude, assert_exactly_once, make_config

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger, WindowRow
from mp2amp.pipeline import stagedfolder
from mp2amp.pipeline.migrate import ledger_path, migrate
from mp2amp.pipeline.windows import staged_path


def _row(staged_path: str | None, window_id: str = "w1") -> WindowRow:
    return WindowRow(window_id, 0, "file", {}, "extracted" if staged_path else "pending",
                     staged_path, 0, {})


def _own(window_id: str, suffix: str = "") -> str:
    return staged_path(Path(), window_id).name + suffix


def test_a_missing_or_marked_folder_holds_nothing_foreign(tmp_path: Path) -> None:
    assert stagedfolder.foreign_files(tmp_path / "staged", ["w1"]) == []
    staged = tmp_path / "staged"
    stagedfolder.claim(staged, [])
    assert stagedfolder.marker(staged).is_file()
    (staged / "mine.jsonl").write_text("{}\n")
    stagedfolder.claim(staged, [])  # marked: a resume goes on whatever the folder holds


def test_a_killed_runs_files_of_its_own_windows_are_not_foreign(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    (staged / ".stage-ab_c1234").mkdir(parents=True)  # a window's sort runs
    for suffix in (".part", ".round2", ".round1.part"):
        (staged / _own("/data/day1.jsonl", suffix)).write_text("")
    (staged / (_own("/data/day1.jsonl")[:-len(".jsonl")] + ".merged.jsonl")).write_text("")
    assert stagedfolder.foreign_files(staged, ["/data/day1.jsonl"]) == []
    stagedfolder.claim(staged, [_row(None, "/data/day1.jsonl")])  # an mp2amp from before the marker
    assert stagedfolder.marker(staged).is_file()


def test_files_named_like_a_runs_own_but_of_no_window_are_foreign(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    (staged / ".stage-backup").mkdir(parents=True)  # not mkdtemp's shape
    (staged / "mixpanel-dump-2024-03.json.part").write_text("")  # a browser's download
    (staged / "events-2024010100.jsonl").write_text("")  # ten digits are hex too
    (staged / _own("/data/other.jsonl")).write_text("")  # another run's window
    assert stagedfolder.foreign_files(staged, ["/data/day1.jsonl"]) == [
        ".stage-backup", _own("/data/other.jsonl"), "events-2024010100.jsonl",
        "mixpanel-dump-2024-03.json.part"]


def test_an_unmarked_folder_with_files_is_refused_unless_a_window_was_staged_there(
        tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    for n in range(7):
        (staged / f"events-20240101{n:02d}.jsonl").write_text("{}\n")
    with pytest.raises(TerminalError, match=r"events-2024010100\.jsonl, .* and 2 more"):
        stagedfolder.claim(staged, [_row(None)])
    assert not stagedfolder.marker(staged).exists()
    # an earlier mp2amp staged this run's windows here before runs wrote the marker
    stagedfolder.claim(staged, [_row(str(staged / "events-2024010100.jsonl"))])
    assert stagedfolder.marker(staged).is_file()


def test_a_new_run_judges_the_folder_by_its_files_not_by_a_marker(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    stagedfolder.marker(staged).touch()  # left by a finished run whose files were removed
    (staged / "events-2024010100.jsonl").write_text("{}\n")
    with pytest.raises(TerminalError, match=r"events-2024010100\.jsonl"):
        stagedfolder.check_new_run(staged, ["/data/day1.jsonl"])


def test_a_file_named_staged_is_refused(tmp_path: Path) -> None:
    (tmp_path / "staged").write_text("not a folder")
    with pytest.raises(TerminalError, match="staged holds files mp2amp did not write"):
        stagedfolder.check_new_run(tmp_path / "staged", [])


def test_a_resume_of_an_unmarked_run_marks_its_folder_and_removes_its_leftovers(
        project: Project, tmp_path: Path) -> None:
    """A work folder an mp2amp from before the marker staged: its resume goes on, and the
    leftovers of a killed merge are removed as before."""
    work = tmp_path / "w"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        assert migrate(cfg, upload_overrides=FAST).exit_code == 0
        staged = work / "staged"
        stagedfolder.marker(staged).unlink()  # as an older mp2amp left it
        ledger = Ledger(work / "ledger.sqlite")
        try:  # a killed merge's round file of one of the run's windows (another name is
            leftover = staged / _own(ledger.windows()[0].window_id, ".round1")  # the user's)
        finally:
            ledger.close()
        leftover.write_text("{}\n")
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == 0
        assert stagedfolder.marker(staged).is_file()
        assert not leftover.exists()
        assert_exactly_once(url, project.expected)
    assert ledger_path(cfg).is_file()


def test_a_new_run_in_a_workdir_whose_staged_folder_is_the_users_stops_before_any_work(
        project: Project, tmp_path: Path) -> None:
    work = tmp_path / "w"
    (work / "staged").mkdir(parents=True)
    mine = work / "staged" / "notes.txt"
    mine.write_text("mine")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        with pytest.raises(TerminalError, match=r"notes\.txt"):
            migrate(cfg, upload_overrides=FAST)
        assert not ledger_path(cfg).exists()
        mine.unlink()  # the user moved it away: the run starts
        shutil.rmtree(work / "staged")
        assert migrate(cfg, upload_overrides=FAST).exit_code == 0
