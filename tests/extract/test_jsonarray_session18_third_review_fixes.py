"""Session 18, third review fixes in extract.jsonarray beyond the pinned tests
(tests/transform/test_session18_third_review.py): a deep element ends with its own
closing bracket, a deep element's bad syntax is named as such, and a file that ends
inside a string is cut short unless the text after a stray quote closes the array."""

from __future__ import annotations

import io
import json
from typing import Any

from mp2amp.extract.jsonarray import TOO_DEEP, iter_array


def ev(n: int) -> str:
    return json.dumps({"event": "E", "properties": {
        "time": 1700000000 + n, "distinct_id": f"u{n}", "$insert_id": f"i{n}"}})


def deep(n: int, levels: int, inner: str = "") -> str:
    """A record whose property ``d`` nests ``levels`` lists (past the stdlib's recursion
    at 1,000: read by orjson)."""
    return (f'{{"event":"E","properties":{{"time":{1700000000 + n},"distinct_id":"u{n}",'
            f'"$insert_id":"i{n}","d":{"[" * levels}{inner}{"]" * levels}}}}}')


def read(text: str) -> list[tuple[int, str | None, Any]]:
    return [(r.line, None if r.rejection is None else r.rejection.reason,
             r.rejection.message if r.rejection else (r.record or {})["properties"]["distinct_id"])
            for r in iter_array("a.json", io.BytesIO(text.encode()))]


def test_two_deep_elements_without_a_comma_between_them_are_both_read() -> None:
    got = read("[" + deep(1, 1000) + "\n" + deep(2, 1000) + "\n" + ev(3) + "]")
    assert [(line, reason, who) for line, reason, who in got] == [
        (1, None, "u1"), (2, None, "u2"), (3, None, "u3")]


def test_a_deep_element_then_a_comma_still_reads_on() -> None:
    got = read("[" + deep(1, 1000) + " ,\n" + ev(2) + "]")
    assert [(line, reason) for line, reason, _ in got] == [(1, None), (2, None)]


def test_a_deep_element_with_bad_syntax_past_the_recursion_is_not_valid_json() -> None:
    got = read("[" + deep(1, 1000, inner="1 2") + ",\n" + ev(2) + "]")
    assert [(line, reason) for line, reason, _ in got] == [(1, "malformed_json"), (2, None)]
    assert "is not valid JSON" in got[0][2] and TOO_DEEP not in got[0][2]


def test_an_element_past_what_json_lines_read_is_still_named_too_deep() -> None:
    got = read("[" + deep(1, 1100) + ",\n" + ev(2) + "]")
    assert [(line, reason) for line, reason, _ in got] == [(1, "malformed_json"), (2, None)]
    assert TOO_DEEP in got[0][2]


def test_a_stray_quote_before_the_arrays_own_bracket_is_a_bad_element_not_a_cut() -> None:
    # the file is whole: the text after the quote closes its element, then the array
    got = read('[' + ev(1) + ', {"event": "E", "properties": {"a": "open}}]')
    assert [(line, reason) for line, reason, _ in got] == [(1, None), (2, "malformed_json")]
    # an escaped quote inside the open string is text, not the quote left open
    got = read('[' + ev(1) + ', {"event": "E", "properties": {"a": "x\\"y}}]')
    assert [(line, reason) for line, reason, _ in got] == [(1, None), (2, "malformed_json")]


def test_a_cut_inside_a_string_whose_brackets_do_not_close_the_array_is_truncated() -> None:
    head = '[' + ev(1) + ',\n{"event": "E", "properties": {"a": "'
    for text in ("see [1]", "a[]", "x]}", "[[{]"):
        got = read(head + text)
        assert [(line, reason) for line, reason, _ in got] == [
            (1, None), (2, "truncated_file")], text
