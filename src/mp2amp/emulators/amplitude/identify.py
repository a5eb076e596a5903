"""User- and group-property operations ($set, $setOnce, $add, ... $clearAll), applied in place.

Semantics follow Amplitude's Identify API: $append/$prepend do not check for duplicates,
$preInsert/$postInsert add only values not yet in the list (order kept), $remove drops every
instance, $clearAll empties the object first. A property object without operations is a
plain update, i.e. ``$set`` of every key.
"""

from __future__ import annotations

from typing import Any

from mp2amp.emulators.amplitude.validate import (
    DEFAULT_MIN_ID_LENGTH,
    PROPERTY_OPS,
    blocked_id,
    properties_problem,
    same_json,
)


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _as_list(current: Any) -> list[Any]:
    if current is None:
        return []
    return list(current) if isinstance(current, list) else [current]


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return None
        return int(parsed) if parsed.is_integer() else parsed
    return None


def _apply_op(props: dict[str, Any], op: str, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if op == "$set":
            props[key] = value
        elif op == "$setOnce":
            props.setdefault(key, value)
        elif op == "$unset":
            props.pop(key, None)
        elif op == "$add":
            amount = _number(value)
            if amount is not None:
                base = _number(props.get(key)) or 0
                props[key] = base + amount
        elif op == "$append":
            props[key] = _as_list(props.get(key)) + _values(value)
        elif op == "$prepend":
            props[key] = _values(value) + _as_list(props.get(key))
        elif op == "$postInsert":
            current = _as_list(props.get(key))
            current.extend(v for v in _dedup(_values(value)) if not _has(current, v))
            props[key] = current
        elif op == "$preInsert":
            current = _as_list(props.get(key))
            props[key] = [v for v in _dedup(_values(value)) if not _has(current, v)] + current
        elif op == "$remove" and key in props:  # nothing to remove from: no empty list
            drop = _values(value)
            props[key] = [v for v in _as_list(props[key]) if not _has(drop, v)]


def _has(values: list[Any], value: Any) -> bool:
    """``value in values`` as JSON sees it: ``true`` is not ``1``."""
    return any(same_json(v, value) for v in values)


def _dedup(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if not _has(out, value):
            out.append(value)
    return out


def has_operations(update: dict[str, Any]) -> bool:
    return not PROPERTY_OPS.isdisjoint(update)


def apply_update(props: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply one ``user_properties``/``group_properties`` object to ``props`` in place.

    The caller has checked the object with ``properties_problem`` (no mixing).
    """
    if PROPERTY_OPS.isdisjoint(update):
        props.update(update)
        return
    if "$clearAll" in update:
        props.clear()
    for op, changes in update.items():
        if op != "$clearAll" and isinstance(changes, dict):
            _apply_op(props, op, changes)


# One unusable identification: which group of Amplitude's 400 body it goes in ("missing",
# "invalid" or "id_length"), the fields it names there, and what is wrong (the "detail").
Problem = tuple[str, tuple[str, ...], str]
_PROBLEM_GROUPS = (  # kind, the 400 body's key, its "error" when it is the first kind found
    ("missing", "events_with_missing_fields", "Request missing required field"),
    ("invalid", "events_with_invalid_fields", "Invalid field values on some events"),
    ("id_length", "events_with_invalid_id_lengths", "Invalid id length for user_id or device_id"),
)


def identification_error(problems: dict[int, Problem]) -> dict[str, Any]:
    """The 400 body for these unusable identifications (by index), grouped as /batch does."""
    lists: dict[str, dict[str, list[int]]] = {kind: {} for kind, _, _ in _PROBLEM_GROUPS}
    for i, (kind, fields, _) in problems.items():
        for name in fields:
            lists[kind].setdefault(name, []).append(i)
    body: dict[str, Any] = {"code": 400}
    for kind, key, error in _PROBLEM_GROUPS:
        if lists[kind]:
            body.setdefault("error", error)
            body[key] = lists[kind]
    body["detail"] = "; ".join(f"identification[{i}]: {p[2]}" for i, p in problems.items())
    return body


def identification_problem(item: Any, group: bool) -> Problem | None:
    """Why one /identify or /groupidentify item is unusable, or None. IDs follow the
    ingestion rules (reference 3.1: the HTTP V2 API's status code guidance applies)."""
    if not isinstance(item, dict):
        return "invalid", ("user_properties" if not group else "group_properties",), \
            "each identification must be a JSON object"
    if group:
        for key in ("group_type", "group_value"):
            if not isinstance(item.get(key), str) or not item.get(key):
                return ("missing" if not item.get(key) else "invalid"), (key,), \
                    f"{key} is required and must be a non-empty string"
        props = item.get("group_properties", {})
        if props is not None and properties_problem(props):
            return "invalid", ("group_properties",), \
                "group_properties must be an object that does not mix operations with plain keys"
        return None
    user_id, device_id = item.get("user_id"), item.get("device_id")
    if not user_id and not device_id:
        return "missing", ("user_id", "device_id"), "user_id or device_id is required"
    for key, value in (("user_id", user_id), ("device_id", device_id)):
        if value is not None and not isinstance(value, str):
            return "invalid", (key,), f"{key} must be a string"
        if isinstance(value, str) and 0 < len(value) < DEFAULT_MIN_ID_LENGTH:
            return "id_length", (key,), (f"{key} {value!r} is shorter than the "
                                         f"{DEFAULT_MIN_ID_LENGTH} characters Amplitude accepts")
        if isinstance(value, str) and value and blocked_id(value, key == "device_id"):
            return "invalid", (key,), f"{key} {value!r} is one of the IDs Amplitude refuses"
    props = item.get("user_properties", {})
    if props is not None and properties_problem(props):
        return "invalid", ("user_properties",), \
            "user_properties must be an object that does not mix operations with plain keys"
    return None
