"""Per-event validation of /2/httpapi and /batch payloads, as a pure function.

``validate_events(events, min_id_length)`` returns every failing index, grouped the way
Amplitude's 400 body groups them. The transform's tests call it on every event they emit,
so it is importable without the server and kept to one tight pass per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 40  # "Object depth may not exceed 40 layers"
DEFAULT_MIN_ID_LENGTH = 5
# `time` is ms since the epoch ("any other format ... results in a 400"): outside the years
# 1-9999 an integer is no such time (a microsecond or nanosecond timestamp, 2**63...), and
# the export and segmentation of its hour could not place it.
MIN_TIME_MS = -62_135_596_800_000
MAX_TIME_MS = 253_402_300_799_999

# Documented IDs that make Amplitude answer 400 (matched case-insensitively here: the docs
# do not say, and refusing "NULL" too is the safe side for a migration tool).
BLOCKED_IDS = frozenset(
    {"anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", '""',
     "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1"}
)


def _case_variants(word: str) -> set[str]:
    variants = {""}
    for char in word:
        variants = {v + c for v in variants for c in {char.lower(), char.upper()}}
    return variants


# Every upper/lower-case spelling, so the hot loop does one set lookup per ID.
_BLOCKED_SPELLINGS = frozenset(v for word in BLOCKED_IDS for v in _case_variants(word))
PROPERTY_OPS = frozenset(
    {"$set", "$setOnce", "$add", "$append", "$prepend", "$unset", "$preInsert",
     "$postInsert", "$remove", "$clearAll"}
)

_NONE = type(None)
_STR_T = frozenset[type]({str, _NONE})
# Allowed Python types (after JSON parsing) per typed top-level field; others are not checked.
_FIELD_TYPES: dict[str, frozenset[type]] = {
    **dict.fromkeys(
        ("app_version", "platform", "os_name", "os_version", "device_brand",
         "device_manufacturer", "device_model", "carrier", "country", "region", "city", "dma",
         "language", "productId", "revenueType", "currency", "ip", "idfa", "idfv", "adid",
         "android_id", "android_app_set_id", "insert_id", "library", "partner_id",
         "version_name", "user_agent", "start_version"),
        _STR_T,
    ),
    **dict.fromkeys(("time", "event_id", "session_id", "quantity"), frozenset[type]({int, _NONE})),
    **dict.fromkeys(("price", "revenue", "location_lat", "location_lng"),
                    frozenset[type]({int, float, _NONE})),
    **dict.fromkeys(("groups", "plan", "ingestion_metadata"), frozenset[type]({dict, _NONE})),
    "$skip_user_properties_sync": frozenset[type]({bool, _NONE}),
}
_NOT_STR_FIELDS = frozenset(k for k, allowed in _FIELD_TYPES.items() if str not in allowed)


@dataclass(slots=True)
class ValidationResult:
    """Failing indices per field, in Amplitude's three groups (empty when all is well)."""

    missing_fields: dict[str, list[int]] = field(default_factory=dict)
    invalid_fields: dict[str, list[int]] = field(default_factory=dict)
    invalid_id_lengths: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing_fields or self.invalid_fields or self.invalid_id_lengths)

    def failing_indices(self) -> set[int]:
        out: set[int] = set()
        for group in (self.missing_fields, self.invalid_fields, self.invalid_id_lengths):
            for indices in group.values():
                out.update(indices)
        return out

    def error_body(self) -> dict[str, Any]:
        """The 400 body Amplitude sends for these failures (no ``missing_field``: that key
        makes SDKs drop the whole batch, and it is reserved for request-level fields)."""
        if self.missing_fields:
            error = "Request missing required field"
        elif self.invalid_fields:
            error = "Invalid field values on some events"
        else:
            error = "Invalid id length for user_id or device_id"
        body: dict[str, Any] = {"code": 400, "error": error}
        if self.missing_fields:
            body["events_with_missing_fields"] = self.missing_fields
        if self.invalid_fields:
            body["events_with_invalid_fields"] = self.invalid_fields
        if self.invalid_id_lengths:
            body["events_with_invalid_id_lengths"] = self.invalid_id_lengths
        return body


