"""Third review of the staged copies' checksums and restores (changed_copy.py, restage.py
_restored, staged_names.remove_leftovers, overlaps.merge_groups): each test pins a
defect found by running the real migrate against the local Amplitude emulator (each was
a strict xfail until fixed)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from migrate_kit import (
    FAST,
    Project,
    amplitude,
    arrival_order,
    assert_exactly_once,
    copy_events,
    make_config,
    run_until_crash,
)

from mp2amp.config import Config
from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, migrate


def _edit_last(copy: Path) -> None:
    """The last line with a $city edited in place (as many lines as were staged)."""
    lines = copy.read_bytes().splitlines(keepends=True)
    i = max(n for n, line in enumerate(lines) if b'"$city":"' in line.split(b"\t", 1)[1])
    prefix, record = lines[i].split(b"\t", 1)
    lines[i] = prefix + b"\t" + record.replace(b'"$city":"', b'"$city":"EDITED-', 1)
    copy.write_bytes(b"".join(lines))


def _edit_source(path: Path) -> bytes:
    """The gzip source with one record's $city changed (as many records); the original."""
    original = path.read_bytes()
    lines = gzip.decompress(original).splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if b'"$city":"' in line)
    lines[i] = lines[i].replace(b'"$city":"', b'"$city":"SRC-', 1)
    path.write_bytes(gzip.compress(b"".join(lines)))
    return original


def _first_window(work: Path) -> tuple[Path, Path]:
    """The first window's staged copy and source: partly loaded (batches done)."""
    ledger = Ledger(work / "ledger.sqlite")
    try:
        first = ledger.windows()[0]
        states = {b.state for b in ledger.batches() if b.window_id == first.window_id}
        assert first.state != "loaded" and "done" in states and states != {"done"}
        return Path(str(first.staged_path)), Path(first.window_id)
    finally:
        ledger.close()


def _edit_all(copy: Path) -> None:
    """Every line's $city edited in place: as many lines as were staged."""
    lines = copy.read_bytes().splitlines(keepends=True)
    out = []
    for line in lines:
        prefix, record = line.split(b"\t", 1)
        out.append(prefix + b"\t" + record.replace(b'"$city":"', b'"$city":"EDITED-', 1))
    copy.write_bytes(b"".join(out))


def _edited(amp: Path) -> list[dict[str, object]]:
    return [e for e in arrival_order(amp) if "EDITED-" in str(e)]


