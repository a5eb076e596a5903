from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Kit

BUDGETS = [2_000_000, 1]  # in memory, and spilled to SQLite from the first link


@pytest.mark.parametrize("budget", BUDGETS)
def test_anonymous_history_joins_the_first_user(kit: Kit, budget: int) -> None:
    anon = kit.ev("Page View", {"distinct_id": "$device:d1", "$device_id": "d1"}, t=100)
    login = kit.ev("Login", {"distinct_id": "u1", "$device_id": "d1", "$user_id": "u1"}, t=200)
    after = kit.ev("Buy", {"distinct_id": "u1", "$device_id": "d1", "$user_id": "u1"}, t=300)
    graph = kit.build("simplified", [anon, login, after], memory_budget_ids=budget)
    assert kit.ids(graph, anon) == ("u1", "d1")
    assert kit.ids(graph, login) == ("u1", "d1")
    assert kit.ids(graph, after) == ("u1", "d1")
    assert graph.report.spilled is (budget == 1)
    assert graph.report.links == 1


@pytest.mark.parametrize("budget", BUDGETS)
def test_shared_device_keeps_its_first_user_regardless_of_file_order(
    kit: Kit, budget: int
) -> None:
    anon = kit.ev("Open", {"distinct_id": "$device:shared"}, t=50)
    first = kit.ev("Login", {"$device_id": "shared", "$user_id": "alice"}, t=100)
    second = kit.ev("Login", {"$device_id": "shared", "$user_id": "bob"}, t=500)
    graph = kit.build("simplified", [second, anon, first], memory_budget_ids=budget)
    assert kit.ids(graph, anon) == ("alice", "shared")
    assert kit.ids(graph, second) == ("bob", "shared")  # bob's own events stay bob's
    assert graph.report.shared_devices == 1
    assert graph.report.shared_device_examples == ["shared"]


def test_same_time_tie_goes_to_the_smallest_user_id(kit: Kit) -> None:
    a = kit.ev("X", {"$device_id": "dev-1", "$user_id": "zed"}, t=10)
    b = kit.ev("X", {"$device_id": "dev-1", "$user_id": "amy"}, t=10)
    anon = kit.ev("Y", {"$device_id": "dev-1"}, t=20)
    for order in ([a, b, anon], [b, a, anon]):
        graph = kit.build("simplified", order)
        assert kit.ids(graph, anon) == ("amy", "dev-1")
        graph.close()


def test_retroactive_off_keeps_anonymous_events_on_the_device(kit: Kit) -> None:
    anon = kit.ev("Page View", {"distinct_id": "$device:d1", "$device_id": "d1"})
    login = kit.ev("Login", {"$device_id": "d1", "$user_id": "u1"})
    graph = kit.build("simplified", [anon, login], retroactive=False)
    assert kit.ids(graph, anon) == (None, "d1")
    assert kit.ids(graph, login) == ("u1", "d1")


def test_distinct_id_rules(kit: Kit) -> None:
    only_user = kit.ev("A", {"distinct_id": "legacy-user"})
    only_device = kit.ev("B", {"distinct_id": "$device:abc"})
    rekeyed = kit.ev("C", {"distinct_id": "u9", "$device_id": "d9"})  # export shows the canonical
    same = kit.ev("D", {"distinct_id": "d8", "$device_id": "d8"})  # device used as distinct_id
    graph = kit.build("simplified", [only_user, only_device, rekeyed, same])
    assert kit.ids(graph, only_user) == ("legacy-user", None)
    assert kit.ids(graph, only_device) == (None, "abc")
    assert kit.ids(graph, rekeyed) == ("u9", "d9")
    assert kit.ids(graph, same) == (None, "d8")


def test_device_from_distinct_id_links_to_user(kit: Kit) -> None:
    link = kit.ev("custom", {"distinct_id": "$device:123", "$user_id": "user123"}, t=1)
    anon = kit.ev("open", {"distinct_id": "$device:123"}, t=0)
    graph = kit.build("simplified", [link, anon])
    assert kit.ids(graph, anon) == ("user123", "123")


def test_junk_ids_count_as_absent_and_are_counted(kit: Kit) -> None:
    junk_user = kit.ev("A", {"distinct_id": "$device:d2", "$device_id": "d2", "$user_id": "undefined"})
    junk_all = kit.ev("B", {"distinct_id": "null", "$device_id": "00000000-0000-0000-0000-000000000000"})
    graph = kit.build("simplified", [junk_user, junk_all])
    assert kit.ids(graph, junk_user) == (None, "d2")
    assert kit.ids(graph, junk_all) == (None, None)
    assert graph.report.links == 0
    assert graph.report.junk_ids == {"$user_id": 1, "distinct_id": 1, "$device_id": 1}


def test_short_ids_are_kept(kit: Kit) -> None:
    short = kit.ev("A", {"$device_id": "d", "$user_id": "42"})
    anon = kit.ev("B", {"$device_id": "d"})
    graph = kit.build("simplified", [short, anon])
    assert kit.ids(graph, anon) == ("42", "d")


def test_hot_shard_event_uses_the_original_distinct_id(kit: Kit) -> None:
    hot = kit.ev("$hotshard_events", {"distinct_id": "", "mp_original_distinct_id": "big-user",
                                  "mp_original_event_name": "Signed up"})
    graph = kit.build("simplified", [hot])
    assert kit.ids(graph, hot) == ("big-user", None)


def test_identity_events_are_identity_records_and_do_not_link(kit: Kit) -> None:
    identify = kit.ev("$identify", {"distinct_id": "u1", "$anon_distinct_id": "$device:d1",
                                "$device_id": "d1", "$user_id": "u1"})
    anon = kit.ev("Open", {"distinct_id": "$device:d1", "$device_id": "d1"})
    from mp2amp.identity import IdentityGraph

    graph = IdentityGraph("simplified", kit.workdir)
    assert graph.observe(identify) is True
    assert graph.observe(anon) is False
    assert graph.observe({"$distinct_id": "profile"}) is False  # not an event: ignored
    report = graph.finish()
    assert report.identity_records == {"$identify": 1}
    assert report.records_observed == 2
    assert kit.ids(graph, anon) == (None, "d1")


def test_resolve_before_finish_finishes_and_observe_after_is_refused(kit: Kit) -> None:
    from mp2amp.errors import InvariantViolation
    from mp2amp.identity import IdentityGraph

    graph = IdentityGraph("simplified", kit.workdir)
    graph.observe(kit.ev("A", {"$device_id": "d1", "$user_id": "u1"}))
    assert graph.resolve({"$device_id": "d1"}).user_id == "u1"
    with pytest.raises(InvariantViolation, match="after finish"):
        graph.observe(kit.ev("B", {"$device_id": "d1"}))


def test_bad_settings_are_reported_together(kit: Kit) -> None:
    from mp2amp.errors import ConfigError
    from mp2amp.identity import IdentityGraph

    with pytest.raises(ConfigError) as caught:
        IdentityGraph("legacy", kit.workdir, memory_budget_ids=0, cluster_cap=1)
    assert len(caught.value.problems) == 3
