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

# Documented IDs that make Amplitude answer 400 (matched case-insensitively here: the docs
# do not say, and refusing "NULL" too is the safe side for a migration tool).
BLOCKED_IDS = frozenset(
    {"anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", '""',
     "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1"}
)
PROPERTY_OPS = frozenset(
    {"$set", "$setOnce", "$add", "$append", "$prepend", "$unset", "$preInsert",
     "$postInsert", "$remove", "$clearAll"}
)

_STR, _INT, _NUM, _DICT, _BOOL, _PROPS = range(6)
_FIELD_KINDS: dict[str, int] = {
    **dict.fromkeys(
        ("app_version", "platform", "os_name", "os_version", "device_brand",
         "device_manufacturer", "device_model", "carrier", "country", "region", "city", "dma",
         "language", "productId", "revenueType", "currency", "ip", "idfa", "idfv", "adid",
         "android_id", "android_app_set_id", "insert_id", "library", "partner_id",
         "version_name", "user_agent", "start_version"),
        _STR,
    ),
    **dict.fromkeys(("time", "event_id", "session_id", "quantity"), _INT),
    **dict.fromkeys(("price", "revenue", "location_lat", "location_lng"), _NUM),
    **dict.fromkeys(("groups", "plan", "ingestion_metadata"), _DICT),
    **dict.fromkeys(("event_properties", "user_properties", "group_properties"), _PROPS),
    "$skip_user_properties_sync": _BOOL,
}


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
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        obj, depth = stack.pop()
        if depth > limit:
            return True
        children = obj.values() if isinstance(obj, dict) else obj
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def properties_problem(props: Any) -> bool:
    """True when a user/group property object is unusable: not an object, too deep,
    operations mixed with plain keys, or an operation whose value is not an object."""
    if not isinstance(props, dict):
        return True
    has_op = has_plain = False
    for key, value in props.items():
        if key in PROPERTY_OPS:
            has_op = True
            if key != "$clearAll" and not isinstance(value, dict):
                return True
        else:
            has_plain = True
        if isinstance(value, dict | list) and too_deep(value, MAX_DEPTH - 1):
            return True
    return has_op and has_plain


def id_is_blocked(value: str) -> bool:
    """Documented junk IDs, plus all-zero IDs (the iOS Limit Ad Tracking IDFA)."""
    lowered = value.lower()
    if lowered in BLOCKED_IDS:
        return True
    return lowered.strip("0-") == "" and "0" in lowered


def validate_events(events: list[Any], min_id_length: int = DEFAULT_MIN_ID_LENGTH) -> ValidationResult:
    """Check every event; the result lists *all* failing indices per field."""
    missing: dict[str, list[int]] = {}
    invalid: dict[str, list[int]] = {}
    id_lengths: dict[str, list[int]] = {}
    kinds = _FIELD_KINDS
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            _add(invalid, "event", index)
            continue
        event_type = event.get("event_type")
        if event_type is None or event_type == "":
            _add(missing, "event_type", index)
        elif not isinstance(event_type, str):
            _add(invalid, "event_type", index)
        has_id = False
        for id_field in ("user_id", "device_id"):
            value = event.get(id_field)
            if value is None or value == "":
                continue
            has_id = True
            if not isinstance(value, str):
                _add(invalid, id_field, index)
            elif len(value) < min_id_length:
                _add(id_lengths, id_field, index)
            elif len(value) <= 36 and id_is_blocked(value):
                _add(invalid, id_field, index)
        if not has_id:
            _add(missing, "user_id", index)
            _add(missing, "device_id", index)
        for key, value in event.items():
            kind = kinds.get(key)
            if kind is None or value is None:
                continue
            if kind == _STR:
                bad = not isinstance(value, str)
            elif kind == _INT:
                bad = type(value) is not int
            elif kind == _NUM:
                bad = type(value) is not int and type(value) is not float
            elif kind == _PROPS:
                bad = properties_problem(value) if key != "event_properties" else (
                    not isinstance(value, dict) or too_deep(value)
                )
            elif kind == _DICT:
                bad = not isinstance(value, dict)
            else:
                bad = type(value) is not bool
            if bad:
                _add(invalid, key, index)
    return ValidationResult(missing, invalid, id_lengths)
