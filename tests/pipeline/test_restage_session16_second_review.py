"""Second-pass review (session 16) of commit c154a3b: Export API days staged with ties by
content, a digest of every staged window checked when it is staged again, and the plan's
existence check.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import API_KEY, Crash, amplitude, crash_at_batch, get_json

from mp2amp.config import Config, load_config
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate
from shared_kit import dead_letter_rows as _dead_letters
from shared_kit import scripted_amplitude as fake_amplitude

SECRET = "emulator-secret"
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.05, "park_delay": 0.05}
FAST_MP = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01, "backoff_cap": 0.05}
T0 = 1_704_103_200_000  # 2024-01-01T10:00:00Z in ms
Answer = Callable[[list[dict[str, Any]]], tuple[int, dict[str, Any]]]


def _event(n: int, t: int | None = None, **props: Any) -> dict[str, Any]:
    base = {"time": T0 + n * 1000 if t is None else t, "distinct_id": f"device-{n:03d}",
            "$insert_id": f"iid-{n:03d}"}
    return {"event": "Tied", "properties": {**base, **props}}


def _write_day(data: Path, day: str, records: list[dict[str, Any]]) -> None:
    (data / "events").mkdir(parents=True, exist_ok=True)
    (data / "events" / f"{day}.jsonl").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in records))


def _config(tmp: Path, mp_url: str, amp_url: str, **extra: Any) -> Config:
    overrides = {"source.from_date": "2024-01-01", "source.to_date": "2024-01-01",
                 "mixpanel.api_host": mp_url, "amplitude.api_host": amp_url,
                 "run.workdir": str(tmp / "work"), "run.concurrency": 1}
    overrides.update(extra)
    return load_config(None, overrides, env={"AMPLITUDE_API_KEY": API_KEY,
                                             "MIXPANEL_SECRET": SECRET})


def _ok(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    return 200, {"code": 200, "events_ingested": len(events), "payload_size_bytes": 10,
                 "server_upload_time": 1700000000000}


@contextmanager
def mixpanel(data: Path) -> Iterator[str]:
    emu = MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret=SECRET,
                                          export_per_hour=None, export_per_second=None))
    with emu.running() as url:
        yield url


def test_a_dead_letter_of_a_done_batch_survives_a_day_fetched_again_in_another_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Amplitude refuses event 0 of the first (done) batch: a dead letter at line 1. The
    staged file is deleted and Mixpanel gives the day in another order: line 1 is now the
    event without a name, which the transform rejects. Both must stay dead letters."""
    data = tmp_path / "mp"
    records = [_event(n) for n in range(5)]
    records.append({"event": "", "properties": {"time": T0 + 9_000, "distinct_id": "d9"}})

    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        bad = [i for i, e in enumerate(events) if e.get("user_id") == "device-000"
               or e.get("device_id") == "device-000"]
        if bad:
            return 400, {"code": 400, "error": "Invalid field values on some events",
                         "events_with_invalid_fields": {"time": bad}}
        return _ok(events)

    _write_day(data, "2024-01-01", records)
    up = {**FAST, "max_events": 2, "concurrency": 1}
    with mixpanel(data) as mp_url, fake_amplitude(answer) as (amp_url, _):
        cfg = _config(tmp_path, mp_url, amp_url)
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=up, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        assert [d["reason"] for d in _dead_letters(tmp_path / "work")] == [
            "invalid_field", "missing_event_name"]  # lines 1 and 6 of the first fetch
        shutil.rmtree(tmp_path / "work" / "staged")
        _write_day(data, "2024-01-01", list(reversed(records)))
        result = migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
    letters = _dead_letters(tmp_path / "work")
    assert sorted(d["reason"] for d in letters) == ["invalid_field", "missing_event_name"]
    assert result.totals["balanced"], result.totals


def _stored_ids(amp_url: str) -> set[str]:
    return {iid for _, iid, _ in get_json(amp_url + "/_emulator/insert_ids")}


