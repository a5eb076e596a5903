"""Adversarial review (session 14) of the transform's semantics: is each Mixpanel event
mapped into the Amplitude event a data engineer expects?

Passing tests pin edge cases the other transform tests do not; ``xfail(strict=True)``
tests pin real defects (the reason says what is wrong, what should happen and where).
Helpers mirror tests/transform/test_transform_review.py (not importable under
``--import-mode=importlib``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mp2amp.emulators.amplitude.validate import validate_events
from mp2amp.errors import Rejection
from mp2amp.models import Resolved
from mp2amp.transform import RevenueSettings, Transformer, TransformSettings

IDS = Resolved("user-1", "device-1")
WILD = Path("/work/shared/fixtures/wild")
if not WILD.exists():  # a checkout outside the team machine
    WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"
REVENUE = TransformSettings(
    revenue=RevenueSettings(
        price="price",
        quantity="qty",
        revenue="rev",
        product_id="sku",
        revenue_type="kind",
        currency="cur",
        items="items",
        refund_events=("Order Refunded",),
    )
)


def rec(name: str = "Played Song", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": 1601412131, "distinct_id": "u1", **props}}


def run(
    record: dict[str, Any], settings_: TransformSettings | None = None, ids: Resolved = IDS
) -> Any:
    return Transformer(settings_ or TransformSettings()).event(record, ids)


def booked_revenue(event: dict[str, Any]) -> float | None:
    """What Amplitude books for an event's top-level revenue fields (amplitude-api.md
    §1.3: "If you send all 3 fields of price, quantity, and revenue, then the revenue
    value is (price x quantity)"; quantity defaults to 1)."""
    if "price" in event:
        return float(event["price"]) * event.get("quantity", 1)
    return event.get("revenue")


# --- claims that hold (edge cases not pinned elsewhere) ----------------------------------


def test_integer_and_text_distinct_id_give_one_insert_id_with_and_without_insert_id() -> None:
    # The Engage API and some pipelines write a numeric distinct_id as a JSON number, the
    # export as text: one Mixpanel event must stay one Amplitude event (one insert_id).
    for extra in ({"$insert_id": "9cc62d387de6241f"}, {}):
        as_int = run(rec("Install", **{**extra, "distinct_id": 77473}))
        as_text = run(rec("Install", **{**extra, "distinct_id": "77473"}))
        assert isinstance(as_int, dict) and isinstance(as_text, dict)
        assert as_int["insert_id"] == as_text["insert_id"]
        assert as_int["event_properties"] == as_text["event_properties"] == {}


def test_distinct_id_is_part_of_the_insert_id_so_two_users_sharing_an_insert_id_stay_two() -> None:
    # Adobe sample: one $insert_id on events of different users at other times.
    a = run(
        rec(
            "Items sold",
            **{
                "$insert_id": "935d87b1-00cd-41b7-be34-b9d98dd08b75",
                "distinct_id": "test@test.com",
            },
        )
    )
    b = run(
        rec(
            "Items sold",
            **{
                "$insert_id": "935d87b1-00cd-41b7-be34-b9d98dd08b75",
                "distinct_id": "test1@test.com",
            },
        )
    )
    assert a["insert_id"] != b["insert_id"]
    assert a["insert_id"].startswith("935d87b1-00cd-41b7-be34-b9d98dd08b75-")


_SECONDS = st.integers(100_000_000, 4_102_444_799)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seconds=_SECONDS, ms=st.integers(0, 999), with_id=st.booleans())
def test_every_unit_and_form_of_one_instant_gives_one_time_and_one_insert_id(
    seconds: int, ms: int, with_id: bool
) -> None:
    # s (float with the ms fraction), ms, us, ns, and the same as digits: the magnitude
    # decides the unit (docs/mapping.md "Units") and the insert_id must not depend on it.
    instant = seconds * 1000 + ms
    forms: list[Any] = [
        instant,
        instant * 1000,
        instant * 1_000_000,
        str(instant),
        str(instant * 1000),
    ]
    if seconds >= 1_000_000_000:  # ms fraction on float seconds: only where it is exact
        forms.append(round(instant / 1000, 3))
    extra = {"$insert_id": "k3j4h5g6f7d8s9a0"} if with_id else {}
    outs = [run(rec("Viewed", **extra, time=form)) for form in forms]
    if not 31_536_000_000 <= instant < 4_102_444_800_000:
        assert all(isinstance(o, Rejection) and o.reason == "time_out_of_range" for o in outs)
        return
    assert {o["time"] for o in outs} == {instant}, [o["time"] for o in outs]
    assert len({o["insert_id"] for o in outs}) == 1


