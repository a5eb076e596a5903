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

from mp2amp.emulators.amplitude.segindex import EventIndex

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


def _local_day_ordinal(zone: ZoneInfo) -> Callable[[int], int]:
    """ms since epoch -> days since 1970-01-01 in ``zone``, with the UTC offset looked up once
    per 15-minute slot (every modern offset change falls on one)."""
    offsets: dict[int, int] = {}

    def day(ms: int) -> int:
        slot = ms // 900_000
        offset = offsets.get(slot)
        if offset is None:
            local = datetime.fromtimestamp(slot * 900, UTC).astimezone(zone)
            offset = offsets[slot] = int((local.utcoffset() or timedelta(0)).total_seconds())
        return (ms // 1000 + offset) // 86400

    return day


def segment(
    index: EventIndex, event_type: str, metric: str, start: date, end: date, zone: ZoneInfo,
    canonical: Callable[[int], int],
) -> dict[str, Any]:
    index.refresh()
    epoch = date(1970, 1, 1)
    first, last = (start - epoch).days, (end - epoch).days
    days = (end - start).days + 1
    totals = [0] * days
    uniques: list[set[int]] = [set() for _ in range(days)]
    low = (first - 1) * 86_400_000  # UTC bounds with a day of slack for any offset
    high = (last + 2) * 86_400_000
    day_of = _local_day_ordinal(zone)
    wanted = None if event_type in ("_all", "_active") else {event_type}
    excluded = NOT_ACTIVE if event_type == "_active" else NOT_EVENTS
    for ms, aid in index.rows(wanted, excluded):
        if not low <= ms < high:
            continue
        slot = day_of(ms) - first
        if 0 <= slot < days:
            totals[slot] += 1
            if metric == "uniques":
                uniques[slot].add(canonical(aid))
    if metric == "totals":
        series, collapsed = totals, sum(totals)
    else:
        series, collapsed = [len(u) for u in uniques], len(set().union(*uniques))
    return {"data": {
        "series": [series],
        "seriesLabels": [0],
        "seriesCollapsed": [[{"setId": "", "value": collapsed}]],
        "xValues": [(start + timedelta(days=n)).isoformat() for n in range(days)],
    }}
