"""Property values made acceptable to Amplitude, or a reason why they cannot be.

Amplitude limits (amplitude-api.md §1.3, §1.7): strings longer than 1024 characters are
truncated (done here, so the count is ours, per property, rather than silent), and "object
depth may not exceed 40 layers" (``event_properties`` itself is layer 1; a container that
would be layer 41 is kept as its JSON text, truncated like any string). Values JSON cannot
carry (NaN, Infinity, integers past 64 bits, lone surrogates, non-JSON types, non-string
keys) reject the whole event: guessing a replacement would be inventing data.

One pass, copy-on-write: a clean flat dict (the common case) is returned as is.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from json.encoder import encode_basestring as _encode_basestring  # as json.dumps writes
from typing import Any, Final

import orjson

MAX_STRING: Final = 1024
LONG_NAMES: Final = "(property names longer than 1024 characters)"  # their counts' label
MAX_DEPTH: Final = 40
# A property nested deeper than this (its own value is level 1) is rejected (too_deep):
# a fixed number, the same in transform and migrate, compiled or not
MAX_TEXT_DEPTH: Final = 1000
ORJSON_DEPTH: Final = 250  # orjson.dumps refuses more than 255 levels; staging wraps a record
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_INF = float("inf")


class ValueProblem(ValueError):
    """A value JSON cannot carry; ``field`` is the dotted path to it."""

    def __init__(self, field: str, message: str, reason: str = "non_json_value") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class ValueStats:
    """Per-property counts of what sanitizing changed (owned by one Transformer)."""

    __slots__ = ("flattened", "truncated")

    def __init__(self) -> None:
        self.truncated: Counter[str] = Counter()
        self.flattened: Counter[str] = Counter()

    def clear(self) -> None:
        """Forget these counts (one event's, held while a later step may reject it)."""
        if self.truncated:
            self.truncated.clear()
        if self.flattened:
            self.flattened.clear()

    def move_to(self, total: ValueStats) -> None:
        """Add these counts to ``total`` (the event is sent) and clear them."""
        if self.truncated:
            total.truncated.update(self.truncated)
            self.truncated.clear()
        if self.flattened:
            total.flattened.update(self.flattened)
            self.flattened.clear()


def text_ok(value: str, field: str) -> bool:
    """True when the string is valid Unicode text (no lone surrogates)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueProblem(field, f"{field} holds invalid text (a lone surrogate)") from None
    return True


def clip(value: str, field: str, stats: ValueStats) -> str:
    """A top-level string field at most 1024 characters long (counted when cut)."""
    text_ok(value, field)
    if len(value) > MAX_STRING:
        stats.truncated[field] += 1
        return value[:MAX_STRING]
    return value


def sanitize_props(props: dict[str, Any], where: str, stats: ValueStats) -> dict[str, Any]:
    """``props`` with every value Amplitude-safe; raises ``ValueProblem`` for non-JSON data."""
    out: dict[str, Any] | None = None
    for key, value in props.items():
        t = type(value)
        if t is str:
            if len(value) <= MAX_STRING and value.isascii():
                new: Any = value
            else:
                new = _string(value, key, f"{where}.{key}", stats)
        elif t is int:
            new = value if _INT_MIN <= value <= _INT_MAX else _bad_int(where, key)
        elif t is bool or value is None:
            new = value
        elif t is float:
            if value != value or value == _INF or value == -_INF:
                raise ValueProblem(f"{where}.{key}",
                                   f"{where}.{key} is {value!r}, not a JSON number")
            new = value
        elif t is dict or t is list:
            new = _nested(value, 2, key, f"{where}.{key}", stats)
        else:
            raise ValueProblem(
                f"{where}.{key}", f"{where}.{key} is a {t.__name__}, which JSON cannot carry"
            )
        if type(key) is not str:
            raise ValueProblem(f"{where}.{key!r}", f"{where} has a non-string key {key!r}")
        new_key = key
        if len(key) > MAX_STRING or not key.isascii():
            new_key = _name(key, f"{where}.{key}", stats)
        if out is None and (new is not value or new_key is not key):
            out = {}
            for k, v in props.items():
                if k is key:
                    break
                out[k] = v
        if out is not None:
            out[new_key] = new
    return props if out is None else out


def _string(value: str, prop: str, field: str, stats: ValueStats) -> str:
    text_ok(value, field)
    if len(value) > MAX_STRING:
        stats.truncated[_label(prop)] += 1
        return value[:MAX_STRING]
    return value


def _label(prop: str) -> str:
    """The name a count is kept under: a name past 1024 characters would make the report
    grow with the input (one entry as long as each such name)."""
    return prop if len(prop) <= MAX_STRING else LONG_NAMES


def _name(key: str, field: str, stats: ValueStats) -> str:
    """A property name Amplitude takes. Past 1024 characters it is cut, and its end is a
    digest of the whole name: two long names that share their first 1024 characters (or
    one and a name of exactly those) stay two properties, no value is lost."""
    text_ok(key, field)
    if len(key) <= MAX_STRING:
        return key
    stats.truncated[LONG_NAMES] += 1
    digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{key[:MAX_STRING - 9]}~{digest}"


def _bad_int(where: str, key: str) -> Any:
    raise ValueProblem(f"{where}.{key}", f"{where}.{key} is an integer beyond 64 bits")


def _nested(value: Any, depth: int, prop: str, path: str, stats: ValueStats) -> Any:
    """A nested value, rebuilt only when something inside changes."""
    t = type(value)
    if t is str:
        if len(value) > MAX_STRING or not value.isascii():
            return _string(value, prop, path, stats)
        return value
    if t is int:
        return value if _INT_MIN <= value <= _INT_MAX else _bad_int(path, "")
    if t is bool or value is None:
        return value
    if t is float:
        if value != value or value == _INF or value == -_INF:
            raise ValueProblem(path, f"{path} is {value!r}, not a JSON number")
        return value
    if t is dict or t is list:
        if depth > MAX_DEPTH:
            stats.flattened[_label(prop)] += 1
            return _string(_as_json(value, path, depth - 1), prop, path, stats)
        if t is list:
            items = [_nested(item, depth + 1, prop, f"{path}[{i}]", stats)
                     for i, item in enumerate(value)]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else items
        changed = False
        rebuilt: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise ValueProblem(path, f"{path} has a non-string key {key!r}")
            new_key = key
            if len(key) > MAX_STRING or not key.isascii():
                new_key = _name(key, path, stats)
            new = _nested(item, depth + 1, prop, f"{path}.{key}", stats)
            changed = changed or new is not item or new_key is not key
            rebuilt[new_key] = new
        return rebuilt if changed else value
    raise ValueProblem(path, f"{path} is a {t.__name__}, which JSON cannot carry")


def _as_json(value: Any, path: str, level: int) -> str:
    """A container ``level`` levels deep in its property, as JSON text."""
    # Validate the whole sub-tree first: flattening must not smuggle NaN through as text.
    _check_json(value, path)
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested past orjson's 255 levels
        pass
    return _deep_json(value, path, level)


def _deep_json(value: Any, path: str, level: int) -> str:
    """JSON text of an already checked value, as ``orjson.dumps`` would write it,
    built with a stack, not recursion: the cap is ``MAX_TEXT_DEPTH`` in every build,
    process and thread, not what is left of the interpreter's recursion limit."""
    out: list[str] = []
    todo: list[tuple[Any, int]] = [(value, level)]  # level -1: text written as it is
    while todo:
        item, at = todo.pop()
        t = type(item)
        if at < 0:
            out.append(item)
        elif t is dict or t is list:
            if at > MAX_TEXT_DEPTH:
                raise ValueProblem(path, f"{path} is nested more than {MAX_TEXT_DEPTH} levels, "
                                         "too deep to be written as text; the event is "
                                         "rejected: flatten it in the source", reason="too_deep")
            todo.extend(reversed(_members(item, at + 1)))
        elif t is str:
            out.append(_quoted(item))
        elif t is bool:
            out.append("true" if item else "false")
        elif item is None:
            out.append("null")
        else:  # int or float (checked): as orjson writes it up to 255 levels (1.5e-7)
            out.append(int.__repr__(item) if t is int else orjson.dumps(item).decode())
    return "".join(out)


def _members(value: Any, level: int) -> list[tuple[Any, int]]:
    """A container's brackets, separators and keys (level -1) around its items (``level``)."""
    parts: list[tuple[Any, int]] = []
    if type(value) is list:
        for item in value:
            parts.append(("," if parts else "[", -1))
            parts.append((item, level))
        parts.append(("]" if parts else "[]", -1))
        return parts
    for key, item in value.items():
        parts.append((("," if parts else "{") + _quoted(key) + ":", -1))
        parts.append((item, level))
    parts.append(("}" if parts else "{}", -1))
    return parts


def _quoted(text: str) -> str:
    """A JSON string as ``json.dumps(ensure_ascii=False)`` writes it (as orjson does)."""
    return str(_encode_basestring(text))


def json_safe(value: Any) -> bool:
    """Whether orjson writes this parsed value back as it is: False for what only the
    standard library's parser gives (NaN, Infinity, integers past 64 bits, lone
    surrogates), other types, non-string keys, or nesting past ``ORJSON_DEPTH`` levels
    (orjson would write NaN as null, or refuse the rest)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        t = type(item)
        if t is dict:
            if depth > ORJSON_DEPTH:
                return False
            for key, sub in item.items():
                if type(key) is not str or not (key.isascii() or _encodes(key)):
                    return False
                stack.append((sub, depth + 1))
        elif t is list:
            if depth > ORJSON_DEPTH:
                return False
            for sub in item:
                stack.append((sub, depth + 1))
        elif t is str:
            if not (item.isascii() or _encodes(item)):
                return False
        elif t is float:
            if item != item or item == _INF or item == -_INF:
                return False
        elif t is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return False
        elif not (t is bool or item is None):
            return False
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_json(value: Any, path: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        t = type(item)
        if t is dict:
            for key, sub in item.items():
                if type(key) is not str:
                    raise ValueProblem(path, f"{path} has a non-string key {key!r}")
                text_ok(key, path)
                stack.append(sub)
        elif t is list:
            stack.extend(item)
        elif t is str:
            text_ok(item, path)
        elif t is float:
            if item != item or item == _INF or item == -_INF:
                raise ValueProblem(path, f"{path} holds {item!r}, not a JSON number")
        elif t is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise ValueProblem(path, f"{path} holds an integer beyond 64 bits")
        elif not (t is bool or item is None):
            raise ValueProblem(path, f"{path} holds a {t.__name__}, which JSON cannot carry")


# --- numbers as text -------------------------------------------------------------------

_EXACT_INT = 2**53  # every integer up to here is exactly a double, written with all digits


def js_number_text(value: float) -> str:
    """A finite ``value`` as JavaScript writes it (``Number::toString``), as Mixpanel shows
    it: 5.0 is "5", 1e16 "10000000000000000", 1e21 "1e+21", 1.5e-7 "1.5e-7". Python's repr
    would give one number two spellings ("5" as an int, "5.0"). The tracking plan's
    ``type: string`` and numeric IDs both write numbers so."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is no JSON number")
    if value == 0:
        return "0"  # -0 too
    if value < 0:
        return "-" + js_number_text(-value)
    mantissa, _, exponent = repr(value).partition("e")  # shortest digits, as JS picks
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # the value is 0.digits x 10**point (ECMA-262's n)
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    if len(digits) <= point <= 21:
        return digits + "0" * (point - len(digits))
    if 0 < point <= 21:
        return f"{digits[:point]}.{digits[point:]}"
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    sign = "+" if point > 0 else "-"
    head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{head}e{sign}{abs(point - 1)}"


def int_text(value: int) -> str:
    """An integer as text: past 2**53, one a double holds exactly (2**60) as the equal float
    is written, so one number has one spelling; any other keeps every digit (not lost)."""
    if abs(value) > _EXACT_INT:
        try:
            as_float = float(value)
        except OverflowError:  # past a double's range: no float spelling to agree with
            return str(value)
        if int(as_float) == value:  # exactly: compiled, float == int compares as floats
            return js_number_text(as_float)
    return str(value)