def test_time_just_below_and_at_the_seconds_ms_boundary() -> None:
    # below 1e11: seconds (99,999,999,999 s is year 5138: refused, not read as 1973 ms);
    # 1e11 and up: milliseconds.
    below = run(rec(time=99_999_999_999))
    assert isinstance(below, Rejection) and below.reason == "time_out_of_range"
    at = run(rec(time=100_000_000_000))
    assert isinstance(at, dict) and at["time"] == 100_000_000_000
    assert isinstance(run(rec(time=-1601412131)), Rejection)  # a negative time is no time
    assert isinstance(run(rec(time=True)), Rejection)  # bool is not a number here


def test_a_refund_of_several_items_with_negative_quantities_books_a_negative_amount() -> None:
    out = run(
        rec("Order Refunded", items=[{"price": 10, "qty": -1}, {"price": 5, "qty": -1}]), REVENUE
    )
    assert isinstance(out, dict)
    assert booked_revenue(out) == -15.0 and out["revenueType"] == "refund"


def test_custom_page_properties_win_over_the_ones_derived_from_current_url() -> None:
    # mixpanel-js page views carry current_domain / current_url_path of their own: they are
    # what Mixpanel charted, and are not overwritten by the parts of $current_url.
    out = run(
        rec(
            "$mp_web_page_view",
            **{
                "mp_lib": "web",
                "$current_url": "https://shop.example.com/p/1?x=2",
                "current_url_path": "/sent",
                "current_domain": "other.example.com",
            },
        )
    )
    props = out["event_properties"]
    assert props["[Amplitude] Page Path"] == "/sent"
    assert props["[Amplitude] Page Domain"] == "other.example.com"
    assert props["[Amplitude] Page URL"] == "https://shop.example.com/p/1"
    assert props["[Amplitude] Page Location"] == "https://shop.example.com/p/1?x=2"


def test_a_reshuffled_wild_record_drops_the_bookkeeping_and_keeps_its_insert_id_prefix() -> None:
    path = WILD / "mixpanel-export-events.jsonl"
    if not path.exists():
        pytest.skip("wild fixtures not available")
    records = [orjson.loads(line) for line in path.read_text().splitlines()]
    record = next(r for r in records if "$is_reshuffled" in r["properties"])
    out = run(record, ids=Resolved("77473", "cb95b742-e130-4eab-80a3-081051291893"))
    assert isinstance(out, dict)
    assert out["insert_id"].startswith("9cc62d387de6241f-")
    assert out["platform"] == "Android" and out["country"] == "United Kingdom"
    assert not {"$is_reshuffled", "is_reshuffled"} & set(out["event_properties"])
    assert validate_events([out]).ok


# --- defects ------------------------------------------------------------------------------


def test_a_refund_with_a_negative_quantity_books_a_negative_amount() -> None:
    out = run(rec("Order Refunded", price=10, qty=-1), REVENUE)
    assert isinstance(out, dict) and out["revenueType"] == "refund"
    assert booked_revenue(out) == -10.0, out


def test_a_huge_whole_quantity_never_makes_an_unsendable_event() -> None:
    out = run(rec("Bought", price=1, qty=1e20), REVENUE)
    assert isinstance(out, dict)
    orjson.dumps(out)  # what the uploader does with every event
    assert validate_events([out]).ok


def test_currency_is_only_sent_as_an_ascii_iso_code() -> None:
    out = run(rec("Bought", price=9.99, cur="руб"), REVENUE)
    assert isinstance(out, dict) and out["price"] == 9.99
    assert "currency" not in out, out["currency"]
    assert out["event_properties"]["cur"] == "руб"


def test_product_id_and_revenue_type_are_cut_to_amplitudes_limit_and_counted() -> None:
    transformer = Transformer(REVENUE)
    out = transformer.event(rec("Bought", price=5, sku="s" * 1100, kind="k" * 1100), IDS)
    assert isinstance(out, dict)
    assert len(out["productId"]) == 1024 and len(out["revenueType"]) == 1024
    assert sum(transformer.stats()["truncated"].values()) >= 2


@pytest.mark.parametrize("key", ["$app_version_string", "$carrier", "$os_version"])
def test_nan_in_a_field_feeding_property_is_rejected_not_sent_as_text(key: str) -> None:
    out = run(rec("Opened", **{"mp_lib": "swift", "$os": "iOS", key: float("nan")}))
    assert isinstance(out, Rejection), out
    assert out.reason == "non_json_value"


def test_insert_id_without_insert_id_survives_the_reshuffle_flag() -> None:
    before = rec("Opened", **{"distinct_id": "$device:0f1e2d3c", "mp_lib": "iphone"})
    after = rec(
        "Opened",
        **{
            "distinct_id": "jane-42",
            "mp_lib": "iphone",
            "$distinct_id_before_identity": "$device:0f1e2d3c",
            "$is_reshuffled": True,
        },
    )
    ids = Resolved("jane-42", "0f1e2d3c")
    out_before, out_after = run(before, ids=ids), run(after, ids=ids)
    assert out_before["insert_id"].startswith("mp-")
    assert out_before["event_properties"] == out_after["event_properties"]  # same event
    assert out_before["insert_id"] == out_after["insert_id"]
