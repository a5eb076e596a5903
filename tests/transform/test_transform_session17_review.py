"""Session 17 review of the transform against the peers' pitfalls and the field contracts.

Each defect found here is pinned by a test of the correct behaviour (an ``xfail`` until it
was fixed); the others guard behaviour confirmed correct.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.errors import Rejection
from mp2amp.extract.pipelines import to_export_shape
from mp2amp.models import Resolved, Skip
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.plan import parse_plan

T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC
IDS = Resolved("user-0001", "device-0001")
WILD = Path("/work/shared/fixtures/wild")
if not WILD.exists():  # a checkout outside the team machine
    WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"


def rec(name: str = "Open", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0, "distinct_id": "user-0001",
                                          "$insert_id": "insert-0000001", **props}}


# --- rejections name the Mixpanel field to fix ----------------------------------------


def test_a_bad_ios_model_is_reported_on_model_not_on_os() -> None:
    # an SDK that cut a string in half (staging's stdlib fallback reads it)
    record = rec(mp_lib="swift", **{"$os": "iOS", "$model": "iPhone\ud83d"})
    out = Transformer(TransformSettings()).event(record, IDS)
    assert isinstance(out, Rejection) and out.reason == "non_json_value"
    # was: field "properties.$os" (the first source of device_model present), value fine
    assert out.field == "properties.$model", out


def test_a_bad_event_name_is_reported_on_the_records_event_field() -> None:
    out = Transformer(TransformSettings()).event(rec("Tapped \ud83d"), IDS)
    assert isinstance(out, Rejection) and out.reason == "non_json_value"
    assert out.field == "event", out  # was "event_type", a key the record lacks


def test_other_bad_default_properties_are_reported_on_their_own_names() -> None:
    cases = [
        (rec(mp_lib="web", **{"$os": "Mac OS X", "$browser": "Chr\ud83d"}), "$browser"),
        (rec(**{"mp_country_code": "US", "$region": "Cali\ud83d", "$city": "LA"}), "$region"),
        (rec(mp_lib="android", **{"$os": "Android", "$app_version_string": "1.0",
                                  "$app_version": "1.0 \ud83d"}), "$app_version"),
    ]
    for record, source in cases:
        out = Transformer(TransformSettings()).event(record, IDS)
        assert isinstance(out, Rejection) and out.field == f"properties.{source}", out


# --- counts ---------------------------------------------------------------------------


@pytest.mark.parametrize("other", [None, "", "  "], ids=["null", "empty", "blank"])
def test_groups_over_limit_is_not_counted_when_nothing_was_cut(other: Any) -> None:
    transformer = Transformer(TransformSettings(group_keys=("team", "org")))
    teams = [f"team-{i}" for i in range(10)]  # exactly Amplitude's 10 values
    out = transformer.event(rec(team=teams, org=other), IDS)
    assert isinstance(out, dict)
    assert out["groups"] == {"team": teams}  # every group the event has is sent
    # was {"groups_over_limit": 1}: a report of a cut that did not happen
    assert transformer.stats()["other"].get("groups_over_limit", 0) == 0


def test_groups_over_limit_is_counted_when_a_value_is_cut() -> None:
    transformer = Transformer(TransformSettings(group_keys=("team", "org")))
    teams = [f"team-{i}" for i in range(10)]
    out = transformer.event(rec(team=teams, org="acme"), IDS)
    assert isinstance(out, dict) and out["groups"] == {"team": teams}
    assert transformer.stats()["other"]["groups_over_limit"] == 1


# --- insert_id: an Export API record and its Data Pipelines copy ----------------------


def _wild_export_events() -> list[dict[str, Any]]:
    lines = (WILD / "mixpanel-export-events.jsonl").read_text().splitlines()
    return [orjson.loads(line) for line in lines]


@pytest.mark.skipif(not WILD.exists(), reason="wild fixtures not available")
def test_a_legacy_projects_pipeline_copy_gets_the_export_records_insert_id() -> None:
    """Every wild export record with a ``$insert_id``, read as a legacy Pacific project's
    export and as its Data Pipelines row (UTC, millisecond time): one insert_id, and the
    same UTC second."""
    settings = TransformSettings(legacy_time=True, timezone="America/Los_Angeles")
    checked = 0
    for record in _wild_export_events():
        exported = Transformer(settings).event(copy.deepcopy(record), IDS)
        if not isinstance(exported, dict) or "$insert_id" not in record["properties"]:
            continue
        props = dict(record["properties"])
        row = {"event_name": record["event"], "time": exported["time"] + 123,
               "distinct_id": props.pop("distinct_id", None),
               "insert_id": props.pop("$insert_id"),
               "properties": orjson.dumps({k: v for k, v in props.items()
                                           if k != "time"}).decode()}
        piped = Transformer(settings).event(to_export_shape(row), IDS)
        assert isinstance(piped, dict), piped
        assert piped["insert_id"] == exported["insert_id"], record
        assert piped["time"] // 1000 == exported["time"] // 1000
        checked += 1
    assert checked >= 15


# --- tracking plan: numbers made strings as Mixpanel shows them -----------------------


def _as_plan_string(value: Any) -> Any:
    plan = parse_plan({"properties": {"plan_id": {"type": "string"}}})
    result = plan.apply("Open", {"plan_id": value})
    assert not isinstance(result, (Rejection, Skip)), result
    return result.props["plan_id"]


@pytest.mark.parametrize(("value", "text"), [
    (5.0, "5"), (-5.0, "-5"), (-0.0, "0"), (1e16, "10000000000000000"),
    (12345678901.0, "12345678901"), (123456789012345680000.0, "123456789012345680000"),
    (1.5e-7, "1.5e-7"), (1e-7, "1e-7"), (0.000001, "0.000001"), (1e-5, "0.00001"),
])
def test_a_number_typed_string_reads_as_mixpanel_shows_it(value: float, text: str) -> None:
    """Mixpanel (JavaScript) shows 5.0 as "5": the plan must not send one property as both
    "5" and "5.0" (Number.prototype.toString, ECMA-262 Number::toString)."""
    assert _as_plan_string(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (1e21, "1e+21"), (1.5e21, "1.5e+21"), (0.00012, "0.00012"), (9.5, "9.5"), (0.1, "0.1"),
    (-2.5e-10, "-2.5e-10"), (1.7976931348623157e308, "1.7976931348623157e+308"),
    (5e-324, "5e-324"), (5, "5"), (12345678901234567890, "12345678901234567890"),
    (1.5e300, "1.5e+300"), (True, "true"), ("5.0", "5.0"),
])
def test_other_values_typed_string_keep_their_text(value: Any, text: str) -> None:
    assert _as_plan_string(value) == text


def test_a_non_finite_number_typed_string_is_a_type_mismatch() -> None:
    """NaN has no text Mixpanel could show; "nan" would be invented data (as a plan
    number, it is refused the same way)."""
    plan = parse_plan({"properties": {"plan_id": {"type": "string"}}})
    for value in (float("nan"), float("inf"), float("-inf")):
        out = plan.apply("Open", {"plan_id": value})
        assert isinstance(out, Rejection) and out.reason == "plan_type_mismatch", out
        assert out.field == "properties.plan_id"


def test_a_bad_model_message_names_the_property_and_the_field() -> None:
    record = rec(mp_lib="android", **{"$os": "Android", "$model": "Pixel \ud83d"})
    out = Transformer(TransformSettings()).event(record, IDS)
    assert isinstance(out, Rejection) and out.field == "properties.$model", out
    assert "properties.$model" in out.message and "device_model" in out.message


def test_groups_over_limit_ignores_a_later_list_of_blank_names() -> None:
    transformer = Transformer(TransformSettings(group_keys=("team", "org")))
    teams = [f"team-{i}" for i in range(10)]
    out = transformer.event(rec(team=teams, org=[None, " ", 1.5]), IDS)
    assert isinstance(out, dict) and out["groups"] == {"team": teams}
    assert transformer.stats()["other"].get("groups_over_limit", 0) == 0
