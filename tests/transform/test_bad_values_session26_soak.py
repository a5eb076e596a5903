"""Soak findings: numbers no double can hold, and digits int() reads but Amplitude does not.

A 400-digit integer time or $latitude ended in an OverflowError (a TypeError in the
compiled build) that stopped the run; "1_704_164_645" and Arabic-Indic digits were read
as times by ``int()``.
"""

from __future__ import annotations

from typing import Any

import pytest

from mp2amp.errors import Rejection
from mp2amp.models import Resolved
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.geo import coordinate
from mp2amp.transform.timeconv import TimeError, to_epoch_ms

HUGE = 10**400


def transform(props: dict[str, Any]) -> dict[str, Any] | Rejection:
    record = {"event": "e", "properties": {"time": 1700000000, **props}}
    return Transformer(TransformSettings()).event(record, Resolved("user-1", None))


@pytest.mark.parametrize("value", [HUGE, -HUGE, "1" + "0" * 400, 10**20])
def test_a_time_past_any_double_is_out_of_range(value: object) -> None:
    with pytest.raises(TimeError) as caught:
        to_epoch_ms(value)
    assert caught.value.reason == "time_out_of_range"
    assert "far outside any date" in str(caught.value)


@pytest.mark.parametrize("value", ["1_704_164_645", "\u0661\u0667\u0660\u0664\u0661\u0666\u0664\u0666\u0664\u0665"])
def test_digits_amplitude_does_not_read_are_invalid(value: str) -> None:
    with pytest.raises(TimeError) as caught:
        to_epoch_ms(value)
    assert caught.value.reason == "invalid_time"
    assert "ASCII digits" in str(caught.value)


def test_the_largest_plausible_times_still_read() -> None:
    assert to_epoch_ms(1704164645) == 1704164645000
    assert to_epoch_ms("1704164645123") == 1704164645123
    assert to_epoch_ms(" 1704164645 ") == 1704164645000


def test_a_huge_time_is_a_rejection_naming_the_field() -> None:
    out = transform({"time": HUGE})
    assert isinstance(out, Rejection), out
    assert (out.reason, out.field) == ("time_out_of_range", "properties.time")


def test_a_coordinate_past_any_double_is_no_coordinate() -> None:
    assert coordinate(HUGE, 90) is None
    assert coordinate(-HUGE, 180) is None
    assert coordinate(45, 90) == 45.0


def test_a_huge_latitude_is_a_rejection_naming_the_field() -> None:
    out = transform({"$latitude": HUGE, "$longitude": 10})
    assert isinstance(out, Rejection), out
    assert (out.reason, out.field) == ("non_json_value", "properties.$latitude")
