"""Third-pass review (session 16) of commits c154a3b and d917652: an Export API day's
same-time records ordered by content, each record's ``line`` its place as staged, and every
restaged window checked by a digest.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import API_KEY, Crash, amplitude, crash_at_batch, get_json

from mp2amp.config import Config, load_config
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.errors import TerminalError
from mp2amp.models import SourceRecord
from mp2amp.pipeline import windows as windows_module
from mp2amp.pipeline.migrate import migrate
from mp2amp.pipeline.staging import content_hash
from shared_kit import dead_letter_rows as _dead_letters
from shared_kit import scripted_amplitude as fake_amplitude

SECRET = "emulator-secret"
FAST_MP = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01, "backoff_cap": 0.05}
Answer = Callable[[list[dict[str, Any]]], tuple[int, dict[str, Any]]]

FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.05, "park_delay": 0.05}
T0 = 1_704_103_200_000  # 2024-01-01T10:00:00Z in ms


def _event(n: int, t: int | None = None, **props: Any) -> dict[str, Any]:
    base = {"time": T0 + n * 1000 if t is None else t, "distinct_id": f"device-{n:03d}",
            "$insert_id": f"iid-{n:03d}"}
    return {"event": "Tied", "properties": {**base, **props}}


def _stored_ids(amp_url: str) -> set[str]:
    return {iid for _, iid, _ in get_json(amp_url + "/_emulator/insert_ids")}


def _as_an_earlier_mp2amp_left_it(ledger: Path, *keys: str) -> None:
    """The ledger's window specs without ``keys`` (a work folder an mp2amp before c154a3b
    started: no digest, no ties or lines marks)."""
    db = sqlite3.connect(ledger)
    with db:
        for window_id, spec in db.execute("SELECT window_id, spec FROM windows").fetchall():
            value = orjson.loads(spec)
            for key in keys:
                value.pop(key, None)
            db.execute("UPDATE windows SET spec = ? WHERE window_id = ?",
                       (orjson.dumps(value).decode(), window_id))
    db.close()


def test_an_older_work_folder_resumes_once_its_file_is_put_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: a work folder started by an earlier mp2amp has only its counts compared;
    "Put the source back as it was and run --resume again". The file is rewritten with
    one record more (refused, as it should be), then put back as it was."""
    events = tmp_path / "events.jsonl"
    written = b"".join(orjson.dumps(_event(n)) + b"\n" for n in range(6))
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
        _as_an_earlier_mp2amp_left_it(tmp_path / "work" / "ledger.sqlite", "digest")
        shutil.rmtree(tmp_path / "work" / "staged")
        events.write_bytes(written + orjson.dumps(_event(6)) + b"\n")
        with pytest.raises(TerminalError, match="7 records, not the 6"):
            migrate(cfg, resume=True, upload_overrides=up)
        events.write_bytes(written)  # put back as it was
        result = migrate(cfg, resume=True, upload_overrides=up)
        assert result.exit_code == 0
        assert len(_stored_ids(amp_url)) == 6


# --- helpers for Export API runs ----------------------------------------------------------


def _write_day(data: Path, day: str, records: list[dict[str, Any]]) -> Path:
    (data / "events").mkdir(parents=True, exist_ok=True)
    path = data / "events" / f"{day}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _export_config(tmp: Path, mp_url: str, amp_url: str, **extra: Any) -> Config:
    overrides = {"source.from_date": "2024-01-01", "source.to_date": "2024-01-01",
                 "mixpanel.api_host": mp_url, "amplitude.api_host": amp_url,
                 "run.workdir": str(tmp / "work"), "run.concurrency": 1}
    overrides.update(extra)
    return load_config(None, overrides, env={"AMPLITUDE_API_KEY": API_KEY,
                                             "MIXPANEL_SECRET": SECRET})


@contextmanager
def mixpanel(data: Path) -> Iterator[str]:
    emu = MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret=SECRET,
                                          export_per_hour=None, export_per_second=None))
    with emu.running() as url:
        yield url


def _refusing(device: str) -> Answer:
    """Amplitude refusing ``device``'s events (a 400 naming them), taking the others."""
    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        bad = [i for i, e in enumerate(events) if device in (e.get("user_id"),
                                                                e.get("device_id"))]
        if bad:
            return 400, {"code": 400, "error": "Invalid field values on some events",
                         "events_with_invalid_fields": {"time": bad}}
        return 200, {"code": 200, "events_ingested": len(events), "payload_size_bytes": 10,
                     "server_upload_time": 1700000000000}
    return answer


