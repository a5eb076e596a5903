"""Review of the event-time check before the load (``[mixpanel] time_check``,
pipeline/timecheck.py): real data shapes it stops on wrongly, wrong zones it misses, and
what it says on a resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import Crash, amplitude, crash_at_batch, make_config, stored_counts

from mp2amp.errors import TerminalError
from mp2amp.pipeline.migrate import EXIT_OK, migrate

HOUR = 3600
JAN = 1_704_067_200  # 2024-01-01 00:00 UTC


def _write(path: Path, records: list[dict[str, Any]], spaced: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dump = (lambda r: json.dumps(r).encode()) if spaced else orjson.dumps
    path.write_bytes(b"".join(dump(r) + b"\n" for r in records))


def _event(i: int, time_s: float, ingested_ms: int, prefix: str = "e") -> dict[str, Any]:
    return {"event": "Viewed", "properties": {
        "time": time_s, "distinct_id": f"user-{i % 50:04d}", "$insert_id": f"{prefix}-{i:06d}",
        "$mp_api_endpoint": "api.mixpanel.com", "$mp_api_timestamp_ms": ingested_ms - 60,
        "mp_processing_time_ms": ingested_ms}}


def _legacy_day(utc_start: int, offset_h: int, n: int, prefix: str) -> list[dict[str, Any]]:
    """Events of a legacy project whose zone is UTC``offset_h``: ``time`` is its wall clock,
    the ingestion stamps UTC, 1.5 s later (web traffic)."""
    return [_event(i, utc_start + 60 * i + offset_h * HOUR, (utc_start + 60 * i) * 1000 + 1500,
                   prefix) for i in range(n)]


# --- false negatives: a wrong zone the check lets through --------------------------------

def test_legacy_times_read_as_utc_are_caught_in_a_file_written_with_spaces(
        tmp_path: Path) -> None:
    events = tmp_path / "in"
    _write(events / "2024-01-01.jsonl", _legacy_day(JAN, -8, 300, "sp"), spaced=True)
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{"mixpanel.timezone": "UTC"})
        with pytest.raises(TerminalError, match="look 8 h earlier"):
            migrate(cfg)
        assert stored_counts(url) == {}


def test_utc_times_read_as_new_zealand_summer_wall_clock_are_caught(tmp_path: Path) -> None:
    events = tmp_path / "in"
    # a project created in 2023 or later (UTC times), configured as a legacy one in
    # Pacific/Auckland: January is NZDT, UTC+13
    _write(events / "2024-01-10.jsonl", _legacy_day(JAN + 9 * 24 * HOUR, 0, 300, "nz"))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{
            "mixpanel.timezone": "Pacific/Auckland", "mixpanel.legacy_time": True})
        with pytest.raises(TerminalError, match="13 h earlier"):
            migrate(cfg)
        assert stored_counts(url) == {}


def test_utc_times_read_as_new_zealand_winter_wall_clock_are_caught(tmp_path: Path) -> None:
    """The control of the test above: at UTC+12 (July) the same mistake is caught."""
    events = tmp_path / "in"
    july = 1_720_828_800  # 2024-07-13 00:00 UTC
    _write(events / "2024-07-13.jsonl", _legacy_day(july, 0, 300, "nzw"))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{
            "mixpanel.timezone": "Pacific/Auckland", "mixpanel.legacy_time": True})
        with pytest.raises(TerminalError, match="12 h earlier"):
            migrate(cfg)


def test_legacy_dst_zone_read_as_utc_across_the_dst_change_is_caught(tmp_path: Path) -> None:
    events = tmp_path / "in"
    mar8 = 1_709_856_000 + 8 * HOUR  # 2024-03-08 08:00 UTC: 00:00 PST
    mar12 = 1_710_226_800  # 2024-03-12 07:00 UTC: 00:00 PDT
    _write(events / "2024-03-08.jsonl", _legacy_day(mar8, -8, 200, "pst"))
    _write(events / "2024-03-12.jsonl", _legacy_day(mar12, -7, 200, "pdt"))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{"mixpanel.timezone": "UTC"})
        with pytest.raises(TerminalError, match=r"look [78] h earlier"):
            migrate(cfg)
        assert stored_counts(url) == {}


# --- false positives: right times the check stops ------------------------------------------

def test_events_imported_by_an_hourly_sync_are_not_a_wrong_zone(tmp_path: Path) -> None:
    # A UTC project fed by a warehouse sync that /imports each hour's events at 5 past
    # the next hour (Census, Hightouch, a cron job): ingested 5 to 65 minutes after they
    # happened, evenly; one event every 2 s (43,200 a day).
    day = JAN
    records = []
    for i in range(0, 24 * HOUR, 2):
        t = day + i
        synced = (t // HOUR + 1) * HOUR + 300
        records.append(_event(i, t, synced * 1000 + 250, "sync"))
    events = tmp_path / "in"
    _write(events / "2024-01-01.jsonl", records)
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{"mixpanel.timezone": "UTC"})
        result = migrate(cfg)
        assert result.exit_code == EXIT_OK and result.time_check is None
        assert sum(stored_counts(url).values()) == len(records)


# --- what it says ---------------------------------------------------------------------------

def test_a_stop_on_resume_after_events_were_sent_does_not_say_nothing_was_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = tmp_path / "in"
    _write(events / "2024-01-01.jsonl", _legacy_day(JAN, -8, 300, "rs"))
    _write(events / "2024-01-02.jsonl", _legacy_day(JAN + 24 * HOUR, -8, 300, "rt"))
    with amplitude(tmp_path / "amp") as url:
        warned = make_config(events, tmp_path / "work", url, **{
            "mixpanel.timezone": "UTC", "mixpanel.time_check": "warn"})
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(warned)
        monkeypatch.undo()
        sent = sum(stored_counts(url).values())
        assert sent > 0
        # resumed with the default (stop), e.g. after an upgrade to this version
        cfg = make_config(events, tmp_path / "work", url, **{"mixpanel.timezone": "UTC"})
        with pytest.raises(TerminalError) as stop:
            migrate(cfg, resume=True)
        assert "Nothing was sent" not in str(stop.value)


def test_imported_history_does_not_hide_live_events_read_in_the_wrong_zone(
        tmp_path: Path) -> None:
    events = tmp_path / "in"
    # a legacy project at UTC-8 whose first months are history /import-ed on 2024-01-15
    # (its times are wall clock too); then live web traffic, ingested seconds later
    june = 1_685_606_400  # 2023-06-01 00:00 UTC
    imported_ms = 1_705_276_800_000  # 2024-01-15 00:00 UTC
    history = [_event(i, june + 60 * i, imported_ms + i, "hist")
               for i in range(300)]
    _write(events / "2023-06-01.jsonl", history)
    _write(events / "2024-01-20.jsonl", _legacy_day(JAN + 19 * 24 * HOUR, -8, 300, "live"))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{"mixpanel.timezone": "UTC"})
        with pytest.raises(TerminalError, match="look 8 h earlier"):
            migrate(cfg)
        assert stored_counts(url) == {}


def test_a_legacy_project_read_in_the_wrong_zone_is_told_its_own_zone(tmp_path: Path) -> None:
    events = tmp_path / "in"
    # a legacy project in America/New_York (UTC-5 in January) configured as Los Angeles
    _write(events / "2024-01-01.jsonl", _legacy_day(JAN, -5, 300, "ny"))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{
            "mixpanel.timezone": "America/Los_Angeles", "mixpanel.legacy_time": True})
        with pytest.raises(TerminalError) as stop:
            migrate(cfg)
        assert "UTC-5:00" in str(stop.value), str(stop.value)


def test_the_s3_import_sink_stops_before_any_file_is_written(tmp_path: Path) -> None:
    """Regression guard: with ``[amplitude] output_dir`` the check runs before the files are
    written, and ``warn`` carries the hint into the result as for the API."""
    events = tmp_path / "in"
    _write(events / "2024-01-01.jsonl", _legacy_day(JAN, -8, 300, "s3"))
    out = tmp_path / "out"
    cfg = make_config(events, tmp_path / "work", "http://127.0.0.1:9", **{
        "mixpanel.timezone": "UTC", "amplitude.output_dir": str(out)})
    with pytest.raises(TerminalError, match=r"look 8 h earlier.*Nothing was sent"):
        migrate(cfg)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    warned = make_config(events, tmp_path / "work", "http://127.0.0.1:9", **{
        "mixpanel.timezone": "UTC", "amplitude.output_dir": str(out),
        "mixpanel.time_check": "warn"})
    result = migrate(warned, resume=True)
    assert result.exit_code == EXIT_OK
    assert result.as_dict()["time_check"]["looks_offset_minutes"] == -480
    assert any(p.is_file() for p in out.rglob("*"))
