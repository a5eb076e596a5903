"""insert_id: deterministic, Mixpanel-dedup-consistent, stable across config changes."""

from __future__ import annotations

from typing import Any

from mp2amp.models import Resolved
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform import insert_id as insert_id_module
from mp2amp.transform.insert_id import (
    JUNK_LONGEST,
    insert_id_for,
    mixpanel_insert_id,
    usable_insert_id,
)

IDS = Resolved("user-1", "device-1")


def event(name: str = "Items sold", **props: Any) -> dict[str, Any]:
    base = {"time": 1648140612, "distinct_id": "test@test.com"}
    base.update(props)
    return {"event": name, "properties": base}


def iid(record: dict[str, Any], settings: TransformSettings | None = None) -> str:
    out = Transformer(settings or TransformSettings()).event(record, IDS)
    assert isinstance(out, dict), out
    return str(out["insert_id"])


def test_mixpanel_insert_id_is_kept_readable_as_the_prefix() -> None:
    value = iid(event(**{"$insert_id": "935d87b1-00cd-41b7-be34-b9d98dd08b75"}))
    assert value.startswith("935d87b1-00cd-41b7-be34-b9d98dd08b75-")
    assert mixpanel_insert_id(value) == "935d87b1-00cd-41b7-be34-b9d98dd08b75"


def test_shared_insert_id_on_distinct_events_does_not_collapse() -> None:
    # Wild Adobe sample: one $insert_id on different events/times of one user. Amplitude
    # dedups on (device, insert_id) and would drop all but one.
    shared = "935d87b1-00cd-41b7-be34-b9d98dd08b75"
    a = iid(event("Sign off", time=1648140611, **{"$insert_id": shared}))
    b = iid(event("Items sold", time=1648140612, **{"$insert_id": shared}))
    c = iid(event("Sign off", time=1648530419, **{"$insert_id": shared}))
    assert len({a, b, c}) == 3


def test_exact_mixpanel_duplicates_share_one_id() -> None:
    # Mixpanel's dedup key: event, distinct_id, time, $insert_id. Ingestion metadata differs.
    a = event(**{"$insert_id": "abc123", "mp_processing_time_ms": 1})
    b = event(**{"$insert_id": "abc123", "mp_processing_time_ms": 2})
    assert iid(a) == iid(b)


def test_without_insert_id_a_128_bit_content_hash_is_used() -> None:
    a = iid(event(item="pen"))
    assert a.startswith("mp-") and len(a) == 35 and mixpanel_insert_id(a) is None
    assert iid(event(item="pen")) == a  # deterministic
    assert iid(event(item="ink")) != a  # properties are part of the identity
    assert iid(event(item="pen", token="t", **{"$mp_api_endpoint": "x"})) == a  # delivery is not
    assert iid(event(item="pen", mp_processing_time_ms=5)) != a  # a stored event's stamp is
    # key order does not matter
    r1 = {"event": "e", "properties": {"time": 1648140612, "a": 1, "b": {"x": 1, "y": 2}}}
    r2 = {"event": "e", "properties": {"b": {"y": 2, "x": 1}, "a": 1, "time": 1648140612}}
    assert iid(r1) == iid(r2)


def test_placeholder_insert_ids_are_not_trusted() -> None:
    for junk in ("", "null", "undefined", "source_id", None, {"x": 1}, "x" * 65):
        assert usable_insert_id(junk) is None
    assert usable_insert_id(28096095) == "28096095"
    assert iid(event(**{"$insert_id": "source_id"})).startswith("mp-")


def test_id_does_not_change_with_timezone_plan_or_privacy_config() -> None:
    record = event(email="a@example.com", **{"$insert_id": "ndwfto16kmnkrnx0"})
    utc = iid(record)
    legacy = iid(record, TransformSettings(legacy_time=True, timezone="America/Los_Angeles"))
    assert utc == legacy


def test_hash_tolerates_values_json_cannot_encode() -> None:
    value = insert_id_for("e", None, 1, None, {"big": 2**70, "s": "\ud800"})
    assert value.startswith("mp-")


def test_junk_longest_is_the_longest_placeholder() -> None:
    # written out as a literal so that the compiled build inlines it
    assert max(map(len, insert_id_module._JUNK)) == JUNK_LONGEST
