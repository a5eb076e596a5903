"""The proof's own statement of the default-property mapping (``docs/mapping.md``), written
again here rather than read from ``transform.mapping``: a proof that took its expectations
from the rules it checks would follow a wrong rule into the same wrong answer.

* ``KEPT``: the default properties every platform keeps as a readable event property,
  and their readable names;
* ``READABLE``: every default property's readable name(s), any platform (the names the
  mapping may add to ``event_properties``), and ``CONSUMED``, the ones never kept;
* ``expected_fields``: the top-level device and location fields a record gives
  (platform detection and conversions as documented), compared with the export's;
* ``canonical``/``compared``: the value text property values are compared by (lists and
  objects too), and ``sessions``: Amplitude's sessions rebuilt from the expected times.

Only what the demo's generated data exercises is stated; a value whose expected field
this module cannot state for sure (an unlisted country code, a float version) is
``SKIP``: not compared.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

MAX_STRING = 1024  # Amplitude keeps at most 1024 characters of a string
MAX_DEPTH = 30  # containers nested deeper than this are not compared (40 layers are cut)
SKIP = object()  # an expected field value this module cannot state: not compared
ABSENT = object()  # a field an export row does not have
DEFAULT_GAP_MS = 30 * 60_000  # [transform] session_gap_minutes, README's default 30

# docs/mapping.md "Default properties": keep "always" on all platforms -> readable name
KEPT: dict[str, str] = {
    "mp_lib": "mp_lib", "$lib_version": "mp_lib_version", "$source": "mp_source",
    "$geo_source": "geo_source", "current_page_title": "[Amplitude] Page Title",
    "current_domain": "[Amplitude] Page Domain", "current_url_path": "[Amplitude] Page Path",
    "current_url_protocol": "page_url_protocol", "current_url_search": "page_url_search",
    "$referrer": "referrer", "$referring_domain": "referring_domain",
    "$initial_referrer": "initial_referrer",
    "$initial_referring_domain": "initial_referring_domain",
    "$search_engine": "search_engine", "mp_keyword": "search_keyword",
    "mp_sent_by_lib_version": "mp_sent_by_lib_version", "$app_build_number": "app_build",
    **{f"${name}": name for name in (
        "screen_height", "screen_width", "screen_dpi", "wifi", "radio", "bluetooth_enabled",
        "bluetooth_version", "has_nfc", "has_telephone", "google_play_services",
        "watch_model", "duration")},
}
DIRECT_TO_EMPTY = frozenset({"$initial_referrer", "$initial_referring_domain"})
# every other default property with a readable name (some platform's), as documented
READABLE: dict[str, tuple[str, ...]] = {
    **{k: (v,) for k, v in KEPT.items()},
    "mp_country_code": ("country_code",), "$region": ("region",), "$city": ("city",),
    "$latitude": ("latitude",), "$longitude": ("longitude",), "$browser": ("browser",),
    "$browser_version": ("browser_version",), "$os": ("os",), "$device": ("device",),
    "$current_url": ("[Amplitude] Page Location",),
    "$os_version": ("os_version", "android_api_level"), "$manufacturer": ("manufacturer",),
    "$model": ("model",), "$carrier": ("carrier",), "$app_version_string": ("app_version",),
    "$app_release": ("app_release",),
    "$app_version": ("app_build_version", "app_version", "mp_app_version"),
    "$ios_ifa": ("ios_ifa",), "$brand": ("brand",), "$android_brand": ("android_brand",),
    "$android_manufacturer": ("android_manufacturer",), "$android_model": ("android_model",),
}
# consumed: identity, time, dedup, ingestion metadata, IP (keep "never")
CONSUMED = frozenset({
    "distinct_id", "$device_id", "$user_id", "$distinct_id_before_identity",
    "$identified_id", "$anon_id", "$anon_distinct_id", "$is_reshuffled",
    "$preshuffle_distinct_id", "$had_persisted_distinct_id", "time", "$time", "$insert_id",
    "token", "$mp_api_endpoint", "$mp_api_timestamp_ms", "mp_processing_time_ms",
    "$mp_event_size", "$import", "mp_device_model", "ip", "$ip"})
# cut from $current_url on web events (docs/mapping.md: Page URL / Page Domain / Page Path)
PAGE_NAMES = ("[Amplitude] Page URL", "[Amplitude] Page Domain", "[Amplitude] Page Path")

# the compared top-level fields, and their names in Amplitude's export
FIELDS = ("platform", "os_name", "os_version", "device_model", "device_brand",
          "device_manufacturer", "carrier", "app_version", "country", "region", "city", "dma")
LOCATION = frozenset({"country", "region", "city", "dma"})
EXPORT_NAMES = {"carrier": "device_carrier", "app_version": "version_name"}

_WEB_LIBS = frozenset({"web", "js"})
_APPLE_LIBS = frozenset({"swift", "iphone", "objc", "ios"})
_SERVER_LIBS = frozenset({"python", "node", "ruby", "php", "java", "go", "dotnet", "elixir",
                          "rust", "perl"})
_APPLE_PLATFORMS = {"ios": "iOS", "ipados": "iOS", "iphone os": "iOS", "macos": "macOS",
                    "mac os x": "macOS", "os x": "macOS", "watchos": "watchOS",
                    "tvos": "tvOS", "visionos": "visionOS"}
_APPLE_OS_NAMES = {"iphone os": "ios", "mac os x": "macos", "os x": "macos"}
# ua-parser's names for mixpanel-js browsers (platform conventions §3i)
_BROWSERS = {"Chrome iOS": "Chrome", "Internet Explorer": "IE",
             "Samsung Internet": "Samsung Browser", "Android Mobile": "Android Browser",
             "Microsoft Edge": "Edge", "Firefox iOS": "Firefox", "Facebook Mobile": "Facebook",
             "UC Browser": "UCBrowser", "Whale Browser": "Whale",
             "Internet Explorer Mobile": "IEMobile"}
_WEB_OS = {"Mac OS X": "Mac OS", "Chrome OS": "Chromium OS"}
_IDEVICES = frozenset({"iPhone", "iPad", "iPod Touch"})
# the countries the generator draws (platforms.GEOS), as MaxMind names them
_COUNTRIES = {"US": "United States", "GB": "United Kingdom", "DE": "Germany",
              "FR": "France", "CH": "Switzerland", "IN": "India", "BR": "Brazil",
              "JP": "Japan", "CA": "Canada", "AU": "Australia", "MX": "Mexico"}
_DISCARD = object()  # a placeholder value: no field, not kept


def platform_of(props: dict[str, Any]) -> str:
    """docs/mapping.md "Platform detection"."""
    lib, os_value = props.get("mp_lib"), props.get("$os")
    lib = lib.lower() if type(lib) is str else ""
    os_name = os_value.lower() if type(os_value) is str else ""
    if lib in _APPLE_LIBS:
        return "ios"
    if lib == "android":
        return "android"
    if lib in _WEB_LIBS or os_name == "web" or "$browser" in props:
        return "web"
    if os_name in _APPLE_PLATFORMS:
        return "ios"
    if os_name == "android":
        return "android"
    if lib in _SERVER_LIBS or lib.startswith(("segment actions", "mixpanel-")):
        return "server"
    return "other"


def _text(value: object) -> object:
    if type(value) is str:
        return value.strip() or None
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else SKIP
    return None


def _major(value: object) -> object:
    if type(value) in (int, float):
        number = float(value)  # type: ignore[arg-type]
        return str(int(number)) if number == number and abs(number) < 1e15 else None
    version = _text(value)
    if type(version) is not str:
        return version
    head = version.split(".", 1)[0]
    return head if head.isdigit() else None


def _web_model(value: object, props: dict[str, Any]) -> object:
    device = props.get("$device")
    if type(device) is str and device in _IDEVICES:
        return "iPhone" if device == "iPod Touch" else device
    name = _text(value)
    if type(name) is str:
        return None if name.lower() == "web" else _WEB_OS.get(name, name)
    return name


def _apple_os_version(value: object) -> object:
    version = _text(value)
    if type(version) is str and version.startswith("Version "):
        return version[8:].split(" ", 1)[0] or None
    return version


def _android_os_version(value: object) -> object:
    if type(value) is not str:
        return None
    version = value.strip()
    return _DISCARD if not version or version.upper() == "UNKNOWN" else version


def _country(value: object) -> object:
    if type(value) is not str or len(value) != 2:
        return None
    return _COUNTRIES.get(value.upper(), SKIP)


def _convert(how: str, value: object, props: dict[str, Any]) -> object:
    """One documented conversion (docs/mapping.md's "conversion" column)."""
    if how == "text":
        return _text(value)
    if how == "place":
        return _text(value) if type(value) is str else None
    if how == "browser":
        name = _text(value)
        return _BROWSERS.get(name, name) if type(name) is str else name
    if how == "major":
        return _major(value)
    if how == "web_model":
        return _web_model(value, props)
    if how == "apple_if_idevice":
        return "Apple" if type(value) is str and value in _IDEVICES else None
    if how == "apple_os_name":
        name = _text(value)
        return _APPLE_OS_NAMES.get(name.lower(), name.lower()) if type(name) is str else name
    if how == "apple_os_version":
        return _apple_os_version(value)
    if how == "apple_model":
        model = _text(value)
        return "Simulator" if model in ("x86_64", "i386") else model
    if how == "android":
        return "android"
    if how == "android_os_version":
        return _android_os_version(value)
    if how == "country":
        return _country(value)
    raise AssertionError(how)


_Sources = tuple[tuple[str, str], ...]  # (Mixpanel property, conversion), first wins
_GEO: dict[str, _Sources] = {"country": (("mp_country_code", "country"),),
                             "region": (("$region", "place"),), "city": (("$city", "place"),)}
_BY_PLATFORM: dict[str, dict[str, _Sources]] = {
    "web": {"os_name": (("$browser", "browser"),),
            "os_version": (("$browser_version", "major"),),
            "device_model": (("$os", "web_model"),),
            "device_manufacturer": (("$device", "apple_if_idevice"),)},
    "ios": {"os_name": (("$os", "apple_os_name"),),
            "os_version": (("$os_version", "apple_os_version"),),
            "device_manufacturer": (("$manufacturer", "text"),),
            "device_model": (("$model", "apple_model"),), "carrier": (("$carrier", "text"),),
            "app_version": (("$app_version_string", "text"), ("$app_release", "text"))},
    "android": {"os_name": (("$os", "android"),),
                "os_version": (("$os_version", "android_os_version"),),
                "device_brand": (("$brand", "text"), ("$android_brand", "text")),
                "device_manufacturer": (("$manufacturer", "text"),
                                        ("$android_manufacturer", "text")),
                "device_model": (("$model", "text"), ("$android_model", "text")),
                "carrier": (("$carrier", "text"),),
                "app_version": (("$app_version_string", "text"), ("$app_version", "text"))},
}


# every property expected_fields reads (its result depends on these values only)
FIELD_SOURCES = tuple(dict.fromkeys(
    ["mp_lib", "$os", "$browser", "$device"]
    + [source for table in (*_BY_PLATFORM.values(), _GEO) for sources in table.values()
       for source, _ in sources]))


def expected_fields(props: dict[str, Any]) -> tuple[object, ...]:
    """The value of each of ``FIELDS`` Amplitude should hold for this record (None: not
    set; ``SKIP``: not compared)."""
    platform = platform_of(props)
    out: dict[str, object] = {}
    for field, sources in (*_BY_PLATFORM.get(platform, {}).items(), *_GEO.items()):
        for source, how in sources:
            if source in props:
                value = _convert(how, props[source], props)
                if value is _DISCARD:
                    continue
                if value is not None:
                    out[field] = value[:MAX_STRING] if type(value) is str else value
                    break
    os_value = props.get("$os")
    if platform == "ios":
        out["platform"] = _APPLE_PLATFORMS.get(
            os_value.lower() if type(os_value) is str else "ios", "iOS")
        out.setdefault("os_name", str(out["platform"]).lower())
    elif platform == "android":
        out["platform"] = "Android"
        out.setdefault("os_name", "android")
    elif platform == "web":
        out["platform"] = "Web"
    if "country" in out or "region" in out or "city" in out:
        out["dma"] = None  # Mixpanel has no DMA (sent as null with the others)
    return tuple(out.get(field) for field in FIELDS)


def exported_fields(event: dict[str, Any]) -> tuple[object, ...]:
    """``FIELDS`` as an exported event holds them (``ABSENT``: not in the row)."""
    return tuple(event.get(EXPORT_NAMES.get(field, field), ABSENT) for field in FIELDS)


def allowed_names(props: dict[str, Any]) -> frozenset[str]:
    """Every name the migration may give a property of this record: its own custom names,
    the readable names of its default properties (a default property's Mixpanel name
    when one of its readable names is taken), and the page names of a ``$current_url``."""
    names: set[str] = set()
    readable: list[tuple[str, tuple[str, ...]]] = []
    for key in props:
        if type(key) is not str or key in CONSUMED:
            continue
        found = READABLE.get(key)
        if found is None:
            names.add(key)
        else:
            readable.append((key, found))
    uses = Counter(n for _, found in readable for n in found)
    for key, found in readable:
        names.update(found)
        if any(n in props or uses[n] > 1 for n in found):
            names.add(key)  # a readable name already used: kept under its Mixpanel name
    if "$current_url" in props:
        names.update(PAGE_NAMES)
    return frozenset(names)


def cut(value: object) -> object:
    """A property's text as the transform sends it: cut to 1024 characters (docs/mapping.md),
    so that a longer cut is seen (text inside lists and objects is not compared so)."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        return value[:MAX_STRING]
    return value


def compared(value: object, depth: int = 0) -> bool:
    """A value whose text Amplitude keeps whole (text up to 1024 characters, finite
    numbers, booleans, null inside containers, and lists and objects of those nested at
    most ``MAX_DEPTH`` deep)."""
    if isinstance(value, str):
        return len(value) <= MAX_STRING
    if isinstance(value, (bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(v is None or compared(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(type(k) is str and len(k) <= MAX_STRING
                   and (v is None or compared(v, depth + 1)) for k, v in value.items())
    return False


def canonical(value: object) -> str:
    """A value's kind and text (length-prefixed, so no two values read alike): True, 1
    and "1" differ, 1 and 1.0 do not (JSON has one number); an object's keys in order of
    their text (Amplitude need not keep their order)."""
    if isinstance(value, bool):
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"n{value}"
    if isinstance(value, float):
        return f"n{int(value)}" if value.is_integer() else f"n{value!r}"
    if isinstance(value, str):
        return f"s{len(value)}:{value}"
    if value is None:
        return "z"
    if isinstance(value, list):
        return f"l{len(value)}[" + "".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return f"d{len(items)}{{" + "".join(
            f"{len(str(k))}:{k}{canonical(v)}" for k, v in items) + "}"
    return f"o{value!r}"


def sessions(events: Iterable[tuple[str, int, str]],
             gap_ms: int = DEFAULT_GAP_MS) -> dict[str, int]:
    """Event key -> its session_id, from ``(who, time ms, key)``: a device's (else its
    user's) events in time order, a new session after a gap over ``gap_ms``, named by the
    time of its first event (README, ``[transform] session_gap_minutes``)."""
    out: dict[str, int] = {}
    last_who, start, last = None, 0, 0
    for who, when, key in sorted(events):
        if who != last_who or when - last > gap_ms:
            last_who, start = who, when
        last = when
        out[key] = start
    return out
