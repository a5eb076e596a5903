"""The segmentation-expression subset used by ``where`` (export and engage)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.emulators.mixpanel.where import Datetime, WhereError, compile_where

UTC = ZoneInfo("UTC")
PROPS: dict[str, Any] = {
    "plan": "pro", "price": 9.5, "n": 3, "flag": True, "tags": ["a", "b"], "name": 'O"Brien',
    "num_text": "42", "$last_seen": "2024-01-20T10:00:00", "empty": "", "nothing": None,
}


def match(expr: str, props: dict[str, Any] | None = None, tz: ZoneInfo = UTC) -> bool:
    values = PROPS if props is None else props

    def lookup(key: str) -> Any:
        if key == "$time":
            return Datetime(1_705_000_000.0)  # 2024-01-11T19:06:40Z
        return values.get(key)

    return compile_where(expr, tz)(lookup)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('properties["plan"] == "pro"', True),
        ("properties['plan'] != 'pro'", False),
        ('properties["price"] > 9 and properties["price"] <= 9.5', True),
        ('properties["n"] >= 3.0 and properties["n"] < 4', True),
        ('properties["plan"] == "free" or properties["flag"] == true', True),
        ('not properties["plan"] == "pro"', False),
        ('not (properties["missing"] == 1)', True),  # undefined is false, not-undefined is true
        ('properties["missing"] == 1 or properties["missing"] != 1', False),
        ('properties["n"] == "3"', False),  # mismatched types are undefined
        ('properties["n"] != "3"', False),
        ('"b" in properties["tags"]', True),
        ('"ro" in properties["plan"]', True),
        ('properties["name"] == "O\\"Brien"', True),
        ('properties["n"] * 2 + 1 == 7 and properties["n"] % 2 == 1 and -properties["n"] == -3', True),
        ('properties["n"] / 0 == 1', False),
        ('number(properties["num_text"]) == 42 and string(properties["n"]) == "3"', True),
        ('boolean(properties["empty"]) or boolean(properties["nothing"])', False),
        ('defined(properties["plan"]) and not defined(properties["nothing"])', True),
        ('floor(properties["price"]) == 9 and ceil(properties["price"]) == 10 and round(properties["price"]) == 10', True),
        ('properties["$last_seen"] >= "2024-01-20T00:00:00"', True),
        ('properties["$time"] >= datetime("2024-01-11") and properties["$time"] < datetime(1705100000)', True),
        ('event["$time"] > datetime("2024-01-11T19:06:40")', False),
        ('properties["$time"] >= "2024-01-11T19:00:00"', True),
        ('properties["flag"]', True),
        ("floor(1e999) == 1 or round(-1e999) < 0", False),
        ('string(datetime(1e20)) == "x" or string(datetime(0)) == "1970-01-01T00:00:00"', True),
        ('properties["tags"] > 1', False),
    ],
)
def test_expressions(expr: str, expected: bool) -> None:
    assert match(expr) is expected


def test_datetime_strings_are_read_in_the_project_timezone() -> None:
    la = ZoneInfo("America/Los_Angeles")
    # $time is 2024-01-11T11:06:40 in Los Angeles
    assert match('properties["$time"] < datetime("2024-01-11T12:00:00")', tz=la)
    assert not match('properties["$time"] < datetime("2024-01-11T12:00:00")', tz=UTC)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('properties["a"] ~ 1', "unexpected character '~' at character 16"),
        ('user["a"] == 1', "unsupported name 'user' at character 0"),
        ('properties[a] == 1', "properties[...] needs a quoted property name at character 11"),
        ('properties["a"] ==', "unexpected 'end of expression' at character 18"),
        ('(properties["a"] == 1', "expected ')' at character 21, got 'end of expression'"),
        ('properties["a"] == 1 2', "unexpected '2' at character 21"),
        ('event["name"] == "x"', 'event["name"] at character 0 is not supported'),
        ('properties["t"] > datetime("yesterday")', "datetime('yesterday') at character 18"),
        ('properties["a"] == "\\q"', "unsupported escape \\q in string at character 19"),
    ],
)
def test_unsupported_or_invalid_expressions_are_explained(expr: str, message: str) -> None:
    with pytest.raises(WhereError) as err:
        compile_where(expr, UTC)
    assert str(err.value).startswith(message), str(err.value)


ALPHABET = 'properties[]"\'()=!<>+-*/% andornotin0123456789.eE\\xyz$_,'


@given(st.text(alphabet=ALPHABET, max_size=60))
@settings(max_examples=300, deadline=None)
def test_any_input_parses_or_gets_a_where_error(text: str) -> None:
    try:
        fn = compile_where(text, UTC)
    except WhereError as exc:
        assert "character" in str(exc) or "longer than" in str(exc)
        return
    assert fn(lambda key: PROPS.get(key)) in (True, False)
