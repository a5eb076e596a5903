"""Session 14 review (b) of today's fixes to the transform, identity, staging order and the
demo's proof: regressions and holes the quick fixes left.

``xfail(strict=True)`` tests pin defects (the reason says what is wrong, what should happen
and where); the others pin edge cases of today's changes that must keep holding.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mp2amp.identity import IdentityGraph
from mp2amp.models import UTC_TIME_MARK, Resolved, SourceRecord
from mp2amp.pipeline.proof import _Shared
from mp2amp.pipeline.staging import WHOLE_SECOND_AT, read_staged, sort_key, stage, utc_key
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.insert_id import event_insert_id
from mp2amp.transform.timeconv import LocalTimeConverter

DEVICE = "0f8fad5b-d9cb-469f-a165-70867728950e"
NY = "America/New_York"


def _wall(*parts: int) -> int:
    """Epoch seconds of a wall-clock time written as if it were UTC (a legacy export)."""
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


def _utc_ms(*parts: int) -> int:
    return _wall(*parts) * 1000


def _staged_order(tmp_path: Path, records: list[dict[str, Any]],
                  local: tuple[str, tuple[tuple[str, str], ...]]) -> list[str]:
    dest = tmp_path / "w.staged"
    stage((SourceRecord("f", n, r) for n, r in enumerate(records, 1)), dest, local=local)
    return [rec.record["event"] for rec in read_staged(dest)]  # type: ignore[index]


# --- defects ------------------------------------------------------------------------------


def test_a_whole_second_just_before_the_fold_end_keeps_its_place_in_utc_order(
    tmp_path: Path,
) -> None:
    # America/New_York, 2023-11-05: 01:00-01:59 local happen twice (EDT, then EST)
    first_pass = {"event": "A first pass 01:59:59 EDT", "properties": {
        "time": _wall(2023, 11, 5, 1, 59, 59), "distinct_id": "u1",
        "mp_processing_time_ms": _utc_ms(2023, 11, 5, 6, 0, 30)}}  # 05:59:59Z + 31 s
    repeated = {"event": "B second pass 01:30:00.5 EST", "properties": {
        "time": _wall(2023, 11, 5, 1, 30, 0) + 0.5, "distinct_id": "u1",
        "mp_processing_time_ms": _utc_ms(2023, 11, 5, 6, 31, 0)}}  # 06:30:00.5Z + 1 min
    conv = LocalTimeConverter(NY)
    a_utc = conv.to_utc_ms(_wall(2023, 11, 5, 1, 59, 59) * 1000,
                           first_pass["properties"]["mp_processing_time_ms"])
    assert a_utc == _utc_ms(2023, 11, 5, 5, 59, 59)  # what the transform sends
    # staging converts the whole second itself, then places it at the end of that second
    key = utc_key((NY, ()))
    assert key is not None
    a_key = key(float(_wall(2023, 11, 5, 1, 59, 59)), first_pass["properties"])
    assert a_key == a_utc / 1000
    assert sort_key(first_pass) - _wall(2023, 11, 5, 1, 59, 59) == pytest.approx(WHOLE_SECOND_AT)
    assert _staged_order(tmp_path, [repeated, first_pass], (NY, ())) == [
        "A first pass 01:59:59 EDT", "B second pass 01:30:00.5 EST"]


def test_a_whole_second_before_a_timezone_change_sorts_in_its_own_zone(tmp_path: Path) -> None:
    local = ("America/Los_Angeles", (("2024-01-02", "Asia/Tokyo"),))
    late = {"event": "late 23:59:59 LA", "properties": {
        "time": _wall(2024, 1, 1, 23, 59, 59), "distinct_id": "u1"}}  # 2024-01-02 07:59:59Z
    earlier = {"event": "earlier 20:00:00.5 LA", "properties": {
        "time": _wall(2024, 1, 1, 20, 0, 0) + 0.5, "distinct_id": "u1"}}  # 04:00:00.5Z
    conv = LocalTimeConverter(*local)
    assert conv.to_utc_ms(_wall(2024, 1, 1, 23, 59, 59) * 1000) == _utc_ms(2024, 1, 2, 7, 59, 59)
    assert _staged_order(tmp_path, [late, earlier], local) == [
        "earlier 20:00:00.5 LA", "late 23:59:59 LA"]


@pytest.mark.parametrize("budget", [2_000_000, 1])
def test_a_rekeyed_export_with_a_user_like_canonical_is_one_person(
    tmp_path: Path, budget: int
) -> None:
    def ev(name: str, props: dict[str, Any], t: int) -> dict[str, Any]:
        return {"event": name, "properties": {**props, "time": 1_700_000_000 + t}}

    records = [  # all re-keyed by Mixpanel to the cluster's canonical "alice@x.com"
        ev("Page", {"distinct_id": "alice@x.com", "$device_id": DEVICE}, 1),
        ev("$identify", {"$identified_id": "u123", "$anon_id": DEVICE,
                         "distinct_id": "alice@x.com"}, 2),
        ev("Buy", {"distinct_id": "alice@x.com", "$device_id": DEVICE, "$user_id": "u123"}, 3),
    ]
    graph = IdentityGraph("original", tmp_path / "g", memory_budget_ids=budget)
    try:
        for r in records:
            graph.observe(r)
        graph.finish()
        users = {graph.resolve(r["properties"]).user_id for r in records
                 if r["event"] != "$identify"}
        assert len(users) == 1, (users, graph.report.refused_examples)
        assert graph.report.refused_links == 0, graph.report.refused_examples
    finally:
        graph.close()


def test_legacy_pipeline_rows_stay_on_the_fast_path() -> None:
    transformer = Transformer(TransformSettings(timezone=NY, legacy_time=True))
    ids = Resolved("user-1", "device-1")
    n = 2000
    for i in range(n):
        record = {"event": "Page", UTC_TIME_MARK: True, "properties": {
            "time": 1_700_000_000 + i, "distinct_id": "user-1", "mp_lib": "web",
            "$insert_id": f"abcdefghijkl{i:08d}", "x": i}}
        out = transformer.event(record, ids)
        assert isinstance(out, dict)
    assert transformer.general_path < n // 10, transformer.general_path


@pytest.mark.parametrize("given", [None, "a1b2c3d4e5f60718293a"])
def test_a_copy_reshuffled_with_preshuffle_distinct_id_keeps_its_insert_id(
    given: str | None,
) -> None:
    base: dict[str, Any] = {"time": 1_700_000_000, "mp_lib": "iphone", "screen": "home"}
    if given is not None:
        base["$insert_id"] = given
    before = {**base, "distinct_id": "$device:0f1e2d3c"}
    after = {**base, "distinct_id": "jane-42", "$is_reshuffled": True,
             "$preshuffle_distinct_id": "$device:0f1e2d3c"}
    transformer = Transformer(TransformSettings())
    ids = Resolved("jane-42", "0f1e2d3c")
    out_before = transformer.event({"event": "Opened", "properties": before}, ids)
    out_after = transformer.event({"event": "Opened", "properties": after}, ids)
    assert isinstance(out_before, dict) and isinstance(out_after, dict)
    assert out_before["insert_id"] == out_after["insert_id"]


# --- pins of today's changes that hold ----------------------------------------------------


def test_whole_second_sort_key_sits_after_every_ms_of_its_second_in_utc_projects() -> None:
    whole = {"properties": {"time": 1_700_000_000}}
    last_ms = {"properties": {"time": 1_700_000_000_999}}
    next_second = {"properties": {"time": 1_700_000_001.0 + 0.001}}
    assert sort_key(last_ms) < sort_key(whole) < sort_key({"properties": {"time": 1_700_000_001}})
    assert sort_key(whole) < sort_key(next_second)
    assert int(sort_key(whole)) == 1_700_000_000  # still its own second (window ranges)
    # a float time with a fraction is not moved
    assert sort_key({"properties": {"time": 1_700_000_000.25}}) == 1_700_000_000.25


def test_a_legacy_pipeline_row_and_its_export_copy_share_one_insert_id_in_the_fold() -> None:
    """to_local_ms inverts the export's storage in the repeated hour: both instants of
    01:30 local (EDT and EST) give the stored wall time the export shows."""
    transformer = Transformer(TransformSettings(timezone=NY, legacy_time=True))
    ids = Resolved("u1", None)
    for utc in (_wall(2023, 11, 5, 5, 30, 0), _wall(2023, 11, 5, 6, 30, 0)):
        props = {"distinct_id": "u1", "$insert_id": "abcdefghijklmnop", "k": 1}
        dp = transformer.event({"event": "E", UTC_TIME_MARK: True,
                                "properties": {**props, "time": utc}}, ids)
        export = transformer.event({"event": "E", "properties": {
            **props, "time": _wall(2023, 11, 5, 1, 30, 0),
            "mp_processing_time_ms": utc * 1000 + 60_000}}, ids)
        assert isinstance(dp, dict) and isinstance(export, dict)
        assert dp["time"] == export["time"] == utc * 1000
        assert dp["insert_id"] == export["insert_id"]


def test_refund_quantity_and_huge_quantity_keep_the_booked_amount() -> None:
    from mp2amp.transform.settings import RevenueSettings

    rs = RevenueSettings(price="price", quantity="qty", refund_events=("Refund",))
    transformer = Transformer(TransformSettings(revenue=rs))
    ids = Resolved("u1", None)
    refund = transformer.event({"event": "Refund", "properties": {
        "time": 1_700_000_000, "distinct_id": "u1", "price": 10, "qty": -2}}, ids)
    assert isinstance(refund, dict)
    assert refund["price"] * refund.get("quantity", 1) == -20
    huge = transformer.event({"event": "Buy", "properties": {
        "time": 1_700_000_000, "distinct_id": "u1", "price": 2, "qty": 2**31}}, ids)
    assert isinstance(huge, dict)
    assert "quantity" not in huge and huge["revenue"] == 2 * 2**31
    edge = transformer.event({"event": "Buy", "properties": {
        "time": 1_700_000_000, "distinct_id": "u1", "price": 1, "qty": 2**31 - 1}}, ids)
    assert isinstance(edge, dict) and edge["quantity"] == 2**31 - 1


def test_the_proof_accepts_a_unicode_named_event_and_property() -> None:
    """No false problem for a non-ASCII name or property (the transform keeps both)."""
    props = {"time": 1_700_000_000, "distinct_id": "u1", "$insert_id": "abcdefghijklmnop",
             "Größe": "groß", "mp_lib": "web"}
    transformer = Transformer(TransformSettings())
    out = transformer.event({"event": "Kauf ✓", "properties": props}, Resolved("u1", None))
    assert isinstance(out, dict)
    names, valued, values = _Shared().properties(props)
    assert valued == ("Größe",)
    assert all(out["event_properties"][k] == values[k] == props[k] for k in valued), valued
    assert "Größe" in names
    assert all(k in out["event_properties"] for k in names), names
    assert out["insert_id"] == event_insert_id("Kauf ✓", props, 1_700_000_000_000)
