"""Reading the IDs and the time out of one event's properties (shared by every mode)."""

from __future__ import annotations

import math
from typing import Any, Final

from mp2amp.identity.junk import DEVICE_PREFIX, clean_id
from mp2amp.identity.report import IdentityReport
from mp2amp.transform.timeconv import unit_seconds

NO_TIME = 1e300  # events without a usable time sort after every timed one

IDENTITY_EVENTS = frozenset({"$identify", "$create_alias", "$merge"})
# A hot-shard event's own name (transform/hotshard.py): an $identify renamed
# $hotshard_events still merges
ORIGINAL_EVENT: Final = "mp_original_event_name"


def event_seconds(props: dict[str, Any]) -> float:
    """``properties.time`` in seconds (seconds or milliseconds accepted); NO_TIME if unusable."""
    value = props.get("time")
    if isinstance(value, bool):
        return NO_TIME
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return NO_TIME
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer past a float's range
            return NO_TIME
        if not math.isfinite(seconds):
            return NO_TIME
        return unit_seconds(seconds)  # s, ms, us or ns, as the transform reads them
    return NO_TIME


def strip_device(value: str | None) -> str | None:
    """``$device:X`` -> ``X`` (the device itself); other IDs unchanged."""
    if value is not None and value.startswith(DEVICE_PREFIX):
        return clean_id(value[8:])
    return value


def distinct_id(props: dict[str, Any]) -> str | None:
    """``distinct_id``, or a hot-shard event's ``mp_original_distinct_id`` when it was blanked."""
    value = clean_id(props.get("distinct_id"))
    if value is None and "mp_original_distinct_id" in props:
        value = clean_id(props.get("mp_original_distinct_id"))
    return value


# The ID an event was ingested with, when Mixpanel re-keyed it in a reshuffle; reshuffled
# copies name it either way (as transform/insert_id.py reads it)
BEFORE_IDENTITY: Final = ("$distinct_id_before_identity", "$preshuffle_distinct_id")


def before_identity(props: dict[str, Any]) -> str | None:
    """The usable ID the event was ingested with before a reshuffle re-keyed it, if any."""
    return clean_id(props.get(BEFORE_IDENTITY[0])) or clean_id(props.get(BEFORE_IDENTITY[1]))


def count_junk(props: dict[str, Any], report: IdentityReport) -> None:
    """Count present-but-junk ID fields (pass 1 only, so each record is counted once)."""
    # read as distinct_id() reads it: a hot-shard event's blanked "" is not junk when the
    # real ID kept in mp_original_distinct_id is used instead
    given = props.get("distinct_id")
    if given is None:
        given = props.get("mp_original_distinct_id")
    if given is not None and distinct_id(props) is None:
        report.count_junk("distinct_id")
    for name in ("$user_id", "$device_id"):
        if name in props and props[name] is not None and clean_id(props[name]) is None:
            report.count_junk(name)


# Every property the identity pass (IdentityGraph.observe, in every mode) reads. Staging
# writes each record's identity view (``identity_view``) beside it, so that the pass parses
# ~100 bytes per record instead of the whole record. A test checks that observing the views
# builds the same graph as observing the records, and that no mode reads another property.
IDENTITY_PROPERTIES: Final = (
    "time", "distinct_id", "mp_original_distinct_id", "$user_id", "$device_id",
    *BEFORE_IDENTITY, "$identified_id", "$anon_id", "$anon_distinct_id", "alias",
    "$distinct_ids", "mp_original_event_name",
)


def identity_view(record: Any) -> dict[str, Any] | None:
    """What ``IdentityGraph.observe`` reads of ``record``; None where it reads nothing
    (not an ``{"event", "properties": {...}}`` object). A property that is null is left
    out: every mode reads a null property as an absent one."""
    if not isinstance(record, dict):
        return None
    props = record.get("properties")
    if not isinstance(props, dict):
        return None
    view: dict[str, Any] = {}
    for key in IDENTITY_PROPERTIES:
        value = props.get(key)
        if value is not None:
            view[key] = value
    return {"event": record.get("event"), "properties": view}
