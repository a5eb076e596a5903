"""Review of session 21's revenue proof (``pipeline/proof_revenue.py``, ``wrong_revenue``,
the demo's revenue totals): its rules against ``docs/mapping.md`` "Revenue" and against
what ``transform/revenue.py`` sends, and revenue bugs injected into the demo (as in
``test_demo_revenue_session21.py``: ``transform_worker``'s ``orjson.dumps`` changes each
outgoing event before it is uploaded)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from test_demo_revenue_session21 import EVENTS, Mutation, _MutatingOrjson

import mp2amp.pipeline.demo as demo
import mp2amp.pipeline.transform_worker as transform_worker
from mp2amp.pipeline.proof_revenue import (
    TOP_LEVEL,
    RevenueNames,
    expected_revenue,
)
from mp2amp.transform.revenue import revenue_reader
from mp2amp.transform.settings import RevenueSettings


def _demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutate: Mutation,
          **revenue: Any) -> demo.DemoResult:
    if revenue:
        monkeypatch.setattr(demo, "DEMO_REVENUE", {**demo.DEMO_REVENUE, **revenue})
    monkeypatch.setattr(transform_worker, "orjson", _MutatingOrjson(mutate))
    return demo.run_demo(EVENTS, tmp_path / "d", fail_rate=0.0, drop_rate=0.0)


# --- (2) revenue bugs injected into the demo ----------------------------------------------
# (a wrong currency, or revenue sent as a ``$revenue`` event property, is out of its sight:
# Amplitude's export shows no currency, and top-level revenue as ``$revenue``; README)

def test_revenue_moved_one_event_later_on_its_device_fails_the_demo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a guard: the per-event check and the daily totals both see it
    carried: dict[object, dict[str, Any]] = {}

    def shifted(event: dict[str, Any]) -> None:
        device = event.get("device_id") or event.get("user_id")
        before = carried.pop(device, None)
        mine = {k: event.pop(k) for k in TOP_LEVEL if k in event}
        if mine:
            carried[device] = mine
        if before:
            event.update(before)

    result = _demo(tmp_path, monkeypatch, shifted)
    assert result.exit_code == 1
    assert result.events is not None and result.events.problems["wrong_revenue"] > 0


# --- (1) the proof's rules vs docs/mapping.md and the transform ----------------------------

_CONFIG: dict[str, Any] = {"price": "price", "quantity": "quantity", "revenue": "revenue",
                           "product_id": "sku", "revenue_type": "kind",
                           "currency": "currency", "items": "products",
                           "refund_events": ["Refund"]}
_NAMES = RevenueNames.of(_CONFIG)


def _sent(props: dict[str, Any], event: str = "Buy") -> tuple[object, ...] | None:
    """What the transform sends, as proof_revenue.TOP_LEVEL's values."""
    settings = RevenueSettings(**{**_CONFIG, "refund_events": ("Refund",)})
    fields, _ = revenue_reader(settings)
    out = fields(props, (event, event))
    return tuple(out.get(k) for k in TOP_LEVEL) if out else None


@pytest.mark.parametrize("sku", [2**60, 12345678901234567890 // 10 * 10 + 0.0],
                         ids=["int_2_60", "whole_float_1.2e19"])
def test_a_large_numeric_product_id_is_stated_as_javascript_shows_it(sku: object) -> None:
    # docs/mapping.md: "A number there is written as Mixpanel (JavaScript) shows it";
    # JavaScript's String(2**60) is "1152921504606847000", the transform sends that
    props = {"revenue": 5.0, "sku": sku}
    sent = _sent(props)
    assert sent is not None and sent[3] in ("1152921504606847000", "12345678901234567000")
    assert expected_revenue(props, "Buy", _NAMES) == sent


@pytest.mark.parametrize("items", [
    [{"price": 1e308}, {"price": 1e308}],
    [{"price": 1e308, "quantity": 2}, {"price": -1e308, "quantity": 2}],
], ids=["sum_overflows", "inf_minus_inf"])
def test_an_order_whose_sum_overflows_is_stated_without_revenue(
        items: list[dict[str, Any]]) -> None:
    props = {"products": items, "currency": "USD"}
    assert _sent(props) is None  # the transform: the sum is not a finite number, not sent
    assert expected_revenue(props, "Buy", _NAMES) is None


def test_an_orders_item_sum_does_not_depend_on_the_item_order() -> None:
    # docs/mapping.md: "revenue is ... the sum of price x quantity over the items"
    items = [{"price": 1e16}, {"price": 1.0}, {"price": -1e16}]
    want = expected_revenue({"products": items}, "Buy", _NAMES)
    assert want == (None, None, 1.0, None, None, None)
    assert _sent({"products": items}) == want
    assert _sent({"products": [items[0], items[2], items[1]]}) == want


def test_the_proof_and_the_transform_agree_on_ordinary_records() -> None:
    # a guard over a grid of prices, quantities, revenues, items, refunds, ids and currencies
    amounts = [None, 0, 19.99, "19.99", " 5 ", -3, "$19.99", "1,299.00", "nan", "1e400", True]
    quantities = [None, 2, "2", 2.5, "two", -2, 2**31]
    others: list[tuple[dict[str, Any], str]] = [
        ({}, "Buy"), ({"sku": 29066.0, "kind": "sub", "currency": " usd"}, "Refund"),
        ({"sku": " A ", "currency": "US$"}, "Buy")]
    items_list = [None, [], [{"price": 2.0, "quantity": 3, "sku": "A"}],
                  [{"price": 2.0, "quantity": 3}, {"price": "1.5"}], [{"price": 2.0}, {"price": "x"}],
                  "not a list", [{"price": 1.0}, 7]]
    checked = 0
    for price, quantity, revenue, (extra, event), items in itertools.product(
            amounts, quantities, amounts[:6], others, items_list):
        props: dict[str, Any] = {**extra}
        for key, value in (("price", price), ("quantity", quantity), ("revenue", revenue),
                           ("products", items)):
            if value is not None:
                props[key] = value
        want, got = expected_revenue(props, event, _NAMES), _sent(props, event)
        if want is None or got is None:
            assert want == got, props
        else:
            for w, g in zip(want, got, strict=True):
                if isinstance(w, float):
                    assert isinstance(g, (int, float)) and abs(w - g) <= 1e-9 * max(
                        1.0, abs(w)), (props, want, got)
                else:
                    assert w == g, (props, want, got)
        checked += 1
    assert checked > 9_000
