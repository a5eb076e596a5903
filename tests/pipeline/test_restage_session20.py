"""Session 20: a merged copy restored after a resume already staged its group's head
again (restage._restored_merges; it was removed as a leftover by
staged_names.remove_leftovers), and the ``copy_text_was:`` rows (changed_copy._WAS)
dropped once nothing can use them (restage.check_restaged). Real migrate runs against
the local Amplitude emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from migrate_kit import (
    FAST,
    Crash,
    Project,
    amplitude,
    arrival_order,
    assert_exactly_once,
    copy_events,
    crash_on_call,
    make_config,
    run_until_crash,
    split_days,
)

from mp2amp.config import Config
from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.changed_copy import _WAS
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.staged_names import staged_path


def _edit_last(copy: Path) -> None:
    """The last line with a $city edited in place (as many lines as were staged)."""
    lines = copy.read_bytes().splitlines(keepends=True)
    i = max(n for n, line in enumerate(lines) if b'"$city":"' in line.split(b"\t", 1)[1])
    prefix, record = lines[i].split(b"\t", 1)
    lines[i] = prefix + b"\t" + record.replace(b'"$city":"', b'"$city":"EDITED-', 1)
    copy.write_bytes(b"".join(lines))


def _was_rows(work: Path) -> dict[str, str]:
    """The ledger's ``copy_text_was:`` rows, per window."""
    ledger = Ledger(work / "ledger.sqlite")
    try:
        rows = {w.window_id: ledger.get_meta(_WAS + w.window_id) for w in ledger.windows()}
        return {k: v for k, v in rows.items() if v is not None}
    finally:
        ledger.close()


def _head_staged_again(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       url: str) -> tuple[Config, Path, bytes]:
    """A merged day's copy deleted; a resume killed once it staged the group's head again
    (its own copy, not merged yet); a part file gone; the resume after stops on it. The
    config, the merged copy's path and its bytes as they were (the user's backup)."""
    events = split_days(project.events, tmp_path / "events", slice(2, 3))
    work = tmp_path / "work"
    cfg = make_config(events, work, url)
    run_until_crash(cfg, monkeypatch, 2)  # kill -9 in the load, after the merge
    ledger = Ledger(work / "ledger.sqlite")
    try:
        merged_into = ledger.merged_into()
        (head,) = [w for w in ledger.windows() if w.window_id in set(merged_into.values())]
        assert head.state != "loaded" and str(head.staged_path).endswith(".merged.jsonl")
    finally:
        ledger.close()
    merged = Path(str(head.staged_path))
    backup = merged.read_bytes()
    merged.unlink()  # freed space
    crash_on_call(monkeypatch, Ledger, "mark_extracted", 2)  # kill -9 after the head
    with pytest.raises(Crash):
        migrate(cfg, resume=True, upload_overrides=FAST)
    monkeypatch.undo()
    ledger = Ledger(work / "ledger.sqlite")
    try:
        again = ledger.window(head.window_id)
        assert again is not None and again.state != "pending"
        assert again.staged_path == str(staged_path(work, head.window_id))  # its own copy
    finally:
        ledger.close()
    Path(next(iter(merged_into))).rename(tmp_path / "gone.gz")  # a part file gone too
    with pytest.raises(InputError, match=r"restore the file \(or the work folder's "
                       r"staged/ copy\)"):
        migrate(cfg, resume=True, upload_overrides=FAST)
    return cfg, merged, backup


def test_a_merged_copy_restored_after_its_head_was_staged_again_is_used(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude(tmp_path / "amp") as url:
        cfg, merged, backup = _head_staged_again(project, tmp_path, monkeypatch, url)
        merged.write_bytes(backup)  # restored under its name, as the stop says
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert merged.read_bytes() == backup
        assert_exactly_once(url, project.expected)
        assert _was_rows(tmp_path / "work") == {}  # a finished run leaves none


def test_an_edited_merged_copy_restored_after_its_head_was_staged_again_is_kept_aside(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude(tmp_path / "amp") as url:
        cfg, merged, backup = _head_staged_again(project, tmp_path, monkeypatch, url)
        merged.write_bytes(backup)
        _edit_last(merged)
        edited = merged.read_bytes()
        with pytest.raises(TerminalError, match=r"its checksum differs\): it cannot be used, "
                           r"and was moved to .*\.merged\.jsonl\.changed beside it"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        assert not merged.exists()
        assert merged.with_name(merged.name + ".changed").read_bytes() == edited
        assert [e for e in arrival_order(tmp_path / "amp") if "EDITED-" in str(e)] == []
        merged.write_bytes(backup)  # then an intact copy: used, and the run completes
        assert migrate(cfg, resume=True, upload_overrides=FAST).exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)


def test_copy_text_was_rows_are_dropped_once_the_copy_staged_anew_is_accepted(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, work, url, **{"run.concurrency": 1,
                                                 "amplitude.batch_max_bytes": 30_000})
        run_until_crash(cfg, monkeypatch, 2)  # kill -9 in the first window's load
        ledger = Ledger(work / "ledger.sqlite")
        try:
            first = ledger.windows()[0]
        finally:
            ledger.close()
        Path(str(first.staged_path)).unlink()  # freed space: staged again from its source
        crash_on_call(monkeypatch, Ledger, "batch_done", 1)  # kill -9 once it was accepted
        with pytest.raises(Crash):
            migrate(cfg, resume=True, upload_overrides=FAST)
        monkeypatch.undo()
        assert _was_rows(work) == {}  # dropped with the check that accepted the new copy
        assert migrate(cfg, resume=True, upload_overrides=FAST).exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
        assert _was_rows(work) == {}


def test_a_merged_copy_with_no_record_to_check_is_kept_aside_not_deleted(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.pipeline.changed_copy import _META
    with amplitude(tmp_path / "amp") as url:
        cfg, merged, backup = _head_staged_again(project, tmp_path, monkeypatch, url)
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        try:  # as an earlier mp2amp left it: no checksum records
            for w in ledger.windows():
                for key in (_META + w.window_id, _WAS + w.window_id):
                    value = ledger.get_meta(key)
                    if value is not None:
                        assert ledger.drop_meta(key, value)
        finally:
            ledger.close()
        merged.write_bytes(backup)
        with pytest.raises(TerminalError, match=r"cannot be checked: the ledger has no line "
                           r"count and checksum of that merged file .* moved to "
                           r".*\.merged\.jsonl\.changed beside it"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        assert merged.with_name(merged.name + ".changed").read_bytes() == backup


def test_copy_away_keeps_the_record_of_the_copy_sent_from_until_it_is_checked(
        tmp_path: Path) -> None:
    from mp2amp.pipeline.changed_copy import copy_away, copy_back, record_copy, recorded
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        record_copy(ledger, "w", "w.merged.jsonl", 10, "d1", 111)  # the copy sent from
        copy_away(ledger, "w")
        record_copy(ledger, "w", "w.jsonl", 7, "d2", 222)  # staged anew, read, not checked
        copy_away(ledger, "w", checking=True)  # and gone too
        copy_back(ledger, "w")  # a copy restored is checked against the one sent from
        assert recorded(ledger, "w") == ["w.merged.jsonl", 10, "d1", 111]
    finally:
        ledger.close()
