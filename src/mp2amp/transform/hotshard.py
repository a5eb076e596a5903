"""Undo Mixpanel's hot-shard rewrite before anything else looks at an event.

Past 200K events per distinct_id per day (1M per group id) Mixpanel renames an event to
``$hotshard_events``, blanks ``distinct_id`` to ``""`` and keeps the originals in
``mp_original_event_name`` / ``mp_original_distinct_id``. It also writes
``$hotshard_record`` bookkeeping events that describe the shard, not user behaviour.

``restore_hotshard`` is pure and idempotent. The identity stage must see the restored
``distinct_id`` too, so the stream applies it before ``graph.observe``/``graph.resolve``;
``Transformer.event`` applies it again, which is a no-op on a restored record.
"""

from __future__ import annotations

from typing import Any

from mp2amp.errors import Rejection
from mp2amp.models import Skip

HOTSHARD_EVENT = "$hotshard_events"
HOTSHARD_RECORD = "$hotshard_record"
ORIGINAL_EVENT = "mp_original_event_name"
ORIGINAL_DISTINCT_ID = "mp_original_distinct_id"


def restore_hotshard(record: dict[str, Any]) -> dict[str, Any] | Skip | Rejection:
    """The record as it was before the hot-shard rewrite (the same object if untouched)."""
    event = record.get("event")
    if event == HOTSHARD_RECORD:
        return Skip("hotshard_record", "Mixpanel hot-shard bookkeeping event, not user data")
    props = record.get("properties")
    if not isinstance(props, dict):
        return record
    has_original = ORIGINAL_EVENT in props or ORIGINAL_DISTINCT_ID in props
    if event != HOTSHARD_EVENT and not has_original:
        return record
    original_event = props.get(ORIGINAL_EVENT, event if event != HOTSHARD_EVENT else None)
    if not isinstance(original_event, str) or not original_event:
        return Rejection(
            "hotshard_unrecoverable",
            "hot-shard event without a usable mp_original_event_name",
            field=f"properties.{ORIGINAL_EVENT}",
        )
    restored = {k: v for k, v in props.items() if k not in (ORIGINAL_EVENT, ORIGINAL_DISTINCT_ID)}
    if ORIGINAL_DISTINCT_ID in props:
        restored["distinct_id"] = props[ORIGINAL_DISTINCT_ID]
    out = dict(record)
    out["event"] = original_event
    out["properties"] = restored
    return out
