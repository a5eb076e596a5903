"""Review: sessions, deduplication and each device's delivery order, unit and end to end.

Unit tests drive Sessionizer, Deduper and the migration's Settler; the end-to-end tests run
``migrate`` against the local Amplitude emulator on small hand-written Mixpanel files and
check what Amplitude stored (session_id semantics of amplitude-api.md: the start time in
ms of the device's run of events with no gap above the timeout; one copy per insert_id).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))  # migrate_kit

from migrate_kit import (
    FAST,
    Crash,
    amplitude,
    arrival_order,
    crash_at_batch,
    make_config,
    order_breaks,
    stored_counts,
)

from mp2amp.pipeline.migrate import migrate
from mp2amp.pipeline.transform_worker import EVENT, Settler
from mp2amp.transform.dedup import Deduper, insert_id_digest
from mp2amp.transform.insert_id import event_insert_id
from mp2amp.transform.sessions import NO_SESSION, Sessionizer
from mp2amp.transform.stream import TransformSummary

MIN = 60_000
GAP = 30 * MIN
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, ms
DAY1_END = 1_700_006_400  # 2023-11-15T00:00:00Z in s: a UTC day boundary


# --- Sessionizer ------------------------------------------------------------------------

def reference(events: list[tuple[str, int]], gap: int) -> dict[int, int]:
    """Amplitude's sessions for (who, time) events: index -> session start, per who in
    time order (ties in input order)."""
    out: dict[int, int] = {}
    state: dict[str, tuple[int, int]] = {}
    for i in sorted(range(len(events)), key=lambda i: events[i][1]):
        who, t = events[i]
        start, last = state.get(who, (t, t))
        if t - last > gap:
            start = t
        state[who] = (start, t)
        out[i] = start
    return out


ids = st.sampled_from(["dev-a", "dev-b", "dev-c", None])
users = st.sampled_from(["user-1", "user-2", None])
any_order = st.lists(st.tuples(ids, users, st.integers(0, 6 * 60 * MIN)), max_size=80)


@given(events=any_order, budget=st.integers(2, 4), gap_min=st.integers(1, 60))
@settings(max_examples=80, deadline=None)
def test_spilled_and_in_memory_sessions_agree_in_any_order(
        events: list[tuple[str | None, str | None, int]], budget: int, gap_min: int) -> None:
    with Sessionizer(gap_min * MIN, memory_budget=budget) as small, \
            Sessionizer(gap_min * MIN) as big:
        got = [small.session_id(d, u, T0 + t) for d, u, t in events]
        want = [big.session_id(d, u, T0 + t) for d, u, t in events]
    assert got == want


@given(events=any_order, gap_min=st.integers(1, 60))
@settings(max_examples=60, deadline=None)
def test_time_ordered_events_get_amplitudes_sessions_keyed_by_device_else_user(
        events: list[tuple[str | None, str | None, int]], gap_min: int) -> None:
    events = sorted(events, key=lambda e: e[2])
    with Sessionizer(gap_min * MIN, memory_budget=2) as s:
        got = [s.session_id(d, u, T0 + t) for d, u, t in events]
    keyed = [("d:" + d if d else "u:" + u if u else "", T0 + t) for d, u, t in events]
    want = reference(keyed, gap_min * MIN)
    for i, (who, _) in enumerate(keyed):
        assert got[i] == (NO_SESSION if not who else want[i])


@given(events=any_order, cut=st.integers(0, 80), budget=st.integers(2, 4))
@settings(max_examples=40, deadline=None)
def test_a_checkpoint_and_resume_continue_the_same_sessions(
        tmp_path_factory: pytest.TempPathFactory,
        events: list[tuple[str | None, str | None, int]], cut: int, budget: int) -> None:
    path = tmp_path_factory.mktemp("s") / "sessions.sqlite"
    events = sorted(events, key=lambda e: e[2])
    with Sessionizer(GAP) as whole:
        want = [whole.session_id(d, u, T0 + t) for d, u, t in events]
    first = Sessionizer(GAP, path=path, memory_budget=budget)
    got = [first.session_id(d, u, T0 + t) for d, u, t in events[:cut]]
    first.checkpoint()
    first._db.close()  # type: ignore[union-attr]  # the process dies after its checkpoint
    with Sessionizer(GAP, path=path, memory_budget=budget) as second:
        got += [second.session_id(d, u, T0 + t) for d, u, t in events[cut:]]
    assert got == want


def test_equal_times_the_exact_gap_and_one_ms_more() -> None:
    with Sessionizer(GAP) as s:
        assert [s.session_id("dev-a", None, t) for t in (T0, T0, T0 + GAP, T0 + GAP)] == [T0] * 4
        assert s.session_id("dev-a", None, T0 + 2 * GAP + 1) == T0 + 2 * GAP + 1


def test_a_device_keeps_its_session_when_a_user_id_appears_and_goes() -> None:
    """Amplitude's SDKs keep the session across setUserId: the key is the device."""
    with Sessionizer(GAP) as s:
        assert s.session_id("dev-a", None, T0) == T0
        assert s.session_id("dev-a", "user-1", T0 + 5 * MIN) == T0
        assert s.session_id("dev-a", None, T0 + 10 * MIN) == T0
        # the user's server-side events (no device) are a session of their own
        assert s.session_id(None, "user-1", T0 + 11 * MIN) == T0 + 11 * MIN
        assert s.session_id(None, None, T0) == NO_SESSION


