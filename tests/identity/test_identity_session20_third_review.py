"""Third session-20 review of Original ID Merge's lone user IDs (``OriginalIds.name_user``).

ba708f9 keeps an ID a record names as a user (``$user_id``) as a user node even when it
links to nothing, so a UUID user ID's events naming it only as ``distinct_id`` stay its
own. Given a Data Pipelines identity table (``[source] identity_table``) that lists that
user, the table's cluster rules it out as a user (``Table._score``: the predicate rejects
a UUID before the graph's choice is consulted) and the event goes to an anonymous device
again: two Amplitude identities for one Mixpanel person.
Guards checked along the way: junk-like ``$user_id`` values in other cases, hot-shard
records (blanked ``distinct_id``), and the excluded-users file on a lone UUID user.
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
USER = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"  # a UUID user ID (the app's own)
DEVICE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
T0 = 1_700_000_000


def _table(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("rows", [
    [{"distinct_id": USER, "resolved_distinct_id": USER}],
    [{"distinct_id": DEVICE, "resolved_distinct_id": USER}],
], ids=["self-row", "device-row"])
def test_table_listing_a_lone_uuid_user_keeps_its_events_its_own(
    kit: Kit, tmp_path: Path, budget: int, rows: list[dict[str, str]]
) -> None:
    records = [
        kit.ev("Signup", {"distinct_id": USER, "$user_id": USER}),  # server-side, lone
        kit.ev("Page Viewed", {"distinct_id": USER}),
    ]
    # without the table both are USER's (ba708f9); the table must not undo that
    plain = kit.build("original", records, memory_budget_ids=budget)
    assert [kit.ids(plain, r)[0] for r in records] == [USER, USER]
    graph = kit.build("original", records, memory_budget_ids=budget,
                      table=_table(tmp_path / "map.jsonl", rows))
    assert [kit.ids(graph, r) for r in records] == [(USER, None), (USER, None)]


def test_transform_with_table_lone_uuid_user_is_one_amplitude_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    _table(tmp_path / "map.jsonl", [{"distinct_id": USER, "resolved_distinct_id": USER}])
    (tmp_path / "mp2amp.toml").write_text(
        '[mixpanel]\nid_merge = "original"\n[source]\nidentity_table = "map.jsonl"\n')
    records: list[dict[str, Any]] = [
        {"event": "Signup", "properties": {
            "time": T0 + 1, "distinct_id": USER, "$user_id": USER, "$insert_id": "i1"}},
        {"event": "Page Viewed", "properties": {
            "time": T0 + 2, "distinct_id": USER, "$insert_id": "i2"}},
    ]
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    result = CliRunner().invoke(app, ["transform", "in.jsonl", "--out", "out.jsonl", "--json"])
    assert result.exit_code == 0, result.output
    events = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert len(events) == 2
    assert [e.get("user_id") for e in events] == [USER, USER], events


# --- guards checked along the way (pass) ------------------------------------------------------


@pytest.mark.parametrize("budget", BUDGETS)
def test_junk_user_id_in_other_case_is_no_lone_user(kit: Kit, budget: int) -> None:
    records = [
        kit.ev("A", {"distinct_id": f"$device:{DEVICE}", "$user_id": "NULL",
                     "$device_id": DEVICE}),
        kit.ev("B", {"distinct_id": f"$device:{DEVICE}", "$user_id": " Undefined ",
                     "$device_id": DEVICE}),
        kit.ev("C", {"distinct_id": "alice", "$user_id": "alice", "$device_id": DEVICE}),
    ]
    graph = kit.build("original", records, memory_budget_ids=budget)
    assert [kit.ids(graph, r) for r in records] == [("alice", DEVICE)] * 3
    assert graph.report.refused_links == 0


@pytest.mark.parametrize("budget", BUDGETS)
def test_hot_shard_lone_uuid_user_keeps_its_events(kit: Kit, budget: int) -> None:
    records = [
        kit.ev("Signup", {"distinct_id": "", "mp_original_distinct_id": USER, "$user_id": USER}),
        kit.ev("View", {"distinct_id": "", "mp_original_distinct_id": USER}),
        kit.ev("View", {"distinct_id": USER}),
    ]
    graph = kit.build("original", records, memory_budget_ids=budget)
    assert [kit.ids(graph, r)[0] for r in records] == [USER] * 3