def test_an_edited_copy_restored_after_a_changed_source_stop_is_refused(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = copy_events(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{"run.concurrency": 1,
                                                              "amplitude.batch_max_bytes": 30_000})
        run_until_crash(cfg, monkeypatch, 2)  # kill -9 in the first window's load
        copy, source = _first_window(tmp_path / "work")
        intact = copy.read_bytes()
        _edit_source(source)  # the source changed since (as many records)
        copy.unlink()  # and the staged copy deleted to free space
        with pytest.raises(TerminalError, match="the source changed"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        source.rename(tmp_path / "gone.gz")
        copy.write_bytes(intact)
        _edit_all(copy)  # a restored copy with the right count but other lines
        try:
            result = migrate(cfg, resume=True, upload_overrides=FAST)
        except TerminalError as stop:
            assert "checksum differs" in str(stop)
            return  # refused before anything of it was sent: as the README promises
        edited = _edited(tmp_path / "amp")
        assert result.exit_code != EXIT_OK or edited == [], (
            f"exit {result.exit_code}; sent with content nobody staged: {edited[:1]}")




def _merged_head(work: Path) -> tuple[Path, list[Path]]:
    """The merged head's staged copy (not loaded) and the part files merged into it."""
    ledger = Ledger(work / "ledger.sqlite")
    try:
        merged = ledger.merged_into()
        (head,) = [w for w in ledger.windows() if w.window_id in set(merged.values())]
        assert head.state != "loaded" and str(head.staged_path).endswith(".merged.jsonl")
        return Path(str(head.staged_path)), [Path(head.window_id), *map(Path, merged)]
    finally:
        ledger.close()


def test_a_merged_copy_restored_after_its_part_file_is_gone_is_not_deleted(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import split_days
    events = split_days(project.events, tmp_path / "events", slice(2, 3))
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, work, url)
        run_until_crash(cfg, monkeypatch, 2)  # kill -9 in the load, after the merge
        merged, parts = _merged_head(work)
        backup = merged.read_bytes()  # the user's backup of the work folder's file
        merged.unlink()  # freed space
        parts[-1].rename(tmp_path / "gone.gz")  # and a part file is gone too
        with pytest.raises(InputError, match=r"restore the file \(or the work folder's "
                           r"staged/ copy\)"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        merged.write_bytes(backup)  # restored under its own name, as it was
        try:
            result = migrate(cfg, resume=True, upload_overrides=FAST)
        except (InputError, TerminalError) as stop:
            assert merged.exists(), f"the restored copy was deleted; the stop: {stop}"
            return  # kept, and a clear stop
        assert result.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)


def _merged_copy_restored(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          url: str, edit: bool) -> tuple[Config, Path]:
    """A merged day's copy deleted and a part file gone, the resume stopped; then the
    copy restored under its name (``edit``: with its lines edited); the config and copy."""
    from migrate_kit import split_days
    events = split_days(project.events, tmp_path / "events", slice(2, 3))
    work = tmp_path / "work"
    cfg = make_config(events, work, url)
    run_until_crash(cfg, monkeypatch, 2)
    merged, parts = _merged_head(work)
    backup = merged.read_bytes()
    merged.unlink()
    parts[-1].rename(tmp_path / "gone.gz")
    with pytest.raises(InputError, match="restore the file"):
        migrate(cfg, resume=True, upload_overrides=FAST)
    merged.write_bytes(backup)
    if edit:
        _edit_last(merged)
    return cfg, merged


def test_a_merged_copy_restored_under_its_name_is_used_and_the_run_completes(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude(tmp_path / "amp") as url:
        cfg, merged = _merged_copy_restored(project, tmp_path, monkeypatch, url, edit=False)
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert merged.exists()
        assert_exactly_once(url, project.expected)


def test_an_edited_merged_copy_restored_is_refused_and_kept_aside(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude(tmp_path / "amp") as url:
        cfg, merged = _merged_copy_restored(project, tmp_path, monkeypatch, url, edit=True)
        edited = merged.read_bytes()
        with pytest.raises(TerminalError, match=r"its checksum differs\): it cannot be used, "
                           r"and was moved to .*\.merged\.jsonl\.changed beside it"):
            migrate(cfg, resume=True, upload_overrides=FAST)
        assert not merged.exists()
        assert merged.with_name(merged.name + ".changed").read_bytes() == edited
        assert _edited(tmp_path / "amp") == []


def test_a_kill_between_copy_away_and_mark_pending_does_not_disarm_the_checksum(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import Crash, crash_on_call
    events = copy_events(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{"run.concurrency": 1,
                                                              "amplitude.batch_max_bytes": 30_000})
        run_until_crash(cfg, monkeypatch, 2)  # kill -9 in the first window's load
        copy, _ = _first_window(tmp_path / "work")
        backup = copy.read_bytes()
        copy.unlink()  # freed space
        crash_on_call(monkeypatch, Ledger, "mark_pending", 1)  # kill -9 in restage_missing
        with pytest.raises(Crash):
            migrate(cfg, resume=True, upload_overrides=FAST)
        monkeypatch.undo()
        copy.write_bytes(backup)  # put back from a backup that was edited since
        _edit_all(copy)
        try:
            result = migrate(cfg, resume=True, upload_overrides=FAST)
        except TerminalError as stop:
            assert "checksum differs" in str(stop)
            return
        edited = _edited(tmp_path / "amp")
        assert result.exit_code != EXIT_OK or edited == [], (
            f"exit {result.exit_code}; sent with content nobody staged: {edited[:1]}")


def _finished_sink_run(project: Project, tmp_path: Path
                       ) -> tuple[Config, Path, dict[str, bytes], list[Path]]:
    """A finished import-file run: its config, output folder, files and staged copies."""
    from mp2amp.config import load_config
    work, out = tmp_path / "work", tmp_path / "out"
    cfg = load_config(None, {"source.files": [str(project.events)],
                             "mixpanel.timezone": "America/Los_Angeles",
                             "amplitude.output_dir": str(out), "run.workdir": str(work)},
                      env={})
    assert migrate(cfg).exit_code == EXIT_OK
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    ledger = Ledger(work / "ledger.sqlite")
    try:
        copies = [Path(str(w.staged_path)) for w in ledger.windows()]
    finally:
        ledger.close()
    return cfg, out, files, copies


def test_finished_sink_run_with_a_copy_gone_leaves_its_import_files(
        project: Project, tmp_path: Path) -> None:
    cfg, out, files, copies = _finished_sink_run(project, tmp_path)
    copies[0].unlink()  # freed space
    result = migrate(cfg, resume=True)
    assert result.exit_code == EXIT_OK
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_finished_sink_run_with_a_copy_gone_does_not_check_copies_it_will_not_write(
        project: Project, tmp_path: Path) -> None:
    cfg, out, files, copies = _finished_sink_run(project, tmp_path)
    _edit_last(copies[1])  # a written window's copy: serves the identity graph only
    assert migrate(cfg, resume=True).exit_code == EXIT_OK  # as the README says: no stop
    copies[0].unlink()  # and another window's copy deleted to free space
    result = migrate(cfg, resume=True)  # stopped: "checksum differs", nothing to write
    assert result.exit_code == EXIT_OK
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
