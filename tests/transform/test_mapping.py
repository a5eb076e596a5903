"""Default properties -> Amplitude fields, per platform, as Amplitude's own SDKs fill them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mp2amp.models import Resolved
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.mapping import PLATFORMS, RULES, detect_platform, render_markdown, rules_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "mapping.md"


def run(props: dict[str, Any]) -> dict[str, Any]:
    record = {"event": "e", "properties": {"time": 1700000000, **props}}
    out = Transformer(TransformSettings()).event(record, Resolved("user-1", "device-1"))
    assert isinstance(out, dict), out
    return out


def test_docs_mapping_md_is_generated_from_the_table() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/mapping.md is stale: run `python -m mp2amp.transform.mapping > docs/mapping.md`")


def test_every_rule_is_documented_and_unique_per_platform() -> None:
    doc = render_markdown()
    for rule in RULES:
        assert f"`{rule.source}`" in doc
    for platform in PLATFORMS:
        rules_for(platform)  # raises on two rules for one property


@pytest.mark.parametrize(
    ("lib", "os", "browser", "expected"),
    [("web", None, False, "web"), ("Segment: analytics-wordpress", None, True, "web"),
     ("swift", "iOS", False, "ios"), ("iphone", None, False, "ios"),
     ("android", "Android", False, "android"), ("react-native", "Android", False, "android"),
     ("react-native", "ios", False, "ios"), ("flutter", "iPadOS", False, "ios"),
     ("python", None, False, "server"), ("Segment Actions: analytics-java", None, False, "server"),
     (None, None, False, "other"), (42, ["x"], False, "other")],
)
def test_platform_detection(lib: Any, os: Any, browser: bool, expected: str) -> None:
    assert detect_platform(lib, os, browser) == expected


def test_web_follows_legacy_amplitude_js_ua_parser_conventions() -> None:
    out = run({"mp_lib": "web", "$browser": "Chrome iOS", "$browser_version": 120.5,
               "$os": "iOS", "$device": "iPhone", "$current_url": "https://a.example/p/q?x=1#h",
               "$referrer": "https://b.example/", "$initial_referrer": "$direct",
               "utm_source": "news", "gclid": "abc"})
    assert (out["platform"], out["os_name"], out["os_version"]) == ("Web", "Chrome", "120")
    assert (out["device_model"], out["device_manufacturer"]) == ("iPhone", "Apple")
    props = out["event_properties"]
    assert props["[Amplitude] Page Location"] == "https://a.example/p/q?x=1#h"
    assert props["[Amplitude] Page URL"] == "https://a.example/p/q"
    assert props["[Amplitude] Page Domain"] == "a.example"
    assert props["[Amplitude] Page Path"] == "/p/q"
    assert props["referrer"] == "https://b.example/" and props["initial_referrer"] == "EMPTY"
    assert props["utm_source"] == "news" and props["gclid"] == "abc"
    assert props["browser"] == "Chrome iOS" and props["browser_version"] == 120.5
    assert "language" not in out and "carrier" not in out


def test_page_properties_already_sent_win_and_the_others_follow_in_order() -> None:
    page = {"mp_lib": "web", "$current_url": "https://a.example/p/q?x=1"}
    props = run({**page, "current_url_path": "/sent"})["event_properties"]
    assert list(props)[-3:] == ["[Amplitude] Page Path", "[Amplitude] Page URL",
                                "[Amplitude] Page Domain"]
    assert props["[Amplitude] Page Path"] == "/sent"
    props = run(page)["event_properties"]
    assert list(props)[-3:] == ["[Amplitude] Page URL", "[Amplitude] Page Domain",
                                "[Amplitude] Page Path"]


@pytest.mark.parametrize(
    ("os", "model"),
    [("Mac OS X", "Mac OS"), ("Chrome OS", "Chromium OS"), ("Windows", "Windows"),
     ("Linux", "Linux")],
)
def test_web_desktop_device_model_is_the_os_in_ua_parser_spelling(os: str, model: str) -> None:
    out = run({"mp_lib": "web", "$browser": "Internet Explorer", "$os": os})
    assert out["device_model"] == model and out["os_name"] == "IE"
    assert "device_manufacturer" not in out


def test_ios_follows_amplitude_swift() -> None:
    out = run({"mp_lib": "swift", "$os": "iOS", "$os_version": "17.2", "$model": "iPhone14,2",
               "$manufacturer": "Apple", "$carrier": "", "$app_version_string": "2.3.0",
               "$app_build_number": "451", "$wifi": True})
    assert (out["platform"], out["os_name"], out["os_version"]) == ("iOS", "ios", "17.2")
    assert (out["device_model"], out["device_manufacturer"]) == ("iPhone14,2", "Apple")
    assert out["app_version"] == "2.3.0" and "carrier" not in out  # no invented "Unknown"
    assert out["event_properties"]["app_build"] == "451"
    assert out["event_properties"]["wifi"] is True


def test_ios_objc_app_version_is_the_build_never_the_version() -> None:
    out = run({"mp_lib": "iphone", "$os": "iPhone OS", "$app_version": "451",
               "$app_release": "2.3.0", "$model": "x86_64"})
    assert out["app_version"] == "2.3.0" and out["os_name"] == "ios"
    assert out["device_model"] == "Simulator"
    assert out["event_properties"]["app_build_version"] == "451"


def test_macos_version_string_is_cleaned() -> None:
    out = run({"mp_lib": "swift", "$os": "macOS", "$os_version": "Version 14.2.1 (Build 23C71)"})
    assert (out["platform"], out["os_name"], out["os_version"]) == ("macOS", "macos", "14.2.1")


def test_android_follows_amplitude_kotlin() -> None:
    out = run({"mp_lib": "android", "$os": "Android", "$os_version": "14", "$brand": "google",
               "$manufacturer": "Google", "$model": "Pixel 7", "$carrier": "T-Mobile",
               "$app_version_string": "2.3.0", "$app_release": 230, "$google_play_services": "available"})
    assert (out["platform"], out["os_name"], out["os_version"]) == ("Android", "android", "14")
    assert (out["device_brand"], out["device_manufacturer"], out["device_model"]) == (
        "google", "Google", "Pixel 7")
    assert out["carrier"] == "T-Mobile" and out["app_version"] == "2.3.0"
    assert out["event_properties"]["app_release"] == 230
    assert out["event_properties"]["google_play_services"] == "available"


def test_android_unknown_os_version_is_dropped() -> None:
    out = run({"mp_lib": "android", "$os": "Android", "$os_version": "UNKNOWN"})
    assert "os_version" not in out and "android_api_level" not in out["event_properties"]


def test_react_native_js_mode_keeps_the_api_level_apart() -> None:
    out = run({"mp_lib": "react-native", "$os": "android", "$os_version": 34,
               "$android_model": "Pixel 7", "$android_brand": "google",
               "$android_manufacturer": "Google"})
    assert out["platform"] == "Android" and "os_version" not in out
    assert out["event_properties"]["android_api_level"] == 34
    assert (out["device_model"], out["device_brand"]) == ("Pixel 7", "google")


def test_server_libraries_get_no_device_fields() -> None:
    out = run({"mp_lib": "python", "$lib_version": "5.3.0", "$os": "Linux"})
    assert not {"platform", "os_name", "device_model"} & out.keys()
    assert out["event_properties"] == {"mp_lib": "python", "mp_lib_version": "5.3.0",
                                       "os": "Linux"}


def test_identity_time_and_ingestion_metadata_are_consumed() -> None:
    out = run({"distinct_id": "x", "$device_id": "d", "$user_id": "u", "$insert_id": "i",
               "token": "t", "$mp_api_endpoint": "api.mixpanel.com", "$import": True,
               "mp_processing_time_ms": 1, "$distinct_id_before_identity": "y"})
    assert out["event_properties"] == {}


def test_custom_property_with_a_readable_name_is_never_overwritten() -> None:
    out = run({"mp_lib": "swift", "$wifi": True, "wifi": "guest-network",
               "$screen_width": 375, "screen_width": "custom"})
    props = out["event_properties"]
    assert props["wifi"] == "guest-network" and props["$wifi"] is True
    assert props["screen_width"] == "custom" and props["$screen_width"] == 375


def test_unknown_properties_keep_their_names_and_types() -> None:
    out = run({"Screen deep-linked": "filter", "$custom": 1, "nested": {"a": [1, None]}})
    assert out["event_properties"] == {"Screen deep-linked": "filter", "$custom": 1,
                                       "nested": {"a": [1, None]}}


def test_super_properties_stay_event_properties_not_user_properties() -> None:
    # Mixpanel super properties are plain event properties in the export; making them
    # user properties would make history stateful (pitfalls: super properties).
    out = run({"mp_lib": "web", "plan": "starter", "company_id": ["c_00000"],
               "$initial_referring_domain": "www.bing.com"})
    assert "user_properties" not in out
    assert out["event_properties"]["plan"] == "starter"
    assert out["event_properties"]["company_id"] == ["c_00000"]
    assert out["event_properties"]["initial_referring_domain"] == "www.bing.com"


def test_property_types_are_kept_not_stringified() -> None:
    out = run({"score": "1", "state": 17, "ratio": 0.5, "ok": False, "none": None,
               "$app_build_number": 4077, "list": [1, "a", None]})
    props = out["event_properties"]
    assert props == {"score": "1", "state": 17, "ratio": 0.5, "ok": False, "none": None,
                     "app_build": 4077, "list": [1, "a", None]}
