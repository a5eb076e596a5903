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


def test_batch_is_done_only_after_batch_done(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {})])
    led.batch_sent("w0/0/0", "w", 0, 3)
    led.batch_sent("w0/1/0", "w", 0, 2)
    assert led.done_batches("w") == {} and led.done_batch_count("w") == 0
    assert led.batch_done("w0/0/0", accepted=2, dead_lettered=1, parked=0) == "w"
    led.batch_sent("w0/1/0", "w", 0, 2)  # sent again after a crash: attempts counted
    assert led.done_batch_count("w") == 1
    totals = led.batch_totals()["w"]
    assert totals == {"batches_done": 1, "batches_in_flight": 1, "accepted": 2,
                      "dead_lettered": 1, "parked": 0}
    assert [b.attempts for b in led.batches()] == [1, 2]


def test_parked_events_of_unfinished_batches_are_dropped_for_the_resend(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {})])
    led.batch_sent("b-done", "w", 0, 2)
    led.batch_sent("b-flying", "w", 1, 2)
    led.park("w", "b-done", '["f",1]', b'{"a":1}', "daily_quota")
    led.park("w", "b-flying", '["f",2]', b'{"a":2}', "daily_quota")
    led.park("w", "parked", '["f",3]', b'{"a":3}', "daily_quota")  # parked again on retry
    led.batch_done("b-done", accepted=1, dead_lettered=1, parked=0)
    # b-flying is sent again whole, so its parked row would deliver the event twice
    assert list(led.parked_events()) == [("w", '["f",1]', b'{"a":1}'), ("w", '["f",3]', b'{"a":3}')]
    led.park("w", "b-done", '["f",1]', b'{"a":1}', "daily_quota")  # idempotent by origin
    led.resolve_parked('["f",1]', "accepted")
    assert list(led.parked_events()) == [("w", '["f",3]', b'{"a":3}')]
    assert led.parked_counts() == {"w": {"accepted": 1, "parked": 1}}


def test_parked_events_come_in_event_time_order_a_page_at_a_time(tmp_path: Path) -> None:
    """Read from the ledger a page at a time (the quota can park millions): ordered by a
    numeric ``time``, an event without one (or with a boolean or a string) as time 0, ties
    in the order they were parked; an event parked again while they are read is read as
    it is now."""
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {})])
    events = [b'{"time":30}', b'{"time":2.5}', b'{"a":1}', b'{"time":true}',
              b'{"time":"9"}', b'{"time":-4}', b'{"time":30}', b'{"time":7}']
    for n, event in enumerate(events):
        led.park("w", "parked", f'["f",{n}]', event, "daily_quota")
    read = []
    for _window, origin, event in led.parked_events(page=3):
        read.append((origin, event))
        if origin == '["f",5]':  # parked again meanwhile: its row is updated in place
            led.park("w", "parked", '["f",6]', b'{"time":30,"again":1}', "daily_quota")
    assert read == [('["f",5]', b'{"time":-4}'), ('["f",2]', b'{"a":1}'),
                    ('["f",3]', b'{"time":true}'), ('["f",4]', b'{"time":"9"}'),
                    ('["f",1]', b'{"time":2.5}'), ('["f",7]', b'{"time":7}'),
                    ('["f",0]', b'{"time":30}'), ('["f",6]', b'{"time":30,"again":1}')]
    assert len(list(led.parked_events())) == 8  # the order's temporary table is gone too


def test_loaded_windows_pending_again_are_a_row_each_and_an_older_list_is_read(
        tmp_path: Path) -> None:
    """A loaded window whose copy was gone is pending until staged, then loaded again:
    kept as a meta row per window (an older mp2amp kept one JSON list, rewritten whole per
    window: quadratic over thousands of files); that list is still read, and turned into
    rows when next written."""
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("a", "file", {}), ("b", "file", {}), ("c", "file", {})])
    for w in ("a", "b", "c"):
        led.mark_extracted(w, str(tmp_path / w), 1)
        led.mark_loaded(w, {"batches": 1})
    led.set_meta("unstaged_loaded", '["a"]')  # as an older mp2amp left it, "a" pending
    assert led.unstaged_loaded() == {"a"}
    led.mark_pending("b")
    assert led.unstaged_loaded() == {"a", "b"}
    assert led.get_meta("unstaged_loaded") is None
    led.mark_extracted("a", str(tmp_path / "a2"), 1)
    led.mark_extracted("c", str(tmp_path / "c2"), 1)  # never pending: stays as marked
    assert led.unstaged_loaded() == {"b"}
    assert [(w.window_id, w.state) for w in led.windows()] == [
        ("a", "loaded"), ("b", "pending"), ("c", "extracted")]
    led.replace_windows([("d", "file", {})])
    assert led.unstaged_loaded() == set()


def test_rejects_are_keyed_by_origin_and_transform_ones_replaced_on_replay(
        tmp_path: Path) -> None:
    """A window transformed again keeps its transform rejects until the new attempt's
    replace them in one step (a run stopped in between still lists them)."""
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {})])
    row = ("f.jsonl", 3, "w", "transform", "malformed_json", "not JSON", None, None)
    led.add_rejects([row, row])
    led.add_rejects([("f.jsonl", 4, "w", "amplitude", "invalid_field", "bad", "time", "{}")])
    assert led.reject_counts() == {"w": {"transform": {"malformed_json": 1},
                                         "amplitude": {"invalid_field": 1}}}
    led.forget_window_outcomes("w")
    assert led.reject_counts() == {"w": {"transform": {"malformed_json": 1},
                                         "amplitude": {"invalid_field": 1}}}
    row5 = ("f.jsonl", 5, "w", "transform", "missing_time", "no time", None, None)
    led.replace_transform_rejects("w", [row5])
    assert led.reject_counts() == {"w": {"transform": {"missing_time": 1},
                                         "amplitude": {"invalid_field": 1}}}
    assert [r[:2] for r in led.iter_rejects()] == [("f.jsonl", 4), ("f.jsonl", 5)]


def test_unknown_batch_done_is_a_terminal_error(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(TerminalError, match="never recorded"):
        led.batch_done("nope", accepted=0, dead_lettered=0, parked=0)


def test_newer_schema_version_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path).set_meta("schema_version", "99")
    with pytest.raises(TerminalError, match="schema version 99"):
        Ledger(path)


def test_corrupt_ledger_is_reported_not_traced(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TerminalError, match="is damaged \\(file is not a database\\)"):
        Ledger(path)
    assert not isinstance(sqlite3.DatabaseError, TerminalError)


def test_identity_state_only_moves_extracted_windows_and_keeps_the_report(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("a", "file", {}), ("b", "file", {}), ("c", "file", {})])
    led.mark_extracted("a", "/s/a", 1)
    led.mark_extracted("b", "/s/b", 1)
    led.mark_loaded("b", {})
    led.mark_identity(["a", "b", "c"], {"clusters": 3})
    assert [w.state for w in led.windows()] == ["identity", "loaded", "pending"]
    assert led.get_meta("identity_report") == '{"clusters":3}'
