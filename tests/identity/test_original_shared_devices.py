"""Original ID Merge's shared devices: only the anonymous side of a link refused because
both sides had a user, counted in the report as Simplified ID Merge counts its own, the
same whether the graph stayed in memory or spilled to SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mp2amp.identity import IdentityGraph
from mp2amp.models import Skip
from mp2amp.transform.events import Transformer
from mp2amp.transform.privacy import PrivacyRules
from mp2amp.transform.settings import TransformSettings

T0 = 1_709_600_000
BUDGETS = [2_000_000, 4]  # in memory; spilled


def rec(name: str, dt: int, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0 + dt, "mp_lib": "web", **props}}


def build(graph: IdentityGraph, records: list[dict[str, Any]]) -> None:
    for r in records:
        graph.observe(r)
    graph.finish()


def sent(graph: IdentityGraph, records: list[dict[str, Any]], listed: list[str]) -> list[bool]:
    transformer = Transformer(TransformSettings(privacy=PrivacyRules(excluded_users=listed)))
    transformer.exclude_merged_users(graph.resolve, graph.shared_device)
    return [not isinstance(transformer.event(r, graph.resolve(r["properties"])), Skip)
            for r in records]


def user_named_anonymous() -> list[dict[str, Any]]:
    """Bob's $identify names Alice's user ID as its anonymous ID: refused (Alice has a
    user), but alice-001 is a user, not a device."""
    return [
        rec("Page", 0, distinct_id="$device:d-alice", **{"$device_id": "d-alice"}),
        rec("$identify", 1, distinct_id="alice-001", **{"$identified_id": "alice-001",
                                                        "$anon_id": "$device:d-alice"}),
        rec("Page", 2, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                   "$device_id": "phone-A"}),
        rec("$identify", 10, distinct_id="bob-0001", **{"$identified_id": "bob-0001",
                                                        "$anon_id": "alice-001"}),
        rec("Page", 11, distinct_id="bob-0001", **{"$user_id": "bob-0001"}),
    ]


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_user_named_as_the_anonymous_side_of_a_refused_link_is_no_shared_device(
        tmp_path: Path, budget: int) -> None:
    with IdentityGraph("original", tmp_path, memory_budget_ids=budget) as graph:
        build(graph, user_named_anonymous())
        assert graph.report.refused_links == 1
        assert graph.report.shared_devices == 0
        assert not graph.shared_device("alice-001")
        # listing Alice excludes every event of hers, her anonymous device's too
        # (the $identify records are never sent: they feed the graph)
        out = sent(graph, user_named_anonymous(), ["alice-001"])
        assert [out[i] for i in (0, 2, 4)] == [False, False, True], out


def three_shared_tablets() -> list[dict[str, Any]]:
    out = []
    for k in range(3):
        tablet = f"tablet-{k}"
        for dt, user in ((0, f"first-{k:03d}"), (10, f"second-{k:03d}")):
            out.append(rec("Login", 100 * k + dt, distinct_id=user,
                           **{"$user_id": user, "$device_id": tablet}))
    # a server-side event of a third user naming tablet-2: refused evidence, same device
    out.append(rec("Sync", 400, distinct_id="third-002", **{"$device_id": "tablet-2"}))
    return out


@pytest.mark.parametrize("budget", BUDGETS)
def test_the_report_counts_each_shared_device_once_with_examples(
        tmp_path: Path, budget: int) -> None:
    with IdentityGraph("original", tmp_path, memory_budget_ids=budget) as graph:
        build(graph, three_shared_tablets())
        report = graph.report
        assert report.spilled == (budget == 4)
        assert report.refused_links == 4
        assert report.shared_devices == 3
        assert report.shared_device_examples == ["tablet-0", "tablet-1", "tablet-2"]
        assert [graph.shared_device(d) for d in ("tablet-2", "first-002", "second-002",
                                                 "third-002", "$device:tablet-2")] == [
            True, False, False, False, False]
