"""Session 18, fourth review of deep and damaged JSON input (0c6a342, cbe03ff): the JSON
array reader's skip of a bad element, the stray-quote / cut-string judgement, and staging
of records as deep as orjson reads.

Each xfail pins a defect the review confirmed; the reason says what is wrong."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.extract.jsonarray import iter_array
from mp2amp.models import SourceRecord
from mp2amp.pipeline.staging import read_staged, stage

CAP = 40  # a reader that yields this many records from these tiny files never ends


def ev(n: int, **props: Any) -> str:
    return json.dumps({"event": "E", "properties": {
        "time": 1700000000 + n, "distinct_id": f"u{n}", "$insert_id": f"ins-{n}", **props}})


def reasons(data: str) -> list[str | None]:
    recs = itertools.islice(iter_array("a.json", io.BytesIO(data.encode())), CAP)
    return [None if r.rejection is None else r.rejection.reason for r in recs]


# --- a stray '}' between elements: skip_element makes no progress ------------------------


@pytest.mark.parametrize("data", [
    # one line, an extra brace after an element (a hand-edited or joined file)
    '[{"event":"A","properties":{"time":1}}},{"event":"B","properties":{"time":2}}]',
    # pretty-printed, the last element's event name holds an unescaped inch mark: its
    # string ends with the line, the rest of the element is read on as elements
    json.dumps([json.loads(ev(1)), {"event": "X", "p": 1}], indent=2)
    .replace('"X"', '"5" TV"') + "\n",
], ids=["extra-brace", "pretty-stray-quote"])
def test_a_stray_closing_brace_ends_and_reads_on(data: str) -> None:
    got = reasons(data)
    assert len(got) < CAP, f"endless: {got[:6]}..."
    assert got[0] is None and "truncated_file" not in got


# --- a whole one-line array whose last element has a stray quote --------------------------


def test_a_stray_quote_before_a_nested_object_in_the_last_element_is_no_cut() -> None:
    # README: "a file whose last element has a stray quote, the text after which closes
    # the element and the array, is whole: that element is malformed_json" (the code
    # before 0c6a342 said so for this file; now it is a cut file to restore)
    data = "[" + ev(1) + ',{"event":"5" TV","properties":{"time":1,"distinct_id":"u"}}]'
    assert reasons(data) == [None, "malformed_json"]


def test_a_stray_quote_in_a_flat_last_element_is_no_cut() -> None:
    """The case the fix had in mind (regression guard: no trailing newline)."""
    assert reasons("[" + ev(1) + ',{"event":"5" TV","x":1}]') == [None, "malformed_json"]


def test_a_stray_quote_in_the_last_element_of_a_file_ending_in_a_newline_is_no_cut() -> None:
    # the same whole file as above with the newline nearly every file ends with
    assert reasons("[" + ev(1) + ',{"event":"5" TV","x":1}]\n') == [None, "malformed_json"]


# --- a deep element with a bracket left open ------------------------------------------------


def test_a_deep_element_with_a_bracket_left_open_is_not_a_cut_file() -> None:
    # past the stdlib decoder's recursion, within orjson's 1,024 levels: bad syntax
    levels = 1010
    bad = ('{"event":"D","properties":{"time":1700000002,"distinct_id":"u2","d":'
           + "[" * levels + "]" * (levels - 1) + "}}")
    data = "[" + ev(1) + ",\n" + bad + ",\n" + ev(3) + "]\n"
    got = reasons(data)
    # the same file with a shallow element left open: one malformed_json gives up the
    # rest (README: "a bracket left open inside it ... gives up the rest of the file")
    shallow = bad.replace("[" * levels + "]" * (levels - 1), "[" * 9 + "]" * 8)
    assert reasons("[" + ev(1) + ",\n" + shallow + ",\n" + ev(3) + "]\n") == [
        None, "malformed_json"]
    assert "truncated_file" not in got, got
    assert got == [None, "malformed_json"]


# --- staging: brackets in strings are not depth ---------------------------------------------


def test_a_long_line_of_bracket_text_is_staged_as_a_record_not_too_deep(
        tmp_path: Path) -> None:
    """fills_orjson_depth's first filter counts '[' and '{' anywhere, strings included: a
    property holding "[[[[...]]]]" text passes it and must be cleared by the parse."""
    raws = [orjson.dumps({"event": "E", "properties": {
        "time": 1700000000 + n, "distinct_id": f"u{n}", "text": "[" * 3000 + "]" * 3000,
        "obj": "{" * 1500}}) for n in (1, 2)]
    recs = [SourceRecord("day.jsonl", n, orjson.loads(raw), None, raw)
            for n, raw in enumerate(raws, start=1)]
    dest = tmp_path / "staged.jsonl"
    assert stage(recs, dest) == 2
    back = list(read_staged(dest))
    assert [r.rejection for r in back] == [None, None]
    assert [r.record["properties"]["text"] for r in back if r.record is not None] == [
        "[" * 3000 + "]" * 3000] * 2
