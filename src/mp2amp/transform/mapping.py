"""The Mixpanel default-property -> Amplitude mapping, as data.

``RULES`` is the single source of truth: ``Transformer`` compiles it into per-platform
dispatch dicts, and ``docs/mapping.md`` is generated from it (``mappingdoc.render``), with a
test that fails when the document is stale. Conventions follow what Amplitude's own SDKs
put in each field on each platform (reference/platform-conventions.md §3): web events look
like legacy Amplitude JS / ua-parser events, iOS like Amplitude-Swift, Android like
Amplitude-Kotlin.

A rule reads one Mixpanel property on some platforms and may set one top-level Amplitude
field (through a named converter) and/or keep the value as an event property under a
readable name:

* ``keep="always"``: the field is set and the value also stays as an event property;
* ``keep="unmapped"``: the value stays as an event property only when no field came of it
  (an unusable value is never lost);
* ``keep="never"``: consumed (identity, time, ingestion metadata, or fully in the field).

Properties no rule names stay event properties under their Mixpanel name.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from types import ModuleType
from typing import Literal

from mp2amp.transform.geo import COUNTRY_NAMES, coordinate, country_name
from mp2amp.transform.values import js_number_text

Platform = Literal["web", "ios", "android", "server", "other"]
PLATFORMS: tuple[Platform, ...] = ("web", "ios", "android", "server", "other")
ALL: frozenset[Platform] = frozenset(PLATFORMS)
WEB: frozenset[Platform] = frozenset({"web"})
IOS: frozenset[Platform] = frozenset({"ios"})
ANDROID: frozenset[Platform] = frozenset({"android"})
MOBILE: frozenset[Platform] = frozenset({"ios", "android"})


@dataclass(frozen=True, slots=True)
class Rule:
    source: str
    platforms: frozenset[Platform]
    field: str | None
    convert: str
    keep_as: str | None
    keep: Literal["always", "unmapped", "never"]
    note: str = ""
    priority: int = 0  # lower wins when two properties feed one field


def _rule(source: str, platforms: frozenset[Platform], field: str | None, convert: str,
          keep_as: str | None, keep: Literal["always", "unmapped", "never"], note: str = "",
          priority: int = 0) -> Rule:
    return Rule(source, platforms, field, convert, keep_as, keep, note, priority)


_DROP: Literal["never"] = "never"
RULES: tuple[Rule, ...] = (
    # --- identity, time, dedup: consumed by their own stages ---
    _rule("distinct_id", ALL, None, "text", None, _DROP, "identity stage -> user_id/device_id"),
    _rule("$device_id", ALL, None, "text", None, _DROP, "identity stage -> device_id"),
    _rule("$user_id", ALL, None, "text", None, _DROP, "identity stage -> user_id"),
    _rule("$distinct_id_before_identity", ALL, None, "text", None, _DROP, "identity stage"),
    _rule("$identified_id", ALL, None, "text", None, _DROP, "identity stage"),
    _rule("$anon_id", ALL, None, "text", None, _DROP, "identity stage"),
    _rule("$anon_distinct_id", ALL, None, "text", None, _DROP, "identity stage"),
    _rule("$is_reshuffled", ALL, None, "text", None, _DROP, "Mixpanel identity bookkeeping"),
    _rule("$preshuffle_distinct_id", ALL, None, "text", None, _DROP, "identity bookkeeping"),
    _rule("$had_persisted_distinct_id", ALL, None, "text", None, _DROP, "SDK bookkeeping"),
    _rule("time", ALL, None, "text", None, _DROP, "-> time (ms, UTC)"),
    _rule("$time", ALL, None, "text", None, _DROP, "reserved alias of time"),
    _rule("$insert_id", ALL, None, "text", None, _DROP, "-> insert_id"),
    _rule("token", ALL, None, "text", None, _DROP, "project token, not data"),
    _rule("$mp_api_endpoint", ALL, None, "text", None, _DROP, "ingestion metadata"),
    _rule("$mp_api_timestamp_ms", ALL, None, "text", None, _DROP, "ingestion metadata"),
    _rule("mp_processing_time_ms", ALL, None, "text", None, _DROP,
          "ingestion metadata (settles DST folds of legacy times first)"),
    _rule("$mp_event_size", ALL, None, "text", None, _DROP, "ingestion metadata"),
    _rule("$import", ALL, None, "text", None, _DROP, "ingestion metadata"),
    _rule("mp_device_model", ALL, None, "text", None, _DROP, "legacy duplicate of $model"),
    _rule("ip", ALL, "ip", "ip", None, _DROP,
          "only a real IP address, and only when privacy keeps IPs; 0/1 are geo flags"),
    _rule("$ip", ALL, "ip", "ip", None, _DROP, "as ip", priority=1),
    # --- provenance ---
    _rule("mp_lib", ALL, None, "text", "mp_lib", "always", "which Mixpanel SDK sent it"),
    _rule("$lib_version", ALL, None, "text", "mp_lib_version", "always"),
    _rule("$source", ALL, None, "text", "mp_source", "always", "e.g. segment"),
    # --- geo (every platform): all four location fields are sent together ---
    _rule("mp_country_code", ALL, "country", "country", "country_code", "unmapped",
          "ISO alpha-2 -> English name (MaxMind spelling); unknown codes stay as country_code"),
    _rule("$region", ALL, "region", "place", "region", "unmapped"),
    _rule("$city", ALL, "city", "place", "city", "unmapped"),
    _rule("$latitude", ALL, "location_lat", "latitude", "latitude", "unmapped"),
    _rule("$longitude", ALL, "location_lng", "longitude", "longitude", "unmapped"),
    _rule("$geo_source", ALL, None, "text", "geo_source", "always"),
    # --- web (mixpanel-js; Segment/RudderStack web sources) ---
    _rule("$browser", WEB, "os_name", "browser", "browser", "always",
          "ua-parser browser name, as legacy Amplitude JS put it in os_name"),
    _rule("$browser_version", WEB, "os_version", "major", "browser_version", "always",
          "major version, as legacy Amplitude JS"),
    _rule("$os", WEB, "device_model", "web_device_model", "os", "always",
          "$device for iPhone/iPad/iPod Touch, else the OS in ua-parser spelling "
          "(React Native's \"web\": none)"),
    _rule("$device", WEB, "device_manufacturer", "apple_if_idevice", "device", "always",
          "\"Apple\" for iPhone/iPad/iPod Touch"),
    _rule("$current_url", WEB, None, "text", "[Amplitude] Page Location", "always",
          "also [Amplitude] Page URL / Page Domain / Page Path derived from it"),
    _rule("current_page_title", ALL, None, "text", "[Amplitude] Page Title", "always"),
    _rule("current_domain", ALL, None, "text", "[Amplitude] Page Domain", "always"),
    _rule("current_url_path", ALL, None, "text", "[Amplitude] Page Path", "always"),
    _rule("current_url_protocol", ALL, None, "text", "page_url_protocol", "always"),
    _rule("current_url_search", ALL, None, "text", "page_url_search", "always"),
    _rule("$referrer", ALL, None, "text", "referrer", "always"),
    _rule("$referring_domain", ALL, None, "text", "referring_domain", "always"),
    _rule("$initial_referrer", ALL, None, "direct_to_empty", "initial_referrer", "always",
          "\"$direct\" -> \"EMPTY\" (Amplitude's placeholder)"),
    _rule("$initial_referring_domain", ALL, None, "direct_to_empty",
          "initial_referring_domain", "always", "\"$direct\" -> \"EMPTY\""),
    _rule("$search_engine", ALL, None, "text", "search_engine", "always"),
    _rule("mp_keyword", ALL, None, "text", "search_keyword", "always"),
    _rule("mp_sent_by_lib_version", ALL, None, "text", "mp_sent_by_lib_version", "always"),
    # --- iOS (mixpanel-swift, mixpanel-iphone; React Native / Flutter on iOS) ---
    _rule("$os", IOS, "os_name", "apple_os_name", "os", "unmapped",
          "lower-case system name, as Amplitude-Swift (\"ios\", \"macos\")"),
    _rule("$os_version", IOS, "os_version", "apple_os_version", "os_version", "unmapped",
          "macOS \"Version 14.2.1 (Build ...)\" -> \"14.2.1\""),
    _rule("$manufacturer", MOBILE, "device_manufacturer", "text", "manufacturer", "unmapped"),
    _rule("$model", IOS, "device_model", "apple_model", "model", "unmapped",
          "raw identifier (\"iPhone14,2\") as Amplitude-Swift; x86_64/i386 -> \"Simulator\""),
    _rule("$carrier", MOBILE, "carrier", "text", "carrier", "unmapped",
          "empty carrier left unset (no invented \"Unknown\")"),
    _rule("$app_version_string", MOBILE, "app_version", "text", "app_version", "unmapped"),
    _rule("$app_release", IOS, "app_version", "text", "app_release", "unmapped",
          "ObjC SDK: CFBundleShortVersionString", priority=1),
    _rule("$app_version", IOS, None, "text", "app_build_version", "always",
          "ObjC SDK: CFBundleVersion, the build number; never the app version"),
    _rule("$ios_ifa", IOS, "idfa", "advertising_id", "ios_ifa", "unmapped",
          "pre-2020 SDKs; all-zero IDFA dropped"),
    # --- Android (mixpanel-android; React Native / Flutter / Unity on Android) ---
    _rule("$os", ANDROID, "os_name", "android_os_name", "os", "unmapped", "\"android\""),
    _rule("$os_version", ANDROID, "os_version", "android_os_version", "android_api_level",
          "unmapped", "release (\"14\"); React Native JS mode sends the API level: kept apart"),
    _rule("$brand", ANDROID, "device_brand", "text", "brand", "unmapped"),
    _rule("$android_brand", ANDROID, "device_brand", "text", "android_brand", "unmapped",
          "React Native JS mode", priority=1),
    _rule("$android_manufacturer", ANDROID, "device_manufacturer", "text",
          "android_manufacturer", "unmapped", "React Native JS mode", priority=1),
    _rule("$model", ANDROID, "device_model", "text", "model", "unmapped"),
    _rule("$android_model", ANDROID, "device_model", "text", "android_model", "unmapped",
          "React Native JS mode", priority=1),
    _rule("$app_version", ANDROID, "app_version", "text", "app_version", "unmapped",
          "versionName, same as $app_version_string", priority=1),
    _rule("$app_release", ANDROID, None, "text", "app_release", "always", "versionCode"),
    # --- device details Amplitude has no field for (every platform) ---
    _rule("$app_build_number", ALL, None, "text", "app_build", "always"),
    _rule("$screen_height", ALL, None, "text", "screen_height", "always"),
    _rule("$screen_width", ALL, None, "text", "screen_width", "always"),
    _rule("$screen_dpi", ALL, None, "text", "screen_dpi", "always"),
    _rule("$wifi", ALL, None, "text", "wifi", "always"),
    _rule("$radio", ALL, None, "text", "radio", "always"),
    _rule("$bluetooth_enabled", ALL, None, "text", "bluetooth_enabled", "always"),
    _rule("$bluetooth_version", ALL, None, "text", "bluetooth_version", "always"),
    _rule("$has_nfc", ALL, None, "text", "has_nfc", "always"),
    _rule("$has_telephone", ALL, None, "text", "has_telephone", "always"),
    _rule("$google_play_services", ALL, None, "text", "google_play_services", "always"),
    _rule("$watch_model", ALL, None, "text", "watch_model", "always"),
    _rule("$duration", ALL, None, "text", "duration", "always", "seconds"),
    # --- the same properties on server / unknown sources: readable names only ---
    _rule("$browser", frozenset({"ios", "android", "server", "other"}), None, "text",
          "browser", "always"),
    _rule("$browser_version", frozenset({"ios", "android", "server", "other"}), None, "text",
          "browser_version", "always"),
    _rule("$device", frozenset({"ios", "android", "server", "other"}), None, "text", "device",
          "always"),
    _rule("$os", frozenset({"server", "other"}), None, "text", "os", "always"),
    _rule("$os_version", frozenset({"web", "server", "other"}), None, "text", "os_version",
          "always"),
    _rule("$manufacturer", frozenset({"web", "server", "other"}), None, "text", "manufacturer",
          "always"),
    _rule("$model", frozenset({"web", "server", "other"}), None, "text", "model", "always"),
    _rule("$brand", frozenset({"web", "ios", "server", "other"}), None, "text", "brand",
          "always"),
    _rule("$carrier", frozenset({"web", "server", "other"}), None, "text", "carrier", "always"),
    _rule("$app_version_string", frozenset({"web", "server", "other"}), None, "text",
          "app_version", "always"),
    _rule("$app_version", frozenset({"web", "server", "other"}), None, "text",
          "mp_app_version", "always"),
    _rule("$app_release", frozenset({"web", "server", "other"}), None, "text", "app_release",
          "always"),
)

DEFAULT_EVENT_NAMES: dict[str, str] = {
    "$mp_web_page_view": "[Amplitude] Page Viewed",
    "$ae_first_open": "[Amplitude] Application Installed",
    "$ae_updated": "[Amplitude] Application Updated",
}
"""Used only with ``TransformSettings.amplitude_event_names``."""

WEB_LIBS = frozenset({"web", "js"})
APPLE_LIBS = frozenset({"swift", "iphone", "objc", "ios"})
ANDROID_LIBS = frozenset({"android"})
SERVER_LIBS = frozenset({"python", "node", "ruby", "php", "java", "go", "dotnet", "elixir",
                         "rust", "perl"})
APPLE_OS = frozenset({"ios", "ipados", "iphone os", "macos", "mac os x", "os x", "watchos",
                      "tvos", "visionos"})
PLATFORM_NAMES: dict[Platform, str] = {"web": "Web", "ios": "iOS", "android": "Android"}


def detect_platform(lib: object, os: object, has_browser: bool) -> Platform:
    """Which SDK conventions an event follows, from ``mp_lib``, ``$os`` and ``$browser``."""
    lib_name = lib.lower() if type(lib) is str else ""
    if lib_name in APPLE_LIBS:
        return "ios"
    if lib_name in ANDROID_LIBS:
        return "android"
    if lib_name in WEB_LIBS:
        return "web"
    os_name = os.lower() if type(os) is str else ""
    if os_name == "web" or has_browser:
        return "web"
    if os_name in APPLE_OS:
        return "ios"
    if os_name == "android":
        return "android"
    if lib_name in SERVER_LIBS or lib_name.startswith(("segment actions", "mixpanel-")):
        return "server"
    return "other"


def rules_for(platform: Platform) -> dict[str, Rule]:
    """Mixpanel property -> the rule that applies to it on ``platform``."""
    table: dict[str, Rule] = {}
    for rule in RULES:
        if platform in rule.platforms:
            if rule.source in table:
                raise ValueError(f"two mapping rules for {rule.source!r} on {platform}")
            table[rule.source] = rule
    return table


# --- converters: Mixpanel value (+ the event's properties) -> field value or None ---------

DISCARD: str = "\x00discard"
"""A converter result meaning "a placeholder, not data": no field and nothing kept."""

BROWSER_NAMES: dict[str, str] = {
    "Chrome iOS": "Chrome", "Internet Explorer": "IE", "Samsung Internet": "Samsung Browser",
    "Android Mobile": "Android Browser", "Microsoft Edge": "Edge", "Firefox iOS": "Firefox",
    "Facebook Mobile": "Facebook", "UC Browser": "UCBrowser", "Whale Browser": "Whale",
    "Internet Explorer Mobile": "IEMobile",
}
"""mixpanel-js ``$browser`` -> the ua-parser name legacy Amplitude JS sent (§3i)."""
WEB_OS_MODELS: dict[str, str] = {"Mac OS X": "Mac OS", "Chrome OS": "Chromium OS"}
IDEVICES = frozenset({"iPhone", "iPad", "iPod Touch"})
APPLE_PLATFORMS: dict[str, str] = {
    "ios": "iOS", "ipados": "iOS", "iphone os": "iOS", "macos": "macOS", "mac os x": "macOS",
    "os x": "macOS", "watchos": "watchOS", "tvos": "tvOS", "visionos": "visionOS",
}
_APPLE_OS_NAMES = {"iphone os": "ios", "mac os x": "macos", "os x": "macos"}
_SIMULATORS = frozenset({"x86_64", "i386"})


def text(value: object, props: dict[str, object]) -> str | None:
    t = type(value)
    if t is str:
        stripped = value.strip()  # type: ignore[attr-defined]
        return stripped or None
    if t is int:
        return str(value)
    if t is float and math.isfinite(value):  # type: ignore[arg-type]
        # as Mixpanel shows it (JavaScript's text): 2.0 is "2", as 2 is; str gave "2.0"
        return js_number_text(value)  # type: ignore[arg-type]
    return None  # NaN/Infinity stay a property, where the event is rejected as non-JSON


def browser(value: object, props: dict[str, object]) -> str | None:
    name = text(value, props)
    return None if name is None else BROWSER_NAMES.get(name, name)


def major(value: object, props: dict[str, object]) -> str | None:
    t = type(value)
    if t is int or t is float:
        number = float(value)  # type: ignore[arg-type]
        return str(int(number)) if number == number and abs(number) < 1e15 else None
    version = text(value, props)
    if version is None:
        return None
    head = version.split(".", 1)[0]
    return head if head.isdigit() else None


def web_device_model(value: object, props: dict[str, object]) -> str | None:
    device = props.get("$device")
    if type(device) is str and device in IDEVICES:
        return "iPhone" if device == "iPod Touch" else device
    name = text(value, props)
    if name is None or name.lower() == "web":  # React Native's web mode: a platform, not an OS
        return None
    return WEB_OS_MODELS.get(name, name)


def apple_if_idevice(value: object, props: dict[str, object]) -> str | None:
    return "Apple" if type(value) is str and value in IDEVICES else None


def apple_os_name(value: object, props: dict[str, object]) -> str | None:
    name = text(value, props)
    if name is None:
        return None
    lowered = name.lower()
    return _APPLE_OS_NAMES.get(lowered, lowered)


def apple_os_version(value: object, props: dict[str, object]) -> str | None:
    version = text(value, props)
    if version is not None and version.startswith("Version "):
        return version[8:].split(" ", 1)[0] or None
    return version


def apple_model(value: object, props: dict[str, object]) -> str | None:
    model = text(value, props)
    return "Simulator" if model in _SIMULATORS else model


def android_os_name(value: object, props: dict[str, object]) -> str | None:
    return "android"


def android_os_version(value: object, props: dict[str, object]) -> str | None:
    if type(value) is not str:
        return None  # React Native JS mode: an API level number, not a release
    version = value.strip()
    return DISCARD if not version or version.upper() == "UNKNOWN" else version


def advertising_id(value: object, props: dict[str, object]) -> str | None:
    ident = text(value, props)
    if ident is None or not ident.replace("0", "").replace("-", ""):
        return None
    return ident


def direct_to_empty(value: object, props: dict[str, object]) -> object:
    return "EMPTY" if value == "$direct" else value


def country(value: object, props: dict[str, object]) -> str | None:
    return country_name(value)


def place(value: object, props: dict[str, object]) -> str | None:
    return text(value, props) if type(value) is str else None


def latitude(value: object, props: dict[str, object]) -> float | None:
    return coordinate(value, 90.0)


def longitude(value: object, props: dict[str, object]) -> float | None:
    return coordinate(value, 180.0)


def ip(value: object, props: dict[str, object]) -> str | None:
    if type(value) is not str or not 2 < len(value) < 46:
        return None
    try:
        parsed = ip_address(value.strip())
    except ValueError:
        return None
    return None if parsed.is_unspecified else str(parsed)


CONVERTERS = {
    name: globals()[name]
    for name in ("text", "browser", "major", "web_device_model", "apple_if_idevice",
                 "apple_os_name", "apple_os_version", "apple_model", "android_os_name",
                 "android_os_version", "advertising_id", "direct_to_empty", "country", "place",
                 "latitude", "longitude", "ip")
}

CONVERTER_NOTES: dict[str, str] = {
    "text": "non-empty text; numbers as their decimal text",
    "browser": "ua-parser browser name (Chrome iOS -> Chrome, Internet Explorer -> IE, ...)",
    "major": "major version: 120.5 -> \"120\", \"91.0.4472.101\" -> \"91\"",
    "web_device_model": "iPhone/iPad from $device (iPod Touch -> iPhone), else $os "
                        "(Mac OS X -> Mac OS, Chrome OS -> Chromium OS)",
    "apple_if_idevice": "\"Apple\" when $device is iPhone, iPad or iPod Touch",
    "apple_os_name": "lower-case; iPhone OS -> ios, Mac OS X -> macos",
    "apple_os_version": "\"Version 14.2.1 (Build 23C71)\" -> \"14.2.1\"; others as text",
    "apple_model": "raw identifier; x86_64 / i386 -> Simulator",
    "android_os_name": "\"android\"",
    "android_os_version": "release text; \"UNKNOWN\" is dropped; an API-level number is "
                          "not a release",
    "advertising_id": "text unless all zeros (limited ad tracking)",
    "direct_to_empty": "\"$direct\" -> \"EMPTY\"",
    "country": "ISO 3166-1 alpha-2 -> English name (table below)",
    "place": "non-empty text",
    "latitude": "number in [-90, 90] (numeric text accepted)",
    "longitude": "number in [-180, 180] (numeric text accepted)",
    "ip": "a valid IPv4/IPv6 address; anything else (0, 1, junk) is dropped",
}


def _platform_list(platforms: frozenset[Platform]) -> str:
    return "all" if platforms == ALL else ", ".join(p for p in PLATFORMS if p in platforms)


def render_markdown() -> str:
    """docs/mapping.md, generated from ``RULES`` (a test fails when the file is stale)."""
    lines = [
        "# Mixpanel -> Amplitude field mapping",
        "",
        "<!-- Generated from src/mp2amp/transform/mapping.py by "
        "`python -m mp2amp.transform.mapping > docs/mapping.md`; do not edit by hand. -->",
        "",
        "Every Mixpanel event becomes one Amplitude Batch API event. Default properties "
        "become Amplitude top-level fields the way Amplitude's own SDKs fill them on each "
        "platform (web: legacy Amplitude JS / ua-parser; iOS: Amplitude-Swift; Android: "
        "Amplitude-Kotlin); the rest stay event properties under the readable names below. "
        "Properties not listed keep their Mixpanel name.",
        "",
        "## Platform detection",
        "",
        "From `mp_lib` first (" + ", ".join(sorted(WEB_LIBS)) + ": web; "
        + ", ".join(sorted(APPLE_LIBS)) + ": ios; " + ", ".join(sorted(ANDROID_LIBS))
        + ": android), then a `$browser` or `$os` \"web\" (web: a web SDK of RudderStack "
        "or Segment names the visitor's `$os`, Mac OS X or Android, beside the browser), "
        "then `$os` (iOS, iPadOS, macOS and other Apple names: ios; Android: android; React "
        "Native, Flutter, Unity and other wrappers), then server libraries ("
        + ", ".join(sorted(SERVER_LIBS)) + ", Segment Actions, `mixpanel-` followed by "
        "the language): server; anything else: other.",
        "",
        "| platform | `platform` | `os_name` when `$os` is absent |",
        "|---|---|---|",
        "| web | Web | (from `$browser`) |",
        "| ios | from `$os`: "
        + ", ".join(f"{k} -> {v}" for k, v in APPLE_PLATFORMS.items()) + " (default iOS) "
        "| lower-case platform |",
        "| android | Android | android |",
        "| server, other | not set | not set |",
        "",
        "Always set: `event_type` (the event name after the tracking plan), `user_id` / "
        "`device_id` (identity stage), `time` (UTC ms), `insert_id`, `library` "
        "(`mp2amp/<version>`), `event_properties`; `user_properties` and `groups` when any. "
        "`session_id` comes from the sessionizer. `language` is never set: Mixpanel records "
        "none.",
        "",
        "Location: when any of country, region or city is known, all four of `country`, "
        "`region`, `city`, `dma` are sent together (unknown ones as null; Mixpanel has no "
        "DMA), because setting one resets the others. `location_lat`/`location_lng` are sent "
        "only as a pair.",
        "",
        "## Default properties",
        "",
        "Keep: **always** = field and event property; **unmapped** = event property only "
        "when the value gave no field; **never** = consumed.",
        "",
        "| Mixpanel property | platforms | Amplitude field | conversion | event property "
        "| keep | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule in RULES:
        field = f"`{rule.field}`" if rule.field else ""
        conversion = CONVERTER_NOTES[rule.convert] if (
            rule.field or rule.convert != "text") else ""
        kept = f"`{rule.keep_as}`" if rule.keep_as and rule.keep != "never" else ""
        lines.append(
            f"| `{rule.source}` | {_platform_list(rule.platforms)} | {field} | {conversion} "
            f"| {kept} | {rule.keep} | {rule.note} |".replace("  ", " "))
    lines += [
        "",
        "When a readable name is already used by a custom property of the same event, the "
        "default property keeps its Mixpanel name instead (custom data is never overwritten).",
        "",
        "## Automatic event names (`amplitude_event_names = true` only)",
        "",
        "| Mixpanel event | Amplitude event |",
        "|---|---|",
        *(f"| `{k}` | `{v}` |" for k, v in DEFAULT_EVENT_NAMES.items()),
        "",
        *_module_sections(),
        "## Country names (`mp_country_code` -> `country`)",
        "",
        "| code | country |",
        "|---|---|",
        *(f"| {code} | {name} |" for code, name in sorted(COUNTRY_NAMES.items())),
        "",
    ]
    return "\n".join(lines)


def _module_sections() -> list[str]:
    """The rules for time, insert_id, revenue, values and hot shards: their docstrings."""
    from mp2amp.transform import hotshard, insert_id, revenue, timeconv, values

    titles = (("Time", timeconv), ("insert_id", insert_id), ("Revenue", revenue),
              ("Values", values), ("Hot-shard events", hotshard))
    return [line for title, module in titles
            for line in (f"## {title}", "", _docstring(module), "")]


def _docstring(module: ModuleType) -> str:
    """A module's docstring, read from its source: a mypyc-compiled module has none."""
    source = Path(module.__file__ or "").with_name(module.__name__.rpartition(".")[2] + ".py")
    return (ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or "").strip()


if __name__ == "__main__":
    print(render_markdown(), end="")
