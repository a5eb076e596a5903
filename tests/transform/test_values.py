"""Values: 1024-character strings, 40 levels of nesting, JSON-only values."""

from __future__ import annotations

from typing import Any

import pytest

from mp2amp.emulators.amplitude.validate import validate_events
from mp2amp.errors import Rejection
from mp2amp.models import Resolved
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.values import ValueStats, sanitize_props


def run(props: dict[str, Any], transformer: Transformer | None = None) -> Any:
    t = transformer or Transformer(TransformSettings())
    return t.event({"event": "e", "properties": {"time": 1700000000, **props}},
                   Resolved("user-1", None))


def nest(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def test_long_strings_are_truncated_and_counted_per_property() -> None:
    t = Transformer(TransformSettings())
    out = run({"bio": "x" * 5000, "tags": ["y" * 2000, "ok"], "short": "fine"}, t)
    props = out["event_properties"]
    assert props["bio"] == "x" * 1024 and props["tags"] == ["y" * 1024, "ok"]
    assert props["short"] == "fine"
    assert t.stats()["truncated"] == {"bio": 1, "tags": 1}
    run({"bio": "z" * 1025}, t)
    assert t.stats()["truncated"]["bio"] == 2


def test_long_event_name_is_truncated() -> None:
    t = Transformer(TransformSettings())
    out = t.event({"event": "n" * 1500, "properties": {"time": 1700000000}},
                  Resolved("user-1", None))
    assert isinstance(out, dict) and len(out["event_type"]) == 1024


@pytest.mark.parametrize("depth", [38, 39, 40, 41, 60])
def test_nesting_is_capped_so_amplitude_accepts_the_event(depth: int) -> None:
    t = Transformer(TransformSettings())
    out = run({"deep": nest(depth)}, t)
    assert isinstance(out, dict)
    assert validate_events([out], 1).ok
    flattened = t.stats()["flattened"].get("deep", 0)
    assert (flattened > 0) == (depth > 39)  # event_properties is layer 1


def test_flattened_subtree_keeps_its_content_as_json_text() -> None:
    out = run({"deep": nest(45)})
    value: Any = out["event_properties"]["deep"]
    while isinstance(value, dict):
        value = value["k"]
    assert isinstance(value, str) and '"leaf"' in value


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), -float("inf"), 2**70, {1: "non-string key"}, b"bytes",
     {"x": [1, float("nan")]}, "lone \ud800 surrogate", (1, 2), {"s": {1, 2}}],
)
def test_non_json_values_reject_the_event_with_the_field(bad: Any) -> None:
    out = run({"prop": bad})
    assert isinstance(out, Rejection)
    assert out.reason == "non_json_value"
    assert out.field is not None and "prop" in out.field


def test_nan_hidden_below_the_depth_cap_is_still_refused() -> None:
    deep = nest(45)
    cursor = deep
    for _ in range(44):
        cursor = cursor["k"]
    cursor["k"] = float("nan")
    assert isinstance(run({"deep": deep}), Rejection)


def test_clean_props_are_returned_without_a_copy() -> None:
    props = {"a": 1, "b": "text", "c": [1, {"d": None}], "e": True, "f": 1.5}
    assert sanitize_props(props, "event_properties", ValueStats()) is props


def test_unicode_text_is_fine() -> None:
    out = run({"title": "Home Classrooms — Now They’re a Selling Point", "emoji": "🚀" * 1030})
    assert out["event_properties"]["title"].startswith("Home")
    assert len(out["event_properties"]["emoji"]) == 1024


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(("value", "safe"), [
    ({"a": 1, "b": [1.5, "x", None, True], "c": {"d": "é"}}, True),
    ({"a": float("nan")}, False),
    ([float("inf")], False),
    ({"a": {"b": [-float("inf")]}}, False),
    ({"a": 2**64 - 1, "b": -(2**63)}, True),
    ({"a": 2**64}, False),
    ({"a": -(2**63) - 1}, False),
    ({"a": "\ud800"}, False),
    ({"\udfff": 1}, False),
    ({1: "a"}, False),
    ({"a": (1, 2)}, False),
    (_nested(251), True),    # 250 lists around a number: orjson writes that
    (_nested(252), False),
])
def test_json_safe_says_what_orjson_would_not_write_back(value: Any, safe: bool) -> None:
    from mp2amp.transform.values import json_safe

    assert json_safe(value) is safe


def test_a_property_nested_past_orjson_depth_is_kept_as_text() -> None:
    stats = ValueStats()
    out = sanitize_props({"deep": _nested(600)}, "event_properties", stats)
    inner, levels = out["deep"], 1  # Amplitude's 40 levels, then the rest as JSON text
    while isinstance(inner, list):
        inner, levels = inner[0], levels + 1
    assert levels == 40 and inner.startswith("[[[[") and len(inner) == 1024
    assert stats.flattened["deep"] == 1 and stats.truncated["deep"] == 1
