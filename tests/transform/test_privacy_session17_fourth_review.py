"""Session 17, fourth review: the privacy part of c5bf18d (shared devices in exclusions,
ip = drop with a plan, hashed lists read as the plan reads them).

Tests marked ``xfail(strict=True, reason=...)`` show a defect: they pass once it is fixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mp2amp.config import load_config
from mp2amp.identity import IdentityGraph
from mp2amp.models import Resolved, Skip
from mp2amp.transform.events import Transformer
from mp2amp.transform.privacy import PrivacyRules
from mp2amp.transform.settings import TransformSettings

T0 = 1_709_600_000  # 2024-03-05 UTC


def rec(name: str, dt: int, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0 + dt, "mp_lib": "web", **props}}


def fates(graph: IdentityGraph, records: list[dict[str, Any]], listed: list[str]) -> list[str]:
    for r in records:
        graph.observe(r)
    graph.finish()
    transformer = Transformer(TransformSettings(privacy=PrivacyRules(excluded_users=listed)))
    transformer.exclude_merged_users(graph.resolve, graph.shared_device)
    out = [transformer.event(r, graph.resolve(r["properties"])) for r in records]
    return ["skip" if isinstance(o, Skip) else "sent" if isinstance(o, dict) else repr(o)
            for o in out]


def settings_of(tmp_path: Path, plan: str | None, config: str,
                monkeypatch: pytest.MonkeyPatch) -> TransformSettings:
    monkeypatch.delenv("MP2AMP_HASH_SALT", raising=False)
    head = ""
    if plan is not None:
        (tmp_path / "plan.yaml").write_text(plan)
        head = '[transform]\nplan = "plan.yaml"\n'
    (tmp_path / "mp2amp.toml").write_text(f"{head}{config}")
    return load_config(tmp_path / "mp2amp.toml").transform_settings()


# --- shared devices: Original ID Merge, spilled graphs -----------------------------------


def test_original_id_merge_shared_device_listing_does_not_exclude_its_first_user(
        tmp_path: Path) -> None:
    """Same family tablet as the third review's simplified test, Original ID Merge: alice
    identified on the tablet first, bob's later $user_id + $device_id link is refused
    (README: refused like $identify, "so shared devices keep their first user"). Bob's
    deletion request lists bob and his tablet; alice's event on her phone must be sent."""
    records = [
        rec("Login", 0, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                    "$device_id": "tablet-1"}),
        rec("Page", 1, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                   "$device_id": "phone-A"}),
        rec("Login", 10, distinct_id="bob-0001", **{"$user_id": "bob-0001",
                                                    "$device_id": "tablet-1"}),
    ]
    with IdentityGraph("original", tmp_path) as graph:
        out = fates(graph, records, ["bob-0001", "$device:tablet-1"])
        assert graph.resolve(records[2]["properties"]).user_id == "bob-0001"
    assert out[2] == "skip"
    assert out[1] == "sent", out  # alice asked for nothing


