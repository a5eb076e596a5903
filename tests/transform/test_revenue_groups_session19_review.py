"""Session 19 review: revenue and group mapping (Mixpanel -> Amplitude), both transformer
paths (``Transformer.event``'s inlined fast path and ``_event``) and ``mp2amp transform``.

Helpers mirror tests/transform/test_revenue.py and test_semantics_session14_review.py (not
importable under ``--import-mode=importlib``).
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.errors import Rejection
from mp2amp.models import Resolved
from mp2amp.transform import RevenueSettings, Transformer, TransformSettings
from mp2amp.transform.plan import parse_plan

IDS = Resolved("user-1", "device-1")
SHOP = RevenueSettings(price="price", quantity="qty", revenue="rev", product_id="sku",
                       revenue_type="kind", currency="cur", items="items",
                       refund_events=("Order Refunded",))
SETTINGS = TransformSettings(revenue=SHOP, group_keys=("company_id", "team"))
REVENUE_FIELDS = ("price", "quantity", "revenue", "productId", "revenueType", "currency")


def rec(name: str = "Purchase", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": 1601412131, "distinct_id": "u1",
                                          "$insert_id": "abcdefghijklmnop", **props}}


def revenue_of(out: dict[str, Any]) -> dict[str, Any]:
    return {k: out[k] for k in REVENUE_FIELDS if k in out}


# --- guards: behaviour checked and found correct ------------------------------------------


@pytest.mark.parametrize("props", [
    {"price": "19.99", "qty": "2", "sku": 29066, "cur": "usd", "company_id": "acme"},
    {"rev": "25.00", "price": 25, "company_id": 42, "team": ["a", "a", " ", 3, 3.0, 4.5]},
    {"price": "$19.99", "rev": "1,299.00", "company_id": ""},
    {"price": 10, "qty": 2.5, "company_id": [str(i) for i in range(12)], "team": "t"},
    {"price": 10, "qty": 2, "rev": 23.5, "sku": "p1", "kind": 3.0},
    {"price": 10, "qty": True, "rev": -5, "company_id": 1e21},
])
@pytest.mark.parametrize("name", ["Purchase", "Order Refunded"])
def test_the_fast_path_gives_the_general_paths_event_and_counts(
        props: dict[str, Any], name: str) -> None:
    # (a list of objects, as items, always takes the general path)
    record = rec(name, **props)
    general = Transformer(SETTINGS)
    slow = general.event(copy.deepcopy(record), IDS)
    fast_t = Transformer(SETTINGS)
    # same keys, other values: learns the shape, then the record takes the fast path
    fast_t.event(rec(name, **{k: "w" for k in props}), IDS)
    before = fast_t.general_path
    counts_before = copy.deepcopy(fast_t.stats())
    fast = fast_t.event(copy.deepcopy(record), IDS)
    assert fast_t.general_path == before  # it did take the fast path
    assert fast == slow
    after = fast_t.stats()
    assert {k: {n: c - counts_before[k].get(n, 0) for n, c in after[k].items()
                if c != counts_before[k].get(n, 0)} for k in after} == general.stats()


def _transform(tmp_path: Path, lines: list[str], toml: str) -> tuple[int, list[Any], Any]:
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(toml)
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "mp2amp", "transform", "-c", str(cfg), "-o", str(out),
         "--json", str(src)], capture_output=True, text=True, timeout=60, check=False)
    events = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    return done.returncode, events, json.loads(done.stdout) if done.stdout else None


CONFIG = """[mixpanel]
timezone = "UTC"
[transform]
groups = ["company_id"]
[transform.revenue]
price = "price"
quantity = "qty"
revenue = "rev"
product_id = "sku"
currency = "cur"
refund_events = ["Order Refunded"]
"""


def test_transform_cli_revenue_and_groups_exact_output(tmp_path: Path) -> None:
    lines = [
        '{"event":"Purchase","properties":{"time":1700000001,"distinct_id":"user-1",'
        '"$insert_id":"iid-000001","price":"19.99","qty":"2","sku":29066,"cur":"usd",'
        '"company_id":"acme"}}',
        '{"event":"Order Refunded","properties":{"time":1700000002,"distinct_id":"user-1",'
        '"$insert_id":"iid-000002","rev":"25.00","company_id":42}}',
        '{"event":"Purchase","properties":{"time":1700000003,"distinct_id":"user-1",'
        '"$insert_id":"iid-000003","price":"$19.99","company_id":["a","b"," "]}}',
    ]
    code, events, summary = _transform(tmp_path, lines, CONFIG)
    assert code == 0
    assert [revenue_of(e) for e in events] == [
        {"price": 19.99, "quantity": 2, "productId": "29066", "currency": "USD"},
        {"revenue": -25.0, "revenueType": "refund"},
        {},
    ]
    assert [e.get("groups") for e in events] == [
        {"company_id": "acme"}, {"company_id": "42"}, {"company_id": ["a", "b"]}]
    assert summary["summary"]["events_out"] == 3
    assert summary["values"]["other"] == {"revenue_not_a_number": 1}


# --- defects (fixed in session 19) -----------------------------------------------------


@pytest.mark.parametrize("props", [
    {"price": 1e308, "qty": 2.5},  # a fractional quantity: price x quantity as revenue
    {"items": [{"price": 1e308, "qty": 2}, {"price": 1e308}]},  # the items' sum
])
def test_an_overflowing_amount_is_never_sent_as_a_non_finite_revenue(
        props: dict[str, Any]) -> None:
    out = Transformer(SETTINGS).event(rec(**props), IDS)
    assert isinstance(out, dict), out
    # revenue.py: "anything that does not parse to a finite number is left alone"
    assert all(math.isfinite(v) for k, v in revenue_of(out).items()
               if k in ("price", "revenue")), revenue_of(out)
    assert b'"revenue":null' not in orjson.dumps(out)


def test_a_price_integer_past_a_doubles_range_is_rejected_by_field_not_as_a_crash() -> None:
    huge = 10**400  # what the stdlib fallback parser gives for such a literal
    out = Transformer(SETTINGS).event(rec(price=huge), IDS)
    # any other property (a group key too) holding it: non_json_value, naming the field
    other = Transformer(SETTINGS).event(rec(company_id=huge), IDS)
    assert isinstance(other, Rejection) and other.reason == "non_json_value"
    assert isinstance(out, Rejection)
    assert (out.reason, out.field) == ("non_json_value", "properties.price"), out


def test_revenue_counts_of_a_rejected_event_are_not_reported(tmp_path: Path) -> None:
    # README: these counts "cover only events that are sent: an event rejected for another
    # reason is counted under that reason alone".
    lines = [
        '{"event":"Purchase","properties":{"time":1700000001,"distinct_id":"user-1",'
        '"$insert_id":"iid-000001","price":5,"rev":"$5.00","bad":NaN}}',
        '{"event":"Viewed","properties":{"time":1700000002,"distinct_id":"user-1",'
        '"$insert_id":"iid-000002"}}',
    ]
    code, events, summary = _transform(tmp_path, lines, CONFIG)
    assert code == 0
    assert [e["event_type"] for e in events] == ["Viewed"]
    assert summary["summary"]["rejected"] == {"non_json_value": 1}
    assert summary["values"]["other"] == {}, summary["values"]


def test_a_float_product_id_is_one_product_as_mixpanel_shows_it() -> None:
    rs = RevenueSettings(price="price", product_id="sku", revenue_type="kind")
    plan = parse_plan({"properties": {"sku": {"type": "string"}, "kind": {"type": "string"}}})
    for sku, shown in ((29066.0, "29066"), (1e16, "10000000000000000")):
        record = rec(price=5, sku=sku, kind=2.0)
        plain = Transformer(TransformSettings(revenue=rs, group_keys=("sku",))).event(
            copy.deepcopy(record), IDS)
        planned = Transformer(TransformSettings(revenue=rs, plan=plan)).event(
            copy.deepcopy(record), IDS)
        assert isinstance(plain, dict) and isinstance(planned, dict)
        # the same value as a group, and with the plan typing it string: Mixpanel's text
        assert plain["groups"] == {"sku": shown}
        assert (planned["productId"], planned["revenueType"]) == (shown, "2")
        assert (plain["productId"], plain["revenueType"]) == (shown, "2"), plain


@pytest.mark.parametrize("props", [
    {"price": 1e308, "qty": 2.5},
    {"items": [{"price": 1e308, "qty": 2}, {"price": 1e308}]},
    # a whole quantity: Amplitude would compute price x quantity itself, and overflow
    {"price": 1e308, "qty": 2},
    {"items": [{"price": -1e308, "qty": 3}]},
])
@pytest.mark.parametrize("name", ["Purchase", "Order Refunded"])
def test_an_overflowing_amount_is_not_sent_and_is_counted(
        props: dict[str, Any], name: str) -> None:
    t = Transformer(SETTINGS)
    out = t.event(rec(name, **props), IDS)
    assert isinstance(out, dict), out
    assert revenue_of(out) == {}  # no amount (and so no revenueType either)
    assert out["event_properties"]["price" if "price" in props else "items"] is not None
    assert t.stats()["other"] == {"revenue_not_a_number": 1}  # once for the event


def test_an_overflowing_product_with_a_recorded_revenue_sends_the_revenue() -> None:
    # a guard: the recorded revenue differs from price x quantity, which would not be sent
    # anyway, so no amount is lost and nothing is counted
    t = Transformer(SETTINGS)
    out = t.event(rec(price=1e308, qty=2, rev="12.5"), IDS)
    assert isinstance(out, dict)
    assert revenue_of(out) == {"revenue": 12.5}
    assert t.stats()["other"] == {}  # the recorded amount is sent: nothing lost
