"""Session 21: ``mp2amp demo`` migrates revenue (``[transform.revenue]``) and its proof
checks it: each exported event's revenue fields (``wrong_revenue``) and the total revenue
of the expected events vs Amplitude's export, per UTC day.

A revenue bug is injected as a transform bug would show: every Amplitude event dict passes
through ``transform_worker``'s ``orjson.dumps`` just before it is uploaded (the fast and
the general path; worker processes are forked, so they inherit the patch)."""

from __future__ import annotations

import json
import math
import random
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import mp2amp.pipeline.demo as demo
import mp2amp.pipeline.transform_worker as transform_worker
from mp2amp.pipeline.proof import EventProof
from mp2amp.pipeline.proof_revenue import (
    RevenueNames,
    as_exported,
    differences,
    expected_revenue,
    js_number,
    revenue_totals,
)
from mp2amp.transform.values import js_number_text

EVENTS = 3_000

Mutation = Callable[[dict[str, Any]], None]


class _MutatingOrjson:
    """``orjson`` for transform_worker, whose ``dumps`` first applies a bug to an event."""

    def __init__(self, mutate: Mutation) -> None:
        self._mutate = mutate

    def __getattr__(self, name: str) -> Any:
        return getattr(orjson, name)

    def dumps(self, obj: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(obj, dict) and "insert_id" in obj and "event_type" in obj:
            self._mutate(obj)
        return orjson.dumps(obj, *args, **kwargs)


def _demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutate: Mutation | None = None,
          **revenue: Any) -> demo.DemoResult:
    if revenue:
        monkeypatch.setattr(demo, "DEMO_REVENUE", {**demo.DEMO_REVENUE, **revenue})
    if mutate is not None:
        monkeypatch.setattr(transform_worker, "orjson", _MutatingOrjson(mutate))
    return demo.run_demo(EVENTS, tmp_path / "d", fail_rate=0.0, drop_rate=0.0)


def _assert_caught(result: demo.DemoResult) -> None:
    assert result.exit_code == 1
    assert result.events is not None and result.events.problems["wrong_revenue"] > 0
    assert any(e.startswith("wrong_revenue: ") for e in result.events.examples)
    # nothing else is wrong with the events: the revenue check alone sees the bug
    assert set(result.events.problems) == {"wrong_revenue"}, result.events.problems


