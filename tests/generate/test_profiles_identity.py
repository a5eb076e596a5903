"""Profiles and groups in Engage shape, the identity table, the Lexicon schema, and identity
events with the property names the SDKs really send."""

from __future__ import annotations

import re
from typing import Any

from generate_kit import Project, read_lines

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


def test_user_profiles_have_engage_shape(simplified: Project) -> None:
    profiles = simplified.jsonl("profiles/users.jsonl.gz")
    assert profiles
    rows = simplified.truth_rows()
    users = {row[1] for row in rows if row[1]}
    for profile in profiles:
        assert set(profile) == {"$distinct_id", "$properties"}
        props = profile["$properties"]
        assert ISO.match(props["$created"]) and ISO.match(props["$last_seen"])
        assert len(props["$country_code"]) == 2 and "mp_country_code" not in props
        assert str(profile["$distinct_id"]) in users
        for charge in props.get("$transactions", []):
            assert set(charge) == {"$time", "$amount"} and ISO.match(charge["$time"])
    with_revenue = [p for p in profiles if "$transactions" in p["$properties"]]
    assert with_revenue and any(t["$amount"] < 0 or len(p["$properties"]["$transactions"]) > 1
                                for p in with_revenue for t in p["$properties"]["$transactions"])


def test_group_profiles_and_company_key_on_events(simplified: Project) -> None:
    groups = simplified.jsonl("profiles/groups/company_id.jsonl.gz")
    assert groups and all(set(g) == {"$group_key", "$group_id", "$properties"} for g in groups)
    assert {g["$group_key"] for g in groups} == {"company_id"}
    ids = {g["$group_id"] for g in groups}
    on_events: set[str] = set()
    for line in read_lines(simplified.root):
        value: Any = line.record["properties"].get("company_id") if line.record else None
        if isinstance(value, list):
            on_events.update(value)
        elif isinstance(value, str):
            on_events.add(value)
    assert on_events and on_events <= ids


def test_identity_table_maps_device_ids_to_users(simplified: Project) -> None:
    rows = simplified.jsonl("identity/mappings.jsonl.gz")
    assert rows and all(set(r) == {"distinct_id", "resolved_distinct_id"} for r in rows)
    assert all(r["distinct_id"].startswith("$device:") for r in rows)
    table = {r["distinct_id"][8:]: r["resolved_distinct_id"] for r in rows}
    truth = {row[0]: row[1] for row in simplified.truth_rows()}
    checked = 0
    for line in read_lines(simplified.root):
        props = line.record["properties"] if line.record else {}
        iid, device = props.get("$insert_id"), props.get("$device_id")
        if iid in truth and device and "$user_id" not in props and truth[iid]:
            assert table[device] == truth[iid]  # an anonymous event's user is its device's row
            checked += 1
    assert checked > 0


def test_schema_is_a_lexicon_response(simplified: Project) -> None:
    schema = simplified.json("schema.json")
    assert schema["status"] == "ok"
    names = {e["name"] for e in schema["results"] if e["entityType"] == "event"}
    assert {"Order Completed", "Money Transfer Sent", "Content Played", "Trial Started"} <= names
    order = next(e for e in schema["results"] if e["name"] == "Order Completed")
    props = order["schemaJson"]["properties"]
    assert props["revenue"]["type"] == "number" and props["products"]["type"] == "array"
    assert order["schemaJson"]["metadata"]["com.mixpanel"]["displayName"] == "Order Completed"


def test_identity_events_use_the_sdk_property_names(original: Project) -> None:
    seen: dict[str, list[dict[str, Any]]] = {}
    for line in read_lines(original.root):
        if line.record and line.record["event"] in ("$identify", "$create_alias", "$merge"):
            seen.setdefault(line.record["event"], []).append(line.record["properties"])
    sdk = [p for p in seen["$identify"] if "$anon_distinct_id" in p]
    http = [p for p in seen["$identify"] if "$anon_id" in p]
    assert sdk and http and len(sdk) + len(http) == len(seen["$identify"])
    for props in sdk:  # mixpanel-js identify(): distinct_id = new id, $anon_distinct_id = previous
        assert props["distinct_id"] == props["$user_id"] and props["$anon_distinct_id"] == props["$device_id"]
    for props in http:
        assert props["$identified_id"] == props["distinct_id"]
    assert all({"alias", "distinct_id"} <= set(p) for p in seen["$create_alias"])
    assert all(len(p["$distinct_ids"]) == 2 for p in seen["$merge"])
    summary = original.json("truth/summary.json")
    assert summary["identity_events"] == sum(len(v) for v in seen.values())


def test_simplified_projects_have_no_identity_events(simplified: Project) -> None:
    events = {line.record["event"] for line in read_lines(simplified.root) if line.record}
    assert not events & {"$identify", "$create_alias", "$merge"}
    assert simplified.json("truth/summary.json")["identity_events"] == 0
