"""Per-platform default properties, as each Mixpanel SDK puts them on events.

Values follow reference/platform-conventions.md §2a and the real records in
fixtures/wild: mixpanel-js (``mp_lib: "web"``, numeric ``$browser_version``, float
seconds), mixpanel-swift (``"swift"``, ``$app_build_number`` as a string, UPPERCASE
IDFV-style device ids), mixpanel-android (``"android"``, ``$app_version`` =
versionName, ``$app_release`` = versionCode) and server libraries (``"python"``,
``$import: true``, no geography because they send ``ip=0``).

A device's properties come from one of a few hundred prebuilt variants per platform
(``device_template``); the emitter takes them as JSON pieces (``device_json``) and splices
each event's own fields in, which is what keeps generation fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from random import Random
from typing import Any

import orjson

WEB, IOS, ANDROID, SERVER = "web", "ios", "android", "server"

# (browser, os, version range, device) for desktop and mobile web
_BROWSERS: tuple[tuple[str, str, tuple[float, ...], str | None], ...] = (
    ("Chrome", "Windows", (118, 119, 120, 121, 122), None),
    ("Chrome", "Mac OS X", (119, 120, 121), None),
    ("Safari", "Mac OS X", (16.6, 17.1, 17.2), None),
    ("Firefox", "Windows", (119, 120, 121), None),
    ("Microsoft Edge", "Windows", (119, 120), None),
    ("Mobile Safari", "iOS", (16.6, 17.1, 17.2), "iPhone"),
    ("Chrome", "Android", (119, 120), "Android"),
    ("Samsung Internet", "Android", (22, 23), "Android"),
    ("Chrome", "Linux", (120,), None),
)
_WEB_SCREENS = ((1920, 1080), (1440, 900), (1536, 864), (2560, 1440), (390, 844), (412, 915))
_JS_VERSIONS = ("2.47.0", "2.49.0", "2.55.1", "2.60.0", "2.82.1")

_IPHONES = (("iPhone14,2", 844, 390), ("iPhone15,3", 932, 430), ("iPhone12,1", 896, 414),
            ("iPhone10,3", 812, 375), ("iPad13,1", 1180, 820), ("iPhone16,1", 852, 393))
_IOS_VERSIONS = ("16.7.2", "17.1", "17.2", "17.4.1", "18.0")
_SWIFT_VERSIONS = ("4.1.4", "4.2.0", "4.3.0")
_CARRIERS = ("Verizon", "T-Mobile", "AT&T", "Vodafone", "O2 - UK", "Telekom.de", "Jio", "")
_RADIOS = ("LTE", "5G", "Wifi", "None")

_ANDROIDS = (("samsung", "samsung", "SM-S911B", 2340, 1080, 420), ("Google", "google", "Pixel 7", 2400, 1080, 420),
             ("Xiaomi", "Redmi", "23021RAAEG", 2400, 1080, 440), ("OnePlus", "OnePlus", "CPH2449", 2412, 1080, 480),
             ("samsung", "samsung", "SM-A266B", 2118, 1080, 420))
_ANDROID_VERSIONS = ("12", "13", "14", "15")
_ANDROID_LIB = ("7.3.1", "7.4.1", "7.5.2")
_APP_VERSIONS = (("5.2.5", 4077), ("5.3.0", 4102), ("5.4.1", 4160))

# (country, region, city, timezone, weight) — Mixpanel's MaxMind names, not ASCII-folded
GEOS: tuple[tuple[str, str, str, str, float], ...] = (
    ("US", "California", "San Francisco", "America/Los_Angeles", 0.14),
    ("US", "New York", "New York", "America/New_York", 0.12),
    ("US", "Texas", "Austin", "America/Chicago", 0.07),
    ("US", "Illinois", "Chicago", "America/Chicago", 0.05),
    ("GB", "England", "London", "Europe/London", 0.10),
    ("DE", "Bavaria", "München", "Europe/Berlin", 0.06),
    ("DE", "Land Berlin", "Berlin", "Europe/Berlin", 0.05),
    ("FR", "Île-de-France", "Paris", "Europe/Paris", 0.06),
    ("CH", "Zurich", "Zürich", "Europe/Zurich", 0.02),
    ("IN", "Maharashtra", "Mumbai", "Asia/Kolkata", 0.08),
    ("BR", "São Paulo", "São Paulo", "America/Sao_Paulo", 0.06),
    ("JP", "Tokyo", "Tokyo", "Asia/Tokyo", 0.05),
    ("CA", "Ontario", "Toronto", "America/Toronto", 0.05),
    ("AU", "New South Wales", "Sydney", "Australia/Sydney", 0.04),
    ("MX", "Mexico City", "Mexico City", "America/Mexico_City", 0.05),
)


@dataclass(frozen=True, slots=True)
class Geo:
    country: str
    region: str
    city: str
    timezone: str


# one shared instance per place: device_json caches its pieces by the place's slot here
_PLACES = tuple(Geo(country, region, city, tz) for country, region, city, tz, _ in GEOS)
_PLACE_SLOT = {id(geo): slot for slot, geo in enumerate(_PLACES)}
_WEIGHT = sum(g[4] for g in GEOS)


_PLACE_WEIGHTS = tuple(zip(_PLACES, [g[4] for g in GEOS], strict=True))


def pick_geo(rng: Random) -> Geo:
    x = rng.random() * _WEIGHT
    for geo, weight in _PLACE_WEIGHTS:
        x -= weight
        if x <= 0:
            return geo
    return _PLACES[-1]


class _Bits:
    """Choices drawn from a device's 48-bit seed: rebuilding a template needs no RNG state."""

    __slots__ = ("value",)

    def __init__(self, seed: int) -> None:
        self.value = seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019  # spread the bits

    def random(self) -> float:
        self.value = (self.value * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return (self.value >> 11) / 9007199254740992.0


def _one(rng: _Bits, seq: tuple[Any, ...]) -> Any:
    return seq[int(rng.random() * len(seq))]


_POOL_SIZE = 512
_NOWHERE = Geo("", "", "", "")
_POOLS: dict[str, list[dict[str, Any]]] = {}


def device_template(seed: int, platform: str, geo: Geo) -> dict[str, Any]:
    """The default properties one device puts on every event, keys in export order.

    ``time`` and ``distinct_id`` come first (set per event and per identity), the SDK's
    ``$``-properties next, then the server-added geography and library fields. The same
    ``seed`` always gives the same dict. Built per session, so it must be cheap: a copy of
    one of ``_POOL_SIZE`` prebuilt variants per platform, with the owner's geography set.
    """
    pool = _POOLS.get(platform)
    if pool is None:
        pool = _POOLS[platform] = [_build(variant, platform, _NOWHERE) for variant in range(_POOL_SIZE)]
    props = pool[seed % _POOL_SIZE].copy()
    if platform != SERVER:
        props["$city"] = geo.city
        props["$region"] = geo.region
        props["mp_country_code"] = geo.country
    return props


def template_keys() -> set[str]:
    """Every key a device template of any platform can hold."""
    return {key for platform in (WEB, IOS, ANDROID, SERVER) for variant in range(_POOL_SIZE)
            for key in device_template(variant, platform, _NOWHERE)}


# device_json: the per-event-constant values spliced into a variant's JSON, marked by NULs
# (no generated value holds one) so that one split finds them
_MARKS = {"distinct_id": "\x00d", "$city": "\x00c", "$current_url": "\x00u", "$region": "\x00r",
          "mp_country_code": "\x00n"}
_MARK_RE = re.compile(rb'"\\u0000([dcurn])"')
_HEAD = b'{"time":0,"distinct_id":'
_PIECES: dict[tuple[str, int, int], tuple[bytes, bytes | None]] = {}  # <= 3 x 512 x 15 entries


def device_json(seed: int, platform: str, geo: Geo) -> tuple[bytes, bytes | None]:
    """``device_template(seed, platform, geo)`` as JSON, for splicing: the text between the
    ``distinct_id`` value and the closing brace, cut in two around the ``$current_url``
    value when the template has one (web), else ``(text, None)``. Same seed, same bytes
    as ``orjson.dumps`` of the dict (the generator's tests check it)."""
    variant = seed % _POOL_SIZE
    slot = _PLACE_SLOT.get(id(geo))
    if slot is None:
        return _pieces(variant, platform, geo)
    key = (platform, variant, slot)
    found = _PIECES.get(key)
    if found is None:
        found = _PIECES[key] = _pieces(variant, platform, geo)
    return found


# per variant: its JSON as bytes-% formats before and after the URL value (after is None
# without one), whose %(c)s, %(r)s, %(n)s take the city, region and country as JSON
_Formats = tuple[bytes, bytes | None]
_FORMATS: dict[tuple[str, int], _Formats] = {}  # <= 3 x 512 entries


def _formats(variant: int, platform: str) -> _Formats:
    props = device_template(variant, platform, _NOWHERE)
    for key, marker in _MARKS.items():
        if key in props:
            props[key] = marker
    parts = _MARK_RE.split(orjson.dumps(props).replace(b"%", b"%%"))
    if parts[0] != _HEAD or parts[1] != b"d":
        raise ValueError(f"{platform} template JSON does not start with time and distinct_id")
    out: list[bytes] = [parts[2]]
    before: bytes | None = None
    for mark, text in zip(parts[3::2], parts[4::2], strict=True):
        if mark == b"u":
            before, out = b"".join(out), [text]
        else:
            out += [b"%(" + mark + b")s", text]
    rest = b"".join(out)[:-1]  # without the closing brace
    return (rest, None) if before is None else (before, rest)


_GEO_JSON: dict[int, dict[bytes, bytes]] = {}  # id of a shared place -> its values as JSON


def _geo_json(geo: Geo) -> dict[bytes, bytes]:
    values = {b"c": orjson.dumps(geo.city), b"r": orjson.dumps(geo.region), b"n": orjson.dumps(geo.country)}
    if id(geo) in _PLACE_SLOT:  # a module constant: its id stays its own
        _GEO_JSON[id(geo)] = values
    return values


def _pieces(variant: int, platform: str, geo: Geo) -> tuple[bytes, bytes | None]:
    formats = _FORMATS.get((platform, variant))
    if formats is None:
        formats = _FORMATS[(platform, variant)] = _formats(variant, platform)
    values = _GEO_JSON.get(id(geo)) or _geo_json(geo)
    first, second = formats
    return first % values, None if second is None else second % values


def _build(seed: int, platform: str, geo: Geo) -> dict[str, Any]:
    rng = _Bits(seed)
    props: dict[str, Any] = {"time": 0, "distinct_id": ""}
    if platform == WEB:
        browser, os_name, versions, device = _one(rng, _BROWSERS)
        width, height = _one(rng, _WEB_SCREENS)
        lib = _one(rng, _JS_VERSIONS)
        props["$browser"] = browser
        props["$browser_version"] = _one(rng, versions)
        props["$city"] = geo.city
        props["$current_url"] = ""
        if device:
            props["$device"] = device
        props["$lib_version"] = lib
        props["$os"] = os_name
        props["$region"] = geo.region
        props["$screen_height"] = height
        props["$screen_width"] = width
        props["mp_country_code"] = geo.country
        props["mp_lib"] = "web"
        props["mp_sent_by_lib_version"] = lib
    elif platform == IOS:
        model, height, width = _one(rng, _IPHONES)
        version, build = _one(rng, _APP_VERSIONS)
        props["$app_build_number"] = str(build)
        props["$app_version_string"] = version
        props["$carrier"] = _one(rng, _CARRIERS)
        props["$city"] = geo.city
        props["$had_persisted_distinct_id"] = rng.random() < 0.5
        props["$lib_version"] = _one(rng, _SWIFT_VERSIONS)
        props["$manufacturer"] = "Apple"
        props["$model"] = model
        props["$os"] = "iPadOS" if model.startswith("iPad") else "iOS"
        props["$os_version"] = _one(rng, _IOS_VERSIONS)
        props["$radio"] = _one(rng, _RADIOS)
        props["$region"] = geo.region
        props["$screen_height"] = height
        props["$screen_width"] = width
        props["$wifi"] = rng.random() < 0.6
        props["mp_country_code"] = geo.country
        props["mp_lib"] = "swift"
    elif platform == ANDROID:
        manufacturer, brand, model, height, width, dpi = _one(rng, _ANDROIDS)
        version, build = _one(rng, _APP_VERSIONS)
        props["$app_build_number"] = str(build)
        props["$app_release"] = build
        props["$app_version"] = version
        props["$app_version_string"] = version
        props["$bluetooth_enabled"] = rng.random() < 0.7
        props["$bluetooth_version"] = "ble"
        props["$brand"] = brand
        carrier = _one(rng, _CARRIERS)
        if carrier:  # mixpanel-android omits a blank carrier
            props["$carrier"] = carrier
        props["$city"] = geo.city
        props["$google_play_services"] = "available"
        props["$has_nfc"] = rng.random() < 0.8
        props["$has_telephone"] = True
        props["$lib_version"] = _one(rng, _ANDROID_LIB)
        props["$manufacturer"] = manufacturer
        props["$model"] = model
        props["$os"] = "Android"
        props["$os_version"] = _one(rng, _ANDROID_VERSIONS)
        props["$region"] = geo.region
        props["$screen_dpi"] = dpi
        props["$screen_height"] = height
        props["$screen_width"] = width
        props["$wifi"] = rng.random() < 0.6
        props["mp_country_code"] = geo.country
        props["mp_lib"] = "android"
    else:  # server-side library through /import: no geography (ip=0), $import flag
        props["$import"] = True
        props["$lib_version"] = "4.10.1"
        props["mp_lib"] = "python"
    props["$mp_api_endpoint"] = "api.mixpanel.com" if platform != WEB else "api-js.mixpanel.com"
    return props


def pick_platform(rng: Random) -> str:
    x = rng.random()
    return WEB if x < 0.55 else IOS if x < 0.8 else ANDROID
