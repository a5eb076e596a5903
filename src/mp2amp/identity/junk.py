"""Which ID values count as absent, and which look like device (anonymous) IDs.

Junk IDs are treated as if the field were missing: an Amplitude ``user_id`` of "None"
collapses every such event into one user, and Amplitude answers 400 to the IDs on its
blocklist. The list, compared after trimming whitespace and ignoring case:

* Amplitude's documented blocklist: ``anonymous``, ``nil``, ``none``, ``null``, ``n/a``,
  ``na``, ``undefined``, ``unknown``, ``""`` (two double-quote characters),
  ``00000000-0000-0000-0000-000000000000``, ``{}``, ``lmy47d``, ``0``, ``-1``.
* Mixpanel's disallowed distinct_ids beyond those: ``anon``, ``<nil>`` (Go's nil text),
  ``true``/``false``, ``[]``.
* Values SDKs and glue code produce by mistake: the empty or all-whitespace string,
  ``[object Object]``, ``nan``, ``(null)`` and ``<null>`` (Objective-C nil/NSNull),
  ``''``, ``(not set)``, unexpanded templates such as ``{{user_id}}``, and any value
  made only of zeros and dashes (all-zero IDFA/UUID/ANDROID_ID).
* ``$device:`` followed by a junk value (an anonymous distinct_id built from nothing).
* Non-string values other than integers: ``None``, booleans, NaN/infinite floats, lists,
  objects. Integers (Engage exports have integer ``$distinct_id``) become their decimal text,
  every digit kept; floats are written as JavaScript writes them (1e21 is "1e+21").

Short IDs (under 5 characters) are *not* junk: the loader sends ``min_id_length``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from mp2amp.transform.values import js_number_text

DEVICE_PREFIX = "$device:"

JUNK_IDS: frozenset[str] = frozenset(
    {
        # Amplitude's blocklist (HTTP V2 docs, "Invalid IDs that result in a 400 error")
        "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", '""',
        "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1",
        # Mixpanel's disallowed distinct_ids (import-events.mdx) not listed above
        "anon", "<nil>", "true", "false", "[]",
        # SDK / glue-code junk
        "", "[object object]", "nan", "(null)", "<null>", "''", "(not set)",
    }
)

# Junk values are short; longer strings are junk only when blank or an unexpanded template.
_SHORT = 40

_DEVICE_LIKE = re.compile(
    r"[0-9a-fA-F]+(?:-[0-9a-fA-F]+){3,}"  # UUIDs and mixpanel-js cookie ids (hex groups)
    # ANDROID_ID / Segment Android anonymousId: random hex, so at least one letter a-f. An
    # all-decimal one is ~1 in 1800 (0.625 ** 16), while 16-digit numeric user IDs
    # (database keys, card-style account numbers) are common.
    r"|(?=[0-9]*[a-fA-F])[0-9a-fA-F]{16}"
)


def _junk_text(value: str) -> bool:
    # Hot path (every ID of every event): cheap tests first, strip only when padded.
    size = len(value)
    if size > _SHORT:
        return value.isspace() or (value.startswith("{{") and value.endswith("}}"))
    if size == 0:
        return True
    key = value.lower()
    if key in JUNK_IDS:
        return True
    if key[0].isspace() or key[-1].isspace():
        key = key.strip()
        if key in JUNK_IDS:
            return True
    first = key[0]
    if first == "0" or first == "-":
        return not key.strip("0-")
    return first == "{" and key.startswith("{{") and key.endswith("}}")


# IDs recently found usable: every event repeats its person's IDs, so most checks are a
# set lookup. Bounded: cleared when full (a cache, it changes no answer). Small (~1.7 MB
# full), so that every run fills it early and its memory is the same at 1M events as at
# 5M: with 262,144 entries (~26 MB) a 1M-event run never filled it while a 5M-event run
# cleared and refilled it, in migrate's transform worker too. Events come in time order,
# so a small one keeps most hits (pass 1: 0.45 instead of 0.27 misses per record at 5M
# events, ~150 ns each).
_GOOD: set[str] = set()
_GOOD_MAX = 16_384


_LOW_SURROGATE, _HIGH_SURROGATE = chr(0xD800), chr(0xDFFF)  # (mypyc: no such literals)


def without_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (U+D800..U+DFFF) replaced by U+FFFD."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return "".join("\ufffd" if _LOW_SURROGATE <= ch <= _HIGH_SURROGATE else ch
                       for ch in text)
    return text


def forget_usable_ids() -> None:
    """Empty the cache of usable IDs (the identity graph does once pass 1 is over, so that
    a process forked for pass 2 starts with an empty one instead of copying it)."""
    _GOOD.clear()


def clean_id(value: Any) -> str | None:
    """The ID as Amplitude text, or ``None`` when it is missing or junk. A lone surrogate
    (an emoji cut in half by an SDK's length limit, kept by the standard library's JSON
    parser) becomes U+FFFD: such text can be neither sent as JSON nor spilled to SQLite."""
    if type(value) is str:
        if value in _GOOD:
            return value
        text: str = value if value.isascii() else without_lone_surrogates(value)
        if _junk_text(text[8:] if text.startswith(DEVICE_PREFIX) else text):
            return None
        if len(_GOOD) >= _GOOD_MAX:
            _GOOD.clear()
        _GOOD.add(text)
        return text
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        # every digit: two integers are two users, even past 2**53 (where JavaScript would
        # show 2**60 and 2**60 + 1 alike), and an excluded ID listed as stored matches
        text = str(value)
        return None if text in JUNK_IDS else text
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = js_number_text(value)  # 1e21 is "1e+21", 1.5e-7 "1.5e-7", 5.0 "5"
        return None if _junk_text(text) else text
    if isinstance(value, str):  # a str subclass
        return clean_id(str(value))
    return None


def is_junk_id(value: Any) -> bool:
    """True when ``value`` cannot be used as a Mixpanel/Amplitude ID (see the module list)."""
    return clean_id(value) is None


def is_device_like(value: str) -> bool:
    """True for IDs that look generated for a device rather than chosen for a person.

    ``$device:`` distinct_ids, UUIDs, mixpanel-js cookie IDs (dash-separated hex groups)
    and 16-hex-digit Android IDs with at least one letter (16 decimal digits is a numeric
    user ID far more often than an Android ID). Hashes (32/40/64 hex digits without
    dashes) and database keys such as Mongo ObjectIds (24 hex digits) are not device-like:
    they are common user IDs.
    """
    return value.startswith(DEVICE_PREFIX) or _DEVICE_LIKE.fullmatch(value) is not None


def default_user_id_predicate(value: str) -> bool:
    """The default test "may this ID be a cluster's Amplitude user_id": not device-like."""
    return not is_device_like(value)
