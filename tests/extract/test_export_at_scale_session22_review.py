"""Session 22 review: the Export API source at the scale of a real history (windows of
1..31 days over months, DST and a legacy timezone change, a long range planned and resumed,
the hourly query budget and its journal, a multi-day window cut short and fetched again).

Real components over loopback: the Mixpanel emulator (its limits and faults) and the
Amplitude emulator, driven by ``migrate``. The one defect found (a
connection that never reached Mixpanel was counted as a query of the hour) is fixed."""

from __future__ import annotations

import itertools
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))
from migrate_kit import API_KEY, FAST, amplitude, get_json, post_json

from mp2amp.config import Config, load_config
from mp2amp.emulators.amplitude.store import EventStore
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.pipeline.migrate import migrate

SECRET = "scale-review-secret"
FAST_MP = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01, "backoff_cap": 0.05}


def ms(d: date, h: int = 0, m: int = 0, s: int = 0, milli: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, h, m, s, tzinfo=UTC).timestamp()) * 1000 + milli


def write_days(data: Path, first: date, last: date, legacy_tz: str | None = None
               ) -> dict[str, int]:
    """Day files with events at each day's edges; insert_id -> the time in the file."""
    events = data / "events"
    events.mkdir(parents=True, exist_ok=True)
    if legacy_tz:
        (data / "project.json").write_text(orjson.dumps(
            {"project_id": 7, "timezone": legacy_tz, "legacy_time": True}).decode())
    truth: dict[str, int] = {}
    d = first
    while d <= last:
        recs = []
        for k, t in enumerate((ms(d), ms(d, 0, 0, 0, 1), ms(d, 12), ms(d, 23, 59, 59, 999))):
            iid = f"{d.isoformat()}-{k}"
            truth[iid] = t
            recs.append({"event": "Edge", "properties": {
                "time": t, "distinct_id": f"user-{d.isoformat()}", "$insert_id": iid}})
        (events / f"{d.isoformat()}.jsonl").write_bytes(
            b"".join(orjson.dumps(r) + b"\n" for r in recs))
        d += timedelta(days=1)
    return truth


def config(tmp: Path, mp_url: str, amp_url: str, first: date, last: date,
           **extra: Any) -> Config:
    overrides = {"source.from_date": first.isoformat(), "source.to_date": last.isoformat(),
                 "mixpanel.api_host": mp_url, "amplitude.api_host": amp_url,
                 "run.workdir": str(tmp / "work"), "run.concurrency": 4}
    overrides.update(extra)
    return load_config(None, overrides, env={"AMPLITUDE_API_KEY": API_KEY,
                                             "MIXPANEL_SECRET": SECRET})


def stored(amp_data: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in EventStore(amp_data).iter_events():
        out.setdefault(e["insert_id"].rsplit("-", 1)[0], []).append(e["time"])
    return out


def unlimited_mixpanel(data: Path) -> MixpanelEmulator:
    """The Mixpanel emulator serving ``data`` without its hourly and per-second limits."""
    return MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret=SECRET,
                                           export_per_hour=None, export_per_second=None))


