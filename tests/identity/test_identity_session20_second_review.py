"""Second session-20 review of Original ID Merge's lone user IDs (``OriginalIds.name_user``).

A record that names one ID on both sides (an ``$identify`` whose identified and anonymous
IDs are the same device, as an export re-keyed to a device canonical ID shows it, or a
``$user_id`` equal to the record's own ``$device_id``) links nothing, and since ba708f9 that
makes the ID a *user*: the device's later real link to its user is refused as joining two
users, and its anonymous events go to a second Amplitude user named after the device.
Driven through the identity API (in memory and spilled) and ``mp2amp transform``.
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
DEVICE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"  # a mixpanel-js (Original ID Merge) device ID
T0 = 1_700_000_000


@pytest.mark.parametrize("budget", BUDGETS)
def test_original_js_identify_rekeyed_to_its_device_keeps_the_device_anonymous(
    kit: Kit, budget: int
) -> None:
    # mixpanel-js (Original ID Merge era): the device ID is the bare UUID; identify() tracks
    # $identify {distinct_id: new, $anon_distinct_id: previous} with the super properties.
    # Mixpanel may pick the device as the cluster's canonical distinct_id, and exports
    # re-key every event of the cluster to it, the $identify included.
    records = [
        kit.ev("Page Viewed", {"distinct_id": DEVICE, "$device_id": DEVICE}),
        kit.ev("$identify", {"distinct_id": DEVICE, "$anon_distinct_id": DEVICE,
                             "$user_id": "alice", "$device_id": DEVICE}),
        kit.ev("Purchase", {"distinct_id": DEVICE, "$user_id": "alice", "$device_id": DEVICE}),
    ]
    graph = kit.build("original", records, memory_budget_ids=budget)
    # one person: the pre-login page view is alice's (as before ba708f9)
    assert [kit.ids(graph, r) for r in records] == [("alice", DEVICE)] * 3
    assert graph.report.refused_links == 0


@pytest.mark.parametrize("budget", BUDGETS)
def test_original_identify_of_a_device_as_itself_does_not_block_its_real_identify(
    kit: Kit, budget: int
) -> None:
    # a backend calling /track $identify before login with the same ID on both sides merges
    # nothing in Mixpanel; the device's $identify at login still merges it into alice
    records = [
        kit.ev("$identify", {"$identified_id": DEVICE, "$anon_id": DEVICE}),
        kit.ev("Page Viewed", {"distinct_id": DEVICE}),
        kit.ev("$identify", {"$identified_id": "alice", "$anon_id": DEVICE}),
        kit.ev("Purchase", {"distinct_id": "alice"}),
    ]
    graph = kit.build("original", records, memory_budget_ids=budget)
    assert kit.ids(graph, records[1]) == ("alice", DEVICE)
    assert (graph.report.refused_links, graph.report.clusters) == (0, 1)


@pytest.mark.parametrize("budget", BUDGETS)
def test_original_user_id_equal_to_its_device_id_does_not_make_the_device_a_user(
    kit: Kit, budget: int
) -> None:
    records = [
        # an app that sends the device ID as $user_id before login
        kit.ev("Opened", {"distinct_id": DEVICE, "$user_id": DEVICE, "$device_id": DEVICE}),
        kit.ev("Page Viewed", {"distinct_id": f"$device:{DEVICE}", "$device_id": DEVICE}),
        kit.ev("Login", {"distinct_id": "alice", "$user_id": "alice", "$device_id": DEVICE}),
    ]
    graph = kit.build("original", records, memory_budget_ids=budget)
    # as Simplified ID Merge (and this mode before ba708f9) resolves it
    assert kit.ids(graph, records[1]) == ("alice", DEVICE)
    assert graph.report.refused_links == 0


def test_transform_original_js_identify_rekeyed_to_its_device_is_one_amplitude_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mp2amp.toml").write_text('[mixpanel]\nid_merge = "original"\n')
    records: list[dict[str, Any]] = [
        {"event": "Page Viewed", "properties": {
            "time": T0 + 1, "distinct_id": DEVICE, "$device_id": DEVICE, "$insert_id": "i1"}},
        {"event": "$identify", "properties": {
            "time": T0 + 2, "distinct_id": DEVICE, "$anon_distinct_id": DEVICE,
            "$user_id": "alice", "$device_id": DEVICE, "$insert_id": "i2"}},
        {"event": "Purchase", "properties": {
            "time": T0 + 3, "distinct_id": DEVICE, "$user_id": "alice", "$device_id": DEVICE,
            "$insert_id": "i3"}},
    ]
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    result = CliRunner().invoke(app, ["transform", "in.jsonl", "--out", "out.jsonl", "--json"])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    events = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert summary["summary"]["events_out"] == 2
    assert {e.get("user_id") for e in events} == {"alice"}, events
    assert summary["identity"]["refused_links"] == 0


# --- guards checked along the way (pass) ------------------------------------------------------


@pytest.mark.parametrize("budget", BUDGETS)
def test_original_merged_users_tie_break_on_the_first_user_id_carried(
    kit: Kit, budget: int
) -> None:
    # alice is carried as $user_id first (a lone record), bob first links a device: the
    # $merge of the two keeps alice, in memory and spilled alike
    records = [
        kit.ev("A", {"distinct_id": "alice", "$user_id": "alice"}, T0),
        kit.ev("B", {"distinct_id": "bob", "$user_id": "bob", "$device_id": DEVICE}, T0 + 100),
        kit.ev("$merge", {"$distinct_ids": ["alice", "bob"]}, T0 + 200),
    ]
    graph = kit.build("original", records, memory_budget_ids=budget)
    assert [kit.ids(graph, r)[0] for r in records[:2]] == ["alice", "alice"]