def _in_content_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Same-time records as an Export API day is staged (ties by content)."""
    return sorted(records, key=lambda r: content_hash(SourceRecord("x", 1, r, None)))


def test_an_earlier_days_arrival_lines_survive_a_refetch_refused_as_empty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A day staged by c154a3b (same-time records in content order, lines as they arrived;
    spec ``ties: content`` and no ``lines``) whose first batch is done with a dead letter.
    Its staged file is deleted; the refetch gives an empty day once (Mixpanel's export
    answers "" at times: reference 1.x, mixpanel-utils), which is refused; then the day
    comes back exactly as before. README: days staged by an earlier mp2amp keep the line
    numbers of their download."""
    content = _in_content_order([_event(n, t=T0) for n in range(4)])
    arrival = content[::-1]  # the content-first record arrived last: line 4
    refused = content[0]["properties"]["distinct_id"]
    data = tmp_path / "mp"
    day = _write_day(data, "2024-01-01", arrival)
    up = {**FAST, "max_events": 2, "concurrency": 1}
    with mixpanel(data) as mp_url, fake_amplitude(_refusing(refused)) as (amp_url, _):
        cfg = _export_config(tmp_path, mp_url, amp_url)
        # as c154a3b staged it: ties by content, lines as they arrived
        monkeypatch.setattr(windows_module, "_keeps_arrival_lines", lambda row, merged: True)
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=up, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        (letter,) = _dead_letters(tmp_path / "work")
        assert (letter["line"], letter["reason"]) == (4, "invalid_field")
        shutil.rmtree(tmp_path / "work" / "staged")
        day.rename(tmp_path / "away.jsonl")  # the day answered empty once
        with pytest.raises(TerminalError, match="0 records, not the 4"):
            migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        (tmp_path / "away.jsonl").rename(day)  # and then as it was
        result = migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
    letters = _dead_letters(tmp_path / "work")
    assert [(d["line"], d["reason"]) for d in letters] == [(4, "invalid_field")]
    assert result.exit_code == 0, result.totals


def test_merged_days_an_earlier_mp2amp_staged_lose_no_event_after_a_refetch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As test_restage_session16_second_review's overlapping days, staged by c154a3b (ties
    by content, lines as they arrived): the merge orders one day's same-time lines by
    line, i.e. arrival order again. Restaged, the run must either give the same batches
    or stop (README: "rather than cut different batches under the same names")."""
    from mp2amp.pipeline.migrate import migrate as run

    local_22h = 1_704_146_400  # 2024-01-01 22:00 wall clock in Los Angeles: 06:00Z the 2nd
    day1 = [_event(n, t=local_22h) for n in range(6)]
    utc = 1_704_175_200
    day2 = [_event(10, t=utc - 3600), _event(11, t=utc + 3600)]
    data = tmp_path / "mp"
    _write_day(data, "2024-01-01", day1)
    _write_day(data, "2024-01-02", day2)
    up = {**FAST, "max_events": 2, "concurrency": 1}
    with mixpanel(data) as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _export_config(tmp_path, mp_url, amp_url, **{
            "source.to_date": "2024-01-02", "mixpanel.timezone": "America/Los_Angeles",
            "mixpanel.legacy_time": True,
            "mixpanel.timezone_changes": [{"since": "2024-01-02", "timezone": "UTC"}]})
        monkeypatch.setattr(windows_module, "_keeps_arrival_lines", lambda row, merged: True)
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            run(cfg, upload_overrides=up, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        shutil.rmtree(tmp_path / "work" / "staged")
        _write_day(data, "2024-01-01", list(reversed(day1)))  # the same day, another order
        try:
            result = run(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        except TerminalError:
            return  # refused: nothing sent under the wrong names
        stored = _stored_ids(amp_url)
    assert result.exit_code == 0
    assert len(stored) == len(day1) + len(day2), sorted(stored)


# --- the fixes' other cases ----------------------------------------------------------------


def test_a_ledger_left_by_the_last_mp2amp_after_a_refusal_resumes_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the first test, resumed by the mp2amp before this fix after the refusal: it kept
    no digest for the window (``restage_digests`` without it), and the refused copy's
    digest is in its spec. A window an earlier resume was checking without a kept digest
    had none: counts only, so the file put back resumes."""
    events = tmp_path / "events.jsonl"
    written = b"".join(orjson.dumps(_event(n)) + b"\n" for n in range(6))
    events.write_bytes(written)
    up = {**FAST, "max_events": 2, "concurrency": 1}
    ledger = tmp_path / "work" / "ledger.sqlite"
    with amplitude(tmp_path / "amp") as amp_url:
        cfg = load_config(None, {"source.files": [str(events)], "amplitude.api_host": amp_url,
                                 "run.workdir": str(tmp_path / "work"),
                                 "run.concurrency": 1}, env={"AMPLITUDE_API_KEY": API_KEY})
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=up)
        monkeypatch.undo()
        _as_an_earlier_mp2amp_left_it(ledger, "digest")
        shutil.rmtree(tmp_path / "work" / "staged")
        events.write_bytes(written + orjson.dumps(_event(6)) + b"\n")
        with pytest.raises(TerminalError, match="7 records, not the 6"):
            migrate(cfg, resume=True, upload_overrides=up)
        db = sqlite3.connect(ledger)
        with db:  # as the mp2amp before this fix left it: no digest kept for the window
            db.execute("UPDATE meta SET value = '{}' WHERE key = 'restage_digests'")
        db.close()
        events.write_bytes(written)
        result = migrate(cfg, resume=True, upload_overrides=up)
        assert result.exit_code == 0
        assert len(_stored_ids(amp_url)) == 6


