"""Dashboard REST event segmentation: daily totals or uniques, days in the project timezone.

Supports ``m=totals|uniques``, ``i=1``, any event type plus ``_all`` and ``_active``;
uniques count people (canonical amplitude_ids, so merged devices count once). What it does
not answer (a second event ``e2``, the revenue series, ``ce:`` custom events, filters,
segments, group-bys, ``formula``, rolling windows and averages, ``n=active``) is refused
with a 400 that says so, never answered as something else. ``limit`` caps group-by rows
only, so without a group-by it is checked (1-1000) and changes nothing. Queries
are charged the reference's cost (days x events) against its 5-minute and hourly budgets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from mp2amp.emulators.amplitude.ids import NO_PERSON
from mp2amp.emulators.amplitude.segindex import EventIndex

NOT_EVENTS = frozenset({"$identify", "$groupidentify"})
NOT_ACTIVE = NOT_EVENTS | {"session_start", "session_end", "[Amplitude] Start Session",
                           "[Amplitude] End Session"}
MAX_DAYS = 365
# segmentation's special event types that are revenue series, not event counts (reference 5.2)
REVENUE_TYPES = frozenset({"revenue_amount", "verified_revenue", "unverified_revenue"})
# reference 5.2 parameters whose effect this emulator does not compute
UNMODELLED_PARAMS = ("g2", "formula", "rollingWindow", "rollingAverage")
MAX_LIMIT = 1000  # "limit: Group-by values; default 100, maximum 1000"
COST_WINDOW_S = 300.0  # "Up to 1000 cost per 5-minute window"
COST_HOUR_S = 3600.0


class SegmentationQueryError(ValueError):
    """A query the API (or this emulator) cannot answer; the message names the parameter."""


def _day(value: str | None, name: str) -> date:
    if not value:
        raise SegmentationQueryError(f"{name} is required, formatted YYYYMMDD")
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise SegmentationQueryError(f"{name}={value!r}: expected YYYYMMDD") from None


def _refuse_unmodelled(params: dict[str, str]) -> None:
    """Reference 5.2's other parameters change the answer; present at all (even empty), they
    are refused rather than silently answered as the plain series."""
    for name in UNMODELLED_PARAMS:
        if name in params:
            raise SegmentationQueryError(
                f"{name}={params[name]!r} is not supported by this emulator: it answers the "
                f"plain series only; drop {name} from the query")
    if params.get("n", "any") != "any":
        raise SegmentationQueryError(
            f"n={params['n']!r}: this emulator counts any users (n=any) only")


def _check_limit(params: dict[str, str]) -> None:
    """``limit`` caps group-by rows, and group-bys are refused: a valid one changes nothing."""
    limit = params.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit()
                                  and 1 <= int(limit) <= MAX_LIMIT):
        raise SegmentationQueryError(
            f"limit={limit!r}: expected a whole number of group-by values from 1 to "
            f"{MAX_LIMIT}; drop it to get the default of 100")


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
    if event_type in REVENUE_TYPES:
        raise SegmentationQueryError(
            f"{event_type} (a revenue series, not an event count) is not supported by this "
            "emulator; read revenue from the Export API")
    if params.get("e2"):
        raise SegmentationQueryError(
            "a second event (e2) is not supported by this emulator: ask one event per query")
    metric = params.get("m", "uniques")
    if metric not in ("totals", "uniques"):
        raise SegmentationQueryError(f"m={metric!r}: this emulator answers m=totals or m=uniques")
    if params.get("i", "1") != "1":
        raise SegmentationQueryError(f"i={params['i']!r}: this emulator answers daily (i=1) only")
    if params.get("s") or params.get("g"):
        raise SegmentationQueryError("segments (s) and group-by (g) are not supported by this emulator")
    _refuse_unmodelled(params)
    _check_limit(params)
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
            if metric == "uniques" and aid != NO_PERSON:  # a group update is nobody
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


def query_cost(start: date, end: date) -> int:
    """Reference 5.2: days x conditions x query-type cost; this emulator answers one event
    without filters or group-by, so one condition and a query-type cost of 1."""
    return (end - start).days + 1


@dataclass(frozen=True, slots=True)
class CostLimits:
    """The Dashboard REST API's cost budgets (reference 5.2); ``None`` lifts one."""

    per_5_minutes: int | None = 1000
    per_hour: int | None = 108_000


class QueryCosts:
    """Sliding 5-minute and hourly cost windows on the emulator's clock."""

    def __init__(self, limits: CostLimits, now: Callable[[], float]) -> None:
        self.limits = limits
        self._now = now
        self._spent: deque[tuple[float, int]] = deque()  # (when, cost), oldest first

    def charge(self, cost: int) -> float | None:
        """Spend ``cost`` and return None, or return the seconds until it would fit (the
        query is then not charged: a refused query costs nothing)."""
        now = self._now()
        while self._spent and self._spent[0][0] <= now - COST_HOUR_S:
            self._spent.popleft()
        waits = [self._wait(limit, span, cost, now) for limit, span in
                 ((self.limits.per_5_minutes, COST_WINDOW_S), (self.limits.per_hour, COST_HOUR_S))
                 if limit is not None]
        wait = max((w for w in waits if w is not None), default=None)
        if wait is None:
            self._spent.append((now, cost))
        return wait

    def refusal(self, cost: int, wait: float) -> str:
        """The 429's error text: which budget, and when to ask again."""
        budgets = [f"{limit:,} per {name}" for limit, name in
                   ((self.limits.per_5_minutes, "5 minutes"), (self.limits.per_hour, "hour"))
                   if limit is not None]
        return (f"Too many requests: this query's cost ({cost}: days x events) is over the "
                f"Dashboard REST API's budget ({', '.join(budgets)}); retry in {wait:.0f} s")

    def _wait(self, limit: int, span: float, cost: int, now: float) -> float | None:
        recent = [(t, c) for t, c in self._spent if t > now - span]
        over = sum(c for _, c in recent) + cost - limit
        if over <= 0:
            return None
        for when, spent in recent:  # the oldest leave the window first
            over -= spent
            if over <= 0:
                return max(1.0, when + span - now)
        return span  # more than the whole budget: it never fits