def _add(group: dict[str, list[int]], name: str, index: int) -> None:
    indices = group.get(name)
    if indices is None:
        group[name] = [index]
    elif indices[-1] != index:
        indices.append(index)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when nested dicts/lists go deeper than ``limit`` levels (the top object is 1)."""
    for child in value.values() if type(value) is dict else value:
        kind = type(child)
        if (kind is dict or kind is list) and (limit <= 1 or too_deep(child, limit - 1)):
            return True
    return False


def properties_problem(props: Any) -> bool:
    """True when a user/group property object is unusable: not an object, too deep,
    operations mixed with plain keys, or an operation whose value is not an object."""
    if type(props) is not dict:
        return True
    if PROPERTY_OPS.isdisjoint(props):  # plain properties: only the depth can be wrong
        return too_deep(props)
    has_op = has_plain = False
    for key, value in props.items():
        if key in PROPERTY_OPS:
            has_op = True
            if key != "$clearAll" and not isinstance(value, dict):
                return True
        else:
            has_plain = True
        kind = type(value)
        if (kind is dict or kind is list) and too_deep(value, MAX_DEPTH - 1):
            return True
    return has_op and has_plain


def _id_problem(value: Any, min_id_length: int, device: bool) -> bool | None:
    """None: fine; True: too short; False: not a string, or a blocked ID (the all-zero
    rule is the reference's for device IDs only: the iOS Limit Ad Tracking IDFA)."""
    if type(value) is not str:
        return False
    if len(value) < min_id_length:
        return True
    if value in _BLOCKED_SPELLINGS or (device and value[0] == "0" and not value.strip("0-")):
        return False
    return None


def blocked_id(value: str, device: bool) -> bool:
    """A documented ID that Amplitude answers 400 to ("null", "undefined", the all-zero
    IDFA for device IDs...)."""
    return value in _BLOCKED_SPELLINGS or (device and value[:1] == "0" and not value.strip("0-"))


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: Python's ``==`` takes ``true`` for ``1`` and ``2`` for ``2.0``,
    which would keep a property's old type when it changes."""
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        return len(a) == len(b) and all(
            key in b and same_json(value, b[key]) for key, value in a.items())
    if kind is list:
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def holds(props: dict[str, Any], update: dict[str, Any]) -> bool:
    """True when ``props`` already has every key of ``update`` with the same JSON value."""
    for key, value in update.items():
        if key not in props or not same_json(props[key], value):
            return False
    return True


def is_group_name(value: Any) -> bool:
    """A value that names a group: a non-empty string or a number. Not null, ``""``,
    a boolean, an object or a nested list: the reference's names are strings, and
    Python's ``str()`` of those ("None", "True") would invent a group nobody sent."""
    kind = type(value)
    return (kind is str and value != "") or kind is int or kind is float


def names_a_group(groups: dict[str, Any]) -> bool:
    """Whether ``groups`` (``{type: name or [names]}``) names at least one group."""
    for value in groups.values():
        if type(value) is list:
            for item in value:
                if is_group_name(item):
                    return True
        elif is_group_name(value):
            return True
    return False


def group_only(event: dict[str, Any]) -> bool:
    """A ``$groupidentify`` that names groups and no person: a group update, not a user
    event, so it needs no user_id or device_id (the official SDK sends it so, reference 8.1).
    One naming no group (``{"org": []}``, ``{"org": null}``) would update nothing."""
    groups = event.get("groups")
    return (event.get("event_type") == "$groupidentify" and type(groups) is dict
            and names_a_group(groups))


def validate_events(
    events: list[Any], min_id_length: int = DEFAULT_MIN_ID_LENGTH,
    id_counts: tuple[dict[str, int], dict[str, int]] | None = None,
) -> ValidationResult:
    """Check every event; the result lists *all* failing indices per field.

    ``id_counts``, when given, is filled with events per device_id and per user_id (the
    server's throttling input), saving it a second pass over the events.
    """
    per_device, per_user = id_counts if id_counts is not None else ({}, {})
    missing: dict[str, list[int]] = {}
    invalid: dict[str, list[int]] = {}
    id_lengths: dict[str, list[int]] = {}
    types = _FIELD_TYPES
    not_str = _NOT_STR_FIELDS
    for index, event in enumerate(events):
        if type(event) is not dict:
            _add(invalid, "event", index)
            continue
        event_type = event.get("event_type")
        if event_type is None or event_type == "":
            _add(missing, "event_type", index)
        elif type(event_type) is not str:
            _add(invalid, "event_type", index)
        user_id = event.get("user_id")
        device_id = event.get("device_id")
        has_id = False
        if user_id is not None and user_id != "":
            has_id = True
            problem = _id_problem(user_id, min_id_length, False)
            if problem is None:
                per_user[user_id] = per_user.get(user_id, 0) + 1
            else:
                _add(id_lengths if problem else invalid, "user_id", index)
        if device_id is not None and device_id != "":
            has_id = True
            problem = _id_problem(device_id, min_id_length, True)
            if problem is None:
                per_device[device_id] = per_device.get(device_id, 0) + 1
            else:
                _add(id_lengths if problem else invalid, "device_id", index)
        if not has_id and not group_only(event):
            _add(missing, "user_id", index)
            _add(missing, "device_id", index)
        for key, value in event.items():
            if type(value) is str:  # the common case: one set lookup
                if key in not_str:
                    _add(invalid, key, index)
            else:
                allowed = types.get(key)
                if allowed is not None and type(value) not in allowed:
                    _add(invalid, key, index)
        t = event.get("time")
        if type(t) is int and not MIN_TIME_MS <= t <= MAX_TIME_MS:
            _add(invalid, "time", index)  # not a time in ms (microseconds, say): no date has it
        props = event.get("event_properties")
        if props is not None and (type(props) is not dict or too_deep(props)):
            _add(invalid, "event_properties", index)
        groups = event.get("groups")
        if type(groups) is dict and too_deep(groups):
            _add(invalid, "groups", index)  # "Object depth may not exceed 40 layers"
        props = event.get("user_properties")
        if props is not None and properties_problem(props):
            _add(invalid, "user_properties", index)
        # reference 1.3: group_properties is "Only used when event_type is $groupidentify;
        # otherwise ignored", so only there can a bad one refuse the request
        if event_type == "$groupidentify":
            props = event.get("group_properties")
            if props is not None and properties_problem(props):
                _add(invalid, "group_properties", index)
    return ValidationResult(missing, invalid, id_lengths)