def test_overlapping_export_days_merged_again_after_a_refetch_lose_no_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A legacy project (local times) that moved from Los Angeles to UTC on Jan 2: Jan 1's
    evening (local) is Jan 2's morning in UTC, so the two days overlap and are merged
    (overlaps.py). Six events of one time on Jan 1; the merged file's batches of two are
    cut, two accepted, then a crash; the staged files are deleted and Jan 1 comes back in
    another order (README: Mixpanel promises no order; a day fetched again gives the
    same batches)."""
    local_22h = 1_704_146_400  # 2024-01-01 22:00 wall clock in Los Angeles: 06:00Z the 2nd
    day1 = [_event(n, t=local_22h) for n in range(6)]
    utc = 1_704_175_200  # 2024-01-02 06:00Z, in the UTC the project changed to that day
    day2 = [_event(10, t=utc - 3600), _event(11, t=utc + 3600)]
    data = tmp_path / "mp"
    _write_day(data, "2024-01-01", day1)
    _write_day(data, "2024-01-02", day2)
    up = {**FAST, "max_events": 2, "concurrency": 1}
    with mixpanel(data) as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _config(tmp_path, mp_url, amp_url, **{
            "source.to_date": "2024-01-02", "mixpanel.timezone": "America/Los_Angeles",
            "mixpanel.legacy_time": True,
            "mixpanel.timezone_changes": [{"since": "2024-01-02", "timezone": "UTC"}]})
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=up, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        with contextlib.closing(Ledger(tmp_path / "work" / "ledger.sqlite")) as led:
            assert led.merged_into() == {"export:2024-01-02": "export:2024-01-01"}
        assert len(_stored_ids(amp_url)) == 4  # two batches accepted, then the crash
        shutil.rmtree(tmp_path / "work" / "staged")
        _write_day(data, "2024-01-01", list(reversed(day1)))  # the same day, another order
        result = migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        stored = _stored_ids(amp_url)
    assert result.exit_code == 0  # balanced: the loss is silent
    assert len(stored) == len(day1) + len(day2), sorted(stored)


def test_a_file_written_again_with_its_keys_in_another_order_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file's digest is a checksum of each line as written (what the records say would
    cost staging ~0.6 us a record, on the hot path): the same records written again with
    their keys sorted stop the resume, and the message names the file and says its
    records' text changed (not just "other records"); put back as it was, it resumes."""
    from mp2amp.errors import TerminalError

    events = tmp_path / "events.jsonl"
    records = [_event(n) for n in range(6)]
    written = b"".join(orjson.dumps(r) + b"\n" for r in records)
    events.write_bytes(written)
    up = {**FAST, "max_events": 2, "concurrency": 1}
    with amplitude(tmp_path / "amp") as amp_url:
        cfg = load_config(None, {"source.files": [str(events)], "amplitude.api_host": amp_url,
                                 "run.workdir": str(tmp_path / "work"),
                                 "run.concurrency": 1}, env={"AMPLITUDE_API_KEY": API_KEY})
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=up)
        monkeypatch.undo()
        shutil.rmtree(tmp_path / "work" / "staged")
        size = events.stat().st_size
        # exported again: the same records, in the same order, their keys sorted
        events.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n"
                                    for r in records))
        assert events.stat().st_size == size
        with pytest.raises(TerminalError) as stopped:
            migrate(cfg, resume=True, upload_overrides=up)
        message = str(stopped.value)
        assert str(events) in message
        assert "6 records whose text differs" in message
        assert "keys in another order" in message
        assert "Put the source back as it was" in message
        events.write_bytes(written)  # put back as it was: the resume goes on
        result = migrate(cfg, resume=True, upload_overrides=up)
        assert result.exit_code == 0
        assert len(_stored_ids(amp_url)) == 6


# --- fixes: an Export API day's lines are its records' places as staged --------------------


def _day_records(source: str, order: list[int]) -> list[Any]:
    """Six same-time records, a copy of one of them and a line that did not parse,
    numbered as they arrive in ``order``."""
    from mp2amp.errors import Rejection
    from mp2amp.models import SourceRecord

    records: list[Any] = [_event(n, t=T0) for n in range(6)]
    copy = orjson.loads(orjson.dumps(records[2]))
    copy["properties"]["mp_processing_time_ms"] = T0 + 5_000
    records.append(copy)
    out: list[Any] = []
    for line, at in enumerate(order, start=1):
        if at == len(records):  # the line that did not parse: its message names its line
            rej = Rejection("malformed_json", f"{source} line {line} is not JSON: 'x'",
                            None, source, line, "x")
            out.append(SourceRecord(source, line, None, rej))
        else:
            r = records[at]
            out.append(SourceRecord(source, line, r, None, orjson.dumps(r)))
    return out


