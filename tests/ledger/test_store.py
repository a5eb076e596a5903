import sqlite3
from pathlib import Path

import pytest

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger


def test_windows_keep_their_order_and_state_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    led = Ledger(path)
    led.add_windows([("2024-01-02", "export", {"day": "2024-01-02"}),
                     ("2024-01-01", "export", {"day": "2024-01-01"})])
    led.mark_extracted("2024-01-02", "/w/a", 10)
    led.close()
    led = Ledger(path)
    led.add_windows([("2024-01-02", "export", {"day": "x"})])  # known: kept as it was
    rows = led.windows()
    assert [r.window_id for r in rows] == ["2024-01-02", "2024-01-01"]
    assert rows[0].state == "extracted" and rows[0].records == 10
    assert rows[0].spec == {"day": "2024-01-02"}
    assert rows[1].state == "pending"


def test_batch_is_done_only_after_batch_done_and_parked_events_survive(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {})])
    led.batch_sent("w:0", "w", 0, 3)
    led.batch_sent("w:1", "w", 1, 2)
    assert led.done_batches("w") == {}
    led.batch_done("w:0", accepted=1, dead_lettered=1, parked_events=[(b'{"a":1}', "f:1", "quota")])
    led.batch_sent("w:1", "w", 1, 2)  # resent after a crash: attempts counted
    done = led.done_batches("w")
    assert list(done) == [0] and done[0].accepted == 1 and done[0].parked == 1
    totals = led.batch_totals()["w"]
    assert totals == {"batches_done": 1, "batches_in_flight": 1, "accepted": 1,
                      "dead_lettered": 1, "parked": 1}
    assert [b.attempts for b in led.batches()] == [1, 2]
    [(pid, window, event, origin)] = led.parked_events()
    assert (window, event, origin) == ("w", b'{"a":1}', "f:1")
    led.resolve_parked(pid, "accepted")
    assert led.parked_events() == []
    assert led.parked_counts() == {"w": {"accepted": 1}}


def test_unknown_batch_done_is_a_terminal_error(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(TerminalError, match="never recorded"):
        led.batch_done("nope", accepted=0, dead_lettered=0)


def test_newer_schema_version_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path).set_meta("schema_version", "99")
    with pytest.raises(TerminalError, match="schema version 99"):
        Ledger(path)


def test_corrupt_ledger_is_reported_not_traced(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TerminalError, match="cannot be opened"):
        Ledger(path)
    assert not isinstance(sqlite3.DatabaseError, TerminalError)