def test_the_gap_is_on_event_time_not_on_arrival() -> None:
    """Arrival order with a long pause between calls does not matter; event times do."""
    with Sessionizer(GAP) as s:
        assert s.session_id("dev-a", None, T0) == T0
        assert s.session_id("dev-b", None, T0 + 10 * GAP) == T0 + 10 * GAP  # others move on
        assert s.session_id("dev-a", None, T0 + 20 * MIN) == T0  # 20 min of event time


# --- Deduper ----------------------------------------------------------------------------

PROPS = {"distinct_id": "user-1", "$insert_id": "abcdefghijkl-0001", "$device_id": "dev-a"}


def test_a_copy_in_another_second_is_another_event_as_for_mixpanel() -> None:
    a = event_insert_id("Play", PROPS, T0)
    b = event_insert_id("Play", PROPS, T0 + 1000)
    assert a != b
    with Deduper() as d:
        assert not d.is_duplicate(a, T0) and not d.is_duplicate(b, T0 + 1000)


def test_a_copy_in_seconds_and_one_in_ms_share_an_id_and_one_is_dropped_in_memory() -> None:
    a = event_insert_id("Play", PROPS, T0)          # the default export: whole seconds
    b = event_insert_id("Play", PROPS, T0 + 456)    # the same event with time_in_ms
    assert a == b
    with Deduper() as d:
        assert not d.is_duplicate(a, T0)
        assert d.is_duplicate(b, T0 + 456)


def test_a_seconds_and_ms_copy_stay_duplicates_once_the_first_is_spilled() -> None:
    a = event_insert_id("Play", PROPS, T0)
    b = event_insert_id("Play", PROPS, T0 + 456)
    with Deduper(memory_budget=1) as d:
        assert not d.is_duplicate(a, T0)
        assert not d.is_duplicate("other-1", T0 + 100)  # spills a
        assert d.is_duplicate(b, T0 + 456)


@given(stream=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2999)), max_size=60),
       budget=st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_spilled_and_in_memory_dedup_agree_on_ids_that_hash_whole_seconds(
        stream: list[tuple[int, int]], budget: int) -> None:
    events = [(event_insert_id("Play", {**PROPS, "$insert_id": f"insert-id-{n:04}"},
                               T0 + ms), T0 + ms) for n, ms in stream]
    with Deduper(memory_budget=budget) as small, Deduper() as big:
        assert [small.is_duplicate(i, t) for i, t in events] == \
            [big.is_duplicate(i, t) for i, t in events]


# --- Settler (the migration's stateful half) --------------------------------------------

def _item(device: str | None, user: str | None, t: int, iid: str) -> tuple[Any, ...]:
    event = {"event_type": "Play", "device_id": device, "user_id": user, "time": t,
             "insert_id": iid}
    return (EVENT, "f.jsonl", 1, orjson.dumps(event), device, user, t,
            insert_id_digest(iid), True, t)  # the source time: UTC here


def test_settler_gives_every_event_a_session_and_a_duplicate_never_advances_one() -> None:
    summary = TransformSummary()
    with Sessionizer(GAP) as sessions, Deduper() as dedup:
        settle = Settler(dedup, sessions, summary)
        first = settle.event(_item("dev-a", None, T0, "i1"))
        # a late duplicate 40 minutes on would open a new session if it counted
        assert settle.event(_item("dev-a", None, T0, "i1")) is None
        later = settle.event(_item("dev-a", None, T0 + 40 * MIN, "i2"))
        assert settle.event(_item("dev-a", None, T0 + 40 * MIN, "i2")) is None
        then = settle.event(_item("dev-a", None, T0 + 60 * MIN, "i3"))
        userless = settle.event(_item(None, "user-1", T0, "i4"))
    assert first is not None and later is not None and then is not None and userless
    assert [orjson.loads(b)["session_id"] for b in (first, later, then, userless)] == \
        [T0, T0 + 40 * MIN, T0 + 40 * MIN, T0]
    assert summary.duplicates == 2 and summary.events_out == 4


