"""Transformer.event: step order, hooks, output shape, and properties that hold for any input."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mp2amp.emulators.amplitude.validate import validate_events
from mp2amp.errors import ConfigError, Rejection
from mp2amp.models import Resolved, Skip
from mp2amp.transform import RevenueSettings, Transformer, TransformSettings
from mp2amp.transform.plan import TrackingPlan, parse_plan
from mp2amp.transform.privacy import PrivacyRules

IDS = Resolved("user-1", "device-1")
BATCH_FIELDS = {"event_type", "user_id", "device_id", "time", "insert_id", "platform",
                "os_name", "os_version", "device_brand", "device_manufacturer", "device_model",
                "carrier", "app_version", "country", "region", "city", "dma", "location_lat",
                "location_lng", "ip", "idfa", "library", "price", "quantity", "revenue",
                "productId", "revenueType", "currency", "event_properties", "user_properties",
                "groups"}


def rec(name: str = "Played Song", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": 1601412131, "distinct_id": "u1", **props}}


def test_output_is_exactly_a_batch_api_event() -> None:
    out = Transformer(TransformSettings()).event(rec(song="x"), IDS)
    assert isinstance(out, dict)
    assert list(out)[:5] == ["event_type", "user_id", "device_id", "time", "insert_id"]
    assert set(out) <= BATCH_FIELDS and "session_id" not in out
    assert out["time"] == 1601412131000 and out["event_properties"] == {"song": "x"}
    assert "user_properties" not in out and "groups" not in out
    assert validate_events([out], 1).ok


def test_missing_id_is_rejected_and_one_id_is_enough() -> None:
    t = Transformer(TransformSettings())
    out = t.event(rec(), Resolved(None, None))
    assert isinstance(out, Rejection) and out.reason == "missing_id"
    only_device = t.event(rec(), Resolved(None, "device-1"))
    assert isinstance(only_device, dict) and "user_id" not in only_device
    short = t.event(rec(), Resolved("77", None))  # short ids are kept (min_id_length)
    assert isinstance(short, dict) and short["user_id"] == "77"


@pytest.mark.parametrize(
    ("record", "reason"),
    [({"properties": {"time": 1}}, "not_an_event"), ([1, 2], "not_an_event"),
     ({"$distinct_id": "x", "$set": {"a": 1}}, "not_an_event"),
     ({"event": "", "properties": {"time": 1601412131}}, "missing_event_name"),
     ({"event": 5, "properties": {"time": 1601412131}}, "missing_event_name"),
     ({"event": "e", "properties": "oops"}, "not_an_event"),
     ({"event": "e", "properties": {}}, "missing_time"),
     ({"event": "[Amplitude] Revenue", "properties": {"time": 1601412131}},
      "reserved_event_type"),
     ({"event": "$groupidentify", "properties": {"time": 1601412131}}, "reserved_event_type")],
)
def test_unusable_records_are_rejected_with_a_reason(record: Any, reason: str) -> None:
    out = Transformer(TransformSettings()).event(record, IDS)
    assert isinstance(out, Rejection) and out.reason == reason and out.message


def test_identity_records_are_skipped_not_sent() -> None:
    for name in ("$identify", "$create_alias", "$merge"):
        out = Transformer(TransformSettings()).event(rec(name), IDS)
        assert isinstance(out, Skip) and out.rule == "identity_record"


def test_legacy_time_is_converted_with_the_project_zone() -> None:
    t = Transformer(TransformSettings(legacy_time=True, timezone="America/Los_Angeles"))
    out = t.event(rec(time=1652825148, mp_processing_time_ms=1652850348702), IDS)
    assert isinstance(out, dict) and out["time"] == 1652850348000


def test_legacy_fold_uses_the_api_timestamp_when_processing_time_is_absent() -> None:
    t = Transformer(TransformSettings(legacy_time=True, timezone="America/Los_Angeles"))
    wall = 1667698200  # 2022-11-06 01:30 local, written as UTC: happens twice
    second = t.event(rec(time=wall, **{"$mp_api_timestamp_ms": 1667727000000 + 60_000}), IDS)
    first = t.event(rec(time=wall), IDS)
    assert isinstance(second, dict) and second["time"] == 1667727000000  # 09:30Z (PST)
    assert isinstance(first, dict) and first["time"] == 1667723400000  # 08:30Z (PDT)


def test_bad_timezone_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Transformer(TransformSettings(legacy_time=True, timezone="Mars/Olympus"))


def test_plan_renames_moves_and_flags() -> None:
    plan = parse_plan({"unplanned_events": "flag", "events": {"Played Song": {
        "rename": "Song Played",
        "properties": {"song": {"rename": "Song"}, "tier": {"user_property": True}}}}})
    t = Transformer(TransformSettings(plan=plan))
    out = t.event(rec(song="x", tier="gold"), IDS)
    assert isinstance(out, dict)
    assert out["event_type"] == "Song Played"
    assert out["event_properties"] == {"Song": "x"}
    assert out["user_properties"] == {"tier": "gold"}
    flagged = t.event(rec("Other", a=1), IDS)
    assert isinstance(flagged, dict) and flagged["event_properties"]["mp2amp_unplanned"] is True
    # the plan never changes the insert_id: editing it and re-running creates no duplicates
    plain = Transformer(TransformSettings()).event(rec(song="x", tier="gold"), IDS)
    assert isinstance(plain, dict) and plain["insert_id"] == out["insert_id"]


def test_plan_skip_and_rejection_pass_through() -> None:
    plan = parse_plan({"events": {"Played Song": {"drop": True}, "Paid": {
        "properties": {"amount": {"type": "number", "on_mismatch": "reject"}}}}})
    t = Transformer(TransformSettings(plan=plan))
    assert isinstance(t.event(rec(), IDS), Skip)
    out = t.event(rec("Paid", amount="lots"), IDS)
    assert isinstance(out, Rejection) and out.reason == "plan_type_mismatch"


def test_privacy_runs_on_mixpanel_names_before_the_plan_renames() -> None:
    plan = parse_plan({"properties": {"$email": {"rename": "email"}}})
    privacy = PrivacyRules(drop_properties=["$email"], excluded_users=["gone-user"],
                           drop_before=date(2020, 1, 1))
    t = Transformer(TransformSettings(plan=plan, privacy=privacy))
    out = t.event(rec(**{"$email": "a@example.com"}), IDS)
    assert isinstance(out, dict) and "email" not in out["event_properties"]
    gone = t.event(rec(), Resolved("gone-user", None))
    assert isinstance(gone, Skip) and gone.rule == "privacy.excluded_user"
    old = t.event(rec(time=1500000000), IDS)
    assert isinstance(old, Skip) and old.rule == "privacy.before_retention"


def test_groups_from_configured_keys_within_amplitude_limits() -> None:
    keys = ("company_id", "team", "a", "b", "c", "d")
    t = Transformer(TransformSettings(group_keys=keys))
    out = t.event(rec(company_id=123, team=["x", "y", "x", None], a="1", b="2", c="3", d="4"), IDS)
    assert isinstance(out, dict)
    assert out["groups"] == {"company_id": "123", "team": ["x", "y"], "a": "1", "b": "2",
                             "c": "3"}  # 5 group types at most
    assert out["event_properties"]["company_id"] == 123  # still a property
    many = t.event(rec(team=[f"t{i}" for i in range(15)]), IDS)
    assert isinstance(many, dict) and len(many["groups"]["team"]) == 10
    none = t.event(rec(company_id=""), IDS)
    assert isinstance(none, dict) and "groups" not in none


def test_amplitude_event_names_only_when_asked() -> None:
    record = rec("$mp_web_page_view", mp_lib="web")
    plain = Transformer(TransformSettings()).event(record, IDS)
    named = Transformer(TransformSettings(amplitude_event_names=True)).event(record, IDS)
    assert isinstance(plain, dict) and plain["event_type"] == "$mp_web_page_view"
    assert isinstance(named, dict) and named["event_type"] == "[Amplitude] Page Viewed"


def test_same_keys_with_other_value_types_share_no_cached_result() -> None:
    t = Transformer(TransformSettings())
    first = t.event(rec(mp_lib="web", **{"$current_url": "https://a.example/x",
                                         "$latitude": 1, "$longitude": 2}), IDS)
    second = t.event(rec(mp_lib="web", **{"$current_url": None, "$latitude": True,
                                          "$longitude": 2.0}), IDS)
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["location_lat"] == 1.0 and "location_lat" not in second
    assert "[Amplitude] Page URL" not in second["event_properties"]
    assert second["event_properties"]["latitude"] is True


def test_input_record_is_not_mutated() -> None:
    record = rec(**{"$browser": "Chrome", "mp_lib": "web", "bio": "x" * 2000})
    snapshot = repr(record)
    Transformer(TransformSettings()).event(record, IDS)
    assert repr(record) == snapshot


# --- properties for any JSON-ish record ---------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
known_keys = st.sampled_from(
    ["time", "distinct_id", "$insert_id", "mp_lib", "$os", "$browser", "$browser_version",
     "$os_version", "$model", "$manufacturer", "$brand", "$carrier", "mp_country_code",
     "$city", "$region", "$latitude", "$longitude", "ip", "$current_url", "$device",
     "$app_version_string", "$app_release", "$app_version", "mp_original_event_name",
     "mp_original_distinct_id", "item_price", "qty", "products", "company_id", "$ios_ifa",
     "$initial_referrer", "mp_processing_time_ms", "wifi", "$wifi"])
valid_seconds = st.integers(31_536_000, 4_102_444_799)
times = st.one_of(valid_seconds, valid_seconds.map(lambda t: t * 1000),
                  valid_seconds.map(lambda t: t + 0.25), valid_seconds.map(str),
                  st.integers(-(10**20), 10**20), st.floats(), st.text(max_size=12), st.none())
properties = st.dictionaries(known_keys | st.text(max_size=10), json_values, max_size=12)
names = st.sampled_from(["Purchase", "$hotshard_events", "$identify", "", "x" * 1100,
                         "$mp_web_page_view", "[Amplitude] Revenue"]) | st.text(min_size=1,
                                                                                 max_size=20)
event_like = st.builds(lambda e, p, t: {"event": e, "properties": {**p, "time": t}},
                       names, properties, times)
odd_records = st.one_of(
    st.builds(lambda e, p: {"event": e, "properties": p}, json_values, json_values), json_values)
# Mostly event-shaped records (so events are emitted and validated), some anything-goes.
records = st.integers(0, 9).flatmap(lambda i: odd_records if i == 9 else event_like)
ids = st.builds(Resolved, st.none() | st.sampled_from(["user-1", "u", "x" * 40]),
                st.none() | st.sampled_from(["device-1", "d" * 36]))
SETTINGS = [
    TransformSettings(),
    TransformSettings(legacy_time=True, timezone="America/Los_Angeles",
                      timezone_changes=(("2021-06-01", "Asia/Kolkata"),), keep_ip=False,
                      group_keys=("company_id",), amplitude_event_names=True,
                      revenue=RevenueSettings(price="item_price", quantity="qty",
                                              items="products", revenue="Amount",
                                              refund_events=("Purchase",))),
]
TRANSFORMERS = [Transformer(s) for s in SETTINGS]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records, resolved=ids)
def test_any_record_gives_one_valid_outcome_deterministically(record: Any,
                                                              resolved: Resolved) -> None:
    for transformer in TRANSFORMERS:
        snapshot = repr(record)
        out = transformer.event(record, resolved)
        assert repr(record) == snapshot  # input untouched
        assert isinstance(out, dict | Rejection | Skip)
        if isinstance(out, Rejection):
            assert out.reason != "transform_error", out.message  # no hidden crash
            continue
        if isinstance(out, Skip):
            continue
        assert validate_events([out], 1).ok, (out, validate_events([out], 1))
        assert type(out["time"]) is int and 31_536_000_000 <= out["time"] < 4_102_444_800_000
        assert out["insert_id"] and "session_id" not in out
        assert set(out) <= BATCH_FIELDS
        assert transformer.event(record, resolved) == out  # deterministic
        # ... and the memo tables (per shape, per value) never change an output, byte for
        # byte (-0.0 == 0.0 and 1 == 1.0, but they are written differently)
        assert _bytes(Transformer(transformer.settings).event(record, resolved)) == _bytes(out)


# --- the memo tables and templates (shapes.py) never change an output -----------------

def _bytes(out: Any) -> bytes:
    assert isinstance(out, dict), out
    return orjson.dumps(out)


def test_memoized_conversion_keeps_negative_zero_apart() -> None:
    # -0.0 == 0.0 (and hash alike), but they are written differently: never one memo entry.
    t = Transformer(TransformSettings())
    first = t.event(rec(**{"$latitude": 0.0, "$longitude": 0.0}), IDS)
    second = t.event(rec(**{"$latitude": -0.0, "$longitude": -0.0}), IDS)
    fresh = Transformer(TransformSettings()).event(
        rec(**{"$latitude": -0.0, "$longitude": -0.0}), IDS)
    assert _bytes(second) == _bytes(fresh) != _bytes(first)
    assert b'"location_lat":-0.0' in _bytes(second)


def test_templates_keep_the_key_order_of_each_id_and_revenue_variant() -> None:
    settings = TransformSettings(revenue=RevenueSettings(price="price"))
    t = Transformer(settings)
    web = {"mp_lib": "web", "$browser": "Chrome", "$city": "Paris"}
    cases = [(Resolved("u", None), rec(**web)), (Resolved(None, "d"), rec(**web)),
             (IDS, rec(**web)), (IDS, rec(price=3, **web)), (Resolved(None, "d"), rec(price=3, **web)),
             (IDS, rec("Other", **web)), (IDS, rec(**web))]
    for ids, record in cases * 2:  # the second round is served from the templates
        out = t.event(record, ids)
        assert _bytes(out) == _bytes(Transformer(settings).event(record, ids))
    out = t.event(rec(price=3, **web), Resolved(None, "d"))
    assert isinstance(out, dict)
    assert list(out)[:4] == ["event_type", "device_id", "time", "insert_id"]
    assert list(out).index("price") < list(out).index("event_properties")


def test_event_names_of_one_sdk_share_a_conversion_without_sharing_outputs() -> None:
    t = Transformer(TransformSettings())
    ios = {"mp_lib": "swift", "$os": "iOS", "$model": "iPhone14,2", "$carrier": "Orange"}
    sent = [("A", {"step": 0}), ("B", {"level": 1}), ("A", {"step": 2})]
    outs = [t.event(rec(name, **own, **ios), IDS) for name, own in sent]
    assert len(t._shapes) == 2 and len(t._conversions) == 1  # one memo for both shapes
    for out, (name, own) in zip(outs, sent, strict=True):
        assert isinstance(out, dict) and out["event_type"] == name
        assert out["event_properties"] == {**own, "mp_lib": "swift"}
        assert out["device_model"] == "iPhone14,2" and out["carrier"] == "Orange"


def test_plan_and_privacy_that_change_nothing_are_skipped_but_real_rules_apply() -> None:
    record = rec(email="a@example.com", **{"$browser": "Chrome", "mp_lib": "web"})
    plain = Transformer(TransformSettings()).event(record, IDS)
    noop = Transformer(TransformSettings(plan=TrackingPlan.keep_all(),
                                         privacy=PrivacyRules.none()))
    assert noop._plan is None and noop._privacy is None
    assert _bytes(noop.event(record, IDS)) == _bytes(plain)
    retention = Transformer(TransformSettings(privacy=PrivacyRules(drop_before=date(2030, 1, 1))))
    assert isinstance(retention.event(record, IDS), Skip)
    excluded = Transformer(TransformSettings(privacy=PrivacyRules(excluded_users={"u1"})))
    assert isinstance(excluded.event(record, IDS), Skip)
    flag = Transformer(TransformSettings(plan=TrackingPlan({}, {}, "flag")))
    flagged = flag.event(record, IDS)
    assert isinstance(flagged, dict) and flagged["event_properties"]["mp2amp_unplanned"] is True


def test_memo_tables_stay_bounded_without_changing_outputs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.transform import events
    monkeypatch.setattr(events, "MAX_MEMO_ENTRIES", 5)
    monkeypatch.setattr(events, "MAX_CONTEXT_ENTRIES", 5)
    monkeypatch.setattr(events, "MAX_SHAPES", 3)
    t = Transformer(TransformSettings())
    for i in range(40):
        record = rec(f"E{i % 7}", **{"$city": f"City {i}", "mp_lib": "web", f"p{i % 5}": i})
        assert _bytes(t.event(record, IDS)) == _bytes(
            Transformer(TransformSettings()).event(record, IDS))
        assert sum(len(c.memo) for c in t._conversions.values()) <= 5
        assert sum(len(c.memo) for c in t._contexts.values()) <= 5
        assert len(t._shapes) <= 3 and len(t._fronts) <= 3
    assert t._fronts  # the bounds were exercised, not skipped


# --- the fast path (event) gives what the general path (_event) gives -----------------

WEB = {"mp_lib": "web", "$browser": "Chrome", "$browser_version": 120, "$os": "Mac OS X",
       "$city": "Paris", "$region": "Ile-de-France", "mp_country_code": "FR",
       "$screen_height": 900, "$screen_width": 1440, "$initial_referrer": "$direct",
       "$current_url": "https://shop.example.com/p/1?x=2", "current_url_path": "/sent",
       "utm_source": "news", "$insert_id": "abcdefghijklmnop", "$device_id": "dev-1"}
IOS = {"mp_lib": "swift", "$os": "iOS", "$os_version": "17.2", "$model": "iPhone15,3",
       "$manufacturer": "Apple", "$carrier": "Orange", "$app_version_string": "5.3.0",
       "$wifi": True, "$latitude": 48.85, "$longitude": 2.35, "$insert_id": "1234567890abcdef"}
ANDROID = {"mp_lib": "android", "$os": "Android", "$os_version": "14", "$brand": "Google",
           "$model": "Pixel 8", "$app_version": "2.0", "$app_release": 200, "$radio": "LTE",
           "$insert_id": "zyxwvutsrqponmlk"}


def _variants() -> list[dict[str, Any]]:
    """Records of a few shapes, then the same shapes with other per-event values and with
    the odd values the fast path must hand over (or serve exactly like the general path)."""
    odd: list[Any] = ["", "x" * 1100, "caf\u00e9", 1, 1.0, True, -0.0, 0.0, None, [1, "a"],
                      [[1]], {"k": 1}, float("nan"), 2**70, "$direct", "0", " acme ", "NULL",
                      "short", "y" * 64, "y" * 65, "\ud800"]
    out = []
    for base in (WEB, IOS, ANDROID, {"mp_lib": "python", "plan": "pro"}):
        for name in ("Viewed", "Bought"):
            out.append(rec(name, price=9.5, company_id="acme", **base))
            for i, key in enumerate([*base, "distinct_id", "time", "price", "company_id"]):
                for value in odd:
                    changed = {**base, key: value} if key in base else {**base}
                    record = rec(name, price=9.5, company_id="acme", **changed)
                    if key in ("distinct_id", "time", "price", "company_id"):
                        record["properties"][key] = value
                    if key != "$insert_id":  # a new event, not a Mixpanel duplicate
                        record["properties"]["$insert_id"] = f"insert-id-{i:06d}"
                    out.append(record)
    return out


@pytest.mark.parametrize("settings", [
    TransformSettings(),
    TransformSettings(legacy_time=True, timezone="Europe/Paris", group_keys=("company_id",),
                      keep_ip=False, revenue=RevenueSettings(price="price")),
])
def test_fast_path_gives_the_general_paths_result_and_counts(settings: TransformSettings) -> None:
    records = _variants()
    warm = Transformer(settings)
    for record in records:  # first sights: learnt by the general path
        warm.event(record, IDS)
    before = warm.general_path
    for ids in (IDS, Resolved(None, "device-1"), Resolved("user-1", None)):
        fresh = Transformer(settings)
        for record in records:
            # repr: key order, 1 vs 1.0 vs True, -0.0, and the lone surrogates JSON refuses
            assert repr(warm.event(record, ids)) == repr(fresh._event(record, ids))
    # Most records were served by the fast path (the comparison above is not vacuous).
    assert warm.general_path - before < len(records) * 3 / 2


def test_fast_path_counts_exactly_what_the_general_path_counts() -> None:
    records = _variants()
    warm, cold = Transformer(TransformSettings()), Transformer(TransformSettings())
    for record in records:
        warm.event(record, IDS)
    for record in records:
        cold.event(record, IDS)
        cold.event(record, IDS)
        warm.event(record, IDS)
    assert warm.stats() == cold.stats() and warm.stats()["truncated"]


def test_context_values_of_other_types_or_signs_share_no_entry() -> None:
    # 900 == 900.0 == True-ish and -0.0 == 0.0 as memo keys, but they are written differently.
    t = Transformer(TransformSettings())
    for key in ("$screen_height", "$browser_version", "$latitude"):
        for value in (1, 1.0, True, 0, 0.0, -0.0, False, "1", 1):
            record = rec(**{**WEB, key: value})
            for _ in range(2):  # the second is served from the memo when it may be
                assert _bytes(t.event(record, IDS)) == _bytes(
                    Transformer(TransformSettings())._event(record, IDS))
    # The memo is keyed by values: 1, 1.0 and True are one key (so are 0, 0.0 and False;
    # -0.0 and 0.0 never get an entry), "1" another. An entry serves its own types only.
    assert sum(len(c.memo) for c in t._contexts.values()) == 3 * 3


def test_group_names_are_cut_on_both_paths() -> None:
    # "ip" is consumed (never an event property), so a long value can reach the groups
    # of a memoized record unchecked: the group name is still cut to 1024 characters.
    settings = TransformSettings(group_keys=("ip",))
    t = Transformer(settings)
    for value in (" " + "1" * 2000, "10.0.0.1", " x "):
        record = rec(**{**WEB, "ip": value})
        for _ in range(2):
            out = t.event(record, IDS)
            assert repr(out) == repr(Transformer(settings)._event(record, IDS))
            assert isinstance(out, dict) and len(out["groups"]["ip"]) <= 1024


def test_new_devices_of_a_known_shape_are_served_without_the_general_path() -> None:
    # A context is one device's defaults: every new device misses the context memo once.
    # The entry is made in place (same output and counts as the general path), and values
    # that need sanitizing (a cut or non-ASCII kept value) still go to the general path.
    t = Transformer(TransformSettings())
    t.event(rec(**WEB), IDS)  # the shape, learnt by the general path
    assert t.general_path == 1
    cold = Transformer(TransformSettings())
    for i in range(200):
        device = {**WEB, "$screen_width": 300 + i, "$city": f"City {i % 7}",
                  "$initial_referrer": "$direct" if i % 2 else f"https://r{i}.example/"}
        record = rec(**device)
        assert repr(t.event(record, IDS)) == repr(cold._event(record, IDS))
    assert t.general_path == 1
    for odd in ("caf\u00e9", "r" * 1500):
        record = rec(**{**WEB, "$initial_referrer": odd})
        for _ in range(2):
            assert repr(t.event(record, IDS)) == repr(cold._event(record, IDS))
    assert t.general_path == 1 + 4
    assert t.stats() == cold.stats() and t.stats()["truncated"]


def test_full_memos_drop_their_oldest_entries_not_all(monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.transform import events
    monkeypatch.setattr(events, "MAX_CONTEXT_ENTRIES", 8)
    t = Transformer(TransformSettings())
    for i in range(30):
        t.event(rec(**{**WEB, "$screen_width": i}), IDS)
    (memo,) = [c.memo for c in t._contexts.values() if c.memo]
    assert 6 <= len(memo) <= 8
    assert any(29 in values for values in memo)  # the newest kept ...
    assert not any(0 in values for values in memo)  # ... the oldest gone
