"""Second review (session 19) of two fixes: a duplicate's value counts taken back
(8699c31) and the wrong-timezone guard on a resume (aae11cb). Driven through the real
``migrate`` against the local Amplitude emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    Crash,
    amplitude,
    crash_at_batch,
    crash_on_call,
    make_config,
    stored_counts,
)

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.timecheck import _all_sent

HOUR = 3600
DAY = 24 * HOUR
JAN = 1_704_067_200  # 2024-01-01 00:00 UTC
REVENUE = {"transform.revenue": {"price": "price"}}


def _valued_day(start: int, n: int, prefix: str) -> list[dict[str, Any]]:
    """``n`` events of one UTC day; every 10th a Buy with a price that is not a number and
    a bio that is cut, each Buy exported twice (a duplicate, the same line again)."""
    rows: list[dict[str, Any]] = []
    for i in range(n):
        props: dict[str, Any] = {"time": start + 30 * i, "distinct_id": f"u{i % 40}",
                                 "$insert_id": f"{prefix}-{i:06d}"}
        if i % 10 == 0:
            props.update(price="$19.99", bio="x" * 1500)
            rows += [{"event": "Buy", "properties": props}] * 2
        else:
            rows.append({"event": "View", "properties": props})
    return rows


def _valued_input(tmp_path: Path, days: int = 2, n: int = 300) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for d in range(days):
        (folder / f"2024-01-0{d + 1}.jsonl").write_bytes(b"".join(
            orjson.dumps(r) + b"\n" for r in _valued_day(JAN + d * DAY, n, f"d{d}")))
    return folder


def _expected(days: int = 2, n: int = 300) -> dict[str, dict[str, int]]:
    buys = days * ((n + 9) // 10)
    return {"flattened": {}, "other": {"revenue_not_a_number": buys},
            "truncated": {"bio": buys}}


def _cfg(events: Path, work: Path, url: str, **extra: Any) -> Any:
    return make_config(events, work, url, **{"mixpanel.timezone": "UTC", **REVENUE, **extra})


# --- (a) value counts -----------------------------------------------------------------

def test_import_files_resume_of_a_finished_run_counts_duplicates_once(tmp_path: Path) -> None:
    """README: a duplicate "is counted once, as it is sent once", and a resumed run's
    report "covers the whole migration": the same report as the first run's."""
    events = _valued_input(tmp_path)
    cfg = _cfg(events, tmp_path / "work", "http://127.0.0.1:9",
               **{"amplitude.output_dir": str(tmp_path / "out")})
    first = migrate(cfg)
    assert first.exit_code == EXIT_OK
    assert first.as_dict()["values"] == _expected()
    again = migrate(cfg, resume=True)
    assert again.exit_code == EXIT_OK
    assert again.as_dict()["values"] == _expected()


@pytest.mark.parametrize("crash_at", [1, 2])
def test_api_resume_after_a_crash_counts_like_a_straight_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int) -> None:
    events = _valued_input(tmp_path)
    with amplitude(tmp_path / "amp") as url:
        crash_at_batch(monkeypatch, crash_at)
        with pytest.raises(Crash):
            migrate(_cfg(events, tmp_path / "work", url), upload_overrides={"concurrency": 1})
        monkeypatch.undo()
        result = migrate(_cfg(events, tmp_path / "work", url), resume=True,
                         upload_overrides={"concurrency": 1})
        assert sum(stored_counts(url).values()) == 600
        again = migrate(_cfg(events, tmp_path / "work", url), resume=True,
                        upload_overrides={"concurrency": 1})  # finished: only replayed
    assert result.exit_code == EXIT_OK and again.exit_code == EXIT_OK
    assert result.as_dict()["values"] == _expected() == again.as_dict()["values"]


