"""Exact duplicates: same Amplitude insert_id (Mixpanel's dedup key); spilled to SQLite past a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.transform.dedup import Deduper, insert_id_digest
from mp2amp.transform.insert_id import event_insert_id


def rec(name: str = "Login", who: str = "u1", t: int = 1, **extra: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"distinct_id": who, "time": t, "$insert_id": "x",
                                          **extra}}


def iid(record: dict[str, Any]) -> str:
    """The insert_id the transformer gives this record (time in seconds -> ms)."""
    return event_insert_id(record["event"], record["properties"],
                           record["properties"]["time"] * 1000)


def test_exact_copy_is_a_duplicate() -> None:
    d = Deduper()
    assert not d.is_duplicate(iid(rec()))
    assert d.is_duplicate(iid(rec()))
    assert d.is_duplicate(iid(rec()))
    assert d.duplicates == 2


def test_reused_insert_id_on_another_event_user_or_time_is_kept() -> None:
    d = Deduper()
    ids = [iid(rec(who="u1")), iid(rec(who="u2")), iid(rec(name="Logout")), iid(rec(t=2)),
           iid(rec(**{"$insert_id": "y"}))]
    assert [d.is_duplicate(i) for i in ids] == [False] * 5
    assert d.duplicates == 0


def test_a_second_delivery_with_other_ingestion_stamps_is_a_duplicate() -> None:
    d = Deduper()
    assert not d.is_duplicate(iid(rec(mp_processing_time_ms=10)))
    assert d.is_duplicate(iid(rec(mp_processing_time_ms=11, **{"$mp_api_timestamp_ms": 9})))


def test_without_insert_id_the_content_decides() -> None:
    """Copies of one stored event (the same ingestion stamps, delivered another way) are
    one; Mixpanel never dedups without ``$insert_id``, so two stored events (other stamps)
    are two, however alike."""
    d = Deduper()
    a = {"event": "e", "properties": {"distinct_id": "u", "time": 5, "a": 1, "b": 2,
                                      "mp_processing_time_ms": 10}}
    b = {"event": "e", "properties": {"$mp_api_endpoint": "api-eu.mixpanel.com", "b": 2,
                                      "a": 1, "time": 5, "distinct_id": "u", "token": "t",
                                      "mp_processing_time_ms": 10}}
    c = {"event": "e", "properties": {"distinct_id": "u", "time": 5, "a": 1, "b": 3,
                                      "mp_processing_time_ms": 10}}
    stored_twice = {"event": "e", "properties": {"distinct_id": "u", "time": 5, "a": 1, "b": 2,
                                                 "mp_processing_time_ms": 11}}
    assert [d.is_duplicate(iid(r)) for r in (a, b, c, stored_twice)] == [
        False, True, False, False]


def test_digest_is_16_bytes_for_any_id() -> None:
    assert len(insert_id_digest("x" * 500)) == len(insert_id_digest("\ud800")) == 16


def test_spill_keeps_the_answers(tmp_path: Path) -> None:
    small = Deduper(memory_budget=8, spill_dir=tmp_path)
    big = Deduper()
    stream = [rec(t=i % 37) for i in range(300)]
    assert [small.is_duplicate(iid(r)) for r in stream] == [
        big.is_duplicate(iid(r)) for r in stream]
    assert small.spills > 0 and small.duplicates == big.duplicates == 300 - 37
    assert len(small) == 37
    small.close()
    assert list(tmp_path.iterdir()) == []


def test_persisted_state_resumes(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite"
    with Deduper(path=path) as first:
        assert not first.is_duplicate(iid(rec()))
    with Deduper(path=path) as second:
        assert second.is_duplicate(iid(rec()))
        assert not second.is_duplicate(iid(rec(t=2)))
        assert len(second) == 2


@given(
    stream=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 5)), max_size=80),
    budget=st.integers(1, 6),
)
@settings(max_examples=40, deadline=None)
def test_first_of_each_distinct_record_passes(stream: list[tuple[str, int]], budget: int) -> None:
    with Deduper(memory_budget=budget) as d:
        passed = [r for r in stream if not d.is_duplicate(iid(rec(name=r[0], t=r[1])))]
    assert passed == list(dict.fromkeys(stream))


def test_only_checkpointed_state_survives_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite"
    first = Deduper(path=path, memory_budget=2)
    assert not first.is_duplicate(iid(rec(t=1)))
    first.checkpoint()
    for t in range(2, 9):  # past the budget: spilled to the file, not committed
        assert not first.is_duplicate(iid(rec(t=t)))
    assert first.spills > 0
    first._db.close()  # type: ignore[union-attr]  # the process dies: no commit, no close()
    # a crash now: the next run sees only the checkpoint, so t >= 2 are new again
    with Deduper(path=path) as second:
        assert second.is_duplicate(iid(rec(t=1)))
        assert not second.is_duplicate(iid(rec(t=5)))


def ms(record: dict[str, Any]) -> int:
    return int(record["properties"]["time"] * 1000)


def test_in_time_order_only_the_spill_boundary_asks_the_disk(tmp_path: Path) -> None:
    small = Deduper(memory_budget=5, spill_dir=tmp_path)
    stream = [rec(t=i // 3) for i in range(300)]  # each record three times, times ascending
    assert [small.is_duplicate(iid(r), ms(r)) for r in stream] == [
        i % 3 > 0 for i in range(300)]
    # only the copies sharing the last spilled record's time ask the disk
    assert small.spills > 10 and small.disk_lookups <= 2 * small.spills
    small.close()


def test_out_of_order_times_ask_the_disk_and_still_find_every_repeat(tmp_path: Path) -> None:
    small = Deduper(memory_budget=3, spill_dir=tmp_path)
    first = [rec(t=t) for t in range(50)]
    again = [rec(t=t) for t in (3, 40, 17, 0, 49)]  # a second, overlapping window
    new = [rec(t=t, who="u9") for t in (5, 25)]
    assert not any(small.is_duplicate(iid(r), ms(r)) for r in first)
    assert all(small.is_duplicate(iid(r), ms(r)) for r in again)
    assert not any(small.is_duplicate(iid(r), ms(r)) for r in new)
    assert small.disk_lookups > 0 and small.duplicates == len(again)
    small.close()


@given(times=st.lists(st.integers(0, 30), max_size=120), budget=st.integers(1, 6),
       unknown=st.sets(st.integers(0, 119), max_size=10))
@settings(max_examples=40, deadline=None)
def test_any_order_and_unknown_times_give_the_in_memory_answers(
        times: list[int], budget: int, unknown: set[int]) -> None:
    stream = [rec(t=t) for t in times]
    with Deduper(memory_budget=budget) as small, Deduper() as big:
        got = [small.is_duplicate(iid(r), None if i in unknown else ms(r))
               for i, r in enumerate(stream)]
        assert got == [big.is_duplicate(iid(r)) for r in stream]


def test_the_spilled_span_survives_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite"
    with Deduper(path=path, memory_budget=2) as first:
        for t in (10, 11, 12, 13):
            assert not first.is_duplicate(iid(rec(t=t)), t * 1000)
    with Deduper(path=path) as second:
        assert second.is_duplicate(iid(rec(t=12)), 12_000)  # inside the span: asked
        assert not second.is_duplicate(iid(rec(t=20)), 20_000)
        assert second.disk_lookups == 1


def test_a_file_of_the_earlier_format_is_read_as_digests_of_unknown_time(
        tmp_path: Path) -> None:
    import sqlite3

    from mp2amp.transform.dedup import insert_id_digest

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY) WITHOUT ROWID")
    db.execute("INSERT INTO seen VALUES (?)", (insert_id_digest("old-1"),))
    db.commit()
    db.close()
    with Deduper(path=path) as dedup:
        assert dedup.is_duplicate("old-1", 1_700_000_000_000)  # found whatever its time
        assert not dedup.is_duplicate("new-1", 1_700_000_000_000)
        assert len(dedup) == 2


def test_spilled_digests_are_found_by_time_and_digest_only(tmp_path: Path) -> None:
    # The same digest in another second is another record for the disk (ids hash the
    # time in whole seconds, so it cannot occur); an unknown time finds it at any time.
    with Deduper(memory_budget=1, spill_dir=tmp_path) as dedup:
        assert not dedup.is_duplicate("a", 1_000)
        assert not dedup.is_duplicate("b", 2_000)  # spills "a" (and then "b")
        assert dedup.is_duplicate("a", 1_000)
        assert dedup.is_duplicate("a", None)
        assert not dedup.is_duplicate("b", 1_500) and dedup.disk_lookups >= 2


def test_a_time_ordered_run_never_builds_the_index(tmp_path: Path) -> None:
    """Spills only append to a scratch file: SQLite is opened by the first look-up that
    needs the spilled digests, which a time-ordered run of distinct times never makes."""
    with Deduper(memory_budget=4, spill_dir=tmp_path) as dedup:
        for t in range(100):
            assert not dedup.is_duplicate(iid(rec(t=t)), t * 1000)
        assert dedup.spills > 10 and dedup.disk_lookups == 0
        assert dedup._db is None and len(dedup) == 100  # len() indexes them, to count
        assert dedup._db is not None
        assert dedup.is_duplicate(iid(rec(t=3)), 3000)  # a late copy, found in the index
    assert list(tmp_path.iterdir()) == []


def test_spilled_digests_are_durable_once_checkpointed(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite"
    first = Deduper(path=path, memory_budget=2)
    for t in range(8):
        assert not first.is_duplicate(iid(rec(t=t)), t * 1000)
    assert first.spills > 0
    first.checkpoint()
    first._db.close()  # type: ignore[union-attr]  # the process dies after the checkpoint
    with Deduper(path=path) as second:
        assert all(second.is_duplicate(iid(rec(t=t)), t * 1000) for t in range(8))
        assert not second.is_duplicate(iid(rec(t=9)), 9000)


def test_a_late_copy_is_found_by_scanning_its_segment_then_by_the_index(tmp_path: Path) -> None:
    from mp2amp.transform import dedup as module

    with Deduper(memory_budget=4, spill_dir=tmp_path) as dedup:
        for t in range(40):
            assert not dedup.is_duplicate(iid(rec(t=t)), t * 1000)
        # late copies of t=3: the first look-ups scan the one segment whose span holds it
        for n in range(module._SCANS_PER_SEGMENT):
            assert dedup.is_duplicate(iid(rec(t=3)), 3000)
            assert dedup._db is None and dedup.disk_lookups == n + 1
        assert not dedup.is_duplicate(iid(rec(t=3, who="u9")), 3000)  # scanned once more:
        assert dedup._db is not None  # ... past its scans, that segment is indexed
        assert len(dedup._segments) == dedup.spills - 1
        assert dedup.is_duplicate(iid(rec(t=3)), 3000) and dedup.is_duplicate(iid(rec(t=30)))


@given(times=st.lists(st.integers(0, 30), max_size=120), budget=st.integers(1, 6),
       unknown=st.sets(st.integers(0, 119), max_size=10), scans=st.integers(0, 3),
       block=st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_scans_blocks_and_the_index_give_the_in_memory_answers(
        times: list[int], budget: int, unknown: set[int], scans: int, block: int) -> None:
    from mp2amp.transform import dedup as module

    saved = module._SCANS_PER_SEGMENT, module._BLOCK_PAIRS
    module._SCANS_PER_SEGMENT, module._BLOCK_PAIRS = scans, block
    try:
        stream = [rec(t=t) for t in times]
        with Deduper(memory_budget=budget) as small, Deduper() as big:
            got = [small.is_duplicate(iid(r), None if i in unknown else ms(r))
                   for i, r in enumerate(stream)]
            assert got == [big.is_duplicate(iid(r)) for r in stream]
            assert len(small) == len(big)
    finally:
        module._SCANS_PER_SEGMENT, module._BLOCK_PAIRS = saved