def _lines(path: Path) -> list[tuple[int, Any, str | None]]:
    from mp2amp.pipeline.staging import read_staged

    return [(r.line, r.record, None if r.rejection is None else r.rejection.message)
            for r in read_staged(path)]


def test_an_export_day_numbers_its_lines_by_their_place_as_staged(tmp_path: Path) -> None:
    import random

    from mp2amp.pipeline.staging import stage

    source = "export:2024-01-01"
    first = stage(_day_records(source, list(range(8))), tmp_path / "first", by_content=True)
    staged = _lines(tmp_path / "first")
    assert [line for line, _, _ in staged] == list(range(1, 9))
    (bad,) = [(line, msg) for line, _, msg in staged if msg is not None]
    assert bad == (1, f"{source} line 1 is not JSON: 'x'")  # no time: it sorts first
    for seed in range(4):
        order = random.Random(seed).sample(range(8), 8)
        again = stage(_day_records(source, order), tmp_path / f"again{seed}", chunk=3,
                      by_content=True)
        assert (again, again.digest) == (first, first.digest)
        assert _lines(tmp_path / f"again{seed}") == staged


def test_a_day_an_earlier_mp2amp_staged_by_content_keeps_its_arrival_lines(
        tmp_path: Path) -> None:
    """Its dead letters were keyed by the lines its records arrived at (fetched again in
    that order, they are the same); files keep their own lines, and so does a day staged
    in arrival order."""
    from mp2amp.ledger import WindowRow
    from mp2amp.pipeline.staging import stage
    from mp2amp.pipeline.windows import _keeps_arrival_lines, _ties_by_content

    order = [7, 5, 3, 1, 0, 2, 4, 6]
    stage(_day_records("export:2024-01-01", order), tmp_path / "kept", by_content=True,
          keep_lines=True)
    stage(_day_records("a.jsonl", order), tmp_path / "file")
    for path in ("kept", "file"):
        lines = [line for line, _, _ in _lines(tmp_path / path)]
        assert sorted(lines) == list(range(1, 9)) and lines != list(range(1, 9))

    def row(records: int, **spec: Any) -> WindowRow:
        return WindowRow("export:2024-01-01", 0, "export", {"day": "2024-01-01", **spec},
                         "extracted", None, records, {})

    assert _keeps_arrival_lines(row(8, ties="content"), set())  # an earlier mp2amp's
    assert not _keeps_arrival_lines(row(8, ties="content", lines="staged"), set())
    assert not _keeps_arrival_lines(row(0), set())  # never staged: numbered by place
    # merged away (its records in another window's file): staged before all the same
    assert _keeps_arrival_lines(row(0, ties="content"), {"export:2024-01-01"})
    assert not _ties_by_content(row(0), {"export:2024-01-01"})  # arrival order kept


def test_overlapping_export_days_merge_in_content_order_whatever_their_arrival(
        tmp_path: Path) -> None:
    from mp2amp.pipeline.staged_merge import merge_staged
    from mp2amp.pipeline.staging import stage

    merged: list[bytes] = []
    for n, order in enumerate(([0, 1, 2, 3, 4, 5, 6, 7], [6, 4, 2, 0, 7, 5, 3, 1])):
        stage(_day_records("export:2024-01-01", order), tmp_path / f"a{n}", by_content=True)
        stage(_day_records("export:2024-01-02", order[::-1]), tmp_path / f"b{n}",
              by_content=True)
        rank = {"export:2024-01-01": 0, "export:2024-01-02": 1}
        merge_staged([tmp_path / f"a{n}", tmp_path / f"b{n}"], tmp_path / f"m{n}", rank)
        merged.append((tmp_path / f"m{n}").read_bytes())
    assert merged[0] == merged[1]
