"""Adversarial review of resume, restaging, damaged files, fingerprint and stopping:
combinations of the features, each run end to end against the Amplitude emulator."""

from __future__ import annotations

import contextlib
import gzip
import shutil
from pathlib import Path
from typing import Any

import orjson
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
    run_until_crash,
    stored_counts,
)

from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate


def _windows(work: Path) -> list[Any]:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        return ledger.windows()
    finally:
        ledger.close()



# --- a source changed since its batches were cut --------------------------------------


def test_a_changed_source_stops_every_resume_not_only_the_first(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_restaged stopped the first resume, then left the window pending with the new
    record count: the next resume (the source still changed) staged it without any check
    and cut other batches under the names of the done ones."""
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 2)
        shutil.rmtree(work / "staged")
        first = sorted(events.iterdir())[0]
        original = drop_last_records(first, 5)
        with pytest.raises(TerminalError, match="the source changed since"):
            migrate(config, resume=True)
        with pytest.raises(TerminalError, match="the source changed since"):
            migrate(config, resume=True)  # still changed: still refused
        first.write_bytes(original)
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)


def test_a_changed_source_staged_again_by_a_run_killed_before_its_check_still_stops(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check ran only at the end of the identity pass: a run killed (SIGTERM, kill -9,
    a full disk) after the changed window was staged again, but before the check, left it
    staged with the new count, and the next resume loaded it unchecked."""
    from mp2amp.pipeline import migrate as migrate_module

    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 2)
        shutil.rmtree(work / "staged")
        first = sorted(events.iterdir())[0]
        original = drop_last_records(first, 5)

        def killed(*args: Any) -> None:
            raise Crash("killed after the restaging, before its check")

        monkeypatch.setattr(migrate_module, "check_restaged", killed)
        with pytest.raises(Crash):
            migrate(config, resume=True)
        monkeypatch.undo()
        with pytest.raises(TerminalError, match="the source changed since"):
            migrate(config, resume=True)
        first.write_bytes(original)
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)


# --- fingerprint ----------------------------------------------------------------------


def test_the_identity_tables_content_counts_in_the_fingerprint(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: what decides the batches includes "the identity table", and the fingerprint
    counts the files the settings name by their content; the identity table counted by its
    path only, so a table replaced between a run and its resume was taken in silently
    (the done batches with the old user_ids, the rest with the new)."""
    table = tmp_path / "mappings.jsonl.gz"
    shutil.copy(project.root / "identity" / "mappings.jsonl.gz", table)
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url,
                             **{"source.identity_table": str(table)})
        run_until_crash(config, monkeypatch, 2)
        rows = gzip.decompress(table.read_bytes()).splitlines(keepends=True)
        table.write_bytes(gzip.compress(b"".join(rows[: len(rows) // 2])))
        with pytest.raises(TerminalError, match="differs from the one the run started with"):
            migrate(config, resume=True)


# --- damaged files --------------------------------------------------------------------


def _cut_short(path: Path) -> bytes:
    """Cut the gzip file ``path`` before its end (a download cut short); returns it whole."""
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    return whole


def test_a_damaged_stop_then_resumed_with_keep(
        project: Project, tmp_path: Path) -> None:
    """Stop on a file cut short, resume with damaged_files = "keep" (what the message
    offers): what it holds goes out, the rest is one rejection, each event once."""
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    cut = sorted(events.iterdir())[1]
    _cut_short(cut)
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        with pytest.raises(InputError, match="cut short, and nothing of them was sent"):
            migrate(config)
        assert get_json(url + "/_emulator/stats")["events_stored"] == 0
        kept = make_config(events, work, url, **{"source.damaged_files": "keep"})
        result = migrate(kept, resume=True)
        assert result.totals["balanced"] and result.exit_code == 0
        assert result.totals["rejected"] >= 1
        counts = stored_counts(url)
        assert all(n == 1 for n in counts.values())
        assert set(counts) < project.expected


def test_a_damaged_stop_with_the_staged_files_deleted_and_the_file_restored(
        project: Project, tmp_path: Path) -> None:
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    cut = sorted(events.iterdir())[0]
    whole = _cut_short(cut)
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        with pytest.raises(InputError, match="cut short"):
            migrate(config)
        shutil.rmtree(work / "staged")
        cut.write_bytes(whole)
        result = migrate(config, resume=True)
        assert result.totals["balanced"] and result.exit_code == 0
        assert_exactly_once(url, project.expected)


def test_a_file_cut_short_while_its_staged_copy_was_deleted_mid_load(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash mid-load, the staged files deleted, and meanwhile a source file damaged (a
    new download cut short): the resume must not send a mix (its batches were cut from
    the whole file); restored, it finishes with each event once."""
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 2)
        shutil.rmtree(work / "staged")
        cut = sorted(events.iterdir())[0]
        whole = _cut_short(cut)
        for _ in range(2):
            with pytest.raises((TerminalError, InputError)):
                migrate(config, resume=True)
        cut.write_bytes(whole)
        result = migrate(config, resume=True)
        assert result.totals["balanced"] and result.exit_code == 0
        assert_exactly_once(url, project.expected)


