"""Time: unit detection and legacy project-local time -> UTC across DST gaps and folds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mp2amp.transform.timeconv import LocalTimeConverter, TimeError, seconds_to_ms, to_epoch_ms


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def local_ms(*args: int) -> int:
    """A wall-clock time written as if it were UTC: what legacy Mixpanel projects store."""
    return utc_ms(*args)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1652825148, 1652825148000),  # export: int seconds
        (1721228056.002, 1721228056002),  # float seconds with a ms fraction
        (1704784217.602, 1704784217602),
        (1618716477000, 1618716477000),  # ms (SDKs, /import)
        (1618716477000123, 1618716477000),  # microseconds
        (1618716477000123456, 1618716477000),  # nanoseconds
        ("1652825148", 1652825148000),  # digits as text
        ("1652825148.5", 1652825148500),
    ],
)
def test_units_are_detected_and_ms_returned(value: object, expected: int) -> None:
    result = to_epoch_ms(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing_time"),
        ("2024-01-01T00:00:00Z", "invalid_time"),  # ISO is a 400 at Amplitude
        (float("nan"), "invalid_time"),
        (float("inf"), "invalid_time"),
        (True, "invalid_time"),
        ([1], "invalid_time"),
        (1000.1, "time_out_of_range"),  # 1970: the python SDK test value
        (-5, "time_out_of_range"),
        (99999999999999, "time_out_of_range"),  # ms in year 5138
    ],
)
def test_unusable_times_are_refused_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(TimeError) as caught:
        to_epoch_ms(value)
    assert caught.value.reason == reason


@pytest.mark.parametrize("value", ["2024-01-05T10:00:00Z", "2024-01-05 10:00", "01/05/2024"])
def test_a_date_text_says_to_convert_it(value: str) -> None:
    with pytest.raises(TimeError) as caught:
        to_epoch_ms(value)
    assert caught.value.reason == "invalid_time"
    assert "a date text" in str(caught.value) and "epoch seconds" in str(caught.value)


def test_other_text_gets_no_date_hint() -> None:
    with pytest.raises(TimeError) as caught:
        to_epoch_ms("soon")
    assert "a date text" not in str(caught.value)


def test_pacific_offset_follows_dst_not_a_fixed_hour() -> None:
    conv = LocalTimeConverter("America/Los_Angeles")
    assert conv.to_utc_ms(local_ms(2022, 1, 15, 12)) == utc_ms(2022, 1, 15, 20)  # PST -8
    assert conv.to_utc_ms(local_ms(2022, 7, 15, 12)) == utc_ms(2022, 7, 15, 19)  # PDT -7


def test_wild_legacy_records_match_their_utc_ingestion_time() -> None:
    # mixpanel-export-events.jsonl line 1: time is 7 h behind $mp_api_timestamp_ms (PDT).
    conv = LocalTimeConverter("America/Los_Angeles")
    utc = conv.to_utc_ms(1652825148000)
    assert 0 <= 1652850348643 - utc < 60_000
    # line 9: 8 h behind in December (PST).
    utc = conv.to_utc_ms(1609420266000)
    assert 0 <= 1609449079378 - utc < 60_000


def test_india_is_ahead_of_utc() -> None:
    conv = LocalTimeConverter("Asia/Kolkata")
    assert conv.to_utc_ms(local_ms(2023, 3, 1, 12)) == utc_ms(2023, 3, 1, 6, 30)


def test_dst_gap_reads_the_wall_time_with_the_pre_gap_offset() -> None:
    # 2022-03-13 02:30 never happened in Los Angeles; read as PST, i.e. 03:30 PDT.
    conv = LocalTimeConverter("America/Los_Angeles")
    assert conv.to_utc_ms(local_ms(2022, 3, 13, 2, 30)) == utc_ms(2022, 3, 13, 10, 30)
    # Just around the gap, times are exact.
    assert conv.to_utc_ms(local_ms(2022, 3, 13, 1, 59)) == utc_ms(2022, 3, 13, 9, 59)
    assert conv.to_utc_ms(local_ms(2022, 3, 13, 3, 0)) == utc_ms(2022, 3, 13, 10, 0)


def test_dst_fold_is_settled_by_the_processing_time() -> None:
    conv = LocalTimeConverter("America/Los_Angeles")
    wall = local_ms(2022, 11, 6, 1, 30)  # happens twice: 08:30Z (PDT) and 09:30Z (PST)
    first, second = utc_ms(2022, 11, 6, 8, 30), utc_ms(2022, 11, 6, 9, 30)
    assert conv.to_utc_ms(wall) == first  # no evidence: the first occurrence
    assert conv.to_utc_ms(wall, processed_ms=first + 5_000) == first
    assert conv.to_utc_ms(wall, processed_ms=second + 5_000) == second
    assert conv.to_utc_ms(wall, processed_ms=first - 1) == first  # clock skew: fall back


def test_hour_cache_does_not_leak_across_the_fold() -> None:
    conv = LocalTimeConverter("America/Los_Angeles")
    # Warm the cache with unambiguous hours on both sides, then hit the fold again.
    conv.to_utc_ms(local_ms(2022, 11, 6, 0, 30))
    conv.to_utc_ms(local_ms(2022, 11, 6, 2, 30))
    assert conv.to_utc_ms(local_ms(2022, 11, 6, 2, 30)) == utc_ms(2022, 11, 6, 10, 30)
    wall = local_ms(2022, 11, 6, 1, 45)
    assert conv.to_utc_ms(wall, utc_ms(2022, 11, 6, 9, 50)) == utc_ms(2022, 11, 6, 9, 45)


def test_timezone_change_dates_switch_the_zone() -> None:
    conv = LocalTimeConverter("Europe/London", (("2021-06-01", "America/New_York"),))
    assert conv.to_utc_ms(local_ms(2021, 5, 31, 12)) == utc_ms(2021, 5, 31, 11)  # BST
    assert conv.to_utc_ms(local_ms(2021, 6, 1, 12)) == utc_ms(2021, 6, 1, 16)  # EDT
    assert conv.to_utc_ms(local_ms(2021, 12, 1, 12)) == utc_ms(2021, 12, 1, 17)  # EST


def test_changes_are_applied_in_date_order_whatever_the_config_order() -> None:
    conv = LocalTimeConverter(
        "UTC", (("2022-01-01", "Asia/Tokyo"), ("2020-01-01", "Europe/Berlin")))
    assert conv.to_utc_ms(local_ms(2019, 6, 1, 12)) == utc_ms(2019, 6, 1, 12)
    assert conv.to_utc_ms(local_ms(2021, 1, 1, 12)) == utc_ms(2021, 1, 1, 11)
    assert conv.to_utc_ms(local_ms(2022, 1, 2, 12)) == utc_ms(2022, 1, 2, 3)


def test_southern_hemisphere_and_half_hour_dst() -> None:
    # Lord Howe shifts by 30 minutes; the fold 01:30-02:00 on 2023-04-02.
    conv = LocalTimeConverter("Australia/Lord_Howe")
    assert conv.to_utc_ms(local_ms(2023, 1, 10, 12)) == utc_ms(2023, 1, 10, 1)  # +11
    assert conv.to_utc_ms(local_ms(2023, 4, 2, 1, 15)) == utc_ms(2023, 4, 1, 14, 15)  # +11
    assert conv.to_utc_ms(local_ms(2023, 4, 2, 1, 45)) == utc_ms(2023, 4, 1, 14, 45)  # first
    assert conv.to_utc_ms(local_ms(2023, 7, 1, 12)) == utc_ms(2023, 7, 1, 1, 30)  # +10:30


@given(st.floats(min_value=1e9, max_value=4e9)
       | st.integers(1_000_000_000, 3_999_999_999).map(lambda s: s + 0.0005)  # ms ties
       | st.integers(1_000_000_000_000, 3_999_999_999_999).map(lambda ms: ms / 1000))
def test_seconds_to_ms_is_round_half_to_even(seconds: float) -> None:
    assert seconds_to_ms(seconds) == round(seconds * 1000)


@pytest.mark.parametrize("seconds", [1704129725.0005, 1704129725.0015, 1704129725.0025,
                                     1e9 + 0.0005, 1e9 + 0.0015, 1704129725.039])
def test_seconds_to_ms_ties(seconds: float) -> None:
    assert seconds_to_ms(seconds) == round(seconds * 1000)


# --- a legacy project's timezone change: the zone in force when Mixpanel ingested it ------

_CHANGED = LocalTimeConverter("America/Los_Angeles", (("2021-06-01", "America/New_York"),))


def _ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def test_an_event_ingested_on_the_change_date_keeps_its_stored_dates_zone() -> None:
    # stored 05-31 23:30 (Los Angeles, 06-01 06:30Z), ingested a minute later: the instant
    # the change took effect that day is not known, so the stored date decides, as before
    local = _ms(2021, 5, 31, 23, 30)
    assert _CHANGED.to_utc_ms(local, _ms(2021, 6, 1, 6, 31)) == _ms(2021, 6, 1, 6, 30)


def test_an_event_ingested_days_after_the_change_is_read_in_the_new_zone() -> None:
    # an /import (or a late upload) after the change: Mixpanel stored it in New York time
    local = _ms(2021, 5, 20, 12, 0)
    assert _CHANGED.to_utc_ms(local, _ms(2021, 7, 1)) == _ms(2021, 5, 20, 16, 0)
    assert _CHANGED.to_utc_ms(local) == _ms(2021, 5, 20, 19, 0)  # no evidence: the stored date's
    # the hour is never cached for the fast path: the next event of it may be either
    assert local // 3_600_000 not in _CHANGED.hour_offsets


@given(st.integers(_ms(2021, 4, 1), _ms(2021, 8, 1)), st.integers(0, 90 * 86_400_000))
def test_a_pipeline_row_and_its_export_copy_agree_whenever_it_was_ingested(
        utc_ms: int, lag_ms: int) -> None:
    # April to July: no DST fold, so every stored wall time reads back to its one instant
    processed = utc_ms + lag_ms
    local = _CHANGED.to_local_ms(utc_ms, processed)
    assert _CHANGED.to_utc_ms(local, processed) == utc_ms
