"""Deterministic Amplitude ``insert_id`` for a Mixpanel event.

Amplitude drops an event whose ``insert_id`` it has seen on the same device in the last
7 days; Mixpanel treats two events as duplicates only when **event name, distinct_id,
time and ``$insert_id``** all match. Real exports break the difference: the same
``$insert_id`` on different events and times of one user (instrumentation bugs, doc
samples). Sending ``$insert_id`` verbatim would make Amplitude silently drop those
distinct events, so the id is derived from Mixpanel's own dedup key:

* with a usable ``$insert_id``: ``"<$insert_id>-<16 hex>"``, the hex being a 64-bit hash
  of (event name, distinct_id, time in whole seconds: Mixpanel's default export gives
  seconds, the Export API with ``time_in_ms`` and the SDKs milliseconds, and the same
  event must get one id from any of them). The Mixpanel id stays readable as the prefix
  (``mixpanel_insert_id`` recovers it); exact Mixpanel duplicates keep one id.
* without one (old iOS SDKs, ``/track`` without it, placeholders): ``"mp-<32 hex>"``, a
  128-bit BLAKE2b hash of (event name, distinct_id, time ms, canonical properties other
  than the raw ``time`` and the metadata of how it was delivered), so files and the Export
  API agree. Mixpanel's ingestion stamps (``mp_processing_time_ms``,
  ``$mp_api_timestamp_ms``) are content: every copy of one stored event carries the same
  ones, while two taps alike in their second of a seconds export were stored (and are
  counted) twice and differ only there (scheme 4; scheme 3 left them out).

The distinct_id is the one the event was sent with: after an identity merge Mixpanel's
reshuffle re-keys exported events and keeps the old one in
``$distinct_id_before_identity``, which is used then (and left out of the content).

Every input is the event as Mixpanel stored it (before the tracking plan, privacy rules or
a timezone fix), so editing the config and re-running never changes an id and never
creates duplicates in Amplitude. The time of a legacy project's event is its local wall
time; within two days of a timezone change (scheme 4) the one its UTC time reads as, as
an export and a Data Pipelines copy may hold two zones' readings of that instant.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any, Final

import orjson

MAX_PREFIX: Final = 64
SCHEME: Final = 4  # runs record it. 1: the $insert_id hash took ms; 2: whole seconds;
# 3: the content hash (no $insert_id) leaves out the reshuffle's bookkeeping; 4: it keeps
# Mixpanel's ingestion stamps
RESUMABLE_SCHEMES: Final = (3, 4)
"""The schemes this mp2amp makes ids of: a run started under one is resumed under it."""
_JUNK = frozenset({"", "null", "none", "nil", "undefined", "source_id", "0", "-1", "n/a", "na"})
JUNK_LONGEST: Final = 9
"""An ``$insert_id`` longer than this (and at most ``MAX_PREFIX``) is never a placeholder:
the longest of ``_JUNK``, written out so that mypyc inlines it (a test checks it)."""
SHORT_HASH = blake2b(digest_size=8)  # copied per id: cheaper than building a hasher
# How an event was delivered, which differs between two copies of one stored event: not
# identity. ``time`` is in the key already as milliseconds; its raw form differs between
# sources (float seconds in files, integer ms from the Export API with time_in_ms).
# Mixpanel's reshuffle after an identity merge re-keys an exported event's distinct_id and
# keeps the one it was sent with here: that one is the event's, before and after
BEFORE_IDENTITY: Final = "$distinct_id_before_identity"
PRESHUFFLE: Final = "$preshuffle_distinct_id"  # the same, as some reshuffled copies name it
_VOLATILE = frozenset(
    {"$mp_api_endpoint", "$mp_event_size", "$import", "token", "time", BEFORE_IDENTITY,
     # set on the copies a reshuffle re-keys, absent before it: bookkeeping, not content
     "$is_reshuffled", PRESHUFFLE,
     "distinct_id"}  # in the key already, as the one the event was sent with
)
# scheme 3 left out the ingestion stamps too (two stored taps of one second got one id)
_VOLATILE_3 = _VOLATILE | {"mp_processing_time_ms", "$mp_api_timestamp_ms"}


def usable_insert_id(value: object) -> str | None:
    """The Mixpanel ``$insert_id`` as a string, or ``None`` when absent or a placeholder."""
    if type(value) is int and not isinstance(value, bool):
        text = str(value)
    elif type(value) is str:
        text = value.strip()
    else:
        return None
    if len(text) > MAX_PREFIX or text.lower() in _JUNK or not _sendable(text):
        return None
    return text


def _sendable(text: str) -> bool:
    """Whether ``text`` can be sent as JSON (no lone surrogate: an id cut by an SDK)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def sent_distinct_id(props: dict[str, Any]) -> Any:
    """The distinct_id the event was sent with: ``$distinct_id_before_identity`` when
    Mixpanel re-keyed it in a reshuffle (so exports before and after it give one id)."""
    before = props.get(BEFORE_IDENTITY)
    if type(before) is str and before:
        return before
    before = props.get(PRESHUFFLE)
    if type(before) is str and before:
        return before
    return props.get("distinct_id")


