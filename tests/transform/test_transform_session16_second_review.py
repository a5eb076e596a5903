"""Session 16, second-pass review of commit 2b36d14 (revenue/groups read by Mixpanel name,
hashed lists hashed value by value, an overlong ID drops only itself).

Each ``xfail(strict=True)`` test asserts the correct behaviour of a defect found here: it
passes once the defect is fixed. The unmarked tests guard behaviour confirmed correct.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.config.loader import load_config
from mp2amp.errors import ConfigError, Rejection
from mp2amp.models import Resolved
from mp2amp.transform import RevenueSettings, Transformer, TransformSettings
from mp2amp.transform.plan import parse_plan
from mp2amp.transform.privacy import PrivacyRules
from mp2amp.transform.values import ValueProblem

T0 = 1_709_600_000  # 2024-03-05 00:53:20 UTC
IDS = Resolved("user-0001", "device-0001")


def rec(name: str = "Purchase", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0, "distinct_id": "user-0001",
                                          "$insert_id": "insert-0000001", **props}}


def settings_from(folder: Path, toml: str, plan_yaml: str) -> TransformSettings:
    """The TransformSettings ``mp2amp migrate`` would build from this config and plan."""
    (folder / "plan.yaml").write_text(plan_yaml)
    (folder / "mp2amp.toml").write_text(f'[transform]\nplan = "{folder / "plan.yaml"}"\n'
                                        + toml)
    return load_config(folder / "mp2amp.toml", env={}).transform_settings()


# --- revenue / groups read before the plan ----------------------------------------------


def test_privacy_scrubbed_object_made_by_the_plan_does_not_leak_through_groups_or_revenue(
) -> None:
    plan = parse_plan({"properties": {"company": {"type": "object"},
                                      "sku": {"type": "object"}}})
    privacy = PrivacyRules(drop_properties=["owner_email"], hash_properties=["secret"],
                           salt="pepper")
    transformer = Transformer(TransformSettings(
        plan=plan, privacy=privacy, group_keys=("company",),
        revenue=RevenueSettings(price="price", product_id="sku")))
    company = orjson.dumps({"id": "c_1", "owner_email": "boss@acme.example"}).decode()
    sku = orjson.dumps({"code": "X1", "secret": "top-secret-value"}).decode()
    out = transformer.event(rec(company=company, sku=sku, price=5), IDS)
    assert isinstance(out, dict)
    # the event properties are scrubbed (the plan's object went through the rules) ...
    assert out["event_properties"]["company"] == {"id": "c_1"}
    sent = orjson.dumps(out).decode()
    # ... and nothing the rules removed may reach Amplitude by another field
    assert "boss@acme.example" not in sent, out.get("groups")
    assert "top-secret-value" not in sent, out.get("productId")


def test_a_configured_name_that_is_also_the_plans_new_name_is_not_silently_the_other_value(
        tmp_path: Path) -> None:
    # Older versions read [transform.revenue] after the plan: price = "price" meant the
    # plan's "price" (sale_price). Now the Mixpanel "price" (the list price, which the plan
    # renamed away) is booked, and Amplitude's top-level price disagrees with the event's
    # own "price" property. Correct: the plan's value, or the ambiguity refused up front.
    try:
        settings = settings_from(
            tmp_path, '[transform.revenue]\nprice = "price"\n',
            "properties:\n  price:\n    rename: list_price\n"
            "  sale_price:\n    rename: price\n")
    except ConfigError:
        return  # refused as ambiguous: fine
    out = Transformer(settings).event(rec(price=100, sale_price=80), IDS)
    assert isinstance(out, dict)
    assert out["event_properties"]["price"] == 80
    assert out["price"] == 80


def test_a_privacy_dropped_revenue_property_is_not_hoisted_whatever_the_plan_renames() -> None:
    # regression guard: read "before the plan" means after the privacy rules
    plan = parse_plan({"properties": {"price": {"rename": "unit_price", "type": "number"},
                                      "company_id": {"rename": "account"}}})
    privacy = PrivacyRules(drop_properties=["price"], hash_properties=["company_id"],
                           salt="pepper")
    transformer = Transformer(TransformSettings(
        plan=plan, privacy=privacy, group_keys=("company_id",),
        revenue=RevenueSettings(price="price", quantity="qty")))
    out = transformer.event(rec(price="19.99", qty=2, company_id=["c_1"]), IDS)
    assert isinstance(out, dict)
    assert "price" not in out and "revenue" not in out and "quantity" not in out
    assert out["groups"] == {"company_id": [privacy.hash_value("c_1")]}
    assert out["event_properties"]["account"] == [privacy.hash_value("c_1")]


# --- hashing ------------------------------------------------------------------------------


def test_a_hashed_integral_number_is_one_group_whatever_its_json_form() -> None:
    plain = Transformer(TransformSettings(group_keys=("company_id",)))
    unhashed = [plain.event(rec(company_id=v), IDS) for v in (42, 42.0, "42")]
    assert {orjson.dumps(o["groups"]) for o in unhashed} == {b'{"company_id":"42"}'}
    privacy = PrivacyRules(hash_properties=["company_id"], salt="pepper")
    hashed = Transformer(TransformSettings(group_keys=("company_id",), privacy=privacy))
    groups = [hashed.event(rec(company_id=v), IDS)["groups"]["company_id"]
              for v in (42, 42.0, "42", [42.0])]
    assert groups[:3] == [privacy.hash_value("42")] * 3
    assert groups[3] == [privacy.hash_value("42")]


def test_a_hashed_object_sends_nothing_of_it_in_clear() -> None:
    privacy = PrivacyRules(hash_properties=["roles"], salt="pepper")
    transformer = Transformer(TransformSettings(privacy=privacy))
    out = transformer.event(rec(roles={"alice@example.com": "admin",
                                       "bob@example.com": ["viewer"]}), IDS)
    assert isinstance(out, dict)
    sent = orjson.dumps(out).decode()
    assert "alice@example.com" not in sent and "bob@example.com" not in sent


def test_a_hashed_list_property_can_be_typed_list_in_the_plan(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path, 'groups = ["company_id"]\n[privacy]\nhash_properties = ["company_id"]\n'
                  'hash_salt = "pepper"\n',
        "properties:\n  company_id:\n    type: list\n")
    assert settings.privacy is not None
    h = settings.privacy.hash_value
    transformer = Transformer(settings)
    for value in ("c_1", ["c_1"]):
        out = transformer.event(rec(company_id=value), IDS)
        assert isinstance(out, dict), out
        assert out["event_properties"]["company_id"] == [h("c_1")]
        group = out["groups"]["company_id"]  # a name or a one-name list: Amplitude's same
        assert (group if type(group) is list else [group]) == [h("c_1")]


def test_a_hashed_list_value_typed_string_is_rejected_as_the_config_advises_otherwise(
        tmp_path: Path) -> None:
    # documents the other half of the defect above: the config's advice ("type it string
    # in the plan") loses every event whose hashed property is a list
    settings = settings_from(
        tmp_path, '[privacy]\nhash_properties = ["company_id"]\nhash_salt = "pepper"\n',
        "properties:\n  company_id:\n    type: string\n")
    transformer = Transformer(settings)
    assert isinstance(transformer.event(rec(company_id="c_1"), IDS), dict)
    out = transformer.event(rec(company_id=["c_1"]), IDS)
    assert isinstance(out, Rejection) and out.reason == "plan_type_mismatch"


# --- overlong IDs -------------------------------------------------------------------------


def test_an_overlong_device_drop_keeps_the_insert_id_and_the_fast_path_agrees() -> None:
    long_device = "d" * 1500
    record = rec(**{"$device_id": long_device})
    del record["properties"]["$insert_id"]  # the insert_id is made from the content
    first = Transformer(TransformSettings())
    outs = [first.event(record, Resolved("user-0001", long_device)) for _ in range(3)]
    again = Transformer(TransformSettings()).event(record, Resolved("user-0001", long_device))
    assert all(isinstance(o, dict) and "device_id" not in o for o in [*outs, again])
    assert len({o["insert_id"] for o in [*outs, again]}) == 1  # type: ignore[index]
    assert first.stats()["other"] == {"device_id_over_limit": 3}


def test_an_overlong_id_is_not_counted_as_dropped_on_a_rejected_event() -> None:
    transformer = Transformer(TransformSettings())
    out = transformer.event(rec(bad=float("nan")), Resolved("user-0001", "d" * 1500))
    assert isinstance(out, Rejection) and out.reason == "non_json_value"
    assert transformer.stats()["other"] == {}


# --- the fixes' other cases ----------------------------------------------------------------


def test_a_configured_object_the_plan_moves_to_the_user_is_read_scrubbed_there() -> None:
    plan = parse_plan({"properties": {"company": {"type": "object", "user_property": True,
                                                  "rename": "Company"}}})
    privacy = PrivacyRules(drop_properties=["owner_email"], salt="pepper")
    transformer = Transformer(TransformSettings(
        plan=plan, privacy=privacy, revenue=RevenueSettings(price="price", product_id="company")))
    company = orjson.dumps({"id": "c_1", "owner_email": "boss@acme.example"}).decode()
    out = transformer.event(rec(company=company, price=5), IDS)
    assert isinstance(out, dict)
    assert out["user_properties"] == {"Company": {"id": "c_1"}}
    assert "boss@acme.example" not in orjson.dumps(out).decode()


@pytest.mark.parametrize(("plan_yaml", "refused"), [
    # the configured name is dropped, or moved to the user, while another lands on it
    ("properties:\n  price: {drop: true}\n  sale_price: {rename: price}\n", True),
    ("properties:\n  price: {user_property: true}\n  sale_price: {rename: price}\n", True),
    # in one event's rules only, or one global and one event rule
    ("events:\n  Purchase:\n    properties:\n      price: {rename: list_price}\n"
     "      sale_price: {rename: price}\n", True),
    ("properties:\n  price: {rename: list_price}\nevents:\n  Purchase:\n    properties:\n"
     "      sale_price: {rename: price}\n", True),
    # no ambiguity: nothing lands on it, it stays, or the other goes to the user properties
    ("properties:\n  price: {rename: list_price}\n", False),
    ("properties:\n  sale_price: {rename: price}\n", False),
    ("properties:\n  price: {type: number}\n", False),
    ("properties:\n  price: {rename: list_price}\n"
     "  sale_price: {rename: price, user_property: true}\n", False),
])
def test_an_ambiguous_configured_name_is_refused_with_the_config(
        tmp_path: Path, plan_yaml: str, refused: bool) -> None:
    if not refused:
        settings_from(tmp_path, '[transform.revenue]\nprice = "price"\n', plan_yaml)
        return
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, '[transform.revenue]\nprice = "price"\n', plan_yaml)
    (problem,) = [p for p in caught.value.problems if "names two properties" in p]
    assert problem.startswith("transform.revenue.price: 'price' names two properties")
    assert "'sale_price'" in problem and "write 'sale_price'" in problem


def test_an_ambiguous_group_key_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, 'groups = ["company_id"]\n',
                      "properties:\n  company_id: {rename: account}\n"
                      "  org: {rename: company_id}\n")
    assert any(p.startswith("transform.groups ('company_id'): 'company_id' names two")
               and "write 'org'" in p and "'account'" in p for p in caught.value.problems)


def test_hashing_joins_as_group_names_do() -> None:
    privacy = PrivacyRules(hash_properties=["x"], salt="pepper")
    h = privacy.hash_value
    assert h(42) == h(42.0) == h("42") != h("42.0")
    assert h(0) == h(-0.0) == h("0")
    assert h(1.5) == h("1.5")
    assert h(True) == h("true") != h(1)  # a bool is never the number 1 (nor group "1")
    with pytest.raises(ValueProblem):  # no crash, and not the hash of null (third review)
        h(float("nan"))


def test_a_hashed_list_keeps_its_shape_and_hashes_an_object_element_whole() -> None:
    privacy = PrivacyRules(hash_properties=["roles"], drop_properties=["ssn"], salt="pepper")
    h = privacy.hash_value
    out = privacy.apply("E", {"roles": ["a", {"k": "v", "ssn": "1"}, ["b"], None]}, IDS, 0)
    assert isinstance(out, dict)
    assert out["roles"] == [h("a"), h({"k": "v"}), [h("b")], None]


def test_a_hashed_property_typed_number_or_object_is_still_refused(tmp_path: Path) -> None:
    for kind in ("number", "object"):
        with pytest.raises(ConfigError) as caught:
            settings_from(tmp_path, '[privacy]\nhash_properties = ["company_id"]\n'
                          'hash_salt = "pepper"\n',
                          f"properties:\n  company_id:\n    type: {kind}\n")
        assert any(f"types it {kind}" in p and "type it string or list" in p
                   for p in caught.value.problems)


def test_an_overlong_user_id_is_counted_once_the_event_goes_out() -> None:
    transformer = Transformer(TransformSettings())
    out = transformer.event(rec(), Resolved("u" * 1500, "device-0001"))
    assert isinstance(out, dict) and "user_id" not in out
    assert transformer.stats()["other"] == {"user_id_over_limit": 1}
