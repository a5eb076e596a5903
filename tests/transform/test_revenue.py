"""Revenue: configured properties hoisted to Amplitude's top-level revenue fields."""

from __future__ import annotations

from typing import Any

from mp2amp.emulators.amplitude.validate import validate_events
from mp2amp.models import Resolved
from mp2amp.transform import RevenueSettings, Transformer, TransformSettings
from mp2amp.transform.revenue import integer, number

SHOP = RevenueSettings(price="item_price", quantity="qty", revenue="Amount",
                       product_id="item_id", revenue_type="kind", currency="currency",
                       items="products", refund_events=("Order Refunded",))


def run(name: str, props: dict[str, Any], rs: RevenueSettings = SHOP) -> dict[str, Any]:
    record = {"event": name, "properties": {"time": 1700000000, **props}}
    out = Transformer(TransformSettings(revenue=rs)).event(record, Resolved("user-1", None))
    assert isinstance(out, dict), out
    assert validate_events([out], 1).ok
    return out


def test_price_as_string_is_hoisted_and_kept_as_property() -> None:
    # Wild: item_price "800.00" (numbers as strings).
    out = run("Items purchased", {"item_price": "800.00", "item_id": 29066, "qty": "2"})
    assert (out["price"], out["quantity"], out["productId"]) == (800.0, 2, "29066")
    assert out["event_properties"]["item_price"] == "800.00"


def test_revenue_only_event() -> None:
    out = run("Purchase", {"Amount": 5.0, "currency": "usd", "kind": "purchase"})
    assert out["revenue"] == 5.0 and "price" not in out
    assert out["currency"] == "USD" and out["revenueType"] == "purchase"


def test_no_revenue_fields_without_an_amount() -> None:
    out = run("Viewed", {"item_id": "x", "currency": "USD", "kind": "purchase"})
    assert not {"price", "revenue", "productId", "revenueType", "currency"} & out.keys()


def test_unparseable_amounts_are_not_invented() -> None:
    out = run("Purchase", {"item_price": "free", "Amount": None, "qty": "many"})
    assert "price" not in out and "revenue" not in out
    assert number("1_000") is None and number(True) is None and number("nan") is None
    assert number("\u0661\u0662\u0663") is None and number("\uff11\uff12") is None
    assert number(" 12.5 ") == 12.5
    assert integer(2.5) is None and integer("3") == 3


def test_multi_item_order_sends_the_total_and_keeps_the_items() -> None:
    items = [{"item_price": "10.5", "qty": 2, "item_id": "a"},
             {"item_price": 4, "item_id": "b"}]
    out = run("Order Completed", {"products": items})
    assert out["revenue"] == 25.0 and "productId" not in out and "price" not in out
    assert out["event_properties"]["products"] == items


def test_order_total_property_wins_over_the_item_sum() -> None:
    items = [{"item_price": 10, "qty": 1}, {"item_price": 5, "qty": 1}]
    assert run("Order Completed", {"products": items, "Amount": 13.5})["revenue"] == 13.5


def test_single_item_order_hoists_the_item() -> None:
    out = run("Order Completed", {"products": [{"item_price": 9.99, "qty": 3, "item_id": "p1"}]})
    assert (out["price"], out["quantity"], out["productId"]) == (9.99, 3, "p1")


def test_item_without_price_makes_the_sum_unknown() -> None:
    out = run("Order Completed", {"products": [{"item_price": 10}, {"item_id": "x"}]})
    assert "revenue" not in out


def test_refund_events_are_negative_with_refund_type() -> None:
    out = run("Order Refunded", {"Amount": "25.00", "item_price": 25})
    assert out["revenue"] == -25.0 and out["price"] == -25.0
    assert out["revenueType"] == "refund"
    assert run("Purchase", {"Amount": -3})["revenue"] == -3.0  # a negative amount is kept


def test_revenue_off_by_default() -> None:
    out = run("Purchase", {"Amount": 5.0, "price": 3}, RevenueSettings())
    assert "revenue" not in out and "price" not in out


def test_recorded_revenue_wins_over_price_times_quantity() -> None:
    # price 10 x 2 = 20, but the order recorded 23.5 (tax): Amplitude would recompute 20.
    out = run("Purchase", {"item_price": 10, "qty": 2, "Amount": 23.5, "item_id": "p"})
    assert out["revenue"] == 23.5 and "price" not in out and "quantity" not in out
    assert out["productId"] == "p"
    consistent = run("Purchase", {"item_price": 10, "qty": 2, "Amount": 20})
    assert (consistent["price"], consistent["quantity"], consistent["revenue"]) == (10.0, 2, 20.0)


def test_an_amount_that_is_not_a_number_is_counted_once_per_event() -> None:
    transformer = Transformer(TransformSettings(revenue=SHOP))

    def send(props: dict[str, Any]) -> dict[str, Any]:
        record = {"event": "Purchase", "properties": {"time": 1700000000, **props}}
        out = transformer.event(record, Resolved("user-1", None))
        assert isinstance(out, dict), out
        return out

    assert "revenue" not in send({"Amount": "$19.99"})
    assert "price" not in send({"item_price": "1,299.00", "Amount": "19,99"})  # one event
    send({"products": [{"item_price": 5}, {"item_price": "five"}]})
    assert transformer.stats()["other"] == {"revenue_not_a_number": 3}
    send({"Amount": 5, "item_price": "5", "products": [{"item_price": None}]})
    send({"Amount": None, "currency": "USD"})  # absent amounts are not counted
    assert transformer.stats()["other"] == {"revenue_not_a_number": 3}