# --- end to end: migrate against the Amplitude emulator ---------------------------------

def mp_event(device: str, t: float | int, n: int, *, user: str | None = None,
             name: str = "Play") -> dict[str, Any]:
    props: dict[str, Any] = {"time": t, "distinct_id": user or f"$device:{device}",
                             "$device_id": device, "$insert_id": f"insert-{device}-{n:06}"}
    if user:
        props["$user_id"] = user
    return {"event": name, "properties": props}


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def stored(data: Path) -> list[dict[str, Any]]:
    return list(arrival_order(data))


def assert_amplitude_sessions(events: list[dict[str, Any]], gap: int = GAP) -> None:
    """Every stored event has the session Amplitude's SDK would give it."""
    assert events
    for e in events:
        assert isinstance(e.get("session_id"), int) and e["session_id"] > 0, e
    keyed = [(e.get("device_id") or "u:" + e["user_id"], int(e["time"])) for e in events]
    want = reference(keyed, gap)
    wrong = [(keyed[i], e["session_id"], want[i]) for i, e in enumerate(events)
             if e["session_id"] != want[i]]
    assert not wrong, wrong[:5]


def _day_files(root: Path) -> Path:
    """Two UTC days of three devices; file names in reverse time order. dev-aaaa runs
    across midnight (one session), dev-bbbb pauses 31 minutes (two sessions) and logs in
    halfway, dev-cccc has events at equal times."""
    t = DAY1_END
    day1 = [mp_event("dev-aaaa", t - 20 * 60 + i * 60, i) for i in range(15)]
    day1 += [mp_event("dev-bbbb", t - 3 * 3600, 100),
             mp_event("dev-bbbb", t - 3 * 3600 + 31 * 60, 101, user="user-0001"),
             mp_event("dev-bbbb", t - 3 * 3600 + 40 * 60, 102, user="user-0001")]
    day1 += [mp_event("dev-cccc", t - 7200, 200 + i) for i in range(4)]
    day2 = [mp_event("dev-aaaa", t + 5 * 60 + i * 60, 15 + i) for i in range(10)]
    day2 += [mp_event("dev-aaaa", t + 3600, 30), mp_event("dev-cccc", t + 10, 300)]
    write(root / "b-day1.jsonl", day1)
    write(root / "a-day2.jsonl", day2)
    return root


def test_sessions_continue_across_day_files_loaded_oldest_first(tmp_path: Path) -> None:
    events = _day_files(tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(events, tmp_path / "work", url),
                         upload_overrides={**FAST, "concurrency": 2})
        counts = stored_counts(url)
    assert result.exit_code == 0, result.as_dict()["problems"]
    got = stored(tmp_path / "amp")
    assert len(got) == len(counts) == 34 and set(counts.values()) == {1}
    assert_amplitude_sessions(got)
    assert order_breaks(tmp_path / "amp") == []
    by_device: dict[str, set[int]] = {}
    for e in got:
        by_device.setdefault(e["device_id"], set()).add(e["session_id"])
    assert len(by_device["dev-aaaa"]) == 2  # one across midnight, one after a 45-min pause
    assert len(by_device["dev-bbbb"]) == 2 and len(by_device["dev-cccc"]) == 2


def test_a_crash_and_resume_rebuild_the_same_session_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _day_files(tmp_path / "events")
    upload = {**FAST, "concurrency": 1, "max_events": 3}
    with amplitude(tmp_path / "clean") as url:
        migrate(make_config(events, tmp_path / "w1", url), upload_overrides=upload)
    clean = {e["insert_id"]: e["session_id"] for e in stored(tmp_path / "clean")}
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "w2", url)
        crash_at_batch(monkeypatch, 10)  # in the second window (day 1: 8 batches of 3)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=upload)
        monkeypatch.undo()
        result = migrate(cfg, resume=True, upload_overrides=upload)
        counts = stored_counts(url)
    assert result.exit_code == 0, result.as_dict()["problems"]
    assert set(counts.values()) == {1}
    resumed = {e["insert_id"]: e["session_id"] for e in stored(tmp_path / "amp")}
    assert resumed == clean and len(clean) == 34
    assert_amplitude_sessions(stored(tmp_path / "amp"))


