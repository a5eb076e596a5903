"""Session 17 review of the tracking plan in a migration: loading and validating the plan
file, and applying its rules to realistic records (the wild fixtures) with the mapping.

Each defect found here is pinned by a test of the correct behaviour (an ``xfail`` until it
is fixed); the others guard behaviour confirmed correct.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.errors import ConfigError, Rejection
from mp2amp.models import Resolved, Skip
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.plan import load_plan, parse_plan
from mp2amp.transform.privacy import PrivacyRules

T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC
IDS = Resolved("user-0001", "device-0001")
WILD = Path("/work/shared/fixtures/wild")
if not WILD.exists():  # a checkout outside the team machine
    WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"


def rec(name: str = "Open", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0, "distinct_id": "user-0001", **props}}


def run(plan: dict[str, Any], record: dict[str, Any]) -> dict[str, Any] | Rejection | Skip:
    return Transformer(TransformSettings(plan=parse_plan(plan))).event(record, IDS)


def wild_event(name: str) -> dict[str, Any]:
    for line in (WILD / "mixpanel-export-events.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        if record["event"] == name:
            return record
    raise AssertionError(f"no {name!r} in the wild fixture")


# --- loading the plan file ------------------------------------------------------------


_BOMB = textwrap.dedent("""\
    anchors:
      a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
      h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
      i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
    version: *i
    """)

_LOAD = textwrap.dedent("""\
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))  # spare the machine
    from mp2amp.errors import ConfigError
    from mp2amp.transform.plan import load_plan
    try:
        load_plan(sys.argv[1])
    except ConfigError as exc:
        print("config error:", len("".join(exc.problems)))
    """)


def test_an_alias_bomb_in_the_plan_is_a_short_config_error(tmp_path: Path) -> None:
    # 9**9 "lol"s, held by YAML as 9 shared lists per level (a few KB): harmless until a
    # problem message spells out the value that `version` aliases
    plan = tmp_path / "plan.yaml"
    plan.write_text(_BOMB)
    try:
        done = subprocess.run([sys.executable, "-c", _LOAD, str(plan)], capture_output=True,
                              text=True, timeout=4)
    except subprocess.TimeoutExpired:
        pytest.fail("loading a 1 KB plan did not end within 4 s")
    assert done.returncode == 0, done.stderr[-500:]
    reported = done.stdout.split(":")
    assert reported[0] == "config error" and int(reported[1]) < 10_000, done.stdout


def test_a_duplicate_key_does_not_hide_the_plans_other_problems(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(textwrap.dedent("""\
        properties:
          price:
            type: number
          price:
            type: number
        events:
          "Sign Up":
            rename: 42
        """))
    with pytest.raises(ConfigError) as raised:
        load_plan(plan)
    text = "\n".join(raised.value.problems)
    assert "given twice" in text
    # the next run would stop on it: one round of fixing, not two
    assert 'events."Sign Up".rename' in text, text


# --- applying it ----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["$insert_id", "$user_id", "$device_id", "token",
                                    "mp_processing_time_ms"])
def test_a_rename_onto_a_name_the_mapping_drops_is_refused_or_keeps_the_value(
        target: str) -> None:
    # "use our order reference as the insert id", "the CRM id is the user id": the record
    # has no such property, so no rename clash; the value must not vanish unnoticed
    plan = {"properties": {"order_ref": {"rename": target}}}
    try:
        parsed = parse_plan(plan)
    except ConfigError:
        return  # refused with the plan, naming the target: fine
    out = Transformer(TransformSettings(plan=parsed)).event(rec(order_ref="ORD-77123"), IDS)
    assert isinstance(out, dict), out
    assert "ORD-77123" in orjson.dumps(out).decode(), out  # was: nowhere in the event


def test_list_type_reads_a_stringified_json_list_as_object_type_reads_an_object() -> None:
    record = wild_event("custom_event")  # "area": stringified object, "tags": stringified list
    plan = {"events": {"custom_event": {"properties": {
        "area": {"type": "object"}, "tags": {"type": "list"}}}}}
    out = run(plan, record)
    assert isinstance(out, dict), out
    props = out["event_properties"]
    assert props["area"] == {"displayText": "Malab, Nuh, Mewat", "id": 1189005}
    # was ['["tag1","tag2","tag3"]']: one tag that is the JSON text of the three
    assert props["tags"] == ["tag1", "tag2", "tag3"], props["tags"]


def test_a_very_deep_stringified_object_is_a_plan_problem_not_a_transform_error() -> None:
    # orjson reads it (its limit is 1024 levels); the exactness check with json.loads
    # does not; 1030 levels are already a plan_type_mismatch on 'payload'
    deep = '{"a":' * 1010 + "1" + "}" * 1010
    out = run({"properties": {"payload": {"type": "object"}}}, rec(payload=deep))
    if isinstance(out, Rejection):
        assert out.reason != "transform_error", out
        assert out.field is not None and "payload" in out.field, out


def test_a_hot_shard_event_is_planned_by_its_restored_name() -> None:
    # the restore runs before the plan: the plan's Mixpanel name matches, its rename wins,
    # and an unplanned-drop policy does not skip it as "$hotshard_events"
    record = {"event": "$hotshard_events", "properties": {
        "time": T0, "distinct_id": "", "mp_original_event_name": "Signed up",
        "mp_original_distinct_id": "user-0001", "$insert_id": "hs-000000001", "plan": "pro"}}
    plan = {"unplanned_events": "drop", "events": {"Signed up": {
        "rename": "Sign Up Completed", "properties": {"plan": {"rename": "tier"}}}}}
    out = run(plan, record)
    assert isinstance(out, dict), out
    assert out["event_type"] == "Sign Up Completed"
    assert out["event_properties"] == {"tier": "pro"}
    # and its insert_id is the one the event gets without a plan (re-runs dedupe)
    plain = Transformer(TransformSettings()).event(record, IDS)
    assert isinstance(plain, dict) and plain["insert_id"] == out["insert_id"]


# --- follow-ups of the fixes above ------------------------------------------------------


def load_text(tmp_path: Path, text: str) -> list[str]:
    """The problems ``load_plan`` reports for a plan file of ``text`` (none: [])."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(textwrap.dedent(text))
    try:
        load_plan(plan)
    except ConfigError as exc:
        return exc.problems
    return []


