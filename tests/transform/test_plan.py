"""Tracking plan: loading (every problem at once) and applying (rename, drop, move, types)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mp2amp.errors import ConfigError, Rejection
from mp2amp.models import Skip
from mp2amp.transform.plan import PlanResult, TrackingPlan, load_plan, parse_plan

PLAN = {
    "unplanned_events": "flag",
    "properties": {
        "$email": {"user_property": True},
        "debug": {"drop": True},
    },
    "events": {
        "Sign Up": {
            "rename": "Signed Up",
            "properties": {
                "Plan Name": {"rename": "plan"},
                "price": {"type": "number"},
                "seats": {"type": "integer", "on_mismatch": "reject"},
                "debug": {},  # event rule replaces the global drop
            },
        },
        "Heartbeat": {"drop": True},
        "Page View": None,
    },
}


def result(value: Any) -> PlanResult:
    assert isinstance(value, PlanResult), value
    return value


def test_rename_drop_move_and_coerce() -> None:
    plan = parse_plan(PLAN)
    props = {"Plan Name": "pro", "price": "800.00", "seats": 3, "$email": "a@example.com",
             "debug": 1, "other": [1, 2]}
    out = result(plan.apply("Sign Up", props))
    assert out == PlanResult("Signed Up", {"plan": "pro", "price": 800.0, "seats": 3,
                                           "debug": 1, "other": [1, 2]},
                             {"$email": "a@example.com"}, False)
    assert props["price"] == "800.00"  # input untouched


def test_global_rules_apply_to_listed_event_without_rules() -> None:
    out = result(parse_plan(PLAN).apply("Page View", {"debug": True, "$email": "x", "k": 1}))
    assert out == PlanResult("Page View", {"k": 1}, {"$email": "x"}, False)


def test_dropped_event_is_skipped_with_rule() -> None:
    out = parse_plan(PLAN).apply("Heartbeat", {})
    assert isinstance(out, Skip) and out.rule == "plan.drop_event"


@pytest.mark.parametrize(("policy", "expected"), [("keep", False), ("flag", True)])
def test_unplanned_keep_and_flag(policy: str, expected: bool) -> None:
    plan = parse_plan({**PLAN, "unplanned_events": policy})
    out = result(plan.apply("Unknown", {"debug": 1, "a": 2}))
    assert out == PlanResult("Unknown", {"a": 2}, {}, expected)


def test_unplanned_drop() -> None:
    out = parse_plan({**PLAN, "unplanned_events": "drop"}).apply("Unknown", {})
    assert isinstance(out, Skip) and out.rule == "plan.not_in_plan"


def test_reject_mode_refuses_a_string_number() -> None:
    out = parse_plan(PLAN).apply("Sign Up", {"seats": "3"})
    assert isinstance(out, Rejection)
    assert out.reason == "plan_type_mismatch" and out.field == "properties.seats"
    assert "integer" in out.message


def test_coerce_mode_rejects_what_does_not_convert() -> None:
    out = parse_plan(PLAN).apply("Sign Up", {"price": "eight hundred"})
    assert isinstance(out, Rejection) and out.field == "properties.price"
    assert "does not convert" in out.message


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("string", 17, "17"), ("string", True, "true"), ("number", "1e3", 1000.0),
        ("integer", "17", 17), ("integer", 4.0, 4), ("boolean", "TRUE", True),
        ("boolean", 0, False), ("list", "a", ["a"]), ("object", '{"a": 1}', {"a": 1}),
        ("number", None, None),
    ],
)
def test_coercions(kind: str, value: Any, expected: Any) -> None:
    plan = parse_plan({"properties": {"p": {"type": kind}}})
    assert result(plan.apply("e", {"p": value})).props == {"p": expected}


@pytest.mark.parametrize(
    ("kind", "value"),
    [("integer", 4.5), ("number", True), ("number", "nan"), ("boolean", "maybe"),
     ("string", {"a": 1}), ("object", "[1]"), ("list", {"a": 1})],
)
def test_lossy_coercions_are_rejected(kind: str, value: Any) -> None:
    plan = parse_plan({"properties": {"p": {"type": kind}}})
    assert isinstance(plan.apply("e", {"p": value}), Rejection)


def test_keep_all_returns_props_unchanged() -> None:
    props = {"a": 1}
    out = result(TrackingPlan.keep_all().apply("e", props))
    assert out.props is props and out.user_props == {} and not out.flagged


def test_every_problem_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "version: 2\n"
        "unplanned_events: maybe\n"
        "colour: red\n"
        "properties:\n"
        "  a: {rename: x}\n"
        "  b: {rename: x}\n"
        "events:\n"
        "  Sign Up:\n"
        "    drop: yes please\n"
        "    properties:\n"
        "      price: {type: money, on_mismatch: explode}\n"
        "      gone: {drop: true, rename: y}\n"
        "  Other: [1, 2]\n"
        "  Buy: {rename: '[Amplitude] Revenue'}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    err = info.value
    assert err.source == str(path)
    assert err.problems == [
        "colour: unknown key (expected one of events, properties, unplanned_events, version)",
        "version: 2 is not supported (expected 1)",
        "unplanned_events: 'maybe' is not one of keep, drop, flag",
        "events.\"Sign Up\".drop: must be true or false, got 'yes please'",
        "events.\"Sign Up\".properties.price.type: 'money' is not one of string, number, "
        "integer, boolean, list, object",
        "events.\"Sign Up\".properties.price.on_mismatch: 'explode' is not one of coerce, reject",
        "events.\"Sign Up\".properties.gone: a dropped property takes no rename, "
        "user_property or type",
        "events.Other: must be a mapping (rename, drop, properties), got list",
        "events.Buy.rename: '[Amplitude] Revenue' is reserved by Amplitude; choose another name",
        "properties: properties 'a' and 'b' both become property 'x'; one would overwrite "
        "the other",
    ]
    assert str(path) in str(err)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("events:\n  a: {rename: [\n")
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    assert info.value.problems[0].startswith("line 3, column 1: not valid YAML")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the tracking plan"):
        load_plan(tmp_path / "nope.yaml")


def test_example_plan_loads_and_applies() -> None:
    example = Path(__file__).parents[2] / "docs" / "examples" / "tracking-plan.yaml"
    plan = load_plan(example)
    assert plan.events and plan.unplanned_events in ("keep", "drop", "flag")
    for name in plan.events:
        outcome = plan.apply(name, {})
        assert isinstance(outcome, PlanResult | Skip)


# --- invariants -----------------------------------------------------------------------

names = st.text(min_size=1, max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
prop_rules = st.fixed_dictionaries(
    {},
    optional={"rename": names, "drop": st.booleans(), "user_property": st.booleans()},
)


@given(
    rules=st.dictionaries(names, prop_rules, max_size=6),
    props=st.dictionaries(names, scalars, max_size=8),
    event=names,
)
def test_properties_are_conserved(rules: dict[str, dict[str, Any]], props: dict[str, Any],
                                  event: str) -> None:
    """Without types, every kept property lands exactly once (event or user), values intact."""
    try:
        plan = parse_plan({"properties": rules})
    except ConfigError:
        return  # conflicting renames or drop+rename: refused at load, nothing to apply
    before = dict(props)
    out = result(plan.apply(event, props))
    assert props == before
    dropped = {k for k, r in rules.items() if r.get("drop")}
    kept = {k: v for k, v in props.items() if k not in dropped}
    assert len(out.props) + len(out.user_props) == len(kept)
    moved = sorted(map(repr, [*out.props.values(), *out.user_props.values()]))
    assert moved == sorted(map(repr, kept.values()))


@given(value=scalars, kind=st.sampled_from(["string", "number", "integer", "boolean"]))
def test_coercion_is_idempotent(value: Any, kind: str) -> None:
    plan = parse_plan({"properties": {"p": {"type": kind}}})
    first = plan.apply("e", {"p": value})
    if isinstance(first, PlanResult):
        again = result(plan.apply("e", first.props))
        assert again.props == first.props


def test_only_a_plan_that_can_change_something_is_applied_per_event() -> None:
    assert not TrackingPlan.keep_all().changes_events
    assert not parse_plan({"unplanned_events": "keep"}).changes_events
    assert parse_plan({"unplanned_events": "drop"}).changes_events
    assert parse_plan({"properties": {"debug": {"drop": True}}}).changes_events
    assert parse_plan({"events": {"A": {"rename": "B"}}}).changes_events
