"""Session 19: the ``values`` report (truncated / flattened) and the revenue counts cover
only events that are sent, on both transformer paths (``Transformer.event``'s fast path
and ``_event``): an event a later step rejects is counted under its rejection alone.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mp2amp.errors import Rejection
from mp2amp.models import Resolved
from mp2amp.transform import RevenueSettings, Transformer, TransformSettings
from mp2amp.transform.plan import parse_plan

IDS = Resolved("user-1", "device-1")
LONG = "x" * 1500
EMPTY: dict[str, dict[str, int]] = {"truncated": {}, "flattened": {}, "other": {}}


def rec(name: str = "Viewed", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": 1601412131, "distinct_id": "u1",
                                          "$insert_id": "abcdefghijklmnop", **props}}


def nest(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


# Each: a record a later step rejects (after something was cut or flattened on the way),
# and what that cut is counted as when the same record, without the bad value, is sent.
REJECTED = {
    "overlong property, then NaN": (
        rec(bio=LONG, bad=float("nan")), {"truncated": {"bio": 1}}),
    "deep property (flattened and cut), then NaN": (
        rec(deep=nest(45), tail=LONG, bad=float("inf")),
        {"flattened": {"deep": 1}, "truncated": {"tail": 1}}),
    "overlong event name, then NaN": (
        rec("n" * 1500, bad=float("nan")), {"truncated": {"event_type": 1}}),
    "overlong default property (a top-level field), then NaN": (
        rec("Viewed", **{"$city": LONG, "mp_lib": "web", "bad": float("nan")}),
        {"truncated": {"city": 1}}),
    "overlong property, then an integer past 64 bits": (
        rec(bio=LONG, big=2**70), {"truncated": {"bio": 1}}),
}


def _sent(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its bad value."""
    out = copy.deepcopy(record)
    for key in ("bad", "big"):
        out["properties"].pop(key, None)
    return out


@pytest.mark.parametrize("case", list(REJECTED))
def test_a_rejected_events_cuts_are_not_counted_on_either_path(case: str) -> None:
    record, cut = REJECTED[case]
    general, fast = Transformer(TransformSettings()), Transformer(TransformSettings())
    slow_out = general._event(copy.deepcopy(record), IDS)
    fast_out = fast.event(copy.deepcopy(record), IDS)
    assert isinstance(slow_out, Rejection) and slow_out.reason == "non_json_value"
    assert fast_out == slow_out
    assert general.stats() == fast.stats() == EMPTY
    # a clean event after it books only its own counts (the rejected one's were dropped)
    for t in (general, fast):
        assert isinstance(t.event(rec(ok="fine"), IDS), dict)
        assert t.stats() == EMPTY
        # the record sent (its bad value gone) is counted: the counts are real
        assert isinstance(t.event(_sent(record), IDS), dict)
        assert t.stats() == {**EMPTY, **cut}


def test_the_fast_path_after_a_rejection_counts_what_the_general_path_counts() -> None:
    # a learnt shape: the record's own values would take the fast path; the overlong one
    # sends it to _event, which rejects it for the NaN after cutting the string
    t = Transformer(TransformSettings())
    assert isinstance(t.event(rec(bio="short", bad=1.5), IDS), dict)
    assert isinstance(t.event(rec(bio="other", bad=2.5), IDS), dict)  # fast
    before = t.general_path
    out = t.event(rec(bio=LONG, bad=float("nan")), IDS)
    assert isinstance(out, Rejection) and out.field == "properties.bad"
    assert t.general_path == before + 1
    assert t.stats() == EMPTY
    assert isinstance(t.event(rec(bio="third", bad=3.5), IDS), dict)  # fast again
    assert t.stats() == EMPTY


def test_event_properties_cut_before_user_properties_reject_the_event() -> None:
    plan = parse_plan({"properties": {"tier": {"user_property": True}}})
    t = Transformer(TransformSettings(plan=plan))
    out = t.event(rec(bio=LONG, tier=float("nan")), IDS)
    assert isinstance(out, Rejection) and out.reason == "non_json_value", out
    assert t.stats() == EMPTY
    sent = t.event(rec(bio=LONG, tier=LONG), IDS)
    assert isinstance(sent, dict) and len(sent["user_properties"]["tier"]) == 1024
    assert t.stats()["truncated"] == {"bio": 1, "tier": 1}


SHOP = RevenueSettings(price="price", revenue="rev", product_id="sku")


@pytest.mark.parametrize("fast", [False, True])
def test_a_rejected_events_revenue_counts_and_product_cut_are_not_booked(fast: bool) -> None:
    t = Transformer(TransformSettings(revenue=SHOP))
    if fast:  # learn the shape of the event sent after the rejected one
        assert isinstance(t.event(rec(ok="a"), IDS), dict)
        assert isinstance(t.event(rec(ok="b"), IDS), dict)
    out = t.event(rec("Purchase", price=5, rev="$5.00", sku=LONG, bad=float("nan")), IDS)
    assert isinstance(out, Rejection) and out.reason == "non_json_value"
    before = t.general_path
    assert isinstance(t.event(rec(ok="c"), IDS), dict)  # no revenue: books nothing
    assert t.general_path == before + (0 if fast else 1)
    assert t.stats() == EMPTY
    # sent, the same event is counted: once each
    sent = t.event(rec("Purchase", price=5, rev="$5.00", sku=LONG), IDS)
    assert isinstance(sent, dict) and sent["productId"] == "x" * 1024
    assert t.stats() == {**EMPTY, "truncated": {"sku": 1, "productId": 1},
                         "other": {"revenue_not_a_number": 1}}