@pytest.mark.parametrize("window_days", [1, 7, 31])
def test_every_edge_event_once_with_its_time_over_months_and_dst(
        tmp_path: Path, window_days: int) -> None:
    first, last = date(2024, 1, 20), date(2024, 4, 2)
    truth = write_days(tmp_path / "mp", first, last)
    emu = unlimited_mixpanel(tmp_path / "mp")
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = config(tmp_path, mp_url, amp_url, first, last,
                     **{"source.export_window_days": window_days})
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
        stats = get_json(mp_url + "/_emulator/stats")["requests"]
    got = stored(tmp_path / "amp")
    assert {k: [v] for k, v in truth.items()} == got
    days = (last - first).days + 1
    assert stats["export_requests"] == -(-days // window_days)
    assert result.exit_code == 0


NY, LA = "America/New_York", "America/Los_Angeles"
CHANGE = date(2024, 3, 1)  # the legacy project's timezone went from New York to Los Angeles


def write_legacy_days(data: Path, first: date, last: date) -> dict[str, int]:
    """A legacy project's day files: each event stored as the wall clock of the zone in
    force on its day (New York, then Los Angeles), filed under that wall clock's date;
    insert_id -> the true UTC instant in ms."""
    from zoneinfo import ZoneInfo
    events = data / "events"
    events.mkdir(parents=True, exist_ok=True)
    (data / "project.json").write_text(orjson.dumps(
        {"project_id": 7, "timezone": LA, "legacy_time": True}).decode())
    truth: dict[str, int] = {}
    d = first
    while d <= last:
        zone = ZoneInfo(NY if d < CHANGE else LA)
        recs = []
        for k, (h, m, s, milli) in enumerate(((0, 0, 0, 0), (0, 0, 0, 1), (1, 30, 0, 0),
                                              (3, 30, 0, 0), (12, 0, 0, 0), (23, 59, 59, 999),
                                              *((h, 7, 0, 0) for h in range(4, 23)))):
            local = datetime(d.year, d.month, d.day, h, m, s, milli * 1000)
            u = int(local.replace(tzinfo=zone).timestamp() * 1000)
            stored_t = ms(d, h, m, s, milli)
            iid = f"{d.isoformat()}-{k}"
            truth[iid] = u
            recs.append({"event": "Edge", "properties": {
                "time": stored_t, "distinct_id": f"user-{d.isoformat()}", "$insert_id": iid,
                "mp_processing_time_ms": u + 900}})
        (events / f"{d.isoformat()}.jsonl").write_bytes(
            b"".join(orjson.dumps(r) + b"\n" for r in recs))
        d += timedelta(days=1)
    return truth


@pytest.mark.parametrize("window_days", [1, 7, 31])
def test_a_legacy_project_with_a_timezone_change_and_dst_every_event_once_at_its_instant(
        tmp_path: Path, window_days: int) -> None:
    first, last = date(2024, 2, 20), date(2024, 3, 20)
    truth = write_legacy_days(tmp_path / "mp", first, last)
    emu = unlimited_mixpanel(tmp_path / "mp")
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = config(tmp_path, mp_url, amp_url, first, last,
                     **{"source.export_window_days": window_days,
                        "mixpanel.timezone": NY, "mixpanel.legacy_time": True,
                        "mixpanel.timezone_changes": [{"since": CHANGE.isoformat(),
                                                       "timezone": LA}]})
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
    got = stored(tmp_path / "amp")
    assert {k: [v] for k, v in truth.items()} == got
    assert result.exit_code == 0


def journal_counts(work: Path) -> tuple[int, int]:
    """(starts, refunds) written in the work folder's export query journal."""
    words = (work / "export" / "query-starts.log").read_text().split()
    return (sum(not w.startswith("-") for w in words), sum(w.startswith("-") for w in words))


def _dirty_range(data: Path, first: date, last: date) -> dict[str, int]:
    """``write_days`` plus, on every third day, a line that is no JSON and a record
    without an event name (each a dead letter naming its window and line)."""
    truth = write_days(data, first, last)
    d = first
    while d <= last:
        if (d - first).days % 3 == 1:
            path = data / "events" / f"{d.isoformat()}.jsonl"
            lines = path.read_bytes().splitlines(keepends=True)
            lines.insert(1, b"garbage that is not json " + d.isoformat().encode() + b"\n")
            lines.insert(3, orjson.dumps({"properties": {
                "time": ms(d, 6), "distinct_id": "x-user", "$insert_id": f"noname-{d}"}})
                + b"\n")
            path.write_bytes(b"".join(lines))
        d += timedelta(days=1)
    return truth


def _dead_letters(work: Path) -> list[tuple[Any, ...]]:
    out = []
    for line in (work / "dead-letters.jsonl").read_bytes().splitlines():
        r = orjson.loads(line)
        out.append((r.get("source"), r.get("line"), r.get("reason"),
                    orjson.dumps(r.get("raw") or r.get("record"))))
    return sorted(out, key=repr)


def _run_range(tmp: Path, faults: dict[str, Any] | None, window_days: int
               ) -> tuple[Any, dict[str, list[int]], list[tuple[Any, ...]], dict[str, Any]]:
    first, last = date(2024, 1, 1), date(2024, 1, 14)
    truth = _dirty_range(tmp / "mp", first, last)
    emu = unlimited_mixpanel(tmp / "mp")
    with emu.running() as mp_url, amplitude(tmp / "amp") as amp_url:
        if faults:
            post_json(mp_url + "/_emulator/faults", faults)
        cfg = config(tmp, mp_url, amp_url, first, last,
                     **{"source.export_window_days": window_days})
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
        stats = get_json(mp_url + "/_emulator/stats")
    got = stored(tmp / "amp")
    assert {k: [v] for k, v in truth.items()} == got
    return result, got, _dead_letters(tmp / "work"), stats


def test_a_multi_day_window_cut_short_is_fetched_whole_with_the_same_dead_letters(
        tmp_path: Path) -> None:
    clean, _, clean_dead, _ = _run_range(tmp_path / "clean", None, 7)
    faulty, _, faulty_dead, stats = _run_range(
        tmp_path / "faulty", {"queue": ["terminated_early", "drop", "split", "terminated_early"],
                              "after_lines": 21}, 7)  # a record, in both windows
    assert stats["faults_injected"] == {"terminated_early": 2, "drop": 1, "split": 1}
    assert clean.exit_code == faulty.exit_code == 0
    assert len(clean_dead) == 2 * 5
    assert faulty_dead == clean_dead


def test_a_long_range_stopped_mid_extraction_resumes_with_every_event_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import Crash, crash_on_call

    from mp2amp.ledger import Ledger
    first, last = date(2023, 1, 1), date(2024, 2, 4)  # 400 days: 58 windows of 7
    truth = write_days(tmp_path / "mp", first, last)
    emu = unlimited_mixpanel(tmp_path / "mp")
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = config(tmp_path, mp_url, amp_url, first, last,
                     **{"source.export_window_days": 7})
        crash_on_call(monkeypatch, Ledger, "mark_extracted", 20)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        before = get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"]
        result = migrate(cfg, resume=True, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
        total = get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"]
    assert result.exit_code == 0
    assert {k: [v] for k, v in truth.items()} == stored(tmp_path / "amp")
    assert 58 <= total <= 58 + 4  # only the windows in flight at the stop asked again
    assert before >= 20
    starts, refunds = journal_counts(tmp_path / "work")
    assert (starts, refunds) == (total, 0)
    assert not list((tmp_path / "work" / "export" / "export").iterdir())


def test_a_multi_day_window_fetched_again_in_another_order_keeps_its_dead_letters_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from migrate_kit import Crash, crash_at_batch
    first, last = date(2024, 1, 1), date(2024, 1, 14)
    data = tmp_path / "mp"
    truth = _dirty_range(data, first, last)
    emu = unlimited_mixpanel(data)
    up = {**FAST, "max_events": 2, "concurrency": 1}
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = config(tmp_path, mp_url, amp_url, first, last,
                     **{"source.export_window_days": 7, "run.concurrency": 1})
        crash_at_batch(monkeypatch, 20)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=up, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        shutil.rmtree(tmp_path / "work" / "staged")  # to free space, say
        for path in (data / "events").iterdir():  # Mixpanel promises no line order
            path.write_bytes(b"".join(reversed(path.read_bytes().splitlines(keepends=True))))
        result = migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
    assert result.exit_code == 0
    assert {k: [v] for k, v in truth.items()} == stored(tmp_path / "amp")
    dead = _dead_letters(tmp_path / "work")
    assert sorted(d[3] for d in dead) == sorted(set(d[3] for d in dead))
    assert len(dead) == 10


def test_windows_without_any_event_are_staged_empty_and_the_run_balances(
        tmp_path: Path) -> None:
    first, last = date(2024, 1, 1), date(2024, 1, 31)
    truth = write_days(tmp_path / "mp", first, last)
    for path in (tmp_path / "mp" / "events").iterdir():
        if path.name[:10] not in ("2024-01-01", "2024-01-02", "2024-01-30"):
            path.unlink()
            truth = {k: v for k, v in truth.items() if not k.startswith(path.name[:10])}
    emu = unlimited_mixpanel(tmp_path / "mp")
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = config(tmp_path, mp_url, amp_url, first, last,
                     **{"source.export_window_days": 7})
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
    assert result.exit_code == 0
    assert {k: [v] for k, v in truth.items()} == stored(tmp_path / "amp")


def test_a_legacy_fall_back_night_in_a_multi_day_window_keeps_both_passes_of_the_hour(
        tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo
    la = ZoneInfo(LA)
    data = tmp_path / "mp"
    (data / "events").mkdir(parents=True)
    (data / "project.json").write_text(orjson.dumps(
        {"project_id": 7, "timezone": LA, "legacy_time": True}).decode())
    truth: dict[str, int] = {}
    first, last = date(2023, 10, 30), date(2023, 11, 12)
    d = first
    while d <= last:
        recs = []
        for k, (h, m, fold) in enumerate(((0, 0, 0), (1, 15, 0), (1, 45, 0), (1, 15, 1),
                                          (1, 45, 1), (2, 30, 0), (23, 59, 0))):
            local = datetime(d.year, d.month, d.day, h, m, fold=fold, tzinfo=la)
            u = int(local.timestamp() * 1000)
            iid = f"{d.isoformat()}-{k}"
            if iid.rsplit("-", 1)[0] in truth:
                continue
            truth[iid] = u
            recs.append({"event": "Edge", "properties": {
                "time": ms(d, h, m), "distinct_id": f"user-{d}", "$insert_id": iid,
                "mp_processing_time_ms": u + 900}})
        (data / "events" / f"{d}.jsonl").write_bytes(
            b"".join(orjson.dumps(r) + b"\n" for r in recs))
        d += timedelta(days=1)
    emu = unlimited_mixpanel(data)
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = config(tmp_path, mp_url, amp_url, first, last,
                     **{"source.export_window_days": 7, "mixpanel.timezone": LA,
                        "mixpanel.legacy_time": True})
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
    assert {k: [v] for k, v in truth.items()} == stored(tmp_path / "amp")
    assert result.exit_code == 0


@pytest.mark.parametrize("window_days", [1, 7])
def test_a_session_across_a_window_edge_is_one_session(tmp_path: Path, window_days: int
                                                       ) -> None:
    data = tmp_path / "mp"
    (data / "events").mkdir(parents=True)
    first, last = date(2024, 1, 1), date(2024, 1, 14)
    d = first
    while d <= last:
        recs = [{"event": "Tick", "properties": {
            "time": t, "distinct_id": "one-user", "$device_id": "dev-1",
            "$insert_id": f"tick-{t}"}} for t in (ms(d, 0, 10), ms(d, 23, 50))]
        (data / "events" / f"{d}.jsonl").write_bytes(
            b"".join(orjson.dumps(r) + b"\n" for r in recs))
        d += timedelta(days=1)
    emu = unlimited_mixpanel(data)
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = config(tmp_path, mp_url, amp_url, first, last,
                     **{"source.export_window_days": window_days})
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
    assert result.exit_code == 0
    got = sorted((e["time"], e["session_id"]) for e in EventStore(tmp_path / "amp").iter_events())
    assert len(got) == 28
    for (t0, s0), (t1, s1) in itertools.pairwise(got):
        assert s1 == (s0 if t1 - t0 <= 30 * 60_000 else t1), (t0, t1, s0, s1)


def test_connections_refused_are_not_counted_as_the_hours_queries(tmp_path: Path) -> None:
    import socket

    from mp2amp.errors import TerminalError
    from mp2amp.extract.ratelimit import RateLimiter
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: every connect is refused
    # one window: its every attempt is refused (with several in flight, the stop cancels
    # the others' requests mid-connect, which may or may not have reached Mixpanel)
    with amplitude(tmp_path / "amp") as amp_url:
        cfg = config(tmp_path, f"http://127.0.0.1:{port}", amp_url, date(2024, 1, 1),
                     date(2024, 1, 2), **{"source.export_window_days": 2})
        with pytest.raises(TerminalError, match=r"(?i)reach|connect"):
            migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
    journal = tmp_path / "work" / "export" / "query-starts.log"
    # what a --resume right after this stop counts as the hour's queries already used
    resumed = RateLimiter(per_hour=60, per_second=3, max_concurrent=4, journal=journal)
    assert len(resumed._starts) == 0, journal_counts(tmp_path / "work")


def test_a_last_window_ending_today_is_cut_at_to_date_and_fetched_once(tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    first = today - timedelta(days=9)  # windows of 7: 7 days, then 3 ending today
    truth = write_days(tmp_path / "mp", first, today)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    truth = {k: v for k, v in truth.items() if v <= now_ms}  # nothing later than now
    for path in (tmp_path / "mp" / "events").iterdir():
        kept = [line for line in path.read_bytes().splitlines(keepends=True)
                if orjson.loads(line)["properties"]["time"] <= now_ms]
        path.write_bytes(b"".join(kept))
    emu = unlimited_mixpanel(tmp_path / "mp")
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = config(tmp_path, mp_url, amp_url, first, today,
                     **{"source.export_window_days": 7})
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
        stats = get_json(mp_url + "/_emulator/stats")["requests"]
    assert result.exit_code == 0
    assert stats["export_requests"] == 2
    assert {k: [v] for k, v in truth.items()} == stored(tmp_path / "amp")
