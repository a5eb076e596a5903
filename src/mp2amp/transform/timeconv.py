"""Mixpanel ``time`` -> Amplitude ``time`` (UTC epoch milliseconds, int).

Two problems, both silent data corruption when done naively:

* **Units.** The raw export gives epoch seconds (int or float with a ms fraction); SDKs and
  ``/import`` payloads may carry milliseconds. The unit is detected from the magnitude:
  below 1e11 is seconds (1e11 ms would be March 1973, before any Mixpanel data), up to 1e14
  milliseconds, up to 1e17 microseconds, above that nanoseconds.
* **Legacy project-local time.** Projects created before 2023 store ``time`` as the
  project-local wall clock written as if it were UTC. Converting back needs the zone's
  offset *at that wall-clock time* (DST included), so a fixed hour offset is wrong for half
  the year. Wall times in a DST gap (which Mixpanel should never have produced) are read
  with the offset in force before the gap, as the clock would have shown it. Wall times
  in a DST fold (the repeated hour) are ambiguous: when the record carries Mixpanel's UTC
  processing time, the latest candidate not more than ``CLOCK_AHEAD_MS`` after it wins
  (events are processed after they happen, and the device's clock, which stamped the
  event, may run a little ahead of Mixpanel's); otherwise the first occurrence (the
  daylight-time reading) is used.
* **Timezone changes.** A legacy project whose timezone setting changed keeps the old
  offset for older events; ``timezone_changes`` lists ``(date_from, zone)`` pairs and the
  zone for an event is the last one whose ``date_from`` is on or before the event's stored
  local date (``timezone`` before the first change). ``to_local_ms`` (a Data Pipelines
  row's UTC time -> the local time an export holds) inverts that: it takes the zone of the
  UTC day when the local time it gives lies in that zone's dates, else the zone whose
  dates hold its local time, so ``to_utc_ms(to_local_ms(u), u) == u`` wherever any local
  time reads back as ``u`` (not in the hours a westward change skips).

Offsets are cached per local hour (which decides the zone) when the whole hour has one
unambiguous offset, so the tz database is consulted about once per hour of data. Nothing
here reads the clock.
"""

from __future__ import annotations

import bisect
import math
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

MIN_TIME_MS: Final = 31_536_000_000
"""1971-01-01T00:00:00Z: Mixpanel's ``/import`` rejects anything earlier."""
MAX_TIME_MS: Final = 4_102_444_800_000
"""2100-01-01T00:00:00Z: a sane upper bound that needs no clock."""

CLOCK_AHEAD_MS: Final = 600_000
"""How far ahead of Mixpanel's processing time a device's clock may stamp an event and
still settle a DST fold by it (10 minutes: phone clocks are synced, while ingestion can
lag an event by anything up to days; and well under the shortest fold, Lord Howe's 30)."""

_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 86_400_000
_EPOCH = datetime(1970, 1, 1)
_UTC_EPOCH = _EPOCH.replace(tzinfo=UTC)


