"""Session 18, fourth review fixes in extract.jsonarray beyond the pinned tests
(tests/pipeline/test_deep_records_session18_fourth_review.py): a stray top-level '}' is
part of its bad element, a stray quote's line that closes the array ends a whole file,
and a deep element with a bracket left open is skipped as any bad element."""

from __future__ import annotations

import io
import itertools
import json

from mp2amp.extract.jsonarray import TOO_DEEP, iter_array

CAP = 40  # more records than these tiny files hold: the reader looped


def ev(n: int) -> str:
    return json.dumps({"event": "E", "properties": {
        "time": 1700000000 + n, "distinct_id": f"u{n}", "$insert_id": f"i{n}"}})


def read(text: str) -> list[tuple[int, str | None, str]]:
    recs = itertools.islice(iter_array("a.json", io.BytesIO(text.encode())), CAP)
    return [(r.line, None if r.rejection is None else r.rejection.reason,
             "" if r.rejection is None else r.rejection.message) for r in recs]


def reasons(text: str) -> list[str | None]:
    return [reason for _, reason, _ in read(text)]


def test_a_stray_brace_after_a_bad_element_is_one_rejection_and_reading_goes_on() -> None:
    got = read('[{"a":x}}, ' + ev(2) + "]")
    assert [(line, reason) for line, reason, _ in got] == [(1, "malformed_json"), (2, None)]
    assert "'{\"a\":x}}'" in got[0][2]


def test_a_lone_stray_brace_is_a_bad_element_in_a_whole_file() -> None:
    assert reasons("[}]") == ["malformed_json"]
    assert reasons("[" + ev(1) + "}]\n") == [None, "malformed_json"]
    # and without the array's ']' the file is still cut short
    assert reasons("[" + ev(1) + "}") == [None, "truncated_file"]


def test_a_stray_quote_before_a_nested_object_with_a_final_newline_is_no_cut() -> None:
    for end in ("\n", "\r\n", "\n\n  \n"):
        data = "[" + ev(1) + ',{"event":"5" TV","properties":{"time":1,"d":[1]}}]' + end
        assert reasons(data) == [None, "malformed_json"], repr(end)


def test_a_line_that_looks_like_the_arrays_end_mid_file_does_not_hide_a_cut() -> None:
    # the stray quote's line ends in ']' but the file goes on: only its end counts
    data = '[{"event":"5" TV","x":1}]\n' + ev(2)
    assert reasons(data) == ["malformed_json", None, "truncated_file"]


def test_a_cut_string_whose_text_closes_only_its_element_is_still_a_cut() -> None:
    head = "[" + ev(1) + ',\n{"event": "E", "properties": {"a": "'
    for text in ("x}}", "[1]]"):
        assert reasons(head + text) == [None, "truncated_file"], text
    # ended by the file's newline, the string ends its element there: still a cut file
    assert reasons(head + "x}}\n") == [None, "malformed_json", "truncated_file"]


def test_a_deep_element_past_orjsons_depth_with_a_bracket_left_open_is_no_cut() -> None:
    levels = 1100
    bad = ('{"event":"D","properties":{"time":1,"distinct_id":"u2","d":'
           + "[" * levels + "]" * (levels - 1) + "}}")
    got = read("[" + ev(1) + ",\n" + bad + ",\n" + ev(3) + "]\n")
    assert [reason for _, reason, _ in got] == [None, "malformed_json"]
    assert TOO_DEEP in got[1][2]


def test_a_deep_element_with_bad_syntax_and_no_comma_after_it_loses_nothing() -> None:
    # its brackets close it: it ends there, as a valid deep element does
    bad = ('{"event":"D","properties":{"time":1,"distinct_id":"u2","d":'
           + "[" * 1010 + "1 2" + "]" * 1010 + "}}")
    assert reasons("[" + ev(1) + ",\n" + bad + "\n" + ev(3) + "]\n") == [
        None, "malformed_json", None]


def test_a_deep_element_cut_short_is_still_a_cut_file() -> None:
    bad = '{"event":"D","properties":{"d":' + "[" * 1010 + "]" * 600
    assert reasons("[" + ev(1) + ",\n" + bad) == [None, "truncated_file"]
