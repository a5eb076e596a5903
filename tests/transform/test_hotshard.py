"""Hot-shard events restored from mp_original_event_name / mp_original_distinct_id."""

from __future__ import annotations

from mp2amp.errors import Rejection
from mp2amp.models import Resolved, Skip
from mp2amp.transform import Transformer, TransformSettings, restore_hotshard

HOT = {
    "event": "$hotshard_events",
    "properties": {
        "time": 1618716477, "distinct_id": "", "$insert_id": "36a92782-cd7d",
        "mp_original_event_name": "Signed up",
        "mp_original_distinct_id": "hotshard@mixpanel.com", "plan": "pro",
    },
}


def test_restores_event_name_and_distinct_id() -> None:
    restored = restore_hotshard(HOT)
    assert isinstance(restored, dict)
    assert restored["event"] == "Signed up"
    assert restored["properties"]["distinct_id"] == "hotshard@mixpanel.com"
    assert "mp_original_event_name" not in restored["properties"]
    assert HOT["event"] == "$hotshard_events"  # input untouched
    assert restore_hotshard(restored) is restored  # idempotent


def test_restored_event_equals_the_unsharded_original() -> None:
    original = {"event": "Signed up", "properties": {
        "time": 1618716477, "distinct_id": "hotshard@mixpanel.com",
        "$insert_id": "36a92782-cd7d", "plan": "pro"}}
    t = Transformer(TransformSettings())
    ids = Resolved("hotshard@mixpanel.com", None)
    assert t.event(HOT, ids) == t.event(original, ids)  # same insert_id too: dedup works


def test_bookkeeping_record_is_skipped() -> None:
    record = {"event": "$hotshard_record", "properties": {
        "time": 1618716477000, "hotshard_distinct_id": "hotshard@mixpanel.com"}}
    out = Transformer(TransformSettings()).event(record, Resolved("u1234", None))
    assert isinstance(out, Skip) and out.rule == "hotshard_record"


def test_unrecoverable_hot_shard_event_is_rejected() -> None:
    record = {"event": "$hotshard_events", "properties": {"time": 1618716477, "distinct_id": ""}}
    out = Transformer(TransformSettings()).event(record, Resolved("u1234", None))
    assert isinstance(out, Rejection) and out.reason == "hotshard_unrecoverable"