# --- moved work folder, deleted staged files, Export API, S3-import sink, overlaps ----


def test_a_moved_work_folder_with_some_staged_files_deleted(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = copy_events(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        crash_at_batch(monkeypatch, 3)
        with pytest.raises(Crash):
            migrate(make_config(events, tmp_path / "old", url))
        monkeypatch.undo()
        shutil.move(tmp_path / "old", tmp_path / "new")
        staged = sorted((tmp_path / "new" / "staged").glob("*.jsonl"))
        assert len(staged) == 3
        staged[0].unlink()
        staged[2].unlink()
        result = migrate(make_config(events, tmp_path / "new", url), resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)
    assert all(str(w.staged_path).startswith(str(tmp_path / "new" / "staged"))
               for w in _windows(tmp_path / "new"))


def test_export_api_days_whose_staged_files_were_deleted_are_fetched_again(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import API_KEY, TIMEZONE

    from mp2amp.config import load_config
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

    work = tmp_path / "work"
    mixpanel = MixpanelEmulator(MixpanelConfig(
        data_dir=project.root, api_secret="emulator-secret", export_per_hour=None,
        export_per_second=None))
    with mixpanel.running() as mp_url, amplitude(tmp_path / "amp") as url:
        config = load_config(None, {
            "source.from_date": "2024-01-01", "source.to_date": "2024-01-04",
            "mixpanel.api_host": mp_url, "mixpanel.timezone": TIMEZONE,
            "amplitude.api_host": url, "run.workdir": str(work)},
            env={"AMPLITUDE_API_KEY": API_KEY, "MIXPANEL_SECRET": "emulator-secret"})
        run_until_crash(config, monkeypatch, 3)
        before = get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"]
        shutil.rmtree(work / "staged")
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)
        after = get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"]
        assert after - before == 4  # each day fetched once more
        again = migrate(config, resume=True)  # finished; nothing fetched or sent again
        assert again.exit_code == 0
        assert get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"] == after
        assert_exactly_once(url, project.expected)


def test_s3_import_sink_with_staged_files_deleted_after_a_crash(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import TIMEZONE

    from mp2amp.config import load_config
    from mp2amp.load.s3sink import S3ImportSink

    out = tmp_path / "out"
    work = tmp_path / "work"
    config = load_config(None, {"source.files": [str(project.events)],
                                "mixpanel.timezone": TIMEZONE,
                                "amplitude.output_dir": str(out), "run.workdir": str(work)},
                         env={})
    close = S3ImportSink.close

    def crash(self: Any, *args: Any) -> Any:
        raise Crash("killed while cutting the files")

    monkeypatch.setattr(S3ImportSink, "close", crash)
    with pytest.raises(Crash):
        migrate(config)
    monkeypatch.setattr(S3ImportSink, "close", close)
    shutil.rmtree(work / "staged")
    result = migrate(config, resume=True)
    assert result.exit_code == 0 and result.totals["balanced"]
    found = [(e.get("device_id") or e.get("user_id"), e["insert_id"])
             for path in sorted(out.glob("*.json.gz"))
             for e in map(orjson.loads, gzip.decompress(path.read_bytes()).splitlines())]
    assert len(found) == len(set(found)) and set(found) == project.expected
    shutil.rmtree(work / "staged")  # finished: deleted again, resumed again
    again = migrate(config, resume=True)
    assert again.exit_code == 0


def test_overlapping_files_merged_and_another_windows_staged_file_deleted(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = tmp_path / "events"
    events.mkdir()
    days = sorted(project.events.iterdir())
    lines = gzip.decompress(days[0].read_bytes()).splitlines(keepends=True)
    (events / "2024-01-01-a.jsonl").write_bytes(b"".join(lines[0::2]))
    (events / "2024-01-01-b.jsonl").write_bytes(b"".join(lines[1::2]))
    for day in days[1:]:
        shutil.copy(day, events / day.name)
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 3)
        plain = [p for p in (work / "staged").iterdir() if not p.name.endswith((".merged.jsonl", ".merged-away.jsonl"))]
        assert plain
        for p in plain:
            p.unlink()
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)


def test_a_damaged_file_sent_under_keep_then_restaged_under_stop(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with damaged_files = "keep" crashed after batches of the damaged file were
    accepted; the staged files deleted; resumed with the default "stop". Its batches were
    cut from what the file held: it cannot be 'stopped before anything of it is sent'
    (the message said so, and its advice, restore and resume, could never work: the
    restored file no longer matches its batches). It goes on as kept."""
    events = copy_events(project, tmp_path / "events")
    cut = sorted(events.iterdir())[0]
    _cut_short(cut)
    with amplitude(tmp_path / "ref") as url:  # what a whole run with "keep" delivers
        reference = migrate(make_config(events, tmp_path / "ref-work", url,
                                        **{"source.damaged_files": "keep"}))
        assert reference.exit_code == 0
        kept = frozenset(stored_counts(url))
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(make_config(events, work, url, **{"source.damaged_files": "keep"}))
        monkeypatch.undo()
        ledger = Ledger(work / "ledger.sqlite")
        try:
            started = {b.window_id for b in ledger.batches() if b.state == "done"}
        finally:
            ledger.close()
        assert str(cut) in started
        shutil.rmtree(work / "staged")
        result = migrate(make_config(events, work, url), resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, kept)


# --- inputs added and removed, older fingerprints -------------------------------------


def test_a_file_added_and_another_removed_before_resume(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    days = sorted(project.events.iterdir())
    folder = tmp_path / "in"
    folder.mkdir()
    for day in days[:2]:
        shutil.copy(day, folder / day.name)
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(folder / "*.jsonl.gz", work, url)
        run_until_crash(config, monkeypatch, 2)
        first_two = stored_counts(url)
        (folder / days[0].name).rename(tmp_path / days[0].name)  # moved away (staged)
        shutil.copy(days[2], folder / days[2].name)
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert result.not_in_run == [str(folder / days[2].name)]
        counts = stored_counts(url)
        assert all(n == 1 for n in counts.values()) and first_two.keys() <= counts.keys()
        # and the removed file's staged copy deleted too: named, not a traceback
        for p in (work / "staged").iterdir():
            p.unlink()
        with pytest.raises((InputError, TerminalError)) as stopped:
            migrate(config, resume=True)
        assert days[0].name in str(stopped.value)


def test_a_fingerprint_from_an_older_mp2amp_without_the_newer_keys(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        run_until_crash(config, monkeypatch, 2)
        ledger = Ledger(work / "ledger.sqlite")
        try:
            old = orjson.loads(str(ledger.get_meta("fingerprint")))
            for key in ("events", "output_dir"):
                del old[key]
            ledger.set_meta("fingerprint", orjson.dumps(old).decode())
        finally:
            ledger.close()
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)


# --- SIGTERM while the Export API days are fetched again, twice -----------------------


def test_sigterm_twice_while_deleted_export_days_are_fetched_again(
        project: Project, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from migrate_kit import API_KEY, TIMEZONE
    from test_kill_resume import ledger_rows
    from test_stop_signals import _group_gone, _when_batches_done

    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

    work = tmp_path / "work"
    mixpanel = MixpanelEmulator(MixpanelConfig(
        data_dir=project.root, api_secret="emulator-secret", export_per_hour=None,
        export_per_second=None, chunk_bytes=16384, chunk_delay=0.02))
    with mixpanel.running() as mp_url, amplitude(tmp_path / "amp", latency_ms=150) as url:
        cfg = tmp_path / "mp2amp.toml"
        cfg.write_text(
            f'[mixpanel]\ntimezone = "{TIMEZONE}"\napi_host = "{mp_url}"\n'
            '[source]\nfrom_date = "2024-01-01"\nto_date = "2024-01-04"\n'
            f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{work}"\nconcurrency = 2\n')
        env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY, MIXPANEL_SECRET="emulator-secret")

        def run(*extra: str) -> subprocess.Popen[str]:
            return subprocess.Popen([sys.executable, "-m", "mp2amp", "migrate", "-c",
                                     str(cfg), "--quiet", *extra], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)

        first = run()
        _when_batches_done(first, work / "ledger.sqlite", 2)
        os.killpg(first.pid, signal.SIGTERM)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 143, err[-2000:]
        shutil.rmtree(work / "staged")

        def downloading() -> bool:
            return int(get_json(mp_url + "/_emulator/stats")["export_in_flight"]) > 0

        second = run("--resume")
        deadline = time.monotonic() + 30
        while second.poll() is None and not downloading() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert second.poll() is None, "the resume ended before the days were fetched"
        os.killpg(second.pid, signal.SIGTERM)
        time.sleep(0.002)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(second.pid, signal.SIGTERM)
        out, err = second.communicate(timeout=60)
        # the second SIGTERM may land after the handler is gone (the run already stopping,
        # its message maybe printed): then it kills the process as SIGTERM does, -15
        assert second.returncode in (143, -signal.SIGTERM), err[-2000:]
        assert "Traceback" not in err and err.count("\n") <= 1, err
        if second.returncode == 143:
            assert err.startswith(f"stopped (SIGTERM); the ledger in {work} keeps everything")
        assert _group_gone(second.pid)
        pending = ledger_rows(work / "ledger.sqlite",
                              "SELECT COUNT(*) FROM windows WHERE state = 'pending'")
        assert int(str(pending[0][0])) >= 1  # stopped while fetching again

        third = run("--resume", "--json")
        out, err = third.communicate(timeout=120)
        assert third.returncode == 0, err[-2000:]
        assert orjson.loads(out)["totals"]["balanced"]
        assert_exactly_once(url, project.expected)


# --- a full disk while staging again --------------------------------------------------


def test_a_full_disk_while_staging_again_then_moved_folder_resumes(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged files deleted to free space, the disk fills again while they are staged
    again: the message's advice (move the work folder, point workdir at it, --resume)
    finishes with each event once."""
    import errno

    from mp2amp.pipeline import windows

    events = copy_events(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(make_config(events, tmp_path / "old", url))
        monkeypatch.undo()
        shutil.rmtree(tmp_path / "old" / "staged")
        staged = windows.stage
        calls: list[int] = []

        def full_on_the_second(records: Any, dest: Path, *args: Any, **kw: Any) -> int:
            calls.append(1)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(dest) + ".part")
            return staged(records, dest, *args, **kw)

        monkeypatch.setattr(windows, "stage", full_on_the_second)
        with pytest.raises(TerminalError, match="the disk is full"):
            migrate(make_config(events, tmp_path / "old", url), resume=True)
        monkeypatch.undo()
        shutil.move(tmp_path / "old", tmp_path / "new")
        result = migrate(make_config(events, tmp_path / "new", url), resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)


def test_a_work_folder_copied_elsewhere_resumes_from_its_own_staged_files(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copied (rsync, cp -r) rather than moved, the old folder still there: the resume read
    the old disk's staged files (the ledger's paths), so deleting the old copy once the
    new one runs (to free the full disk) broke it; the copy must use its own files."""
    events = copy_events(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(make_config(events, tmp_path / "old", url))
        monkeypatch.undo()
        shutil.copytree(tmp_path / "old", tmp_path / "new")
        config = make_config(events, tmp_path / "new", url)
        from mp2amp.pipeline import migrate as migrate_module

        check = migrate_module.check_restaged

        def old_copy_deleted_meanwhile(*args: Any) -> None:
            shutil.rmtree(tmp_path / "old", ignore_errors=True)
            check(*args)

        monkeypatch.setattr(migrate_module, "check_restaged", old_copy_deleted_meanwhile)
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)
    assert all(str(w.staged_path).startswith(str(tmp_path / "new" / "staged"))
               for w in _windows(tmp_path / "new"))
