"""Session 16, second review: the dead-letter / ledger fix of commit 2d37cba.

The first tests are the defects the review found (each was pinned as an xfail saying what
happened instead; now fixed), then guards of the fixes. A fake Amplitude (a thread on a
loopback port) answers exactly what a test needs.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mp2amp.config import Config
from mp2amp.errors import TerminalError
from mp2amp.pipeline.migrate import EXIT_OK, EXIT_PARKED, migrate
from mp2amp.pipeline.observer import LedgerObserver
from mp2amp.pipeline.status import status
from shared_kit import accept_all, files_config, page_view
from shared_kit import dead_letter_rows as dead_letters
from shared_kit import scripted_amplitude as fake_amplitude

KEY = "session16-second-review-key"
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.05,
        "park_delay": 0.05}
Answer = Callable[[list[dict[str, Any]]], tuple[int, dict[str, Any]]]


ok = accept_all
record = page_view


def config(files: list[Path], workdir: Path, url: str) -> Config:
    config: Config = files_config(files, workdir, url, api_key=KEY)
    return config


class Crash(Exception):
    """Stands for kill -9 at one instant of the load."""


def silenced_answer(state: dict[str, bool], device: str) -> Answer:
    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if state["on"] and any(e.get("device_id") == device for e in events):
            return 400, {"code": 400, "error": "Events silenced for device_id",
                         "silenced_devices": [device]}
        return ok(events)
    return answer


# --- defects --------------------------------------------------------------------------------


def test_old_ledger_dead_letter_of_an_unfinished_batch_is_dropped_by_the_resume(
        tmp_path: Path) -> None:
    day = tmp_path / "day.jsonl"
    rows = [record(n, **({"$device_id": "device-silenced"} if n == 3 else {}))
            for n in range(1, 6)]
    day.write_text("\n".join(map(json.dumps, rows)) + "\n")
    state = {"on": True}
    original = LedgerObserver.on_dead_letter

    def then_crash(self: LedgerObserver, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        raise Crash  # killed before the rest of the batch was answered

    upload = {**FAST, "concurrency": 1}
    with fake_amplitude(silenced_answer(state, "device-silenced")) as (url, _):
        cfg = config([day], tmp_path / "work", url)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(LedgerObserver, "on_dead_letter", then_crash)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=upload)
        # what the former mp2amp (the one that crashed) left: the same row, with no batch
        db = sqlite3.connect(tmp_path / "work" / "ledger.sqlite")
        assert db.execute("SELECT COUNT(*) FROM rejects WHERE stage = 'amplitude'"
                          ).fetchone() == (1,)
        db.execute("ALTER TABLE rejects DROP COLUMN batch_id")
        db.commit()
        db.close()
        state["on"] = False  # the device is no longer silenced: the resend is accepted
        result = migrate(cfg, resume=True, upload_overrides=upload)
    assert (result.totals["read"], result.totals["sent"]) == (5, 5)
    assert result.totals["dead_lettered"] == 0, "sent and dead-lettered at once"
    assert result.totals["balanced"], [w.problem() for w in result.windows]
    assert result.exit_code == EXIT_OK
    assert dead_letters(tmp_path / "work") == []


def test_parked_replay_dead_letter_and_its_parked_row_are_one_step(tmp_path: Path) -> None:
    from mp2amp.ledger import Ledger

    day = tmp_path / "day.jsonl"
    rows = [record(n, **({"$device_id": "device-busy"} if n == 3 else {}))
            for n in range(1, 5)]
    day.write_text("\n".join(map(json.dumps, rows)) + "\n")
    mode = {"now": "quota"}

    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        busy = any(e.get("device_id") == "device-busy" for e in events)
        if busy and mode["now"] == "quota":
            return 429, {"code": 429, "error": "Too many requests for some devices and users",
                         "exceeded_daily_quota_devices": {"device-busy": 500001}}
        if busy and mode["now"] == "silenced":
            return 400, {"code": 400, "error": "Events silenced for device_id",
                         "silenced_devices": ["device-busy"]}
        return ok(events)

    upload = {**FAST, "concurrency": 1, "park_retries": 0}
    original = Ledger.resolve_parked

    def killed_before(self: Ledger, origin: str, outcome: str) -> None:
        if outcome == "dead_lettered":
            raise Crash  # kill -9 after the reject row, before the parked row
        original(self, origin, outcome)

    with fake_amplitude(answer) as (url, _):
        cfg = config([day], tmp_path / "work", url)
        first = migrate(cfg, upload_overrides=upload)
        assert (first.exit_code, first.totals["parked"]) == (EXIT_PARKED, 1)
        mode["now"] = "silenced"
        with pytest.MonkeyPatch.context() as m:
            m.setattr(Ledger, "resolve_parked", killed_before)
            with pytest.raises(Crash):
                migrate(cfg, resume=True, upload_overrides=upload)
        mode["now"] = "ok"
        result = migrate(cfg, resume=True, upload_overrides=upload)
    assert (result.totals["read"], result.totals["sent"], result.totals["parked"]) == (4, 4, 0)
    assert result.totals["dead_lettered"] == 0, "sent and dead-lettered at once"
    assert result.totals["balanced"], [w.problem() for w in result.windows]
    assert result.exit_code == EXIT_OK


def test_a_resume_stopped_mid_window_keeps_the_transform_rejects_in_the_file(
        tmp_path: Path) -> None:
    from mp2amp.load.sender import RetriesExhausted

    day = tmp_path / "day.jsonl"
    day.write_text("\n".join(["{oops", *(json.dumps(record(n)) for n in range(2, 40))]) + "\n")
    up = {"on": True}

    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        return ok(events) if up["on"] else (503, {"code": 503, "error": "Service Unavailable"})

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    with fake_amplitude(answer) as (url, _):
        cfg = config([day], tmp_path / "work", url)
        with pytest.MonkeyPatch.context() as m:  # killed before any batch was done
            m.setattr(LedgerObserver, "on_batch_accepted", crash)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides={**FAST, "concurrency": 1, "max_events": 1,
                                               "max_pending_events": 1000})
        rendered = [(r["line"], r["reason"]) for r in dead_letters(tmp_path / "work")]
        assert rendered == [(1, "malformed_json")]
        up["on"] = False  # the resume stops (Amplitude down) while the window is read again
        with pytest.raises(RetriesExhausted):
            migrate(cfg, resume=True, upload_overrides={
                **FAST, "concurrency": 1, "max_retries": 0, "max_events": 1,
                "max_pending_events": 1})
    assert [(r["line"], r["reason"]) for r in dead_letters(tmp_path / "work")] == rendered
    assert status(tmp_path / "work").totals["rejected"] == 1


def test_a_full_disk_when_an_old_ledger_gets_its_column_says_free_space_and_resume(
        tmp_path: Path) -> None:
    import mp2amp.ledger.store as store

    day = tmp_path / "day.jsonl"
    day.write_text("\n".join(json.dumps(record(n)) for n in range(1, 4)) + "\n")

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    def disk_full(db: sqlite3.Connection, table: str, column: str, kind: str) -> None:
        # what SQLite raises for a write the disk has no room for (SQLITE_FULL)
        if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
            raise sqlite3.OperationalError("database or disk is full")

    with fake_amplitude(ok) as (url, _):
        cfg = config([day], tmp_path / "work", url)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(LedgerObserver, "on_batch_accepted", crash)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=FAST)
        db = sqlite3.connect(tmp_path / "work" / "ledger.sqlite")
        db.execute("ALTER TABLE rejects DROP COLUMN batch_id")  # as the former mp2amp made it
        db.commit()
        db.close()
        with pytest.MonkeyPatch.context() as m:
            m.setattr(store, "add_column", disk_full)
            with pytest.raises(TerminalError) as stopped:
                migrate(cfg, resume=True, upload_overrides=FAST)
    message = str(stopped.value)
    assert "move it away" not in message, message
    assert "disk is full" in message and "--resume" in message, message


def test_a_work_folder_whose_name_is_not_utf8_is_migrated_or_refused_up_front(
        tmp_path: Path) -> None:
    import os

    from mp2amp.errors import Mp2AmpError

    day = tmp_path / "day.jsonl"
    day.write_text("\n".join(json.dumps(record(n)) for n in range(1, 4)) + "\n")
    work = Path(os.fsdecode(os.fsencode(tmp_path) + b"/work-caf\xe9"))  # Latin-1 "cafe"
    with fake_amplitude(ok) as (url, _):
        try:
            result = migrate(config([day], work, url), upload_overrides=FAST)
        except Mp2AmpError as exc:  # refused, saying why: acceptable
            assert "UTF-8" in str(exc), exc
            return
    assert result.exit_code == EXIT_OK
    assert (result.totals["read"], result.totals["sent"]) == (3, 3)


# --- guards ---------------------------------------------------------------------------------


def test_a_413_split_part_dead_letter_is_tied_to_the_batch_the_resume_sends_again(
        tmp_path: Path) -> None:
    """A 413 splits a batch into parts sent apart; a 400 for an event of the second part is
    recorded under the batch's own id, so a crash before the batch is done lets the resume
    forget it (the event is then accepted: sent once, not also dead-lettered)."""
    day = tmp_path / "day.jsonl"
    day.write_text("\n".join(json.dumps(record(n)) for n in range(1, 7)) + "\n")
    state = {"refuse": True}

    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if len(events) > 3:
            return 413, {"code": 413, "error": "Payload too large"}
        bad = [i for i, e in enumerate(events) if e["user_id"] == "user-0005"]
        if bad and state["refuse"]:
            return 400, {"code": 400, "error": "Invalid field values on some events",
                         "events_with_invalid_fields": {"time": bad}}
        return ok(events)

    original = LedgerObserver.on_dead_letter
    recorded: list[str | None] = []

    def then_crash(self: LedgerObserver, *args: Any, **kwargs: Any) -> None:
        recorded.append(kwargs.get("batch_id"))
        original(self, *args, **kwargs)
        raise Crash

    upload = {**FAST, "concurrency": 1}
    with fake_amplitude(answer) as (url, seen):
        cfg = config([day], tmp_path / "work", url)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(LedgerObserver, "on_dead_letter", then_crash)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=upload)
        assert len(seen[0]) == 6 and all(len(r) < 6 for r in seen[1:])  # split in parts
        assert recorded == ["w0/0/0"]
        state["refuse"] = False
        result = migrate(cfg, resume=True, upload_overrides=upload)
    assert result.exit_code == EXIT_OK, [w.problem() for w in result.windows]
    assert (result.totals["sent"], result.totals["dead_lettered"]) == (6, 0)
    assert dead_letters(tmp_path / "work") == []


def test_an_event_accepted_or_parked_drops_the_dead_letter_an_older_ledger_left(
        tmp_path: Path) -> None:
    """A dead letter with no batch (an older ledger's, or a parked replay's) is dropped in the
    step that gives its event another outcome: accepted in a batch, parked, or accepted as a
    parked replay. Other records' rejects stay."""
    from mp2amp.ledger import Ledger

    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {})])
    led.add_rejects([("f", n, "w", "amplitude", "silenced", "400", None, "{}")
                     for n in (1, 2, 3, 4)])
    led.add_rejects([("f", 9, "w", "transform", "malformed_json", "not JSON", None, None)])
    led.batch_sent("b", "w", 0, 2)
    led.park("w", "b", '["f",2]', b"{}", "daily_quota")
    led.batch_done("b", accepted=1, dead_lettered=0, parked=1, accepted_origins=[("f", 1)])
    led.park("w", "b", '["f",3]', b"{}", "daily_quota")
    led.resolve_parked('["f",3]', "accepted")
    assert [r[:2] for r in led.iter_rejects()] == [("f", 4), ("f", 9)]
    led.close()


