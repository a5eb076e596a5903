"""The event-time check (``[mixpanel] time_check``) on a resume: ``stop`` stops only when
something is left to send. A finished run resumed (every window loaded, nothing parked)
is only told, as ``warn`` is, and ends as a finished run does; parked events or windows
left still stop it, naming what is in Amplitude (or in import files) already."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    Clock,
    Crash,
    amplitude,
    crash_at_batch,
    crash_on_call,
    make_config,
    mp2amp,
    stored_counts,
)

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, EXIT_PARKED, migrate

HOUR = 3600
JAN = 1_704_067_200  # 2024-01-01 00:00 UTC
SHIFTED = {"mixpanel.timezone": "UTC"}  # legacy UTC-8 wall clock read as UTC
WARN = {**SHIFTED, "mixpanel.time_check": "warn"}
HINT = {"looks_offset_minutes": -480, "share": 1.0, "sampled": 300, "looks_like_zone": "-8:00"}


def _day(utc_start: int, n: int, prefix: str, heavy: int = 0) -> list[dict[str, Any]]:
    """Web events of a legacy project at UTC-8: ``time`` is its wall clock, ingested 1.5 s
    after they happened (UTC stamps); the last ``heavy`` events of one busy user."""
    return [{"event": "Viewed", "properties": {
        "time": utc_start + 60 * i - 8 * HOUR,
        "distinct_id": "busy" if i >= n - heavy else f"user-{i % 50:04d}",
        "$insert_id": f"{prefix}-{i:06d}", "$mp_api_timestamp_ms": (utc_start + 60 * i) * 1000,
        "mp_processing_time_ms": (utc_start + 60 * i) * 1000 + 1500}} for i in range(n)]


def _events(tmp_path: Path, days: int = 1, heavy: int = 0) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for d in range(days):
        (folder / f"2024-01-0{d + 1}.jsonl").write_bytes(b"".join(
            orjson.dumps(r) + b"\n" for r in _day(JAN + d * 24 * HOUR, 300, f"d{d}", heavy)))
    return folder


def _said(caplog: pytest.LogCaptureFixture) -> str:
    return " ".join(r.getMessage() for r in caplog.records if "look 8 h" in r.getMessage())


def _files(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


# --- nothing left to send: the check reports, the run ends as finished --------------------

@pytest.mark.parametrize("check", ["stop", "warn"])
def test_a_finished_run_resumed_only_reports_the_shift(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, check: str) -> None:
    events = _events(tmp_path, days=2)
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(events, tmp_path / "work", url, **WARN)).exit_code == EXIT_OK
        cfg = make_config(events, tmp_path / "work", url,
                          **{**SHIFTED, "mixpanel.time_check": check})
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            result = migrate(cfg, resume=True)
        assert result.exit_code == EXIT_OK
        stored = stored_counts(url)
    assert len(stored) == 600 and set(stored.values()) == {1}
    out = result.as_dict()
    assert out["time_check"] == {**HINT, "sampled": 600}
    assert out["totals"]["sent"] == 600 and out["totals"]["balanced"] is True
    assert out["load"]["submitted"] == 0  # the loaded windows were only replayed
    said = _said(caplog)
    assert "600 events of this run are in Amplitude already" in said, said
    assert "Nothing is left to be sent: the run is not stopped" in said, said
    assert "Ctrl-C" not in said and "--resume" not in said, said


def test_the_cli_resume_of_a_finished_run_exits_0_and_says_nothing_more_was_sent(
        tmp_path: Path) -> None:
    events = _events(tmp_path)
    with amplitude(tmp_path / "amp") as url:
        cfg = tmp_path / "mp2amp.toml"

        def write(check: str) -> None:
            cfg.write_text(
                f'[mixpanel]\ntimezone = "UTC"\ntime_check = "{check}"\n'
                f'[source]\nfiles = ["{events}"]\n[amplitude]\napi_host = "{url}"\n'
                f'[run]\nworkdir = "{tmp_path / "work"}"\n')

        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AMPLITUDE_", "MIXPANEL_", "MP2AMP_"))}
        env["AMPLITUDE_API_KEY"] = API_KEY
        write("warn")
        mp2amp("migrate", "-c", str(cfg), cwd=tmp_path, env=env)
        write("stop")
        done = mp2amp("migrate", "-c", str(cfg), "--resume", cwd=tmp_path, env=env,
                      check=False)
        assert sum(stored_counts(url).values()) == 300
    assert done.returncode == 0, done.stderr
    tail = done.stderr[done.stderr.rfind("look 8 h"):]
    assert "300 events of this run are in Amplitude already" in tail, done.stderr
    assert "Nothing was left to be sent" in tail, tail
    assert "time_check = warn" not in tail, tail


def test_the_s3_sink_resume_of_a_finished_run_writes_nothing_and_only_reports(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events = _events(tmp_path)
    out = tmp_path / "out"
    base = {**SHIFTED, "amplitude.output_dir": str(out)}
    first = migrate(make_config(events, tmp_path / "work", "http://127.0.0.1:9",
                                **base, **{"mixpanel.time_check": "warn"}))
    assert first.exit_code == EXIT_OK
    files = _files(out)
    assert files
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = migrate(make_config(events, tmp_path / "work", "http://127.0.0.1:9", **base),
                         resume=True)
    assert result.exit_code == EXIT_OK
    assert result.as_dict()["time_check"] == HINT
    assert result.load["events"] == 0 and result.load["complete"] is True
    assert _files(out) == files  # not one file written again
    said = _said(caplog)
    assert "300 events of this run are written to import files" in said, said
    assert "Nothing is left to be written" in said and "in Amplitude" not in said, said


# --- something left to send: stop still stops, and says what is out already --------------

def test_a_resume_with_only_parked_events_left_stops_and_names_them(tmp_path: Path) -> None:
    events = _events(tmp_path, heavy=50)  # over the quota: parked
    clock = Clock()
    upload = {**FAST, "park_delay": 0.05, "park_retries": 0, "concurrency": 2}
    with amplitude(tmp_path / "amp", daily_quota=10, now=clock) as url:
        first = migrate(make_config(events, tmp_path / "work", url, **WARN),
                        upload_overrides=upload)
        assert first.exit_code == EXIT_PARKED
        sent, parked = first.totals["sent"], first.totals["parked"]
        assert sent > 0 and parked > 0 and sent + parked == 300
        assert all(w.state == "loaded" for w in first.windows)
        clock.offset += 25 * HOUR  # the quota would let them through now
        with pytest.raises(TerminalError) as stop:
            migrate(make_config(events, tmp_path / "work", url, **SHIFTED), resume=True,
                    upload_overrides=upload)
        assert sum(stored_counts(url).values()) == sent  # the parked ones were not sent
    said = str(stop.value)
    assert f"{sent} events of this run are in Amplitude already" in said, said
    assert f"{parked} events parked for Amplitude's daily quota are not sent yet" in said, said
    assert "Nothing is left" not in said and "Nothing was sent" not in said, said


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_resume_with_windows_left_stops_and_names_the_events_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int) -> None:
    """Two windows, a batch each, sent one at a time: Amplitude took batch ``crash_at``
    but the crash came before its answer was recorded."""
    events = _events(tmp_path, days=2)
    one_at_a_time = {"concurrency": 1}
    with amplitude(tmp_path / "amp") as url:
        crash_at_batch(monkeypatch, crash_at)
        with pytest.raises(Crash):
            migrate(make_config(events, tmp_path / "work", url, **WARN),
                    upload_overrides=one_at_a_time)
        monkeypatch.undo()
        before = stored_counts(url)
        assert sum(before.values()) == 300 * crash_at
        with pytest.raises(TerminalError) as stop:
            migrate(make_config(events, tmp_path / "work", url, **SHIFTED), resume=True,
                    upload_overrides=one_at_a_time)
        assert stored_counts(url) == before
    said = str(stop.value)
    assert said.startswith("the event times look 8 h earlier"), said
    told = "(Amplitude cannot move them: delete them there if the times are wrong)"
    unsure = "events of this run may be in Amplitude (sent before the run stopped, with no " \
             "answer recorded)"
    if crash_at == 1:
        assert f"Up to 300 {unsure} {told}. " in said, said
        assert "Nothing was sent" not in said, said
    else:
        assert (f"300 events of this run are in Amplitude already {told}, and up to 300 "
                f"more {unsure}. ") in said, said
    assert said.endswith('If the times are right as they are, set [mixpanel] time_check = '
                         '"warn" and run the same command with --resume'), said


def test_the_s3_sink_resume_of_an_unfinished_run_stops_before_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _events(tmp_path, days=2)
    out = tmp_path / "out"
    base = {**SHIFTED, "amplitude.output_dir": str(out)}
    crash_on_call(monkeypatch, Ledger, "mark_loaded", 2)  # the files, one window recorded
    with pytest.raises(Crash):
        migrate(make_config(events, tmp_path / "work", "http://127.0.0.1:9", **base,
                            **{"mixpanel.time_check": "warn"}))
    monkeypatch.undo()
    files = _files(out)
    assert files
    with pytest.raises(TerminalError) as stop:
        migrate(make_config(events, tmp_path / "work", "http://127.0.0.1:9", **base),
                resume=True)
    assert _files(out) == files  # neither removed nor written again
    said = str(stop.value)
    # the ledger counts one window's 300, the files hold all 600: no count is told
    assert ("Import files of an earlier attempt of this run may be in [amplitude] output_dir: "
            "do not import them (the run removes them when it goes on). If the times are "
            "right") in said, said
    assert "in Amplitude" not in said and "Nothing" not in said, said