def test_aliases_that_reuse_a_rule_still_load(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(textwrap.dedent("""\
        properties:
          email: &pii {drop: true}
          phone: *pii
          "App Build": &text {type: string, on_mismatch: reject}
        events:
          Purchase:
            properties:
              sku: {<<: *text, rename: product_sku}
        """))
    parsed = load_plan(plan)
    assert parsed.properties["phone"].drop
    assert parsed.events["Purchase"].properties["sku"].type == "string"


@pytest.mark.parametrize(("text", "expected"), [
    ("version: &a [*a]\n", "line 1, column 14: the alias *a is inside the value it names"),
    ("version: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ("version: " + "1" * 5000 + "\n", "cannot be read"),
])
def test_yaml_a_plan_does_not_use_is_a_config_error(tmp_path: Path, text: str,
                                                     expected: str) -> None:
    problems = load_text(tmp_path, text)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_huge_aliased_value_is_shown_short(tmp_path: Path) -> None:
    # under the alias limit, yet a repr would be thousands of characters
    problems = load_text(tmp_path, """\
        a: &a [x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x]
        properties:
          price: {rename: *a}
        """)
    assert "properties.price.rename: must be a non-empty string, got a list of 20 items" in problems
    assert all(len(p) < 200 for p in problems), problems


def test_a_duplicate_key_alone_is_still_refused(tmp_path: Path) -> None:
    problems = load_text(tmp_path, """\
        properties:
          price: {type: number}
          price: {type: integer}
        """)
    assert len(problems) == 1 and "'price' is given twice" in problems[0], problems


def test_an_unquoted_key_yaml_reads_as_a_boolean_or_number_is_told_to_be_quoted(
        tmp_path: Path) -> None:
    problems = load_text(tmp_path, """\
        properties:
          on: {drop: true}
          404: {rename: not_found}
        events:
          yes: {}
        """)
    text = "\n".join(problems)
    assert "properties.True: a property name must be a non-empty string" in text
    assert 'write the name in quotes, e.g. "on"' in text
    assert 'unquoted 404 as a number): write it in quotes, "404"' in text
    assert "events.True: an event name must be a non-empty string" in text


@pytest.mark.parametrize(("plan", "expected"), [
    ({"properties": {"price": {"rename": None}}},
     "properties.price.rename: must be a non-empty string, got nothing; give the new name"),
    ({"properties": {"price": {"rename": ""}}},
     "properties.price.rename: must be a non-empty string, got ''"),
    ({"events": {"Open": {"rename": None}}},
     "events.Open.rename: must be a non-empty string, got nothing"),
    ({"properties": {"price": {"drop": None}}},
     "properties.price.drop: must be true or false, got nothing"),
    ({"properties": {"price": {"type": None}}},
     "properties.price.type: nothing is not one of string"),
    ({"version": True}, "version: True is not supported (expected 1)"),
])
def test_an_empty_setting_or_a_boolean_version_is_a_problem(plan: dict[str, Any],
                                                            expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_plan(plan)
    assert any(p.startswith(expected) for p in raised.value.problems), raised.value.problems


@pytest.mark.parametrize("target", ["time", "distinct_id", "$distinct_id_before_identity",
                                    "$import", "$is_reshuffled", "$mp_api_endpoint",
                                    "$mp_api_timestamp_ms", "$anon_id", "$time"])
def test_every_name_the_mapping_consumes_is_refused_as_a_rename_target(target: str) -> None:
    for plan in ({"properties": {"order_ref": {"rename": target}}},
                 {"events": {"Open": {"properties": {"order_ref": {"rename": target}}}}}):
        with pytest.raises(ConfigError) as raised:
            parse_plan(plan)
        assert len(raised.value.problems) == 1, raised.value.problems
        problem = raised.value.problems[0]
        assert f"order_ref.rename: {target!r} is a Mixpanel name the mapping consumes" in problem
        assert "the value would not be sent" in problem


def test_a_consumed_name_is_free_as_a_user_property_and_as_its_own_rule() -> None:
    plan = {"properties": {"crm_id": {"rename": "$user_id", "user_property": True},
                           "$insert_id": {"type": "string"}, "token": {"drop": True}}}
    out = run(plan, rec(crm_id="CRM-1", token="abc"))
    assert isinstance(out, dict), out
    assert out["user_properties"] == {"$user_id": "CRM-1"}
    assert "token" not in out["event_properties"]


@pytest.mark.parametrize(("value", "on_mismatch", "expected"), [
    ("[beta] tester", "coerce", ["[beta] tester"]),  # a tag that starts with a bracket
    (' [1, "two", {"k": null}]', "coerce", [1, "two", {"k": None}]),
    ("[]", "coerce", []),
    ("[12345678901234567890123]", "coerce", None),  # orjson would round it: not lossless
    ('["tag1"]', "reject", None),  # reject: only a list is a list
])
def test_type_list_on_text(value: str, on_mismatch: str, expected: list[Any] | None) -> None:
    plan = {"properties": {"tags": {"type": "list", "on_mismatch": on_mismatch}}}
    out = run(plan, rec(tags=value))
    if expected is None:
        assert isinstance(out, Rejection) and out.reason == "plan_type_mismatch", out
        assert out.field == "properties.tags"
    else:
        assert isinstance(out, dict), out
        assert out["event_properties"]["tags"] == expected


def test_the_privacy_rules_reach_inside_a_list_made_of_text() -> None:
    # they ran on the text: the objects the list rule makes of it are checked now, as an
    # object rule's are (README: the lists apply at any depth)
    settings = TransformSettings(plan=parse_plan({"properties": {"buyers": {"type": "list"}}}),
                                 privacy=PrivacyRules(drop_properties=["email"]))
    text = '[{"email": "a@example.com", "id": 1}, [{"email": "b@example.com"}], "x"]'
    out = Transformer(settings).event(rec(buyers=text), IDS)
    assert isinstance(out, dict), out
    assert out["event_properties"]["buyers"] == [{"id": 1}, [{}], "x"]
    deep = "[" * 70 + '{"email": "c@example.com"}' + "]" * 70
    out = Transformer(settings).event(rec(buyers=deep), IDS)
    assert isinstance(out, Rejection) and out.reason == "too_deep", out
    assert out.field == "properties.buyers" and "example.com" not in out.message
