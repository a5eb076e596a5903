"""Original ID Merge: a device is shared only if a user it was refused to is, once every
link is applied, another person (not joined to it later by a $merge, an alias or canonical
export evidence), and never when the refused anonymous side is itself a user (a user-like
distinct_id of server-side events included); the same in memory and spilled, also when the
spilled refusals are written while the links are still being read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mp2amp.identity import IdentityGraph, store

T0 = 1_709_600_000
BUDGETS = [2_000_000, 4]  # in memory; spilled


def rec(name: str, dt: int, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0 + dt, "mp_lib": "web", **props}}


def login(dt: int, user: str, device: str) -> dict[str, Any]:
    return rec("Login", dt, distinct_id=user, **{"$user_id": user, "$device_id": device})


def build(graph: IdentityGraph, records: list[dict[str, Any]]) -> None:
    for r in records:
        graph.observe(r)
    graph.finish()


def joined_by(how: str) -> dict[str, Any]:
    """The record, after bob-0001's refused login on alice-001's tablet, that makes the
    two accounts one person."""
    if how == "merge":
        return rec("$merge", 20, distinct_id="alice-001",
                   **{"$distinct_ids": ["alice-001", "bob-0001"]})
    if how == "alias":
        return rec("$create_alias", 20, distinct_id="alice-001", alias="bob-0001")
    # an export re-keyed after the merge: the event names the ID it had before
    return rec("Page", 20, distinct_id="alice-001",
               **{"$distinct_id_before_identity": "bob-0001"})


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("how", ["merge", "alias", "canonical"])
def test_a_later_join_of_the_two_users_unshares_the_device(
        tmp_path: Path, budget: int, how: str) -> None:
    records = [login(0, "alice-001", "tablet-1"), login(10, "bob-0001", "tablet-1"),
               joined_by(how)]
    with IdentityGraph("original", tmp_path, memory_budget_ids=budget) as graph:
        build(graph, records)
        assert graph.report.refused_links == 1
        users = {graph.resolve(r["properties"]).user_id for r in records}
        assert len(users) == 1, users
        assert graph.report.shared_devices == 0
        assert graph.report.shared_device_examples == []
        assert not graph.shared_device("tablet-1")


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_device_stays_shared_while_one_refused_user_is_another_person(
        tmp_path: Path, budget: int) -> None:
    """Bob is merged into Alice later, Carol never: the tablet is still shared (by Carol)."""
    records = [login(0, "alice-001", "tablet-1"), login(10, "bob-0001", "tablet-1"),
               login(11, "carol-001", "tablet-1"), joined_by("merge")]
    with IdentityGraph("original", tmp_path, memory_budget_ids=budget) as graph:
        build(graph, records)
        assert graph.report.refused_links == 2
        assert graph.report.shared_devices == 1
        assert graph.report.shared_device_examples == ["tablet-1"]
        assert graph.shared_device("tablet-1")


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_server_side_user_named_anonymous_is_no_shared_device_spilled_too(
        tmp_path: Path, budget: int) -> None:
    """carol@old.example is known only from server-side events (distinct_id beside a
    $device_id): a user for the refusal, so never the device side of it."""
    records = [
        rec("Checkout", 0, distinct_id="carol@old.example", **{"$device_id": "browser-C1"}),
        rec("$create_alias", 1, distinct_id="carol@old.example", alias="carol-login"),
        rec("$identify", 10, distinct_id="carol@new.example",
            **{"$identified_id": "carol@new.example", "$anon_id": "carol@old.example"}),
    ]
    with IdentityGraph("original", tmp_path, memory_budget_ids=budget) as graph:
        build(graph, records)
        assert graph.report.refused_links == 1
        assert graph.report.shared_devices == 0
        assert not graph.shared_device("carol@old.example")


def test_spilled_refusals_written_while_the_links_are_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refusal flushed at once (a big graph writes them in batches mid-read)."""
    monkeypatch.setattr(store, "BATCH_ROWS", 1)
    records = []
    for k in range(6):
        records += [login(100 * k, f"first-{k:03d}", f"tablet-{k}"),
                    login(100 * k + 10, f"second-{k:03d}", f"tablet-{k}")]
    records.append(rec("$merge", 900, distinct_id="first-000",
                       **{"$distinct_ids": ["first-000", "second-000"]}))
    with IdentityGraph("original", tmp_path, memory_budget_ids=4) as graph:
        build(graph, records)
        assert graph.report.spilled
        assert graph.report.refused_links == 6
        assert graph.report.shared_devices == 5
        assert [graph.shared_device(f"tablet-{k}") for k in range(6)] == [False] + [True] * 5
