from __future__ import annotations

import pytest

from mp2amp.identity import clean_id, is_device_like, is_junk_id

AMPLITUDE_BLOCKLIST = [
    "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", '""',
    "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1",
]
MIXPANEL_JUNK = ["", "   ", "[object Object]", "NaN", "(null)", "<null>", "[]", "''",
                 "true", "False", "(not set)", "{{user_id}}", "0000000000000000",
                 "$device:", "$device:undefined", "$device:00000000-0000-0000-0000-000000000000"]


@pytest.mark.parametrize("value", AMPLITUDE_BLOCKLIST + MIXPANEL_JUNK)
def test_blocklisted_and_junk_ids_count_as_absent(value: str) -> None:
    assert is_junk_id(value)
    assert clean_id(value) is None


@pytest.mark.parametrize("value", ["NULL", " Undefined ", "None", "ANONYMOUS", "N/A"])
def test_blocklist_ignores_case_and_surrounding_space(value: str) -> None:
    assert is_junk_id(value)


@pytest.mark.parametrize("value", [None, True, False, float("nan"), float("inf"), [], {}, ["a"],
                                   {"id": "x"}, 0, -1])
def test_non_string_junk(value: object) -> None:
    assert is_junk_id(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [(77473, "77473"), (42, "42"), (12.0, "12"), ("u1", "u1"), ("ab", "ab"),
     ("nullable", "nullable"), ("$device:abc", "$device:abc"), (" padded ", " padded ")],
)
def test_usable_ids_keep_their_text_short_ones_included(value: object, text: str) -> None:
    assert clean_id(value) == text
    assert not is_junk_id(value)


def test_long_ids_are_only_junk_when_blank_or_templates() -> None:
    assert clean_id("x" * 100) == "x" * 100
    assert is_junk_id(" " * 100)
    assert is_junk_id("{{" + "a" * 60 + "}}")


@pytest.mark.parametrize(
    "value",
    ["$device:abc", "849DBA18-C0AB-4A49-9A23-B5434834A238",
     "18b3b6362f3b2-083ef01abede78-17525634-1fa400-18b3b6362f3b2", "5094f5704b9cf2b3"],
)
def test_device_like(value: str) -> None:
    assert is_device_like(value)


@pytest.mark.parametrize(
    "value",
    ["user@example.com", "77473", "609ce8fb4092701c69df9846", "auth0|5f7c8ec7c33c6c004bbafe82",
     "d41d8cd98f00b204e9800998ecf8427e", "charlie"],
)
def test_user_like(value: str) -> None:
    assert not is_device_like(value)