def test_a_spilled_simplified_graph_knows_its_shared_devices_like_the_in_memory_one(
        tmp_path: Path) -> None:
    """SimplifiedIds.is_shared reads the SQLite table once the graph spilled: the same
    exclusions as in memory (regression guard for the spilled path)."""
    records = [
        rec("Login", 0, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                    "$device_id": "tablet-1"}),
        rec("Page", 1, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                   "$device_id": "phone-A"}),
        rec("Login", 10, distinct_id="bob-0001", **{"$user_id": "bob-0001",
                                                    "$device_id": "tablet-1"}),
    ] + [rec("Page", 20 + i, distinct_id=f"user-{i:04d}", **{"$user_id": f"user-{i:04d}",
                                                            "$device_id": f"dev-{i:04d}"})
         for i in range(40)]
    listed = ["bob-0001", "$device:tablet-1"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with IdentityGraph("simplified", tmp_path / "a") as graph:
        memory = fates(graph, records, listed)
    with IdentityGraph("simplified", tmp_path / "b", memory_budget_ids=4) as graph:
        spilled = fates(graph, records, listed)
        assert graph.report.spilled
        assert graph.shared_device("tablet-1") and not graph.shared_device("phone-A")
    assert spilled == memory
    assert memory[:3] == ["skip", "sent", "skip"], memory  # the tablet itself is listed


# --- ip = drop ----------------------------------------------------------------------------


def test_ip_dropped_without_a_plan_keeps_the_fast_path_and_sends_no_ip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(tmp_path, None, '[privacy]\nip = "drop"\n', monkeypatch)
    transformer = Transformer(settings)
    assert transformer._privacy is None and transformer._direct  # no per-event privacy pass
    out = transformer.event(rec("Page", 0, distinct_id="bob-0001", ip="203.0.113.9",
                                **{"$ip": "203.0.113.8"}), Resolved("bob-0001", None))
    assert isinstance(out, dict), out
    assert "203.0.113" not in repr(out), out


def test_ip_dropped_with_a_plan_not_naming_ip_sends_what_it_sent_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """c5bf18d switches the privacy pass on for ip = drop + a plan: for a plan that does not
    touch ip/$ip, every event must come out as without that pass."""
    plan = ("version: 1\nunplanned_events: flag\nevents:\n  Buy:\n    rename: Purchase\n"
            "    properties:\n      tags:\n        type: list\n"
            "properties:\n  plan_name:\n    rename: plan\n")
    settings = settings_of(tmp_path, plan, '[privacy]\nip = "drop"\n', monkeypatch)
    new = Transformer(settings)
    assert new._privacy is not None
    old = Transformer(settings)
    old._privacy = None  # as before c5bf18d
    for name in ("Buy", "Page"):
        record = rec(name, 0, distinct_id="bob-0001", ip="203.0.113.9", tags='["a","b"]',
                     plan_name="gold", **{"$ip": "203.0.113.8", "$city": "Oslo"})
        a = new.event(record, Resolved("bob-0001", None))
        b = old.event(record, Resolved("bob-0001", None))
        assert a == b
        assert isinstance(a, dict) and "203.0.113" not in repr(a), a


# --- reading_lists: renamed events, unplanned policies -----------------------------------


@pytest.mark.parametrize("policy", ["keep", "flag"])
def test_hashed_list_text_read_by_the_source_event_name_of_a_renamed_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    """The plan keys events by Mixpanel name (rename: the Amplitude name); the list it
    types for the renamed event and globally for unplanned ones are both read."""
    plan = (f"version: 1\nunplanned_events: {policy}\nevents:\n  Buy:\n"
            "    rename: Purchase\n    properties:\n      tags:\n        type: list\n"
            "properties:\n  cats:\n    type: list\n")
    settings = settings_of(tmp_path, plan, '[privacy]\nhash_properties = ["tags", "cats"]\n'
                           'hash_salt = "pepper"\n', monkeypatch)
    transformer = Transformer(settings)
    text = '["a@private.example", "b@private.example"]'
    as_list = ["a@private.example", "b@private.example"]

    def props(name: str, value: Any) -> dict[str, Any]:
        out = transformer.event(rec(name, 0, distinct_id="bob-0001", tags=value, cats=value),
                                Resolved("bob-0001", None))
        assert isinstance(out, dict), out
        return out["event_properties"]

    bought, bought_list = props("Buy", text), props("Buy", as_list)
    assert bought["tags"] == bought_list["tags"] and len(bought["tags"]) == 2
    assert bought["cats"] == bought_list["cats"] and len(bought["cats"]) == 2
    paged, paged_list = props("Page", text), props("Page", as_list)
    assert paged["cats"] == paged_list["cats"] and len(paged["cats"]) == 2
    assert isinstance(paged["tags"], str)  # untyped for an unplanned event: one hash
    # the renamed name is not a planned event: "Purchase" as a source name is unplanned
    purchase = props("Purchase", text)
    assert isinstance(purchase["tags"], str) and len(purchase["cats"]) == 2