def _recording(device: str, accepted: set[str]) -> Answer:
    """``_refusing(device)``, keeping the insert_ids of the events it takes."""
    refuse = _refusing(device)

    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        status, body = refuse(events)
        if status == 200:
            # the source's $insert_id, without the suffix the transform gives it
            accepted.update(str(e.get("insert_id")).rsplit("-", 1)[0] for e in events)
        return status, body
    return answer


def test_a_day_staged_before_ties_by_content_keeps_its_order_after_a_refused_refetch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A day staged by an mp2amp before c154a3b (arrival order, arrival lines, no marks,
    no digest: counts only), refused once as empty: fetched again as it was, it is staged
    in its arrival order again (not by content, which the count alone would let through
    with other events in the done batch), and every event is sent once."""
    content = _in_content_order([_event(n, t=T0) for n in range(4)])
    arrival = content[::-1]
    refused = arrival[0]["properties"]["distinct_id"]  # in the done first batch: line 1
    data = tmp_path / "mp"
    day = _write_day(data, "2024-01-01", arrival)
    up = {**FAST, "max_events": 2, "concurrency": 1}
    accepted: set[str] = set()
    with mixpanel(data) as mp_url, fake_amplitude(_recording(refused, accepted)) as (amp_url, _):
        cfg = _export_config(tmp_path, mp_url, amp_url)
        monkeypatch.setattr(windows_module, "_ties_by_content", lambda row, known: False)
        monkeypatch.setattr(windows_module, "_keeps_arrival_lines", lambda row, known: True)
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=up, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        _as_an_earlier_mp2amp_left_it(tmp_path / "work" / "ledger.sqlite", "digest", "ties",
                                      "lines")
        shutil.rmtree(tmp_path / "work" / "staged")
        day.rename(tmp_path / "away.jsonl")
        with pytest.raises(TerminalError, match="0 records, not the 4"):
            migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        (tmp_path / "away.jsonl").rename(day)
        result = migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
    assert [(d["line"], d["reason"]) for d in _dead_letters(tmp_path / "work")] == [
        (1, "invalid_field")]
    assert accepted == {r["properties"]["$insert_id"] for r in arrival[1:]}
    assert result.exit_code == 0, result.totals


def test_merged_days_an_earlier_mp2amp_staged_are_refused_saying_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The third test's group, refetched in the same order: refused all the same (nothing
    tells the orders apart), before anything is fetched or marked, with what to do."""
    local_22h = 1_704_146_400
    utc = 1_704_175_200
    data = tmp_path / "mp"
    _write_day(data, "2024-01-01", [_event(n, t=local_22h) for n in range(6)])
    _write_day(data, "2024-01-02", [_event(10, t=utc - 3600), _event(11, t=utc + 3600)])
    up = {**FAST, "max_events": 2, "concurrency": 1}
    with mixpanel(data) as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _export_config(tmp_path, mp_url, amp_url, **{
            "source.to_date": "2024-01-02", "mixpanel.timezone": "America/Los_Angeles",
            "mixpanel.legacy_time": True,
            "mixpanel.timezone_changes": [{"since": "2024-01-02", "timezone": "UTC"}]})
        monkeypatch.setattr(windows_module, "_keeps_arrival_lines", lambda row, known: True)
        crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=up, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        staged = tmp_path / "work" / "staged"
        kept = tmp_path / "kept"
        shutil.copytree(staged, kept)
        shutil.rmtree(staged)
        for _ in range(2):  # the ledger is left as it was: refused again
            with pytest.raises(TerminalError, match=r"line numbers of their download.*"
                               r"Put the work folder's staged files back"):
                migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(kept, staged)  # put back: the merged file's batches go on
        result = migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        assert result.exit_code == 0, result.totals
        assert len(_stored_ids(amp_url)) == 8


def test_a_changed_export_day_is_named_without_another_order() -> None:
    """A day staged with ties by content has one order for any records: only other
    records change its digest. Files and days staged in arrival order name the order."""
    from mp2amp.ledger import WindowRow
    from mp2amp.pipeline.restage import _what_changed

    def row(kind: str, **spec: Any) -> WindowRow:
        return WindowRow("w", 0, kind, spec, "extracted", None, 6, {})

    day = _what_changed(row("export", day="2024-01-01", ties="content", lines="staged"), 6)
    assert "other records than the 6" in day and "order" not in day
    assert "another order" in _what_changed(row("export", day="2024-01-01"), 6)
    assert "another order" in _what_changed(row("file", path="a.jsonl"), 6)
