"""A resume after the work folder's staged files were deleted (to free space, say).

The windows are staged again from their sources; the batches already accepted are not
sent again; a source that changed meanwhile stops the run instead of cutting different
batches under the same names.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from migrate_kit import (
    Crash,
    Project,
    amplitude,
    assert_exactly_once,
    copy_events,
    crash_at_batch,
    drop_last_records,
    get_json,
    make_config,
    merged_groups,
    run_until_crash,
    split_days,
)

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate


def _batches(work: Path) -> dict[str, tuple[str, int]]:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        return {b.batch_id: (b.state, b.attempts) for b in ledger.batches()}
    finally:
        ledger.close()




def test_staged_files_deleted_mid_run_are_staged_again_and_done_batches_not_resent(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        run_until_crash(config, monkeypatch, 4)
        before = _batches(work)
        done = {b for b, (state, _) in before.items() if state == "done"}
        assert done and len(done) < len(before)
        shutil.rmtree(work / "staged")  # "free some space"
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)
        after = _batches(work)
        assert {b: after[b] for b in done} == {b: before[b] for b in done}  # not sent again
        stats = get_json(url + "/_emulator/stats")
        in_flight = sum(1 for state, _ in before.values() if state == "sent")
        assert stats["events_stored"] == len(project.expected)
        assert stats["duplicates_ignored"] <= in_flight * 2000


def test_staged_files_deleted_after_a_finished_run(project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        assert migrate(config).exit_code == 0
        stored = get_json(url + "/_emulator/stats")["events_stored"]
        for f in (work / "staged").iterdir():
            f.unlink()
        again = migrate(config, resume=True)
        assert again.exit_code == 0 and again.totals["balanced"]
        assert again.totals["sent"] == len(project.expected)
        stats = get_json(url + "/_emulator/stats")
        assert stats["events_stored"] == stored and stats["duplicates_ignored"] == 0


def test_a_source_changed_since_its_batches_were_cut_stops_the_run(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 2)
        shutil.rmtree(work / "staged")
        first = sorted(events.iterdir())[0]
        lines = gzip.decompress(first.read_bytes()).splitlines()
        original = drop_last_records(first, 5)  # five records fewer
        with pytest.raises(TerminalError) as stopped:
            migrate(config, resume=True)
        message = str(stopped.value)
        assert f"now gives {len(lines) - 5} records, not the {len(lines)} its batches" in message
        assert "the source changed since" in message
        assert not (work / "staged").exists() or not any(
            p.name.startswith(first.name.replace("/", "_")) for p in (work / "staged").iterdir())
        first.write_bytes(original)  # put back: the resume stages it again and goes on
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)


def test_merged_windows_whose_staged_files_are_gone_are_staged_and_merged_again(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Overlapping files are merged into one staged file: deleted, it is remade from all
    of its sources, merged again as before, and only batches not done are sent."""
    events = split_days(project.events, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 3)
        merged = merged_groups(work)
        assert len(merged) == 3  # one merged-away file per day
        before = _batches(work)
        done = {b for b, (state, _) in before.items() if state == "done"}
        assert done
        shutil.rmtree(work / "staged")
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)
        after = _batches(work)
        assert {b: after[b] for b in done} == {b: before[b] for b in done}  # not sent again
        assert merged_groups(work) == merged
        staged = sorted(p.name for p in (work / "staged").iterdir())
        assert len(staged) == 6 and sum(n.endswith(".merged.jsonl") for n in staged) == 3
        # and once more after the finished run: nothing is sent again
        stored = get_json(url + "/_emulator/stats")["events_stored"]
        shutil.rmtree(work / "staged")
        again = migrate(config, resume=True)
        assert again.exit_code == 0 and again.totals["balanced"]
        stats = get_json(url + "/_emulator/stats")
        assert stats["events_stored"] == stored == len(project.expected)


def test_a_merged_away_files_empty_placeholder_deleted_is_made_again(
        project: Project, tmp_path: Path) -> None:
    events = split_days(project.events, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        assert migrate(config).exit_code == 0
        placeholders = list((work / "staged").glob("*.merged-away.jsonl"))
        assert len(placeholders) == 3
        for path in placeholders:
            path.unlink()
        again = migrate(config, resume=True)
        assert again.exit_code == 0 and again.totals["balanced"]
        assert all(path.is_file() for path in placeholders)
        assert get_json(url + "/_emulator/stats")["duplicates_ignored"] == 0


def test_a_merged_source_changed_since_its_batches_were_cut_stops_the_run(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = split_days(project.events, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 2)
        shutil.rmtree(work / "staged")
        second = sorted(events.iterdir())[1]  # a merged-away file of the first day
        original = drop_last_records(second, 3)
        with pytest.raises(TerminalError) as stopped:
            migrate(config, resume=True)
        message = str(stopped.value)
        assert "the 2 files merged into " in message and str(second) in message
        assert "the source changed since" in message
        second.write_bytes(original)
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)


def test_a_merge_group_restaged_is_merged_again_after_a_stop_while_staging(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The groups to merge again are kept in the ledger: a resume stopped before it got to
    merging (here a source missing for a moment) merges them on the next resume."""
    events = split_days(project.events, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 3)
        merged = merged_groups(work)
        for path in (work / "staged").glob("*.merged.jsonl"):  # the placeholders stay
            path.unlink()
        last = sorted(events.iterdir())[-1]
        last.rename(tmp_path / "away.gz")
        with pytest.raises(TerminalError, match="does not exist"):
            migrate(config, resume=True)
        (tmp_path / "away.gz").rename(last)
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)
        assert merged_groups(work) == merged
        leftover = [p.name for p in (work / "staged").iterdir() if p.stat().st_size == 0]
        assert len(leftover) == 3  # one placeholder per group, none left from before


def test_a_work_folder_moved_to_another_disk_resumes_from_its_staged_files(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the disk-full message suggests: move the work folder, point [run] workdir at
    it, --resume. The ledger holds the old staged paths; the files are found under their
    names in the new folder (the sources are moved away too: nothing is staged again)."""
    events = copy_events(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        crash_at_batch(monkeypatch, 3)
        with pytest.raises(Crash):
            migrate(make_config(events, tmp_path / "old", url))
        monkeypatch.undo()
        shutil.move(tmp_path / "old", tmp_path / "new")
        events.rename(tmp_path / "events-away")
        result = migrate(make_config(events, tmp_path / "new", url), resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)
    ledger = Ledger(tmp_path / "new" / "ledger.sqlite")
    try:
        assert all(str(w.staged_path).startswith(str(tmp_path / "new" / "staged"))
                   for w in ledger.windows())
    finally:
        ledger.close()


def test_a_window_whose_staged_copy_and_source_are_both_gone_says_both(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 2)
        shutil.rmtree(work / "staged")
        first = sorted(events.iterdir())[0]
        first.rename(tmp_path / "away.gz")
        with pytest.raises(TerminalError) as stopped:
            migrate(config, resume=True)
        assert str(stopped.value) == (
            f"{first} does not exist, and its staged copy in the work folder is gone too: "
            "restore the file (or the work folder's staged/ copy) and run the same `mp2amp "
            "migrate` command with --resume")
        (tmp_path / "away.gz").rename(first)
        assert migrate(config, resume=True).exit_code == 0
        assert_exactly_once(url, project.expected)
