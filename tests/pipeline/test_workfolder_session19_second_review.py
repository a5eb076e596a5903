"""Second review of the session 19 work folder safety fixes (d6f23c7, 13a0448): the staged
copies' checksum (changed_copy.py), the leftovers' removal by the run's windows
(staged_names.py), the scratch folder the ledger names (scratch.py), dead letters a new
run refuses (workfolder.py), inputs inside a work folder (windows.py) and the replan's
clean-up (run_start.py). Each xfail pins a defect found by running the real migrate
against the local Amplitude emulator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    Project,
    amplitude,
    arrival_order,
    assert_exactly_once,
    make_config,
    run_until_crash,
    split_days,
)

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, migrate

ENV = {**os.environ, "AMPLITUDE_API_KEY": API_KEY}


def _edit_in_place(copy: Path) -> None:
    """One line's $city edited, as many lines as were staged (an edit in place)."""
    lines = copy.read_bytes().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if b'"$city":"' in line.split(b"\t", 1)[1])
    prefix, record = lines[i].split(b"\t", 1)
    lines[i] = prefix + b"\t" + record.replace(b'"$city":"', b'"$city":"EDITED-', 1)
    copy.write_bytes(b"".join(lines))


def _merged_head_not_loaded(work: Path) -> Path:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        heads = set(ledger.merged_into().values())
        (head,) = [w for w in ledger.windows() if w.window_id in heads]
        assert head.state != "loaded" and str(head.staged_path).endswith(".merged.jsonl")
        return Path(str(head.staged_path))
    finally:
        ledger.close()


def test_a_merged_copy_edited_in_place_after_a_kill_is_not_sent_edited(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the last day as two part files (a Data Pipelines day): merged into one staged copy
    events = split_days(project.events, tmp_path / "events", slice(2, 3))
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, work, url)
        run_until_crash(cfg, monkeypatch, 2)  # kill -9 in the load, after the merge
        _edit_in_place(_merged_head_not_loaded(work))
        try:
            result = migrate(cfg, resume=True, upload_overrides=FAST)
        except TerminalError as stop:  # found before sending: the next resume restages
            assert "checksum differs" in str(stop)
            result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        edited = [e for e in arrival_order(tmp_path / "amp") if "EDITED-" in str(e)]
        assert edited == [], f"sent with content the source never had: {edited[:1]}"
        assert_exactly_once(url, project.expected)


def _import_events(out: Path) -> list[dict]:
    import gzip

    import orjson
    return [orjson.loads(line) for path in sorted(out.glob("*.json.gz"))
            for line in gzip.decompress(path.read_bytes()).splitlines()]


def test_sink_resume_does_not_write_a_loaded_windows_copy_edited_in_place(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import Crash, crash_on_call

    from mp2amp.config import load_config
    work, out = tmp_path / "work", tmp_path / "out"
    cfg = load_config(None, {"source.files": [str(project.events)],
                             "mixpanel.timezone": "America/Los_Angeles",
                             "amplitude.output_dir": str(out), "run.workdir": str(work)},
                      env={})
    # kill -9 as the windows are marked written: the first is "loaded", the others not
    crash_on_call(monkeypatch, Ledger, "mark_loaded", 2)
    with pytest.raises(Crash):
        migrate(cfg)
    monkeypatch.undo()
    ledger = Ledger(work / "ledger.sqlite")
    try:
        rows = ledger.windows()
        assert [w.state for w in rows].count("loaded") == 1
        first = Path(str(next(w for w in rows if w.state == "loaded").staged_path))
    finally:
        ledger.close()
    _edit_in_place(first)
    try:
        result = migrate(cfg, resume=True)
    except TerminalError as stop:  # found before writing: the next resume restages
        assert "checksum differs" in str(stop)
        result = migrate(cfg, resume=True)
    assert result.exit_code == EXIT_OK
    events = _import_events(out)
    edited = [e for e in events if "EDITED-" in str(e)]
    assert edited == [], f"written with content the source never had: {edited[:1]}"
    keys = [(e.get("device_id") or e.get("user_id"), e["insert_id"]) for e in events]
    assert len(keys) == len(set(keys)) and set(keys) == project.expected


def test_a_staged_copy_restored_as_the_message_says_is_used_not_deleted(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import copy_events, mp2amp, write_toml

    from mp2amp.errors import InputError
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, work, url)
        toml = write_toml(tmp_path / "mp2amp.toml", events, work, url,
                          concurrency=cfg.run.concurrency)
        run_until_crash(cfg, monkeypatch, 2)
        ledger = Ledger(work / "ledger.sqlite")
        try:
            last = ledger.windows()[-1]
            assert last.state != "loaded"
            copy, source = Path(str(last.staged_path)), Path(last.window_id)
        finally:
            ledger.close()
        backup = tmp_path / "backup.jsonl"
        backup.write_bytes(copy.read_bytes())  # the user's copy of the work folder's file
        copy.unlink()  # freed space
        source.rename(tmp_path / "gone.gz")  # and the source is gone too
        stop = mp2amp("migrate", "-c", str(toml), "--resume", env=ENV, check=False)
        assert stop.returncode == 2, stop.stderr
        assert "restore the file (or the work folder's staged/ copy)" in stop.stderr
        copy.write_bytes(backup.read_bytes())  # restored, as the message says
        try:
            result = migrate(cfg, resume=True, upload_overrides=FAST)
        except InputError as again:
            assert copy.exists(), f"the restored copy was deleted; the stop: {again}"
            raise
        assert result.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
