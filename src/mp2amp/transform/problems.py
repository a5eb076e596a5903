"""Why a record is refused before any of it is mapped (the mapping core's rare paths)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from mp2amp.errors import Rejection
from mp2amp.transform.hotshard import ORIGINAL_DISTINCT_ID, ORIGINAL_EVENT
from mp2amp.transform.mapping import RULES
from mp2amp.transform.values import MAX_STRING, ValueProblem

if TYPE_CHECKING:  # (plan imports this module)
    from mp2amp.transform.plan import PropertyRule

# Event types Amplitude keeps for itself: an event mapped to one is refused
RESERVED_EVENT_TYPES = frozenset({
    "[Amplitude] Start Session", "[Amplitude] End Session", "[Amplitude] Revenue",
    "[Amplitude] Revenue (Verified)", "[Amplitude] Revenue (Unverified)",
    "[Amplitude] Merged User", "$identify", "$groupidentify",
})

_HOTSHARD_KEEPS = (ORIGINAL_EVENT, ORIGINAL_DISTINCT_ID)  # the restore takes them out

# Amplitude's name -> the Mixpanel properties that may give it (top-level fields and the
# readable names default properties are kept as), in the mapping's order
_SOURCES: dict[str, list[str]] = {}
for _r in RULES:
    for _target in {_r.field, _r.keep_as} - {None}:
        _SOURCES.setdefault(str(_target), []).append(_r.source)


def long_id(field: str) -> None:
    """An ID Amplitude would refuse for its length (more than 1024 characters)."""
    raise ValueProblem(field, f"{field} is longer than {MAX_STRING} characters", "invalid_id")


def not_an_event(record: object) -> Rejection:
    """A record without an event: a profile update, an identity-mapping row or something
    else entirely."""
    if type(record) is dict and any(k in record for k in ("$distinct_id", "$group_id")):
        return Rejection("not_an_event", "a profile update (Engage/Groups), not an event: "
                         "mp2amp migrates events only, profiles are not sent", field="event")
    if type(record) is dict and "distinct_id" in record and "resolved_distinct_id" in record \
            and "properties" not in record:
        # a Data Pipelines mp_identity_mappings_data row given among the events
        return Rejection("not_an_event", "a Data Pipelines identity-mapping row (distinct_id "
                         "-> resolved_distinct_id), not an event: it is skipped here; give its "
                         "file as [source] identity_table for the mapping to be used",
                         field="event")
    kind = type(record).__name__ if type(record) is not dict else "object without 'event'"
    return Rejection("not_an_event", f"expected a Mixpanel event object, got {kind}",
                     field="event")


class PlanRules(Protocol):
    """What ``source_field`` needs of the tracking plan (``TrackingPlan``)."""

    def property_rules(self, event_name: str) -> Mapping[str, PropertyRule]: ...


def source_field(field: str | None, record: Any, plan: PlanRules | None = None) -> str | None:
    """Where in the Mixpanel record a value problem is, for the user to fix it there:
    ``properties.$browser`` rather than the ``os_name`` or ``event_properties.browser`` it
    would have become, the record's name of a property the plan renamed, a hot-shard
    event's ``mp_original_event_name``; ``field`` itself when it cannot be traced."""
    props = record.get("properties") if type(record) is dict else None
    if field == "event_type":  # the name Amplitude gives the record's (restored) event
        return f"properties.{ORIGINAL_EVENT}" if type(props) is dict \
            and ORIGINAL_EVENT in props else "event"
    if field is None or type(props) is not dict:
        return field
    record_names, event_names, user_names = _record_names(record, props, plan)
    section, dot, rest = field.partition(".")
    name, tail = (rest, "") if dot and section in _SECTIONS \
        else (field, "") if not dot else (None, "")
    if name is None:
        return field
    # the plan may give an event and a user property the same name; a ``properties.``
    # field names the record's property already (the privacy rules and the plan's own
    # checks run on the record's names), only a hot-shard restore moves it
    names = (user_names if section == "user_properties" else record_names
             if section == "properties" else event_names)
    if dot:  # a property kept under its own name (or nested in one): the longest that fits
        for key in sorted(names, key=len, reverse=True):
            if name == key or name.startswith((key + ".", key + "[")):  # an object or list
                return f"properties.{names[key]}{name[len(key):]}"
        if section == "properties":  # already the record's, or not in it
            return field
        cut = min((i for i in (name.find("."), name.find("[")) if i >= 0), default=len(name))
        name, tail = name[:cut], name[cut:]
    for source in _SOURCES.get(name, ()):
        if source in names:
            return f"properties.{names[source]}{tail}"
    return field


_SECTIONS = ("event_properties", "user_properties", "properties")


def _record_names(record: dict[str, Any], props: dict[str, Any], plan: PlanRules | None,
                  ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Each property name after the hot-shard restore, then each event property name and
    each user property name the mapping saw (after the plan too) -> its name in the
    record. Only on the error path: the hot path never builds them."""
    names = {k: k for k in props if type(k) is str and k not in _HOTSHARD_KEEPS}
    if ORIGINAL_DISTINCT_ID in props:  # the restore's distinct_id
        names["distinct_id"] = ORIGINAL_DISTINCT_ID
    event = props.get(ORIGINAL_EVENT, record.get("event"))
    rules = plan.property_rules(event) if plan is not None and type(event) is str else None
    if not rules:
        return names, names, {}
    out: dict[str, str] = {}
    user: dict[str, str] = {}
    for name, given in names.items():
        rule = rules.get(name)
        if rule is None:
            out[name] = given
        elif not rule.drop:  # a dropped property is in no problem
            (user if rule.user_property else out)[rule.rename or name] = given
    return names, out, user


def usable_ids(user_id: str | None, device_id: str | None,
               ) -> tuple[str | None, str | None, tuple[str, ...]]:
    """The IDs Amplitude can take, and what to count once the event is sent: an ID longer
    than 1024 characters is dropped (``user_id_over_limit`` / ``device_id_over_limit``)
    when the other one is usable, so the event still goes out under it; with no usable ID
    left the event is rejected (``invalid_id``). Cutting an ID instead would merge it with
    another's history. Counted by the caller only for an event sent: a later rejection
    drops no ID from anything Amplitude receives."""
    long_user = user_id is not None and len(user_id) > MAX_STRING
    long_device = device_id is not None and len(device_id) > MAX_STRING
    if not (long_user or long_device):
        return user_id, device_id, ()
    if (user_id is None or long_user) and (device_id is None or long_device):
        long_id("user_id" if long_user else "device_id")
    if long_user:
        return None, device_id, ("user_id_over_limit",)
    return user_id, None, ("device_id_over_limit",)
