"""Session 17 review of identity resolution (both ID-merge modes, in memory and spilled).

``xfail(strict=True)`` tests pin defects: the reason says what is wrong. The contract each
one checks is quoted beside it (the package docstring of ``mp2amp.identity``, the README's
identity paragraph, or ``/work/shared/reference/mixpanel-api.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from mp2amp.identity import IdentityGraph, is_junk_id

if TYPE_CHECKING:
    from conftest import Kit

BUDGETS = [2_000_000, 1]  # in memory; spilled to SQLite from the first link
DEVICE = "dev-7f3a9c"
UUID_USER = "0b7a1c2e-3f4d-4e5f-8a9b-0c1d2e3f4a5b"


def _pair(graph: IdentityGraph, props: dict[str, Any]) -> tuple[str | None, str | None]:
    got = graph.resolve(props)
    return got.user_id, got.device_id


def _simplified_rekeyed_history(kit: Kit) -> list[dict[str, Any]]:
    """A Simplified ID Merge export: the device's anonymous event was re-keyed by Mixpanel
    to its user (the export carries the canonical distinct_id), with the ID it was ingested
    under kept in ``$distinct_id_before_identity``; then the login event."""
    return [
        kit.ev("Page viewed", {"distinct_id": "alice", "$device_id": DEVICE,
                               "$distinct_id_before_identity": "$device:" + DEVICE}, t=1),
        kit.ev("Logged in", {"distinct_id": "alice", "$user_id": "alice",
                             "$device_id": DEVICE}, t=2),
    ]


# --- Simplified ID Merge: retroactive = false on a re-keyed export -----------------------


@pytest.mark.parametrize("budget", BUDGETS)
def test_simplified_retroactive_off_withholds_the_user_from_a_rekeyed_anonymous_event(
    kit: Kit, budget: int
) -> None:
    records = _simplified_rekeyed_history(kit)
    original = kit.build("original", records, memory_budget_ids=budget, retroactive=False)
    # Original ID Merge reads the ingested ID: the event was anonymous
    assert _pair(original, records[0]["properties"]) == (None, DEVICE)
    graph = kit.build("simplified", records, memory_budget_ids=budget, retroactive=False)
    assert _pair(graph, records[1]["properties"]) == ("alice", DEVICE)
    # "With retroactive=False anonymous events carry only their device_id" (package doc)
    assert _pair(graph, records[0]["properties"]) == (None, DEVICE)


@pytest.mark.parametrize("budget", BUDGETS)
def test_simplified_keeps_the_device_of_a_rekeyed_event_ingested_as_a_device(
    kit: Kit, budget: int
) -> None:
    records = [
        kit.ev("Page viewed", {"distinct_id": "alice",
                               "$distinct_id_before_identity": "$device:" + DEVICE}, t=1),
        kit.ev("Logged in", {"distinct_id": "alice", "$user_id": "alice",
                             "$device_id": DEVICE}, t=2),
    ]
    original = kit.build("original", records, memory_budget_ids=budget)
    assert _pair(original, records[0]["properties"]) == ("alice", DEVICE)
    graph = kit.build("simplified", records, memory_budget_ids=budget)
    assert _pair(graph, records[0]["properties"]) == ("alice", DEVICE)


# --- Simplified ID Merge with a Data Pipelines identity table -----------------------------


@pytest.mark.parametrize("budget", BUDGETS)
def test_simplified_table_keeps_an_unmapped_uuid_user_apart_from_the_devices_owner(
    kit: Kit, tmp_path: Path, budget: int
) -> None:
    table = tmp_path / "mappings.jsonl"
    table.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [
        {"distinct_id": "$device:" + DEVICE, "resolved_distinct_id": "xavier"},
        {"distinct_id": "xavier", "resolved_distinct_id": "xavier"},
    ]))
    uuid_event = kit.ev("Invoice paid", {"distinct_id": UUID_USER, "$device_id": DEVICE})
    plain_event = kit.ev("Invoice paid", {"distinct_id": "plainuser", "$device_id": DEVICE})
    records = [uuid_event, plain_event]
    without = kit.build("simplified", records, memory_budget_ids=budget)
    assert _pair(without, uuid_event["properties"]) == (UUID_USER, DEVICE)
    graph = kit.build("simplified", records, memory_budget_ids=budget, table=table)
    # README: "in Simplified ID Merge its resolved_distinct_id is the user_id whatever it
    # looks like (UUID user IDs too) ... an event whose own distinct_id is a user ID missing
    # from the table stays that user (COALESCE(resolved_distinct_id, distinct_id)), even
    # when its $device_id is in the table"
    assert _pair(graph, plain_event["properties"]) == ("plainuser", DEVICE)
    assert _pair(graph, uuid_event["properties"]) == (UUID_USER, DEVICE)


# --- Junk IDs --------------------------------------------------------------------------------


def test_mixpanels_disallowed_distinct_ids_count_as_absent() -> None:
    disallowed = ["00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none",
                  "null", "n/a", "na", "undefined", "unknown", "<nil>", "0", "-1", "true",
                  "false", "[]", "{}"]
    assert [v for v in disallowed if not is_junk_id(v)] == []


@pytest.mark.parametrize("budget", BUDGETS)
def test_anon_distinct_id_does_not_make_one_user_of_everyone(kit: Kit, budget: int) -> None:
    first = kit.ev("Open", {"distinct_id": "anon", "$device_id": "device-one"})
    second = kit.ev("Open", {"distinct_id": "anon", "$device_id": "device-two"})
    graph = kit.build("simplified", [first, second], memory_budget_ids=budget)
    assert _pair(graph, first["properties"]) == (None, "device-one")
    assert _pair(graph, second["properties"]) == (None, "device-two")


# --- Original ID Merge: which IDs look like devices --------------------------------------


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_sixteen_digit_numeric_user_id_is_a_user(kit: Kit, budget: int) -> None:
    records = [
        kit.ev("Login", {"distinct_id": "123456789012345"}),
        kit.ev("Login", {"distinct_id": "12345678901234567"}),
        kit.ev("Login", {"distinct_id": "1234567890123456"}),
    ]
    graph = kit.build("original", records, memory_budget_ids=budget)
    assert _pair(graph, records[0]["properties"]) == ("123456789012345", None)
    assert _pair(graph, records[1]["properties"]) == ("12345678901234567", None)
    assert _pair(graph, records[2]["properties"]) == ("1234567890123456", None)


# --- Behaviour the fixes above also settle ----------------------------------------------


@pytest.mark.parametrize("budget", BUDGETS)
def test_simplified_rekeyed_event_keeps_mixpanels_user_when_the_link_is_not_exported(
    kit: Kit, budget: int
) -> None:
    # the export's dates hold the re-keyed anonymous event but not the login that linked it
    event = kit.ev("Page viewed", {"distinct_id": "alice", "$device_id": DEVICE,
                                   "$distinct_id_before_identity": "$device:" + DEVICE})
    graph = kit.build("simplified", [event], memory_budget_ids=budget)
    assert _pair(graph, event["properties"]) == ("alice", DEVICE)
    withheld = kit.build("simplified", [event], memory_budget_ids=budget, retroactive=False)
    got = withheld.resolve(event["properties"])
    # the privacy rules still see whose event it is
    assert (got.user_id, got.device_id, got.owner) == (None, DEVICE, "alice")


@pytest.mark.parametrize("budget", BUDGETS)
def test_simplified_event_ingested_under_its_bare_device_id_is_anonymous(
    kit: Kit, budget: int
) -> None:
    records = [
        # an older SDK sent the device ID itself (no $device: prefix) as distinct_id
        kit.ev("Page viewed", {"distinct_id": "alice", "$device_id": DEVICE,
                               "$distinct_id_before_identity": DEVICE}, t=1),
        kit.ev("Logged in", {"distinct_id": "alice", "$user_id": "alice",
                             "$device_id": DEVICE}, t=2),
    ]
    graph = kit.build("simplified", records, memory_budget_ids=budget, retroactive=False)
    assert _pair(graph, records[0]["properties"]) == (None, DEVICE)
    retro = kit.build("simplified", records, memory_budget_ids=budget)
    assert _pair(retro, records[0]["properties"]) == ("alice", DEVICE)


@pytest.mark.parametrize("budget", BUDGETS)
def test_simplified_rekeyed_to_its_own_device_is_not_a_user(kit: Kit, budget: int) -> None:
    event = kit.ev("Open", {"distinct_id": DEVICE,
                            "$distinct_id_before_identity": "$device:" + DEVICE})
    graph = kit.build("simplified", [event], memory_budget_ids=budget)
    assert _pair(graph, event["properties"]) == (None, DEVICE)


@pytest.mark.parametrize("budget", BUDGETS)
def test_simplified_user_ingested_under_a_user_id_keeps_the_exports_user(
    kit: Kit, budget: int
) -> None:
    # $distinct_id_before_identity a user ID: not anonymous, so retroactive=False keeps it
    event = kit.ev("Buy", {"distinct_id": "alice", "$device_id": DEVICE,
                           "$distinct_id_before_identity": "alice-legacy"})
    graph = kit.build("simplified", [event], memory_budget_ids=budget, retroactive=False)
    assert _pair(graph, event["properties"]) == ("alice", DEVICE)


def test_android_ids_need_a_hex_letter_to_look_like_devices() -> None:
    from mp2amp.identity import is_device_like

    assert is_device_like("5094f5704b9cf2b3")
    assert is_device_like("5094F5704B9CF2B3")
    assert not is_device_like("1234567890123456")
    assert not is_device_like("00000000000000001")  # 17 digits
