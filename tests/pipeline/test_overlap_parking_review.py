"""Review of two mechanisms: overlapping input windows merged before the load, and a
device's later events parked behind its parked (daily-quota) events."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    FAST,
    TIMEZONE,
    Clock,
    Key,
    Project,
    amplitude,
    arrival_order,
    assert_exactly_once,
    crash_on_call,
    make_config,
    mp2amp,
    order_breaks,
)
from migrate_kit import Crash as KitCrash

from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, EXIT_PARKED, ledger_path, migrate

SHORT = 5  # Amplitude's default minimum ID length (the emulator applies it without options)


def _parts(project: Project, dest: Path) -> Path:
    """Each day file cut into two interleaved halves (a: odd lines, b: even lines)."""
    dest.mkdir()
    for day in sorted(project.events.iterdir()):
        lines = gzip.decompress(day.read_bytes()).splitlines()
        stem = day.name.removesuffix(".jsonl.gz")
        (dest / f"{stem}-a.jsonl").write_bytes(b"\n".join(lines[0::2]) + b"\n")
        (dest / f"{stem}-b.jsonl").write_bytes(b"\n".join(lines[1::2]) + b"\n")
    return dest


def test_amplitude_dead_letters_of_merged_away_windows_keep_windows_balanced(
        project: Project, tmp_path: Path) -> None:
    events = _parts(project, tmp_path / "events")
    refused = {iid for iid, ids in project.ids.items()
               if any(v and len(v) < SHORT for v in ids)}
    assert refused
    delivered: frozenset[Key] = frozenset(k for k in project.expected if k[1] not in refused)
    upload = {**FAST, "min_id_length": None, "concurrency": 4}
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url)
        result = migrate(cfg, upload_overrides=upload)
        assert_exactly_once(url, delivered)
    assert result.identity["overlapping_windows_merged"]
    assert result.totals["dead_lettered"] == len(refused)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]


def test_parked_events_of_merged_away_windows_keep_windows_balanced(
        project: Project, tmp_path: Path) -> None:
    events = _parts(project, tmp_path / "events")
    clock = Clock()
    upload = {**FAST, "park_delay": 0.05, "park_retries": 0, "concurrency": 4}
    with amplitude(tmp_path / "amp", daily_quota=40, now=clock) as url:
        cfg = make_config(events, tmp_path / "work", url)
        first = migrate(cfg, upload_overrides=upload)
        assert first.totals["parked"] > 0
        assert first.exit_code == EXIT_PARKED, first.as_dict()["problems"]


class Crash(Exception):
    """Stands for kill -9 once the first window is loaded."""


def test_resume_after_a_crash_mid_load_keeps_parked_devices_in_time_order(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    # requests of at most 10 events: a request that would take an ID past the quota is
    # refused whole, so one holding more of a device's events than the quota never passes
    upload = {**FAST, "park_delay": 0.05, "park_retries": 0, "concurrency": 4,
              "max_events": 10}
    original = Ledger.mark_loaded

    def loaded_then_crash(self: Ledger, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        raise Crash

    # below what the busiest device sends on the first day (39), so that the first window
    # parks events whatever the other windows do
    with amplitude(tmp_path / "amp", daily_quota=30, now=clock) as url:
        cfg = make_config(project.events, tmp_path / "work", url)
        with monkeypatch.context() as m:
            m.setattr(Ledger, "mark_loaded", loaded_then_crash)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=upload)
        ledger = Ledger(ledger_path(cfg))
        try:
            assert ledger.windows()[0].state == "loaded"
            assert ledger.parked_counts(), "the first window should have parked events"
        finally:
            ledger.close()
        for _ in range(6):
            clock.offset += 25 * 3600
            result = migrate(cfg, resume=True, upload_overrides=upload)
            if result.exit_code != EXIT_PARKED:
                break
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_exactly_once(url, project.expected)
    breaks = order_breaks(tmp_path / "amp")
    assert not breaks, f"{len(breaks)} out of order, e.g. {breaks[:3]}"


def test_files_named_out_of_time_order_keep_each_devices_time_order(
        project: Project, tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    days = sorted(project.events.iterdir())
    # export-1 holds the last day, export-3 the first: sorted by name, latest first
    for n, day in enumerate(reversed(days), start=1):
        (events / f"export-{n}.jsonl.gz").write_bytes(day.read_bytes())
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(events, tmp_path / "work", url), upload_overrides=FAST)
        assert_exactly_once(url, project.expected)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    breaks = order_breaks(tmp_path / "amp")
    assert not breaks, f"{len(breaks)} out of order, e.g. {breaks[:3]}"


def _check_run(url: str, project: Project, data: Path, result: Any) -> None:
    assert_exactly_once(url, project.expected)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert all(w.balanced for w in result.windows)
    assert result.totals["read"] == sum(w.read for w in result.windows)
    assert not order_breaks(data)
    # the identity graph of a merged (or resumed) run maps every event as the plain
    # transform of the files does
    ids = {e["insert_id"]: (e.get("device_id"), e.get("user_id")) for e in arrival_order(data)}
    wrong = {k: (v, project.ids[k]) for k, v in ids.items() if project.ids[k] != v}
    assert not wrong, list(wrong.items())[:3]


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_around_the_merges_ledger_transaction_then_resume(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    events = _parts(project, tmp_path / "events")
    def restage(self: Ledger, *args: Any) -> None:
        raise Crash

    def staged_before_the_merge(path: Path, *args: Any, **kwargs: Any) -> bool:
        return re.search(r"-[0-9a-f]{10}\.jsonl$", path.name) is not None

    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url)
        with monkeypatch.context() as m:
            if when == "after":  # committed (with the checksums), the old files not yet removed
                crash_on_call(m, Path, "unlink", 1, when=staged_before_the_merge)
            else:
                m.setattr(Ledger, "restage", restage)
            with pytest.raises((Crash, KitCrash)):
                migrate(cfg, upload_overrides=FAST)
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        _check_run(url, project, tmp_path / "amp", result)
    # merged again only when the first merge was not recorded
    assert ("overlapping_windows_merged" in result.identity) == (when == "before")
    ledger = Ledger(ledger_path(cfg))
    try:
        reads = {Path(w.window_id).name: w.records for w in ledger.windows()}
    finally:
        ledger.close()
    assert all(n == 0 for name, n in reads.items() if name.endswith("-b.jsonl"))


def test_two_copies_of_the_same_days_are_merged_and_deduplicated(
        project: Project, tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    for day in sorted(project.events.iterdir()):
        for copy in ("a", "b"):
            (events / day.name.replace(".jsonl.gz", f"-{copy}.jsonl.gz")).write_bytes(
                day.read_bytes())
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(events, tmp_path / "work", url), upload_overrides=FAST)
        _check_run(url, project, tmp_path / "amp", result)
    assert len(result.identity["overlapping_windows_merged"]) == 3
    assert result.totals["duplicate"] >= len(project.expected)


def test_a_file_spanning_non_adjacent_days_joins_them_all(
        project: Project, tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    days = sorted(project.events.iterdir())
    first = gzip.decompress(days[0].read_bytes()).splitlines()
    last = gzip.decompress(days[-1].read_bytes()).splitlines()
    for day in days:  # the day files without their first line ...
        lines = gzip.decompress(day.read_bytes()).splitlines()
        keep = lines[1:] if day in (days[0], days[-1]) else lines
        (events / day.name.replace(".jsonl.gz", ".jsonl")).write_bytes(b"\n".join(keep) + b"\n")
    # ... which a file named first holds (the first day's first, the last day's first line)
    (events / "0-extra.jsonl").write_bytes(first[0] + b"\n" + last[0] + b"\n")
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(events, tmp_path / "work", url), upload_overrides=FAST)
        _check_run(url, project, tmp_path / "amp", result)
    merged = result.identity["overlapping_windows_merged"]
    assert [[Path(w).name for w in g] for g in merged] == [
        ["0-extra.jsonl", *(d.name.replace(".jsonl.gz", ".jsonl") for d in days)]]


def test_import_files_from_overlapping_parts_hold_each_event_once_and_balance(
        project: Project, tmp_path: Path) -> None:
    from mp2amp.config import load_config

    events = _parts(project, tmp_path / "events")
    out = tmp_path / "out"
    cfg = load_config(None, {"source.files": [str(events)], "mixpanel.timezone": TIMEZONE,
                             "amplitude.output_dir": str(out),
                             "run.workdir": str(tmp_path / "work")}, env={})
    result = migrate(cfg)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert all(w.balanced for w in result.windows)
    assert result.identity["overlapping_windows_merged"]
    rows = [orjson.loads(line) for path in sorted(out.glob("*.json.gz"))
            for line in gzip.decompress(path.read_bytes()).splitlines()]
    got = [(e.get("device_id") or e.get("user_id"), e["insert_id"]) for e in rows]
    assert len(got) == len(set(got)) and set(got) == project.expected
    assert [e["time"] for e in rows] == sorted(e["time"] for e in rows)
    status = orjson.loads(mp2amp("status", "--workdir", str(tmp_path / "work"), "--json").stdout)
    assert status["problems"] == [] and status["totals"]["balanced"]
    assert status["totals"]["read"] == result.totals["read"]
    emptied = [w for w in status["windows"] if w["window"].endswith("-b.jsonl")]
    assert emptied and all(w["read"] == 0 and w["state"] == "loaded" for w in emptied)


def test_a_day_in_seventy_part_files_is_merged_in_rounds_end_to_end(
        project: Project, tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    parts = 70  # more than staged_merge.MERGE_FILES: merged in rounds
    for day in sorted(project.events.iterdir()):
        lines = gzip.decompress(day.read_bytes()).splitlines()
        stem = day.name.removesuffix(".jsonl.gz")
        n = parts if stem.endswith("01") else 1
        for p in range(n):
            (events / f"{stem}-{p:03d}.jsonl").write_bytes(b"\n".join(lines[p::n]) + b"\n")
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(events, tmp_path / "work", url), upload_overrides=FAST)
        _check_run(url, project, tmp_path / "amp", result)
    (group,) = result.identity["overlapping_windows_merged"]
    assert len(group) == parts
    assert sum(w.read > 0 for w in result.windows) == 3


def test_a_second_resume_of_a_finished_merged_run_sends_nothing(
        project: Project, tmp_path: Path) -> None:
    events = _parts(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url)
        first = migrate(cfg, upload_overrides=FAST)
        _check_run(url, project, tmp_path / "amp", first)
        again = migrate(cfg, resume=True, upload_overrides=FAST)
        _check_run(url, project, tmp_path / "amp", again)
    assert again.load["requests"] == 0 and again.totals == first.totals
    assert "overlapping_windows_merged" not in again.identity