def test_a_duplicate_at_the_boundary_of_two_adjacent_windows_is_dropped(
        tmp_path: Path) -> None:
    """Mixpanel's to_date is inclusive: two exports may both hold the boundary second.
    Windows ending where the next starts are merged (the copies may differ: the latest
    ingested is sent), and the Deduper drops the other copy."""
    boundary = mp_event("dev-aaaa", DAY1_END, 1)
    write(tmp_path / "events" / "a.jsonl",
          [mp_event("dev-aaaa", DAY1_END - 60, 0), boundary])
    write(tmp_path / "events" / "b.jsonl", [boundary, mp_event("dev-aaaa", DAY1_END + 60, 2)])
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(tmp_path / "events", tmp_path / "work", url),
                         upload_overrides=FAST)
        counts = stored_counts(url)
    assert result.identity["overlapping_windows_merged"]
    assert result.totals["duplicate"] == 1 and len(counts) == 3
    assert set(counts.values()) == {1}
    assert_amplitude_sessions(stored(tmp_path / "amp"))


def test_a_seconds_export_and_a_ms_export_of_one_day_count_every_copy_duplicate(
        tmp_path: Path) -> None:
    n = 1_001  # past the Deduper's smallest in-memory share: 1,000 digests (budgets.py)
    start = DAY1_END - 6 * 3600
    devices = [f"dev-{k:04}" for k in range(20)]
    seconds = [mp_event(devices[i % 20], start + i, i) for i in range(n)]
    millis = [mp_event(devices[i % 20], (start + i) * 1000 + 456, i) for i in range(n)]
    write(tmp_path / "events" / "export-s.jsonl", seconds)
    write(tmp_path / "events" / "export-ms.jsonl", millis)
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(tmp_path / "events", tmp_path / "work", url,
                          **{"run.memory_budget": 4_000})
        result = migrate(cfg, upload_overrides=FAST)
        counts = stored_counts(url)
    assert result.identity["overlapping_windows_merged"]
    assert len(counts) == n  # Amplitude kept one of each pair
    assert result.totals["sent"] == n, result.totals  # 1,002 reported accepted
    assert result.totals["duplicate"] == n, result.totals


def test_a_file_in_microseconds_is_loaded_in_time_order_with_one_in_seconds(
        tmp_path: Path) -> None:
    t = DAY1_END
    day1_us = [mp_event("dev-aaaa", (t - 600 + i * 60) * 1_000_000, i) for i in range(5)]
    day2_s = [mp_event("dev-aaaa", t + 3600 + i * 60, 10 + i) for i in range(5)]
    write(tmp_path / "events" / "day1-us.jsonl", day1_us)
    write(tmp_path / "events" / "day2-s.jsonl", day2_s)
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(tmp_path / "events", tmp_path / "work", url),
                         upload_overrides={**FAST, "concurrency": 1})
    assert result.exit_code == 0, result.as_dict()["problems"]
    got = stored(tmp_path / "amp")
    assert len(got) == 10
    assert order_breaks(tmp_path / "amp") == []
    assert_amplitude_sessions(got)


def _wall_ms(*args: int) -> int:
    """A legacy project's stored time: the local wall clock written as if it were UTC."""
    from datetime import UTC, datetime

    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_legacy_local_times_in_a_dst_fold_reach_amplitude_in_utc_order(
        tmp_path: Path) -> None:
    # 2023-11-05 in Los Angeles: 01:00-02:00 happens twice (PDT, then PST)
    first = mp_event("dev-aaaa", _wall_ms(2023, 11, 5, 1, 50), 1)  # 08:50Z (PDT)
    first["properties"]["mp_processing_time_ms"] = _wall_ms(2023, 11, 5, 8, 50, 5)
    second = mp_event("dev-aaaa", _wall_ms(2023, 11, 5, 1, 10), 2)  # 09:10Z (PST)
    second["properties"]["mp_processing_time_ms"] = _wall_ms(2023, 11, 5, 9, 10, 5)
    write(tmp_path / "events" / "day.jsonl", [first, second])
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(tmp_path / "events", tmp_path / "work", url,
                          **{"mixpanel.legacy_time": True})
        result = migrate(cfg, upload_overrides={**FAST, "concurrency": 1})
    assert result.exit_code == 0, result.as_dict()["problems"]
    got = stored(tmp_path / "amp")
    assert sorted(e["time"] for e in got) == [_wall_ms(2023, 11, 5, 8, 50),
                                              _wall_ms(2023, 11, 5, 9, 10)]
    assert_amplitude_sessions(got)
    assert order_breaks(tmp_path / "amp") == []
