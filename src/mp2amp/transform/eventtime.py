"""An event's time in ms: the UTC time Amplitude gets and the source time its ids hash.

Out of ``events`` (the transformer's general path) so that the privacy rules' retention
date can be checked as soon as the time is known, before any other rejection.
"""

from __future__ import annotations

from typing import Any, Final

from mp2amp.errors import ConfigError
from mp2amp.models import UTC_TIME_MARK
from mp2amp.transform.settings import TransformSettings
from mp2amp.transform.timeconv import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    LocalTimeConverter,
    processed_ms_of,
    to_epoch_ms,
    utc_in_range,
)

HOUR_MS: Final = 3_600_000


def local_time(settings: TransformSettings) -> tuple[LocalTimeConverter | None,
                                                     dict[int, int], bool]:
    """A legacy project's converter, its offsets by hour (``hour_offsets``) and whether its
    export rows near a timezone change hash their canonical local time (insert_id scheme 4:
    ``event_times``'s ``canonical``); ``(None, {}, False)`` for a project stored in UTC."""
    if not settings.legacy_time:
        return None, {}, False
    try:
        local = LocalTimeConverter(settings.timezone, settings.timezone_changes)
    except (ValueError, KeyError) as exc:  # unknown zone or malformed date
        raise ConfigError([f"transform timezone settings: {exc}"]) from exc
    return (local, local.hour_offsets,
            settings.insert_id_scheme >= 4 and bool(settings.timezone_changes))


def event_times(record: dict[str, Any], props: dict[str, Any],
                local: LocalTimeConverter | None,
                hour_offsets: dict[int, int], canonical: bool = False) -> tuple[int, int]:
    """``(UTC ms, source ms)``; raises ``TimeError``. ``local``: a legacy project's zone
    (its times are local wall clock), ``hour_offsets`` its offsets by hour (the common
    case without a DST edge). Epoch seconds of this century need no unit detection.
    ``canonical`` (insert_id scheme 4, with timezone changes): near a change, an export
    row's source time is the local time its UTC time reads as (``to_local_ms``), the one a
    Data Pipelines copy of it hashes, where the stored one may be the other zone's reading
    of that instant."""
    raw = props.get("time")
    if (type(raw) is float or type(raw) is int) and 1e9 <= raw < 4e9:
        raw_ms = round(raw * 1000)
    else:
        raw_ms = to_epoch_ms(raw)
    if local is None:
        return raw_ms, raw_ms
    if UTC_TIME_MARK in record:  # UTC; ids hash the stored local time, as an export's do
        return raw_ms, local.to_local_ms(raw_ms, processed_ms_of(props))  # in range
    offset = hour_offsets.get(raw_ms // HOUR_MS)
    time_ms = raw_ms - offset if offset is not None else MIN_TIME_MS - 1
    if not MIN_TIME_MS <= time_ms < MAX_TIME_MS:  # DST edge, first sight, or range
        # Mixpanel's UTC processing/receive time: the zone after a change, DST folds
        time_ms = utc_in_range(raw_ms, local.to_utc_ms(raw_ms, processed_ms_of(props)))
    if canonical and local.near_change(time_ms):
        return time_ms, local.to_local_ms(time_ms, processed_ms_of(props))
    return time_ms, raw_ms