class TimeError(ValueError):
    """``time`` cannot be used; ``reason`` is the stable rejection code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def unit_seconds(number: float) -> float:
    """Epoch seconds from a number in s, ms, us or ns, by magnitude as ``to_epoch_ms``
    reads it (staging's sort key and the identity pass order events with it)."""
    magnitude = abs(number)
    if magnitude < 1e11:
        return float(number)
    if magnitude < 1e14:
        return number / 1e3
    if magnitude < 1e17:
        return number / 1e6
    return number / 1e9


def to_epoch_ms(value: object) -> int:
    """Epoch milliseconds from a Mixpanel ``time`` value (s, ms, us or ns; number or digits).

    Raises ``TimeError`` for absent, non-numeric, non-finite or out-of-range values.
    """
    t = type(value)
    if t is int:
        number: float | int = _bounded(value, value)  # type: ignore[arg-type]
    elif t is float:
        number = value  # type: ignore[assignment]
        if number != number or number in (float("inf"), float("-inf")):
            raise TimeError("invalid_time", f"time is not a finite number ({value!r})")
    elif t is str:
        text = value.strip()  # type: ignore[attr-defined]
        if not text.isascii() or "_" in text:  # int() and float() read "1_000" and "١٢"
            raise TimeError(
                "invalid_time",
                f"time must be epoch seconds or milliseconds in ASCII digits, got {value!r:.60}")
        whole: int | None = None  # kept apart from ``number`` until bounded (_bounded)
        try:
            if text.isdigit():
                whole = int(text)
            else:
                number = float(text)
        except ValueError:
            hint = ""
            if any(c in text for c in "-:/") and any(c.isdigit() for c in text):
                hint = (" (a date text: Mixpanel records carry epoch seconds; convert it to "
                        "epoch seconds or milliseconds in the source and run that file again)")
            raise TimeError(
                "invalid_time",
                f"time must be epoch seconds or milliseconds, got {value!r:.60}{hint}"
            ) from None
        if whole is not None:
            number = _bounded(whole, value)
        if number != number or number in (float("inf"), float("-inf")):
            raise TimeError("invalid_time", f"time is not a finite number ({value!r:.60})")
    elif value is None:
        raise TimeError("missing_time", "the record has no time")
    else:
        raise TimeError(
            "invalid_time", f"time must be a number, got {type(value).__name__} {value!r:.60}"
        )
    magnitude = abs(number)
    if magnitude < 1e11:
        ms = round(number * 1000)
    elif magnitude < 1e14:
        ms = round(number)
    elif magnitude < 1e17:
        ms = round(number / 1000)
    else:
        ms = round(number / 1_000_000)
    if not MIN_TIME_MS <= ms < MAX_TIME_MS:
        raise TimeError(
            "time_out_of_range",
            f"time {value!r:.40} is {_describe(ms)}, outside 1971-01-01..2100-01-01",
        )
    return ms


def _bounded(whole: int, value: object) -> int:
    """``whole``, when it can be a time at all: compared as an int, as one past a double's
    range has no float (the compiled build would fail to make one: a ``TypeError``)."""
    if -10**20 < whole < 10**20:  # nanoseconds of 2100 are 4.1e18
        return whole
    raise TimeError("time_out_of_range",
                    f"time {value!r:.40} is far outside any date, outside 1971-01-01..2100-01-01")


def seconds_to_ms(seconds: float) -> int:
    """``round(seconds * 1000)`` (half to even) for finite epoch seconds, written with
    ``math.floor``: the compiled build has a C primitive for that and none for ``round``.
    ``ms - whole`` is exact below 2**52, so ties are found exactly."""
    ms = seconds * 1000
    whole = math.floor(ms)
    rest = ms - whole
    if rest > 0.5 or (rest == 0.5 and whole % 2 == 1):
        whole += 1
    return whole


def _describe(ms: int) -> str:
    try:
        return (_EPOCH + timedelta(milliseconds=ms)).isoformat() + "Z"
    except OverflowError:
        return "far outside any date"


class LocalTimeConverter:
    """Project-local epoch ms -> UTC epoch ms for one project's timezone history."""

    def __init__(self, timezone: str, changes: tuple[tuple[str, str], ...] = ()) -> None:
        ordered = sorted((_date_ms(day), zone) for day, zone in changes)
        self._change_at = [at for at, _ in ordered]
        self._zones = [ZoneInfo(timezone)] + [ZoneInfo(zone) for _, zone in ordered]
        self._utc_offsets: dict[int, int] = {}  # UTC hour -> its one offset (to_local_ms)
        self.hour_offsets: dict[int, int] = {}
        """Local hour (``local_ms // 3_600_000``) -> its one unambiguous offset in ms.
        A pure cache that callers may read (``local_ms - offset`` is the UTC time); an hour
        absent from it needs ``to_utc_ms``. Change dates fall on day boundaries, so the
        hour alone decides the zone."""

    def to_utc_ms(self, local_ms: int, processed_ms: int | None = None) -> int:
        """UTC ms for a stored local wall time; ``processed_ms`` (when Mixpanel ingested it)
        picks the zone after a timezone change and settles DST folds."""
        hour = local_ms // _HOUR_MS
        offset = self.hour_offsets.get(hour)
        if offset is not None:
            return local_ms - offset
        index = self._zone_index(local_ms)
        if processed_ms is not None and self._change_at:
            ingested = self._ingest_index(processed_ms)
            if ingested > index:  # ingested after a later change: stored in its zone
                return self._exact(self._zones[ingested], local_ms, processed_ms)
        zone = self._zones[index]
        start = self._offsets(zone, hour * _HOUR_MS)
        end = self._offsets(zone, hour * _HOUR_MS + _HOUR_MS - 1)
        if start[0] == start[1] == end[0] == end[1] and self._settled(hour * _HOUR_MS):
            # One offset for the whole hour and no ambiguity: safe to reuse.
            if len(self.hour_offsets) > 200_000:
                self.hour_offsets.clear()
            self.hour_offsets[hour] = start[0]
            return local_ms - start[0]
        return self._exact(zone, local_ms, processed_ms)

    def to_local_ms(self, utc_ms: int, processed_ms: int | None = None) -> int:
        """The project-local wall time (as ms) a UTC time was stored as: what an export of a
        legacy project gives for an event a Data Pipelines file has in UTC (in the zone in
        force when Mixpanel ingested it, ``processed_ms``, when that differs)."""
        if processed_ms is not None and self._change_at:
            ingested = self._ingest_index(processed_ms)
            if ingested > self._zone_index(utc_ms + self._local_offset(utc_ms)):
                instant = _UTC_EPOCH + timedelta(milliseconds=utc_ms)
                return utc_ms + _offset_ms(instant.astimezone(self._zones[ingested]))
        hour = utc_ms // _HOUR_MS
        offset = self._utc_offsets.get(hour)
        if offset is None:
            start = self._local_offset(hour * _HOUR_MS)
            end = self._local_offset(hour * _HOUR_MS + _HOUR_MS - 1)
            if start != end or self.near_change(hour * _HOUR_MS):
                # a DST change's hour, or a timezone change's days: this instant's own
                return utc_ms + self._local_offset(utc_ms)
            if len(self._utc_offsets) > 200_000:
                self._utc_offsets.clear()
            self._utc_offsets[hour] = offset = start
        return utc_ms + offset

    def _local_offset(self, utc_ms: int) -> int:
        """The offset ``to_local_ms`` adds at ``utc_ms``: the UTC day's zone when the local
        time lies in its dates (around a change both readings may, and Mixpanel does not
        say which it used), else the zone whose dates hold the local time it gives, so that
        ``to_utc_ms`` reads it back; the UTC day's zone when none does."""
        day = utc_ms - utc_ms % _DAY_MS
        by_utc = self._zone_index(day)
        instant = _UTC_EPOCH + timedelta(milliseconds=utc_ms)
        fallback = _offset_ms(instant.astimezone(self._zones[by_utc]))
        if not self._change_at:
            return fallback
        if self._zone_index(utc_ms + fallback) == by_utc:
            return fallback
        # offsets are under a day, so the local date is within a day of the UTC date
        for index in range(self._zone_index(day - _DAY_MS), self._zone_index(day + _DAY_MS) + 1):
            if index == by_utc:
                continue
            offset = _offset_ms(instant.astimezone(self._zones[index]))
            if self._zone_index(utc_ms + offset) == index:
                return offset
        return fallback  # a westward change skips these local hours: no reading fits

    def _ingest_index(self, processed_ms: int) -> int:
        """Index into ``_zones`` of the zone surely in force when Mixpanel ingested an event:
        a change counts from a day after its date (the instant it took effect that day is
        not known), so only a later ingestion (a late upload, an ``/import``) moves an
        event to a later zone than its stored date's."""
        return bisect.bisect_right(self._change_at, processed_ms - _DAY_MS)

    def _settled(self, local_ms: int) -> bool:
        """Whether every event stored at this local time was stored in one zone: after the
        last change; before it, one ingested later (a late upload, an ``/import``) was
        stored in a later zone, so its hour is never cached for ``hour_offsets``' readers."""
        return not self._change_at or local_ms - local_ms % _DAY_MS >= self._change_at[-1]

    def _zone_index(self, local_ms: int) -> int:
        """Index into ``_zones`` of the zone for a stored local time (by its local date)."""
        return bisect.bisect_right(self._change_at, local_ms - local_ms % _DAY_MS)

    def near_change(self, utc_ms: int) -> bool:
        """Within two days of a timezone change: the zone may change within an hour, and
        two zones' local readings may read back to one UTC time."""
        at = bisect.bisect_left(self._change_at, utc_ms - 2 * _DAY_MS)
        return at < len(self._change_at) and self._change_at[at] <= utc_ms + 2 * _DAY_MS

    @staticmethod
    def _offsets(zone: ZoneInfo, local_ms: int) -> tuple[int, int]:
        wall = _EPOCH + timedelta(milliseconds=local_ms)
        return (
            _offset_ms(wall.replace(tzinfo=zone, fold=0)),
            _offset_ms(wall.replace(tzinfo=zone, fold=1)),
        )

    @classmethod
    def _exact(cls, zone: ZoneInfo, local_ms: int, processed_ms: int | None) -> int:
        first, second = cls._offsets(zone, local_ms)
        candidates = sorted({local_ms - first, local_ms - second})
        real = [utc for utc in candidates if _round_trips(zone, utc, local_ms)]
        if not real:
            # DST gap: this wall time never existed; read it with the pre-gap offset.
            return local_ms - first
        if len(real) == 1:
            return real[0]
        # DST fold: two instants show this wall time.
        if processed_ms is not None:
            # processed after it happened, by a clock the device's may be a little ahead of
            before = [utc for utc in real if utc <= processed_ms + CLOCK_AHEAD_MS]
            if before:
                return before[-1]
        return local_ms - first


def processed_ms_of(props: dict[str, object]) -> int | None:
    """When Mixpanel ingested an event (``mp_processing_time_ms``, else its receive time)."""
    processed = props.get("mp_processing_time_ms")
    if type(processed) is not int:
        processed = props.get("$mp_api_timestamp_ms")
    return processed if type(processed) is int else None


def _round_trips(zone: ZoneInfo, utc_ms: int, local_ms: int) -> bool:
    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=utc_ms)
    return utc_ms + _offset_ms(instant.astimezone(zone)) == local_ms


def _offset_ms(aware: datetime) -> int:
    delta = aware.utcoffset()
    return 0 if delta is None else int(delta.total_seconds() * 1000)


def _date_ms(day: str) -> int:
    parsed = date.fromisoformat(day)
    return (parsed - date(1970, 1, 1)).days * _DAY_MS


def utc_in_range(raw_ms: int, utc_ms: int) -> int:
    """``utc_ms`` (a local time ``raw_ms`` converted to UTC) if it is a time mp2amp sends."""
    if not MIN_TIME_MS <= utc_ms < MAX_TIME_MS:
        raise TimeError("time_out_of_range", f"time {raw_ms} ms is out of range in UTC")
    return utc_ms
