"""Sessions: Amplitude's inactivity-gap sessions per device, spilled and resumed via SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.errors import ConfigError
from mp2amp.transform.sessions import NO_SESSION, Sessionizer

MIN = 60_000
T0 = 1_700_000_000_000


def test_gap_splits_sessions_and_id_is_first_event_ms() -> None:
    s = Sessionizer(30 * MIN)
    times = [T0, T0 + 10 * MIN, T0 + 40 * MIN, T0 + 71 * MIN, T0 + 71 * MIN + 1]
    assert [s.session_id("dev-1", None, t) for t in times] == [
        T0, T0, T0, T0 + 71 * MIN, T0 + 71 * MIN]


def test_exactly_the_gap_stays_in_the_session() -> None:
    s = Sessionizer(30 * MIN)
    assert s.session_id("d", None, T0) == T0
    assert s.session_id("d", None, T0 + 30 * MIN) == T0
    assert s.session_id("d", None, T0 + 60 * MIN + 1) == T0 + 60 * MIN + 1


def test_device_first_then_user_and_no_id() -> None:
    s = Sessionizer()
    assert s.session_id("dev", "alice", T0) == T0
    assert s.session_id(None, "alice", T0 + 1000) == T0 + 1000  # a different stream: the user's
    assert s.session_id("dev", "bob", T0 + 2000) == T0  # the device's session goes on
    assert s.session_id(None, None, T0) == NO_SESSION


def test_device_and_user_keys_do_not_collide() -> None:
    s = Sessionizer()
    s.session_id("same", None, T0)
    assert s.session_id(None, "same", T0 + 5 * MIN) == T0 + 5 * MIN


def test_out_of_order_events() -> None:
    s = Sessionizer(30 * MIN)
    s.session_id("d", None, T0)
    s.session_id("d", None, T0 + 20 * MIN)
    assert s.session_id("d", None, T0 + 5 * MIN) == T0  # late, inside
    assert s.session_id("d", None, T0 - 10 * MIN) == T0  # late, within the gap before start
    assert s.session_id("d", None, T0 - 3 * 60 * MIN) == T0 - 3 * 60 * MIN  # an older session
    assert s.session_id("d", None, T0 + 45 * MIN) == T0  # the current one was left alone


def test_continues_across_days() -> None:
    s = Sessionizer(30 * MIN)
    midnight = 1_700_006_400_000  # 2023-11-15T00:00:00Z
    assert s.session_id("d", None, midnight - 5 * MIN) == midnight - 5 * MIN
    assert s.session_id("d", None, midnight + 5 * MIN) == midnight - 5 * MIN


def test_spills_past_budget_and_gives_the_same_answers(tmp_path: Path) -> None:
    small = Sessionizer(30 * MIN, memory_budget=4, spill_dir=tmp_path)
    big = Sessionizer(30 * MIN)
    events = [(f"dev-{i % 13}", T0 + i * 7 * MIN // 3) for i in range(200)]
    assert [small.session_id(d, None, t) for d, t in events] == [
        big.session_id(d, None, t) for d, t in events]
    assert small.spilled > 0 and small.reloaded > 0
    assert len(small) == len(big) == 13
    small.close()
    assert list(tmp_path.iterdir()) == []  # the temporary spill file is gone


def test_persisted_state_resumes(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sessions.sqlite"
    with Sessionizer(30 * MIN, path=path) as first:
        first.session_id("d", None, T0)
        first.session_id("e", None, T0)
    with Sessionizer(30 * MIN, path=path) as second:
        assert second.session_id("d", None, T0 + 10 * MIN) == T0
        assert second.session_id("e", None, T0 + 50 * MIN) == T0 + 50 * MIN
        assert len(second) == 2


def test_resume_with_another_gap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite"
    Sessionizer(30 * MIN, path=path).close()
    with pytest.raises(ConfigError, match="gap of 30 min, the config says 45 min"):
        Sessionizer(45 * MIN, path=path)


def test_gap_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Sessionizer(0)


# --- invariants -----------------------------------------------------------------------

streams = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 10 * 60 * MIN)),
    max_size=60,
)


def reference_sessions(times: list[int], gap: int) -> list[int]:
    """Amplitude's definition, for one device's events in time order."""
    out: list[int] = []
    start = last = None
    for t in times:
        if last is None or t - last > gap:
            start = t
        last = t
        assert start is not None
        out.append(start)
    return out


@given(events=streams, gap_min=st.integers(1, 90), budget=st.integers(2, 5))
@settings(max_examples=60, deadline=None)
def test_sorted_input_matches_amplitudes_definition(
    events: list[tuple[str, int]], gap_min: int, budget: int
) -> None:
    events = sorted(events, key=lambda e: e[1])
    with Sessionizer(gap_min * MIN, memory_budget=budget) as s:
        got = [(d, s.session_id(d, None, t)) for d, t in events]
    for device in "abc":
        times = [t for d, t in events if d == device]
        assert [sid for d, sid in got if d == device] == reference_sessions(times, gap_min * MIN)


@given(events=streams, gap_min=st.integers(1, 90))
def test_any_order_session_ids_are_plausible(events: list[tuple[str, int]], gap_min: int) -> None:
    """In any order: the id is a time this device had, and never more than a gap after the
    event it is given to (a late event joins a session only within the gap)."""
    s = Sessionizer(gap_min * MIN)
    seen: dict[str, list[int]] = {}
    for device, t in events:
        sid = s.session_id(device, None, t)
        seen.setdefault(device, []).append(t)
        assert sid in seen[device]
        assert sid - t <= gap_min * MIN


def test_only_checkpointed_state_survives_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite"
    first = Sessionizer(30 * MIN, path=path, memory_budget=2)
    first.session_id("a", None, T0)
    first.checkpoint()
    for i, device in enumerate("abcdef"):  # past the budget: spilled, not committed
        first.session_id(device, None, T0 + 40 * MIN + i)
    assert first.spilled > 0
    first._db.close()  # type: ignore[union-attr]  # the process dies: no commit, no close()
    with Sessionizer(30 * MIN, path=path) as second:
        assert len(second) == 1
        assert second.session_id("a", None, T0 + 10 * MIN) == T0  # the checkpointed session
