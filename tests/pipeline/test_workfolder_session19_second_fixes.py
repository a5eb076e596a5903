"""The fixes of the session 19 second review (test_workfolder_session19_second_review.py),
from the sides that review did not pin: a merged file's checksum as written (rounds too),
the checksum's record kept through its stop (a copy put back under its name, intact or
still edited), a restored copy pointed back at and checked, the leftovers' removal of a
pending window's own name, and the S3-import sink's count check of a loaded window."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from migrate_kit import (
    FAST,
    Project,
    amplitude,
    assert_exactly_once,
    copy_events,
    make_config,
    run_until_crash,
)

from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger, WindowRow
from mp2amp.models import SourceRecord
from mp2amp.pipeline import staged_merge, staging
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.staged_names import remove_leftovers, staged_path


def _edit_in_place(copy: Path) -> None:
    """One line's $city edited, as many lines as were staged."""
    lines = copy.read_bytes().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if b'"$city":"' in line.split(b"\t", 1)[1])
    prefix, record = lines[i].split(b"\t", 1)
    lines[i] = prefix + b"\t" + record.replace(b'"$city":"', b'"$city":"EDITED-', 1)
    copy.write_bytes(b"".join(lines))


def _staged(tmp_path: Path, name: str, times: list[int]) -> Path:
    records = [SourceRecord(name, n + 1, {"event": "e", "properties": {
        "time": t, "distinct_id": "d"}}) for n, t in enumerate(times)]
    dest = tmp_path / f"{name}.jsonl"
    staging.stage(records, dest)
    return dest


def test_merge_staged_appends_the_crc_of_the_file_it_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [_staged(tmp_path, f"s{i}", [1_700_000_000 + i + 3 * n for n in range(4)])
             for i in range(3)]
    sums: list[int] = []
    assert staged_merge.merge_staged(paths, tmp_path / "one.jsonl", sums=sums) == 12
    assert sums == [zlib.crc32((tmp_path / "one.jsonl").read_bytes())]
    monkeypatch.setattr(staged_merge, "MERGE_FILES", 2)  # in rounds: the last file's checksum
    rounds: list[int] = []
    assert staged_merge.merge_staged(paths, tmp_path / "two.jsonl", sums=rounds) == 12
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert rounds == sums


def _row(window_id: str, state: str, records: int, staged: str | None = None,
         spec: dict | None = None) -> WindowRow:
    return WindowRow(window_id, 0, "file", spec or {}, state, staged, records, {})


def test_remove_leftovers_keeps_the_copy_of_a_window_staged_before_and_pending(
        tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    restored = staged_path(tmp_path, "/data/a.jsonl.gz")  # staged before, pending again
    empty_day = staged_path(tmp_path, "/data/b.jsonl.gz")  # staged before with 0 records
    never = staged_path(tmp_path, "/data/c.jsonl.gz")  # a kill before the ledger knew it
    for path in (restored, empty_day, never):
        path.write_bytes(b"x\n")
    remove_leftovers(staged, [_row("/data/a.jsonl.gz", "pending", 5),
                              _row("/data/b.jsonl.gz", "pending", 0, spec={"digest": "d"}),
                              _row("/data/c.jsonl.gz", "pending", 0)])
    assert restored.exists() and empty_day.exists()
    assert not never.exists()  # a replan's dropped windows: still removed


def _last_window(work: Path) -> tuple[Path, Path]:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        last = ledger.windows()[-1]
        assert last.state != "loaded"
        return Path(str(last.staged_path)), Path(last.window_id)
    finally:
        ledger.close()


def _checksum_stop(cfg: object) -> None:
    with pytest.raises(TerminalError, match="checksum differs"):
        migrate(cfg, resume=True, upload_overrides=FAST)  # type: ignore[arg-type]


def test_an_edited_copy_put_back_after_the_checksum_stop_is_caught_again(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the record the stop checked against is kept: the copy moved aside, put back under
    # its name as it is, is checked again (it was recorded as new and sent edited)
    events = copy_events(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url)
        run_until_crash(cfg, monkeypatch, 2)
        copy, _ = _last_window(tmp_path / "work")
        _edit_in_place(copy)
        _checksum_stop(cfg)
        copy.with_name(copy.name + ".changed").rename(copy)
        _checksum_stop(cfg)
        assert copy.with_name(copy.name + ".changed").exists() and not copy.exists()
        assert migrate(cfg, resume=True, upload_overrides=FAST).exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)


def test_after_the_checksum_stop_with_the_source_gone_a_restored_copy_is_checked_and_used(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = copy_events(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url)
        run_until_crash(cfg, monkeypatch, 2)
        copy, source = _last_window(tmp_path / "work")
        intact = copy.read_bytes()
        _edit_in_place(copy)
        _checksum_stop(cfg)
        source.rename(tmp_path / "gone.gz")
        with pytest.raises(InputError, match=r"restore the file \(or the work folder's"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        # the edited copy restored under its name: pointed back at, and its checksum
        # still catches it (it was removed as a leftover, and the stop repeated)
        copy.with_name(copy.name + ".changed").rename(copy)
        _checksum_stop(cfg)
        with pytest.raises(InputError, match=r"restore the file \(or the work folder's"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        copy.write_bytes(intact)  # an intact copy, as the message says
        assert migrate(cfg, resume=True, upload_overrides=FAST).exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)


def test_a_restored_copy_with_a_line_missing_is_refused_by_its_count(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = copy_events(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url)
        run_until_crash(cfg, monkeypatch, 2)
        copy, source = _last_window(tmp_path / "work")
        lines = copy.read_bytes().splitlines(keepends=True)
        copy.unlink()
        source.rename(tmp_path / "gone.gz")
        with pytest.raises(InputError, match="staged copy in the work folder is gone too"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        copy.write_bytes(b"".join(lines[:-1]))  # a copy cut short, restored
        with pytest.raises(TerminalError, match=f"holds {len(lines) - 1} lines, but "
                           f"{len(lines)} were staged"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        assert copy.with_name(copy.name + ".changed").exists()


def test_sink_resume_does_not_write_a_loaded_windows_copy_cut_short(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import Crash, crash_on_call

    from mp2amp.config import load_config
    work, out = tmp_path / "work", tmp_path / "out"
    cfg = load_config(None, {"source.files": [str(project.events)],
                             "mixpanel.timezone": "America/Los_Angeles",
                             "amplitude.output_dir": str(out), "run.workdir": str(work)},
                      env={})
    crash_on_call(monkeypatch, Ledger, "mark_loaded", 2)
    with pytest.raises(Crash):
        migrate(cfg)
    monkeypatch.undo()
    ledger = Ledger(work / "ledger.sqlite")
    try:
        first = next(w for w in ledger.windows() if w.state == "loaded")
    finally:
        ledger.close()
    copy = Path(str(first.staged_path))
    lines = copy.read_bytes().splitlines(keepends=True)
    copy.write_bytes(b"".join(lines[:-1]))  # a copy tool stopped by a full disk, say
    with pytest.raises(TerminalError, match="it changed after staging"):
        migrate(cfg, resume=True)
    result = migrate(cfg, resume=True)  # staged again from its source
    assert result.exit_code == EXIT_OK and result.load["events"] == len(project.expected)
