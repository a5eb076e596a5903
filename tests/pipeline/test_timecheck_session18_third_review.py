"""Third review of the event-time check before the load (``[mixpanel] time_check``,
pipeline/timecheck.py): the zone a legacy config's message names, what is said after a
``warn`` run, Data Pipelines layouts, many small and big windows.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    Crash,
    amplitude,
    crash_at_batch,
    make_config,
    mp2amp,
    stored_counts,
)

from mp2amp.errors import TerminalError
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.timecheck import sample, verdict

HOUR = 3600
JAN = 1_704_067_200  # 2024-01-01 00:00 UTC
JULY = 1_720_828_800  # 2024-07-13 00:00 UTC


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(orjson.dumps(r) + b"\n" for r in records)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _event(i: int, time_s: float, ingested_ms: int, prefix: str = "e") -> dict[str, Any]:
    return {"event": "Viewed", "properties": {
        "time": time_s, "distinct_id": f"user-{i % 50:04d}", "$insert_id": f"{prefix}-{i:06d}",
        "$mp_api_timestamp_ms": ingested_ms - 60, "mp_processing_time_ms": ingested_ms}}


def _day(utc_start: int, offset_h: float, n: int, prefix: str,
         every: int = 60) -> list[dict[str, Any]]:
    """Web events whose ``time`` is the wall clock of a zone at UTC``offset_h`` (0: UTC),
    ingested 1.5 s after they happened."""
    return [_event(i, utc_start + every * i + offset_h * HOUR,
                   (utc_start + every * i) * 1000 + 1500, prefix) for i in range(n)]


# --- what the message names -----------------------------------------------------------------

def test_utc_summer_times_read_as_legacy_are_named_utc_despite_one_old_device_clock(
        tmp_path: Path) -> None:
    # a project created in 2023 (UTC times) configured as a legacy Los Angeles one; its
    # July traffic, and one event from a phone whose clock said January
    records = _day(JULY, 0, 300, "jul")
    records.append(_event(999, JAN + 5 * 24 * HOUR, JULY * 1000 + 4_000, "clock"))
    events = tmp_path / "in"
    _write(events / "2024-07-13.jsonl", records)
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{
            "mixpanel.timezone": "America/Los_Angeles", "mixpanel.legacy_time": True})
        with pytest.raises(TerminalError) as stop:
            migrate(cfg)
        assert stored_counts(url) == {}
    said = str(stop.value)
    assert "look 7 h later" in said  # the shift itself is right
    assert "UTC+0:00" in said and "legacy_time = false" in said, said


def test_utc_summer_times_read_as_legacy_are_named_utc(tmp_path: Path) -> None:
    """The control of the test above: without the odd line the zone named is UTC."""
    events = tmp_path / "in"
    _write(events / "2024-07-13.jsonl", _day(JULY, 0, 300, "jul"))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{
            "mixpanel.timezone": "America/Los_Angeles", "mixpanel.legacy_time": True})
        with pytest.raises(TerminalError) as stop:
            migrate(cfg)
    assert "UTC+0:00" in str(stop.value) and "legacy_time = false" in str(stop.value)


def test_a_legacy_project_after_a_timezone_change_is_told_its_own_zone(tmp_path: Path) -> None:
    # a legacy project in London until 2023, then (configured) Los Angeles; its 2024 times
    # are in fact New York wall clock (UTC-5 in January)
    events = tmp_path / "in"
    _write(events / "2024-01-10.jsonl", _day(JAN + 9 * 24 * HOUR, -5, 300, "ny"))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{
            "mixpanel.timezone": "Europe/London", "mixpanel.legacy_time": True,
            "mixpanel.timezone_changes": [{"since": "2023-01-01",
                                           "timezone": "America/Los_Angeles"}]})
        with pytest.raises(TerminalError) as stop:
            migrate(cfg)
        assert stored_counts(url) == {}
    said = str(stop.value)
    assert "look 3 h later" in said
    assert "UTC-5:00" in said and "read as America/Los_Angeles" in said, said


# --- what is said after a warn run ------------------------------------------------------------

def test_a_warn_resume_is_not_told_to_set_warn_and_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    events = tmp_path / "in"
    _write(events / "2024-01-01.jsonl", _day(JAN, -8, 300, "a"))
    _write(events / "2024-01-02.jsonl", _day(JAN + 24 * HOUR, -8, 300, "b"))
    with amplitude(tmp_path / "amp") as url:
        warned = make_config(events, tmp_path / "work", url, **{
            "mixpanel.timezone": "UTC", "mixpanel.time_check": "warn"})
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(warned)
        monkeypatch.undo()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            result = migrate(warned, resume=True)
        assert result.exit_code == EXIT_OK and sum(stored_counts(url).values()) == 600
    logged = " ".join(r.getMessage() for r in caplog.records if "look 8 h" in r.getMessage())
    assert "are in Amplitude already" in logged, logged
    assert 'set [mixpanel] time_check = "warn"' not in logged, logged


def test_the_warning_printed_after_a_finished_warn_run_does_not_say_to_stop_it(
        tmp_path: Path) -> None:
    events = tmp_path / "in"
    _write(events / "2024-01-01.jsonl", _day(JAN, -8, 300, "c"))
    with amplitude(tmp_path / "amp") as url:
        cfg = tmp_path / "mp2amp.toml"
        cfg.write_text(
            f'[mixpanel]\ntimezone = "UTC"\ntime_check = "warn"\n'
            f'[source]\nfiles = ["{events}"]\n[amplitude]\napi_host = "{url}"\n'
            f'[run]\nworkdir = "{tmp_path / "work"}"\n')
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AMPLITUDE_", "MIXPANEL_", "MP2AMP_"))}
        env["AMPLITUDE_API_KEY"] = API_KEY
        done = mp2amp("migrate", "-c", str(cfg), cwd=tmp_path, env=env)
        assert sum(stored_counts(url).values()) == 300
    tail = done.stderr[done.stderr.rfind("look 8 h"):]
    assert "look 8 h" in done.stderr, done.stderr
    assert "Ctrl-C" not in tail and "stop this run" not in tail, tail


def test_the_s3_sink_stop_on_resume_speaks_of_import_files(tmp_path: Path) -> None:
    events = tmp_path / "in"
    _write(events / "2024-01-01.jsonl", _day(JAN, -8, 300, "s3"))
    out = tmp_path / "out"
    base = {"mixpanel.timezone": "UTC", "amplitude.output_dir": str(out)}
    warned = make_config(events, tmp_path / "work", "http://127.0.0.1:9",
                         **base, **{"mixpanel.time_check": "warn"})
    assert migrate(warned).exit_code == EXIT_OK
    assert any(p.is_file() for p in out.rglob("*"))
    stopping = make_config(events, tmp_path / "work", "http://127.0.0.1:9", **base)
    # a finished run resumed: nothing is left to write, so the check only reports
    # (tests/pipeline/test_timecheck_session19.py)
    result = migrate(stopping, resume=True)
    assert result.exit_code == EXIT_OK and result.time_check is not None
    said = result.time_check.message()
    assert "written to import files" in said and "in Amplitude already" not in said, said


# --- read right, never stopped --------------------------------------------------------------

def test_a_legacy_raw_pipeline_layout_read_with_legacy_time_is_not_stopped(
        tmp_path: Path) -> None:
    """Regression guard: raw pipeline files are UTC whatever the project (README): a
    legacy Los Angeles project's hourly files read with legacy_time go through."""
    root = tmp_path / "in" / "3141592" / "2024" / "01" / "01"
    for hour in range(3):
        _write(root / f"{hour:02d}" / "export.json.gz",
               _day(JAN + hour * HOUR, 0, 120, f"h{hour}", every=30))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(tmp_path / "in", tmp_path / "work", url, **{
            "mixpanel.timezone": "America/Los_Angeles", "mixpanel.legacy_time": True})
        result = migrate(cfg)
        assert result.exit_code == EXIT_OK and result.time_check is None
        assert sum(stored_counts(url).values()) == 360


def test_thousands_of_tiny_windows_still_give_a_sample(tmp_path: Path) -> None:
    """Regression guard of the per-window quota and the stride: 5,000 staged windows of
    two lines each (every other one sampled) still catch a zone read as UTC."""
    paths = []
    for w in range(5000):
        path = tmp_path / f"w{w:05d}.jsonl"
        lines = []
        for i in range(2):
            utc = JAN + w * 60 + i
            raw = orjson.dumps({"event": "e", "properties": {
                "time": utc - 8 * HOUR, "mp_processing_time_ms": utc * 1000 + 900}})
            lines.append(b'{"v":1}\t[%d,"f",%d,%s,null]\n' % (utc - 8 * HOUR, i + 1, raw))
        path.write_bytes(b"".join(lines))
        paths.append(path)
    buckets, _ = sample(paths)
    hint = verdict(buckets)
    assert hint is not None and hint.offset_minutes == -480 and hint.sampled >= 2000