def test_a_read_only_folder_when_an_old_ledger_gets_its_column_says_resume(
        tmp_path: Path) -> None:
    """An unwritable work folder while an older ledger gets its column: the usual message
    (make it writable, --resume), not 'move it away to start a new run'."""
    import mp2amp.ledger.store as store
    from mp2amp.ledger import Ledger

    Ledger(tmp_path / "ledger.sqlite").close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("ALTER TABLE rejects DROP COLUMN batch_id")
    db.commit()
    db.close()

    def read_only(db: sqlite3.Connection, table: str, column: str, kind: str) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    from mp2amp.pipeline.diskspace import stop_on_storage_errors

    with pytest.MonkeyPatch.context() as m, pytest.raises(TerminalError) as stopped:
        m.setattr(store, "add_column", read_only)
        with stop_on_storage_errors(tmp_path):
            Ledger(tmp_path / "ledger.sqlite")
    message = str(stopped.value)
    assert "move it away" not in message and "cannot write" in message, message
    assert "--resume" in message, message


def test_a_work_folder_not_utf8_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    import os

    day = tmp_path / "day.jsonl"
    day.write_text(json.dumps(record(1)) + "\n")
    work = Path(os.fsdecode(os.fsencode(tmp_path) + b"/work-caf\xe9"))
    with pytest.raises(TerminalError) as refused:
        migrate(config([day], work, "http://127.0.0.1:9"), upload_overrides=FAST)
    assert refused.value.exit_code == 2
    assert "work-caf\\xe9" in str(refused.value) and "UTF-8" in str(refused.value)
    assert not work.exists(), "refused before the work folder was made"