@pytest.mark.parametrize("workers", [0, 2])
def test_spilled_dedup_and_workers_count_each_sent_buy_once(
        tmp_path: Path, workers: int) -> None:
    """Dedup past its memory budget (1,000 digests: spilled), 2 windows of 2,200 lines."""
    events = _valued_input(tmp_path, n=2000)
    with amplitude(tmp_path / "amp") as url:
        result = migrate(_cfg(events, tmp_path / "work", url,
                              **{"run.memory_budget": 1000, "run.transform_workers": workers}))
    assert result.exit_code == EXIT_OK
    assert result.totals["duplicate"] == 400
    assert result.as_dict()["values"] == _expected(n=2000)


# --- (b) the wrong-timezone guard on a resume -------------------------------------------

SHIFTED = {"mixpanel.timezone": "UTC"}  # a legacy UTC-8 wall clock read as UTC
WARN = {**SHIFTED, "mixpanel.time_check": "warn"}


def _shifted_input(tmp_path: Path) -> Path:
    """300 web events of a legacy project at UTC-8 (``time`` its wall clock), ingested
    1.5 s after they happened."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "2024-01-01.jsonl").write_bytes(b"".join(orjson.dumps({
        "event": "Viewed", "properties": {
            "time": JAN + 60 * i - 8 * HOUR, "distinct_id": f"user-{i % 50:04d}",
            "$insert_id": f"d0-{i:06d}", "$mp_api_timestamp_ms": (JAN + 60 * i) * 1000,
            "mp_processing_time_ms": (JAN + 60 * i) * 1000 + 1500}}) + b"\n"
        for i in range(300)))
    return folder


def test_a_resume_after_the_last_batch_was_accepted_only_reports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch is done (Amplitude took all 300 and the ledger recorded it), the crash
    came before ``mark_loaded``: the resume sends nothing (``time_check = "warn"`` shows it:
    0 requests), so ``stop`` protects nothing and, as for a finished run, only reports."""
    events = _shifted_input(tmp_path)
    with amplitude(tmp_path / "amp") as url:
        crash_on_call(monkeypatch, Ledger, "mark_loaded", 1)
        with pytest.raises(Crash):
            migrate(make_config(events, tmp_path / "work", url, **WARN))
        monkeypatch.undo()
        assert sum(stored_counts(url).values()) == 300
        batches = Ledger(tmp_path / "work" / "ledger.sqlite").batches()
        assert batches and all(b.state == "done" for b in batches)
        try:
            result = migrate(make_config(events, tmp_path / "work", url, **SHIFTED),
                             resume=True)
        except TerminalError as stop:
            pytest.fail(f"stopped though nothing is left to send: {stop}")
        assert result.exit_code == EXIT_OK
        assert result.load["requests"] == 0
        assert result.as_dict()["time_check"]["looks_offset_minutes"] == -480


@pytest.mark.parametrize(("cut", "states", "left"), [
    (None, ["done"], True),            # not cut whole yet: more batches may follow
    (2, ["done"], True),               # cut in 2, one recorded
    (2, ["done", "sent"], True),       # one sent with no answer recorded: sent again
    (1, ["done"], False),              # every batch done, not yet marked loaded
    (0, [], False),                    # nothing to send (all duplicates or rejected)
])
def test_a_window_is_finished_once_every_batch_it_was_cut_into_is_done(
        tmp_path: Path, cut: int | None, states: list[str], left: bool) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        ledger.add_windows([("a", "file", {}), ("b", "file", {})])
        for w in ("a", "b"):
            ledger.mark_extracted(w, str(tmp_path / w), 10)
        ledger.mark_loaded("a", {"batches": 1})
        if cut is not None:
            ledger.set_window_counts("b", {"batches": cut})
        for seq, state in enumerate(states):
            ledger.batch_sent(f"b{seq}", "b", seq, 5)
            if state == "done":
                ledger.batch_done(f"b{seq}", accepted=5, dead_lettered=0, parked=0)
        assert _all_sent(ledger.batch_counts(), ledger.windows()) is not left
    finally:
        ledger.close()
