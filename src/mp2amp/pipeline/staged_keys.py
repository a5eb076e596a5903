"""What staging sorts and settles a window's records by: each record's event time in
seconds (its sort key, in UTC for a legacy project), Mixpanel's dedup key of its copies, its
ingestion time, and a content hash that does not depend on how or where it was written."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from mp2amp.models import SourceRecord
from mp2amp.transform.insert_id import sent_distinct_id, usable_insert_id
from mp2amp.transform.timeconv import LocalTimeConverter, unit_seconds

_SIGN = 1 << 63
_ALL = (1 << 64) - 1

UNKNOWN_TIME = -1.0e18  # sorts first; finite, because JSON has no infinity
WHOLE_SECOND_AT = 0.9995  # a time given in whole seconds sorts after all of its ms (.999)


def sort_key(record: dict[str, Any] | None) -> float:
    """Seconds since the epoch, good enough to order events; unknown times sort first.
    Whole seconds (a default export) sort after every millisecond of their second: the
    event happened somewhere in it, and of two copies of one event (Mixpanel counts one)
    the finer is kept, in its place among the device's events."""
    seconds, whole = _seconds(record)
    return seconds + WHOLE_SECOND_AT if whole else seconds


def _seconds(record: dict[str, Any] | None) -> tuple[float, bool]:
    """The record's time in seconds (``UNKNOWN_TIME`` when unknown), and whether it was
    given in whole seconds."""
    if record is None:
        return UNKNOWN_TIME, False
    props = record.get("properties")
    t = props.get("time") if isinstance(props, dict) else None
    if isinstance(t, str):
        try:
            t = float(t)
        except ValueError:
            return UNKNOWN_TIME, False
    if not isinstance(t, int | float) or isinstance(t, bool):
        return UNKNOWN_TIME, False
    try:
        if not math.isfinite(t):
            return UNKNOWN_TIME, False
        seconds = unit_seconds(t)  # s, ms, us or ns, as the transform reads them
    except OverflowError:  # an integer past a float's range: the transform rejects it
        return UNKNOWN_TIME, False
    return seconds, seconds == t and seconds.is_integer()


# A legacy project's (timezone, timezone_changes): its times are local wall clock, sorted
# by their UTC time (in a DST fall-back's repeated hour wall order is not time order)
LocalZone = tuple[str, tuple[tuple[str, str], ...]]
UtcKey = Callable[[float, dict[str, Any]], float]


def utc_key(local: LocalZone | None) -> UtcKey | None:
    """Local sort key (seconds) -> UTC seconds, as the transform converts the time (its
    processing time settles a DST fold); None when times are UTC already."""
    if local is None:
        return None
    converter = LocalTimeConverter(*local)

    def key(seconds: float, props: dict[str, Any]) -> float:
        processed = props.get("mp_processing_time_ms")
        if type(processed) is not int:
            processed = props.get("$mp_api_timestamp_ms")
        try:
            return converter.to_utc_ms(round(seconds * 1000),
                                       processed if type(processed) is int else None) / 1000
        except Exception:  # out of any zone's range: the transform rejects it anyway
            return seconds

    return key


def ingested_ms(record: dict[str, Any] | None) -> int:
    """When Mixpanel ingested the record (``mp_processing_time_ms``, else the API's
    timestamp), 0 when unknown."""
    props = record.get("properties") if type(record) is dict else None
    if type(props) is not dict:
        return 0
    for name in ("mp_processing_time_ms", "$mp_api_timestamp_ms"):
        value = props.get(name)
        if type(value) is int and 0 < value < _SIGN:
            return value
    return 0


def copy_key(record: dict[str, Any] | None) -> int:
    """What copies of one event share besides their time (Mixpanel's dedup key: event,
    distinct_id, ``$insert_id``), as a 64-bit number, 0 for a record Mixpanel never dedups
    (no usable ``$insert_id``). Only compared within one process (``hash`` is salted)."""
    if type(record) is not dict:
        return 0
    props = record.get("properties")
    if type(props) is not dict:
        return 0
    # as the transform's insert_id has them: a placeholder ("undefined", "") makes events
    # distinct, and the distinct_id is the one the event was sent with (reshuffles)
    insert_id = usable_insert_id(props.get("$insert_id"))
    if insert_id is None:
        return 0
    key = hash((str(record.get("event")), str(sent_distinct_id(props)), insert_id))
    return (key & _ALL) or 1


def content_hash(rec: SourceRecord) -> int:
    """What a line says, as a 64-bit number that is the same in every process and does
    not depend on where it came from (source, line number) nor on how it was written
    (key order, spacing): the Export API's days are sorted by it, and staged windows'
    digests are made of it."""
    rej = rec.rejection
    data = _canonical(rec.record if rej is None
                      else [rej.reason, rej.field, rec.record, rej.record])
    # two checksums in C: a third of blake2b's cost, and no one forges these lines
    return _crc32(data) << 32 | _adler32(data)


_crc32, _adler32 = zlib.crc32, zlib.adler32


def _canonical(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # NaN's kin, or nesting past orjson's depth
        try:
            return json.dumps(value, sort_keys=True, default=str).encode()
        except (RecursionError, ValueError, TypeError):
            return b"?"  # staged as too_deep: its place hardly matters
