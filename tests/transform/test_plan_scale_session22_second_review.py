"""Session 22, second review of c807307 (plan rules looked up own-then-global, a ChainMap
view instead of a merged copy per event; clash check walking only the names an event's
own rules make; problems traced per section).

Checked against the pre-change plan.py/problems.py by fuzzing (20,000 random plans each:
parse problems and their order, ``apply`` results, the order of ``PlanResult.rules``,
the traced field of every property an event sends, the privacy rules' hashed lists): the
new code gives the merged semantics everywhere, except where it was meant to differ
(clashes named in the right section). The defect pinned here was left by the change: its
README promises a bad value is reported under the Mixpanel name of its property, but a
field that already names the record's property (``properties.X``: the privacy rules run
on Mixpanel names, before the plan) is still mapped through the plan's renames.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

from mp2amp.errors import Rejection
from mp2amp.models import Resolved
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.plan import PlanResult, TrackingPlan, parse_plan
from mp2amp.transform.privacy import PrivacyRules

T0 = 1_700_000_000
IDS = Resolved("u1", None)


def transformed(plan: TrackingPlan, props: dict[str, Any], *,
                privacy: PrivacyRules | None = None, event: str = "Signup") -> Any:
    settings = TransformSettings(plan=plan, privacy=privacy.reading_lists(plan)
                                 if privacy is not None else None)
    record = {"event": event, "properties": {"time": T0, "distinct_id": "u1", **props}}
    return Transformer(settings).event(record, IDS)


# --- the defect ---------------------------------------------------------------------------


def test_a_bad_hashed_value_is_traced_to_its_own_property_not_the_one_renamed_onto_it(
) -> None:
    # a valid plan (no clash): email becomes contact, work_email takes the name email;
    # both hashed, so the config's renamed-privacy-names check is satisfied
    plan = parse_plan({"properties": {"email": {"rename": "contact"},
                                      "work_email": {"rename": "email"}}})
    privacy = PrivacyRules(hash_properties=["email", "work_email"], salt="s")
    out = transformed(plan, {"email": math.nan, "work_email": "w@x.y"}, privacy=privacy)
    assert isinstance(out, Rejection) and out.reason == "non_json_value", out
    # the NaN is the record's "email" (the message says so too)
    assert out.message.startswith("properties.email is hashed"), out.message
    assert out.field == "properties.email", out  # observed: properties.work_email


def test_bad_text_of_a_field_made_from_a_renamed_property_is_traced_to_the_record() -> None:
    """The other way round: a top-level field (``device_model``) made from a property the
    plan renamed onto ``$model`` names the record's property, also when the record has a
    ``$model`` of its own that the plan renames away."""
    plan = parse_plan({"properties": {"phone": {"rename": "$model"},
                                      "$model": {"rename": "old_model"}}})
    out = transformed(plan, {"phone": "bad \ud800 text", "$model": "fine"})
    assert isinstance(out, Rejection), out
    assert out.field == "properties.phone", out
    plain = transformed(TrackingPlan.keep_all(), {"$model": "bad \ud800 text"})
    assert isinstance(plain, Rejection) and plain.field == "properties.$model", plain


# --- guards: the merged semantics the change had to keep ---------------------------------

GLOBAL = {"Account Tier": {"rename": "tier", "user_property": True},
          "plan_tier": {"rename": "tier"}, "a": {"drop": True},
          "n": {"type": "integer"}, "r": {"rename": "renamed"}}


def test_own_rules_replace_global_ones_whole_as_the_merged_rules_did() -> None:
    plan = parse_plan({"properties": GLOBAL, "events": {"Signup": {"properties": {
        "a": {"rename": "b"},          # own rename over a global drop
        "r": {"drop": True},           # own drop over a global rename
        "n": {},                       # own rule without a change over a global cast
        "Account Tier": {},            # stays an event property
    }}}})
    out = transformed(plan, {"a": 1, "r": 2, "n": "x", "Account Tier": "g", "plan_tier": "p"})
    assert out["event_properties"] == {"b": 1, "n": "x", "Account Tier": "g", "tier": "p"}
    assert "user_properties" not in out
    # the same record as another event: the global rules alone
    other = transformed(plan, {"a": 1, "r": 2, "n": "7", "Account Tier": "g",
                               "plan_tier": "p"}, event="Other")
    assert other["event_properties"] == {"renamed": 2, "n": 7, "tier": "p"}
    assert other["user_properties"] == {"tier": "g"}
    # the rules it carries iterate as {**global, **own}, and survive a pickle
    planned = plan.apply("Signup", {"a": 1})
    assert isinstance(planned, PlanResult)
    merged = {**plan.properties, **plan.events["Signup"].properties}
    assert list(planned.rules.items()) == list(merged.items())
    assert dict(pickle.loads(pickle.dumps(planned.rules))) == merged
    assert pickle.loads(pickle.dumps(plan)).apply("Signup", {"a": 1}) == planned
