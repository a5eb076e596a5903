"""Dashboard REST event segmentation: daily totals or uniques, days in the project timezone.

Supports ``m=totals|uniques``, ``i=1``, any event type plus ``_all`` and ``_active``;
uniques count people (canonical amplitude_ids, so merged devices count once).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from mp2amp.emulators.amplitude.store import EventStore

NOT_EVENTS = frozenset({"$identify", "$groupidentify"})
NOT_ACTIVE = NOT_EVENTS | {"session_start", "session_end", "[Amplitude] Start Session",
                           "[Amplitude] End Session"}
MAX_DAYS = 365


class SegmentationQueryError(ValueError):
    """A query the API (or this emulator) cannot answer; the message names the parameter."""


def _day(value: str | None, name: str) -> date:
    if not value:
        raise SegmentationQueryError(f"{name} is required, formatted YYYYMMDD")
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise SegmentationQueryError(f"{name}={value!r}: expected YYYYMMDD") from None


def parse_query(params: dict[str, str]) -> tuple[str, str, date, date]:
    """-> (event_type, metric, start, end), or SegmentationQueryError naming the parameter."""
    raw_e = params.get("e")
    if not raw_e:
        raise SegmentationQueryError('e is required, e.g. e={"event_type":"Purchase"}')
    try:
        event = orjson.loads(raw_e)
    except orjson.JSONDecodeError:
        raise SegmentationQueryError(f"e={raw_e!r} is not valid JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
        raise SegmentationQueryError('e must be an object with a string "event_type"')
    if event.get("filters") or event.get("group_by"):
        raise SegmentationQueryError("filters and group_by are not supported by this emulator")
    event_type = event["event_type"]
    if event_type.startswith("ce:"):
        raise SegmentationQueryError("custom events (ce:) are not supported by this emulator")
    metric = params.get("m", "uniques")
    if metric not in ("totals", "uniques"):
        raise SegmentationQueryError(f"m={metric!r}: this emulator answers m=totals or m=uniques")
    if params.get("i", "1") != "1":
        raise SegmentationQueryError(f"i={params['i']!r}: this emulator answers daily (i=1) only")
    if params.get("s") or params.get("g"):
        raise SegmentationQueryError("segments (s) and group-by (g) are not supported by this emulator")
    start, end = _day(params.get("start"), "start"), _day(params.get("end"), "end")
    if end < start:
        raise SegmentationQueryError(f"end {end} is before start {start}")
    if (end - start).days >= MAX_DAYS:
        raise SegmentationQueryError("daily segmentation covers at most 365 days")
    return event_type, metric, start, end


def _matches(event_type: str, wanted: str) -> bool:
    if wanted == "_all":
        return event_type not in NOT_EVENTS
    if wanted == "_active":
        return event_type not in NOT_ACTIVE
    return event_type == wanted


def segment(
    store: EventStore, event_type: str, metric: str, start: date, end: date, zone: ZoneInfo,
    canonical: Callable[[int], int],
) -> dict[str, Any]:
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    totals = dict.fromkeys(days, 0)
    uniques: dict[date, set[int]] = {d: set() for d in days}
    everyone: set[int] = set()
    # UTC bounds with a day of slack either side, then the exact local day per event.
    low = datetime.combine(start - timedelta(days=1), datetime.min.time(), UTC).timestamp() * 1000
    high = datetime.combine(end + timedelta(days=2), datetime.min.time(), UTC).timestamp() * 1000
    for event in store.iter_events():
        if not _matches(event["event_type"], event_type):
            continue
        ms = event.get("time") or event["_t"]
        if not low <= ms < high:
            continue
        day = datetime.fromtimestamp(ms / 1000, zone).date()
        if day not in totals:
            continue
        totals[day] += 1
        if metric == "uniques":
            aid = canonical(event["_a"])
            uniques[day].add(aid)
            everyone.add(aid)
    if metric == "totals":
        series = [totals[d] for d in days]
        collapsed = sum(series)
    else:
        series = [len(uniques[d]) for d in days]
        collapsed = len(everyone)
    return {"data": {
        "series": [series],
        "seriesLabels": [0],
        "seriesCollapsed": [[{"setId": "", "value": collapsed}]],
        "xValues": [d.isoformat() for d in days],
    }}
