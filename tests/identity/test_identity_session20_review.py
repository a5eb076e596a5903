"""Session 20 review of identity resolution against Mixpanel's ID management semantics.

The first tests pinned defects, now fixed (a UUID ``$user_id`` that is one user under
Original ID Merge, an identity-mapping row among the events named as such); the others
guard edge cases checked along the way. Driven through ``mp2amp transform`` (offline, exact
output) and the identity API, both in memory and spilled to SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from shared_kit import clean_env

if TYPE_CHECKING:
    from conftest import Kit

BUDGETS = [2_000_000, 1]  # in memory; spilled to SQLite from the first link
UUID_USER = "0f8fad5b-d9cb-469f-a165-70867728950e"  # a database UUID primary key as user ID
T0 = 1_700_000_000


def _transform(
    folder: Path, monkeypatch: pytest.MonkeyPatch, id_merge: str, records: list[Any],
    extra: str = "",
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """``mp2amp transform`` offline: (the --json result, the events out, the rejects)."""
    clean_env(monkeypatch)
    monkeypatch.chdir(folder)
    (folder / "mp2amp.toml").write_text(f'[mixpanel]\nid_merge = "{id_merge}"\n{extra}')
    (folder / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    result = CliRunner().invoke(
        app, ["transform", "in.jsonl", "--out", "out.jsonl", "--json"], catch_exceptions=True
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    events = [orjson.loads(line) for line in (folder / "out.jsonl").read_bytes().splitlines()]
    rejects_file = folder / "out.jsonl.rejects.jsonl"
    rejects = [orjson.loads(line) for line in rejects_file.read_bytes().splitlines()] \
        if rejects_file.exists() else []
    return summary, events, rejects


# --- Original ID Merge: one Mixpanel user must stay one Amplitude user ----------------------


@pytest.mark.parametrize("budget", BUDGETS)
def test_original_uuid_user_id_is_one_user_whether_named_as_user_id_or_distinct_id(
    kit: Kit, budget: int
) -> None:
    records = [
        # server-side events of one user (database UUID key): Mixpanel counts one person,
        # distinct_id = the UUID on both
        kit.ev("Login", {"distinct_id": UUID_USER, "$user_id": UUID_USER}),
        kit.ev("Purchase", {"distinct_id": UUID_USER}),
    ]
    graph = kit.build("original", records, memory_budget_ids=budget)
    first = kit.ids(graph, records[0])
    second = kit.ids(graph, records[1])
    assert first == (UUID_USER, None)
    # the same person: the same Amplitude user_id
    assert second[0] == first[0], (first, second)


def test_transform_original_keeps_a_uuid_user_ids_events_on_one_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [
        {"event": "Login", "properties": {"time": T0 + 1, "distinct_id": UUID_USER,
                                          "$user_id": UUID_USER, "$insert_id": "i1"}},
        {"event": "Purchase", "properties": {"time": T0 + 2, "distinct_id": UUID_USER,
                                             "$insert_id": "i2"}},
    ]
    summary, events, _ = _transform(tmp_path, monkeypatch, "original", records)
    assert summary["summary"]["events_out"] == 2
    got = [(e["event_type"], e.get("user_id"), e.get("device_id")) for e in events]
    assert got == [("Login", UUID_USER, None), ("Purchase", UUID_USER, None)], got


# --- identity records that are not events -----------------------------------------------


def test_an_identity_mapping_row_among_the_events_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [
        {"distinct_id": "$device:d-1234", "resolved_distinct_id": "alice"},
        {"event": "Viewed", "properties": {"time": T0 + 1, "distinct_id": "$device:d-1234",
                                           "$device_id": "d-1234", "$insert_id": "i1"}},
    ]
    summary, _, rejects = _transform(tmp_path, monkeypatch, "simplified", records)
    assert summary["summary"]["events_out"] == 1
    assert [r["line"] for r in rejects] == [1]
    message = rejects[0]["message"]
    assert "identity" in message and "identity_table" in message, message


def test_a_profile_row_among_the_events_is_named_a_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the guard the defect above is measured against: Engage rows are named for what they are
    records = [
        {"$distinct_id": "alice", "$properties": {"$email": "a@example.com"}},
        {"event": "Viewed", "properties": {"time": T0 + 1, "distinct_id": "alice",
                                           "$insert_id": "i1"}},
    ]
    _, events, rejects = _transform(tmp_path, monkeypatch, "simplified", records)
    assert [e["user_id"] for e in events] == ["alice"]
    assert [(r["line"], r["reason"]) for r in rejects] == [(1, "not_an_event")]
    assert "profile" in rejects[0]["message"]


# --- guards checked along the way ------------------------------------------------------------


@pytest.mark.parametrize("junk", ["Undefined", "NULL", " null ", "None", "[Object Object]",
                                  "$device:undefined", "00000", "-1", "TRUE", "\u00a0", 0, -1,
                                  0.0, False, None, [], {}])
def test_junk_ids_of_any_case_or_type_count_as_absent(junk: Any) -> None:
    from mp2amp.identity import clean_id

    assert clean_id(junk) is None


@pytest.mark.parametrize("budget", BUDGETS)
def test_numbers_and_their_text_are_one_user_in_both_modes(kit: Kit, budget: int) -> None:
    device = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    records = [
        kit.ev("Login", {"$user_id": 12345, "$device_id": device}),
        kit.ev("Anon", {"distinct_id": f"$device:{device}", "$device_id": device}),
        kit.ev("Server", {"distinct_id": "12345"}),
    ]
    for mode in ("simplified", "original"):
        graph = kit.build(mode, records, memory_budget_ids=budget)
        assert [kit.ids(graph, r)[0] for r in records] == ["12345"] * 3, mode


# --- follow-ups of the fixes above -----------------------------------------------------------

DEVICE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.mark.parametrize("budget", BUDGETS)
def test_original_uuid_user_id_on_another_users_device_stays_its_own_user(
    kit: Kit, budget: int
) -> None:
    # U is named as $user_id, so a server-side event of U carrying bob's device is not a
    # merge: U keeps its events (it used to join bob's cluster, every U event going to bob)
    records = [
        kit.ev("Login", {"$user_id": "bob", "$device_id": DEVICE}),
        kit.ev("Login", {"distinct_id": UUID_USER, "$user_id": UUID_USER}),
        kit.ev("Server", {"distinct_id": UUID_USER, "$device_id": DEVICE}),
        kit.ev("Purchase", {"distinct_id": UUID_USER}),
    ]
    graph = kit.build("original", records, memory_budget_ids=budget)
    assert [kit.ids(graph, r) for r in records] == [
        ("bob", DEVICE), (UUID_USER, None), (UUID_USER, DEVICE), (UUID_USER, None)]
    assert (graph.report.spilled, graph.report.shared_devices) == (budget == 1, 1)


@pytest.mark.parametrize("budget", [2_000_000, 1])
@pytest.mark.parametrize("retroactive", [True, False])
def test_original_lone_user_ids_are_users_in_memory_and_spilled(
    kit: Kit, budget: int, retroactive: bool
) -> None:
    other = "e6ab2c5e-2cda-44a9-a962-e2f67df78bca"
    records = [
        kit.ev("Login", {"distinct_id": UUID_USER, "$user_id": UUID_USER}),
        # named as a user by an $identify that links it to nothing (its $anon_id is junk)
        kit.ev("$identify", {"$identified_id": other, "$anon_id": "undefined"}),
        kit.ev("Purchase", {"distinct_id": UUID_USER}),
        kit.ev("Purchase", {"distinct_id": other}),
        kit.ev("Anon", {"distinct_id": "5f0c0d2a-6f6e-4c1c-9a43-0b3a9b2f7d11"}),  # unnamed
    ]
    graph = kit.build("original", records, memory_budget_ids=budget, retroactive=retroactive)
    assert [kit.ids(graph, r) for r in records[2:]] == [
        (UUID_USER, None), (other, None), (None, "5f0c0d2a-6f6e-4c1c-9a43-0b3a9b2f7d11")]
    # two user nodes are two IDs: past a budget of one the graph is spilled to SQLite
    assert (graph.report.spilled, graph.report.ids, graph.report.links) == (budget == 1, 2, 0)


def test_original_keeps_one_node_per_lone_user_id_however_many_events(kit: Kit) -> None:
    from mp2amp.identity import IdentityGraph
    from mp2amp.identity.original import OriginalIds

    users = [f"0f8fad5b-d9cb-469f-a165-7086772895{n:02d}" for n in range(3)]
    graph = IdentityGraph("original", kit.workdir / "flat")
    kit.graphs.append(graph)  # closed by the fixture
    for k in range(300):
        user = users[k % 3]
        graph.observe(kit.ev("Buy", {"distinct_id": user, "$user_id": user}))
    mode = graph._mode
    assert isinstance(mode, OriginalIds)
    assert (len(mode.users), len(mode.edges)) == (3, 0)  # per ID, not per event
    graph.finish()
    assert [graph.resolve({"distinct_id": u}).user_id for u in users] == users


def test_an_identity_mapping_row_is_rejected_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [
        {"distinct_id": "$device:d-1234", "resolved_distinct_id": "alice"},
        # not a mapping row: it has properties (an event missing its name)
        {"distinct_id": "x", "resolved_distinct_id": "y", "properties": {"time": T0}},
    ]
    summary, events, rejects = _transform(tmp_path, monkeypatch, "original", records)
    assert (summary["summary"]["events_out"], events) == (0, [])
    assert [(r["line"], r["reason"], r["field"], r["message"]) for r in rejects] == [
        (1, "not_an_event", "event",
         "in.jsonl line 1: a Data Pipelines identity-mapping row (distinct_id -> "
         "resolved_distinct_id), not an event: it is skipped here; give its file as "
         "[source] identity_table for the mapping to be used"),
        (2, "not_an_event", "event",
         "in.jsonl line 2: expected a Mixpanel event object, got object without 'event'"),
    ]