def event_insert_id(event_name: str, props: dict[str, Any], time_ms: int,
                    scheme: int = SCHEME) -> str:
    """``insert_id_for`` of an event as Mixpanel stored it (``props`` before any rule),
    with the common case (a usable string ``$insert_id``) inlined. ``scheme``: the run's
    (``RESUMABLE_SCHEMES``; only the content hash differs between them)."""
    given = props.get("$insert_id")
    distinct_id = sent_distinct_id(props)
    if type(given) is str:
        text = given.strip()
        if len(text) > MAX_PREFIX or (len(text) <= JUNK_LONGEST and text.lower() in _JUNK) \
                or not _sendable(text):
            return insert_id_for(event_name, distinct_id, time_ms, None, props, scheme)
    else:
        return insert_id_for(event_name, distinct_id, time_ms, usable_insert_id(given), props,
                             scheme)
    key = f"{event_name}\x1f{distinct_id if type(distinct_id) is str else _text(distinct_id)}" \
          f"\x1f{time_ms // 1000}"
    try:
        data = key.encode()
    except UnicodeEncodeError:  # lone surrogates
        data = key.encode("utf-8", "replace")
    short = SHORT_HASH.copy()
    short.update(data)
    return f"{text}-{short.hexdigest()}"


def insert_id_for(
    event_name: str,
    distinct_id: object,
    time_ms: int,
    mixpanel_insert_id: str | None,
    props: dict[str, Any],
    scheme: int = SCHEME,
) -> str:
    """The Amplitude ``insert_id`` (see the module docstring for the scheme).

    The hashed key is ``name 0x1F distinct_id 0x1F time [0x1F canonical props]``, time in
    whole seconds with a ``$insert_id`` and in ms without, in
    UTF-8 (lone surrogates as ``?``; a non-string distinct_id as its ``repr``), encoded in
    one go: the separator is ASCII, so this is the same bytes as encoding part by part.
    """
    who = distinct_id if type(distinct_id) is str else _text(distinct_id)
    if mixpanel_insert_id is not None:
        short = SHORT_HASH.copy()
        short.update(f"{event_name}\x1f{who}\x1f{time_ms // 1000}".encode("utf-8", "replace"))
        return f"{mixpanel_insert_id}-{short.hexdigest()}"
    key = f"{event_name}\x1f{who}\x1f{time_ms}\x1f".encode("utf-8", "replace") + _canonical(
        props, _VOLATILE_3 if scheme == 3 else _VOLATILE)
    return "mp-" + blake2b(key, digest_size=16).hexdigest()


def mixpanel_insert_id(amplitude_insert_id: str) -> str | None:
    """The Mixpanel ``$insert_id`` an Amplitude id was derived from (``None`` if hashed)."""
    if amplitude_insert_id.startswith("mp-") and len(amplitude_insert_id) == 35:
        return None
    prefix, sep, _ = amplitude_insert_id.rpartition("-")
    return prefix if sep else None


def _text(value: object) -> str:
    if value is None:
        return ""
    if type(value) is str:
        return value
    return repr(value)


def _canonical(props: dict[str, Any], volatile: frozenset[str]) -> bytes:
    stable = {k: v for k, v in props.items() if k not in volatile}
    try:
        return orjson.dumps(stable, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        pass
    # What orjson cannot write (huge ints, lone surrogates, past 255 levels): the repr of
    # the sorted items, built without recursion so that it never depends on the stack left
    # (transform and migrate's worker give one id); ids made with repr() stay the same
    items = sorted(stable.items(), key=lambda kv: str(kv[0]))
    return repr_text(items).encode("utf-8", "backslashreplace")


def repr_text(value: Any) -> str:
    """``repr(value)`` for parsed JSON (dicts, lists, tuples and scalars), written with an
    explicit stack: no depth limit and no ``RecursionError``."""
    out: list[str] = []
    stack: list[tuple[bool, Any]] = [(False, value)]  # (True, text to write) or a value
    while stack:
        is_text, item = stack.pop()
        if is_text:
            out.append(item)
            continue
        kind = type(item)
        if kind is dict:
            parts: list[tuple[bool, Any]] = []
            for key, sub in item.items():
                parts.append((True, (", " if parts else "{") + repr(key) + ": "))
                parts.append((False, sub))
            parts.append((True, "}" if parts else "{}"))
        elif kind is list or kind is tuple:
            opening, closing = ("[", "]") if kind is list else ("(", ",)" if len(item) == 1
                                                               else ")")
            parts = []
            for sub in item:
                parts.append((True, ", " if parts else opening))
                parts.append((False, sub))
            parts.append((True, closing if parts else opening + closing))
        else:
            out.append(repr(item))
            continue
        stack.extend(reversed(parts))
    return "".join(out)
