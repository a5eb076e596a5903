from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Kit

BUDGETS = [2_000_000, 1]
ANON = "0f8fad5b-d9cb-469f-a165-70867728950e"
ANON2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.mark.parametrize("budget", BUDGETS)
def test_identify_with_http_names_stitches_the_anonymous_history(kit: Kit, budget: int) -> None:
    before = kit.ev("Open", {"distinct_id": ANON})
    identify = kit.ev("$identify", {"$identified_id": "alice", "$anon_id": ANON})
    after = kit.ev("Buy", {"distinct_id": "alice"})
    graph = kit.build("original", [before, identify, after], memory_budget_ids=budget)
    assert kit.ids(graph, before) == ("alice", ANON)
    assert kit.ids(graph, after) == ("alice", None)
    assert graph.report.identity_records == {"$identify": 1}
    assert graph.report.clusters == graph.report.clusters_with_user == 1
    assert graph.report.spilled is (budget == 1)


def test_identify_with_js_sdk_names(kit: Kit) -> None:
    before = kit.ev("Open", {"distinct_id": "$device:" + ANON, "$device_id": ANON})
    identify = kit.ev("$identify", {"distinct_id": "bob", "$anon_distinct_id": "$device:" + ANON,
                                    "$device_id": ANON, "$user_id": "bob"})
    graph = kit.build("original", [before, identify])
    assert kit.ids(graph, before) == ("bob", ANON)


def test_create_alias_and_merge(kit: Kit) -> None:
    alias = kit.ev("$create_alias", {"distinct_id": ANON, "alias": "carol"})
    merge = kit.ev("$merge", {"$distinct_ids": ["carol", "carol-old-account"]})
    anon = kit.ev("Open", {"distinct_id": ANON})
    old = kit.ev("Open", {"distinct_id": "carol-old-account"})
    graph = kit.build("original", [alias, merge, anon, old])
    assert kit.ids(graph, anon) == ("carol", ANON)
    assert kit.ids(graph, old) == ("carol", None)  # the alias (a named user) wins


def test_distinct_id_before_identity_rekeyed_to_an_anonymous_canonical(kit: Kit) -> None:
    # Export re-keys to the canonical distinct_id, which can be the anonymous ID.
    logged_in = kit.ev("Buy", {"distinct_id": ANON, "$distinct_id_before_identity": "dave"})
    anon = kit.ev("Open", {"distinct_id": ANON})
    graph = kit.build("original", [logged_in, anon])
    assert kit.ids(graph, logged_in) == ("dave", None)
    assert kit.ids(graph, anon) == ("dave", ANON)


@pytest.mark.parametrize("budget", BUDGETS)
def test_second_user_on_a_device_is_refused_and_reported(kit: Kit, budget: int) -> None:
    first = kit.ev("$identify", {"$identified_id": "erin", "$anon_id": ANON}, t=100)
    second = kit.ev("$identify", {"$identified_id": "frank", "$anon_id": ANON}, t=200)
    anon = kit.ev("Open", {"distinct_id": ANON}, t=300)
    frank = kit.ev("Buy", {"distinct_id": "frank", "$user_id": "frank", "$device_id": ANON}, t=400)
    graph = kit.build("original", [frank, second, anon, first], memory_budget_ids=budget)
    assert kit.ids(graph, anon) == ("erin", ANON)
    assert kit.ids(graph, frank) == ("frank", ANON)
    assert graph.report.refused_links == 2  # frank's $identify and his device+user event
    assert graph.report.refused_examples[0].startswith("frank <-> " + ANON)


@pytest.mark.parametrize("budget", BUDGETS)
def test_cluster_cap_refuses_further_merges_and_reports(kit: Kit, budget: int) -> None:
    merges = [kit.ev("$merge", {"$distinct_ids": ["grace", f"member-{i:03d}"]}, t=i) for i in range(6)]
    graph = kit.build("original", merges, cluster_cap=4, memory_budget_ids=budget)
    members = [f"member-{i:03d}" for i in range(6)]
    users = [graph.resolve({"distinct_id": m}).user_id for m in members]
    assert users[:3] == ["grace"] * 3  # earliest merges joined, up to 4 IDs
    assert users[3:] == members[3:]  # refused: each stays its own user
    assert graph.report.cap_hits == 3
    assert graph.report.cap_examples[0] == "grace <-> member-003 ($merge)"


def test_mixpanel_cap_is_500(kit: Kit) -> None:
    merges = [kit.ev("$merge", {"$distinct_ids": ["hub-user", f"id-{i:04d}"]}, t=i)
              for i in range(520)]
    graph = kit.build("original", merges)
    joined = sum(graph.resolve({"distinct_id": f"id-{i:04d}"}).user_id == "hub-user"
                 for i in range(520))
    assert joined == 499
    assert graph.report.cap_hits == 21


def test_user_choice_prefers_named_users_then_predicate(kit: Kit) -> None:
    uuid_user = "3b241101-e2bb-4255-8caf-4136c566a962"
    records = [
        kit.ev("$identify", {"$identified_id": uuid_user, "$anon_id": ANON}),  # UUID user IDs
        kit.ev("$merge", {"$distinct_ids": ["acct-9", "acct-1"]}),
    ]
    graph = kit.build("original", records)
    assert graph.resolve({"distinct_id": ANON}).user_id == uuid_user
    assert graph.resolve({"distinct_id": "acct-9"}).user_id == "acct-1"  # same time: smallest
    custom = kit.build("original", records, user_id_predicate=lambda i: i.endswith("-9"))
    assert custom.resolve({"distinct_id": "acct-1"}).user_id == "acct-9"


def test_retroactive_off(kit: Kit) -> None:
    anon = kit.ev("Open", {"distinct_id": ANON})
    identify = kit.ev("$identify", {"$identified_id": "ivy", "$anon_id": ANON})
    after = kit.ev("Buy", {"distinct_id": "ivy"})
    graph = kit.build("original", [anon, identify, after], retroactive=False)
    assert kit.ids(graph, anon) == (None, ANON)
    assert kit.ids(graph, after) == ("ivy", None)


def test_unlinked_ids_fall_back_to_their_shape(kit: Kit) -> None:
    graph = kit.build("original", [])
    assert graph.resolve({"distinct_id": "jack@example.com"}).user_id == "jack@example.com"
    assert graph.resolve({"distinct_id": ANON2}) == graph.resolve({"distinct_id": ANON2})
    assert (graph.resolve({"distinct_id": ANON2}).user_id,
            graph.resolve({"distinct_id": ANON2}).device_id) == (None, ANON2)
    both = graph.resolve({"distinct_id": "swift-dev-id-1", "$device_id": "swift-dev-id-1"})
    assert (both.user_id, both.device_id) == (None, "swift-dev-id-1")
    nothing = graph.resolve({"distinct_id": "undefined", "$user_id": None})
    assert (nothing.user_id, nothing.device_id) == (None, None)