def test_the_demo_migrates_revenue_and_its_totals_match(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _demo(tmp_path, monkeypatch)
    assert result.ok and result.exit_code == 0, (result.events, result.revenue)
    totals = result.revenue
    assert totals is not None and totals.ok
    # the orders' revenue reached Amplitude's top level (before: no revenue at all)
    assert totals.expected_events > 0 and totals.expected > 0
    assert (totals.export, totals.export_events) == (totals.expected, totals.expected_events)
    assert totals.daily_mismatches == []
    # the emulator refuses revenue series: not compared, and said why
    assert totals.segmentation is None and "revenue_amount" in totals.segmentation_note
    assert result.as_dict()["revenue"]["ok"] is True


def test_revenue_sent_as_price_is_wrong_revenue_though_the_totals_match(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def as_price(event: dict[str, Any]) -> None:
        if "revenue" in event:
            event["price"] = event.pop("revenue")

    result = _demo(tmp_path, monkeypatch, as_price)
    _assert_caught(result)
    # price x 1 is the same amount: only the per-event check sees it
    assert result.revenue is not None and result.revenue.ok


def test_lost_revenue_fails_the_per_event_check_and_the_totals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def lost(event: dict[str, Any]) -> None:
        if event.get("productId") is None:  # the multi-item orders
            event.pop("revenue", None)

    result = _demo(tmp_path, monkeypatch, lost)
    _assert_caught(result)
    totals = result.revenue
    assert totals is not None and not totals.ok and totals.export < totals.expected
    assert totals.daily_mismatches and totals.daily_mismatches[0].startswith("revenue on 2024-")


def test_a_refund_that_loses_its_sign_fails_the_demo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the generated refunds carry no configurable amount: the orders are named refunds
    def unsigned(event: dict[str, Any]) -> None:
        if "revenue" in event:
            event["revenue"] = abs(event["revenue"])

    result = _demo(tmp_path, monkeypatch, unsigned, refund_events=["Order Completed"])
    _assert_caught(result)
    assert result.revenue is not None and result.revenue.expected < 0 < result.revenue.export


def test_a_dropped_quantity_fails_the_demo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # with price and quantity configured (product events then carry them too)
    def no_quantity(event: dict[str, Any]) -> None:
        event.pop("quantity", None)

    result = _demo(tmp_path, monkeypatch, no_quantity, price="price", quantity="quantity")
    _assert_caught(result)
    assert result.revenue is not None and result.revenue.export < result.revenue.expected


def test_the_cli_prints_the_revenue_line_and_exits_1_on_a_mismatch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.cli import app

    args = ["demo", "--events", str(EVENTS), "--fail-rate", "0", "--drop-rate", "0",
            "--quiet", "--workdir"]
    passed = CliRunner().invoke(app, [*args, str(tmp_path / "ok")])
    assert passed.exit_code == 0, passed.output
    line = re.search(r"^revenue: expected ([\d,]+\.\d\d) over ([\d,]+) event\(s\) \(Mixpanel's "
                     r"records, by \[transform\.revenue\]\), Amplitude export ([\d,]+\.\d\d) "
                     r"over ([\d,]+), segmentation not compared \(revenue_amount refused, "
                     r"400: .*\): match$", passed.output, re.M)
    assert line is not None, passed.output
    assert (line[1], line[2]) == (line[3], line[4])

    monkeypatch.setattr(transform_worker, "orjson", _MutatingOrjson(
        lambda e: e.pop("revenue", None)))
    failed = CliRunner().invoke(app, [*args, str(tmp_path / "bad"), "--json"])
    assert failed.exit_code == 1, failed.output
    doc = json.loads(failed.stdout)
    assert doc["ok"] is False and doc["revenue"]["ok"] is False
    assert doc["revenue"]["export"] == 0 and doc["revenue"]["export_events"] == 0
    # the same project (seed 7)
    assert doc["revenue"]["expected"] == float(line[1].replace(",", ""))
    assert doc["events"]["problems"]["wrong_revenue"] == int(line[2].replace(",", ""))


_NAMES = RevenueNames.of({"price": "price", "quantity": "quantity", "revenue": "revenue",
                          "product_id": "sku", "revenue_type": "kind", "currency": "currency",
                          "items": "products", "refund_events": ["Refund"]})


@pytest.mark.parametrize(("props", "event", "want"), [
    # (price, quantity, revenue, productId, revenueType, currency)
    ({"price": "19.99", "quantity": 2, "sku": 29066.0, "currency": " usd"}, "Buy",
     (19.99, 2, None, "29066", None, "USD")),
    ({"price": 4.0, "quantity": 2.5}, "Buy", (None, None, 10.0, None, None, None)),
    ({"price": 10.0, "quantity": "two"}, "Buy", None),
    ({"price": 10.0, "quantity": 2, "revenue": 18.0}, "Buy",
     (None, None, 18.0, None, None, None)),
    ({"price": 5.0, "quantity": 3, "kind": "tax"}, "Refund",
     (-5.0, 3, None, None, "tax", None)),
    ({"revenue": 7}, "Refund", (None, None, -7.0, None, "refund", None)),
    ({"price": "$19.99", "currency": "US$"}, "Buy", None),
    ({"products": [{"price": 2.0, "quantity": 3}, {"price": 1.5}]}, "Buy",
     (None, None, 7.5, None, None, None)),
    ({"products": [{"price": 2.0, "quantity": 3, "sku": "A"}], "revenue": 6.0}, "Buy",
     (2.0, 3, 6.0, "A", None, None)),
    ({"products": [{"price": 2.0}, {"price": "x"}], "currency": "EUR"}, "Buy", None),
    ({"price": True}, "Buy", None),
])
def test_the_rules_as_the_proof_states_them(props: dict[str, Any], event: str,
                                            want: tuple[object, ...] | None) -> None:
    assert expected_revenue(props, event, _NAMES) == want


def test_the_export_shows_price_times_quantity_as_revenue() -> None:
    fields = (19.99, 2, None, "A", None, "USD")
    shown = as_exported(fields)
    assert shown == {"$price": 19.99, "$quantity": 2, "$revenue": 39.98,
                     "$productId": "A", "$revenueType": None}
    assert differences({"event_properties": shown}, fields) == []
    wrong = differences({"event_properties": {**shown, "$quantity": None,
                                              "$revenue": 19.99}}, fields)
    assert wrong == ["$quantity None (expected 2)", "$revenue 19.99 (expected 39.98)"]
    # a top-level field is compared where the export row has it; currency, which the
    # export never shows (no $ name), is not: the proof does not claim to check it
    assert differences({"event_properties": shown, "price": 9.99, "currency": "EUR"},
                       fields) == ["price 9.99 (expected 19.99)"]


def test_totals_are_compared_per_day_in_cents() -> None:
    same = revenue_totals({"2024-03-01": [0.1, 0.2]}, {"2024-03-01": [0.2, 0.1]}, None)
    assert same.ok and same.as_dict()["expected"] == 0.3
    moved = revenue_totals({"2024-03-01": [10.0]}, {"2024-03-02": [10.0]},
                           {"2024-03-01": 10.0})
    assert not moved.ok and moved.daily_mismatches == [
        "revenue on 2024-03-01: expected 10.00, Amplitude's export has 0.00, "
        "segmentation 10.00",
        "revenue on 2024-03-02: expected 0.00, Amplitude's export has 10.00, "
        "segmentation 0.00"]
    assert not revenue_totals({"d": [1.0]}, {"d": [1.0]}, {"d": 2.0}).ok


def test_totals_past_a_double_are_a_mismatch_not_an_overflow() -> None:
    # round(fsum(...) * 100) raised OverflowError past ~1.8e306 (and fsum past ~1.8e308)
    biggest = 1.7976931348623157e308
    huge = revenue_totals({"d": [19.99]}, {"d": [19.99, biggest, biggest]}, {"d": 1e307})
    assert not huge.ok and huge.export == 2 * int(biggest) * 100 + 1999
    assert huge.daily_mismatches[0].startswith("revenue on d: expected 19.99, Amplitude's "
                                               "export has 359,538,626,972,463,")
    doc = huge.as_dict()  # JSON has no number past a double: the total is null there
    assert doc["export"] is None and doc["segmentation"] == 1e307 and doc["expected"] == 19.99
    # the same huge amounts on both sides still match, exactly, in any order
    assert revenue_totals({"d": [biggest, 0.01, biggest]}, {"d": [0.01, biggest, biggest]},
                          None).ok
    # a segmentation amount that is no number is not compared rather than crashing
    odd = revenue_totals({"d": [1.0]}, {"d": [1.0]}, {"d": math.inf})
    assert odd.ok and odd.segmentation is None and "non-finite" in odd.segmentation_note


def test_without_revenue_config_an_invented_revenue_is_wrong(tmp_path: Path) -> None:
    proof = EventProof()
    assert proof.revenue_names.enabled is False
    assert differences({"event_properties": {"$revenue": 5.0}}, None) == [
        "$revenue 5.0 (expected None)"]


@pytest.mark.parametrize(("value", "text"), [
    (5.0, "5"), (-0.0, "0"), (-3.5, "-3.5"), (19.99, "19.99"), (1e16, "10000000000000000"),
    (2.0**60, "1152921504606847000"), (1e21, "1e+21"), (1.5e-7, "1.5e-7"),
    (1e-6, "0.000001"), (123e-20, "1.23e-18"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
])
def test_the_proof_writes_numbers_as_javascript_does(value: float, text: str) -> None:
    # String(value) in JavaScript (ECMA-262 Number::toString)
    assert js_number(value) == text


def test_the_proofs_javascript_numbers_agree_with_the_transforms() -> None:
    # stated independently: any double, written by both, is the same text
    rng = random.Random(21)
    values = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
              for _ in range(20_000)]
    values += [round(rng.uniform(-1e4, 1e4), rng.randint(0, 4)) for _ in range(5_000)]
    for value in values:
        if math.isfinite(value):
            assert js_number(value) == js_number_text(value), value


@pytest.mark.parametrize(("sku", "text"), [
    (19.99, "19.99"), (1e21, "1e+21"), (2**53 + 1, "9007199254740993"),
    (-(2**60), "-1152921504606847000"), (10**400, str(10**400)),
])
def test_a_numeric_product_id_is_stated_whole_or_not(sku: object, text: str) -> None:
    # before, a fraction or 1e21 was not stated (never compared); an integer a double does
    # not hold keeps its digits, as the plan's type: string writes it
    assert expected_revenue({"price": 1.0, "sku": sku}, "Buy", _NAMES) == (
        1.0, None, None, text, None, None)
