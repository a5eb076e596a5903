"""Records split in up to five pieces, whose middle pieces may parse by themselves or
together (session 18, second review): the record comes back whole at its first line, a bad
line before it stays one rejection, and an unframed stream cut inside it is not taken as
whole."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.extract.lines import LineParser, parse_lines


def record(i: int, **extra: Any) -> bytes:
    props = {"time": 1704067200000 + i, "$insert_id": f"id-{i}", "distinct_id": f"user-{i}",
             **extra}
    return json.dumps({"event": "Viewed", "properties": props}, separators=(",", ":"),
                      ensure_ascii=False).encode()


SPLIT = record(1, address="Street 12 City")
_PROPS = SPLIT.index(b"{", 1)
_KEY = SPLIT.index(b'"$insert_id"')
# cut so that the two middle pieces together are the whole properties object
PIECES = [SPLIT[:_PROPS], SPLIT[_PROPS:_KEY + 12], SPLIT[_KEY + 12:-1], b"}"]
BROKEN = b'{"broken":'  # a bad line that is the start of JSON: the record nests into it


def got(lines: list[bytes]) -> list[tuple[int, Any]]:
    return [(r.line, r.record if r.record is not None else r.rejection.reason)  # type: ignore[union-attr]
            for r in parse_lines("f", lines)]


def test_split_record_behind_a_bad_line_that_looks_unfinished_is_kept() -> None:
    # BROKEN + the record is still unfinished JSON, so the record's own join waits for
    # the line after it; once that line ends BROKEN's chance, the record is taken.
    lines = [record(0), BROKEN, SPLIT[:_PROPS], SPLIT[_PROPS:], record(2)]
    assert got(lines) == [(1, json.loads(record(0))), (2, "malformed_json"),
                          (3, json.loads(SPLIT)), (5, json.loads(record(2)))]


def test_split_record_behind_a_bad_line_at_the_end_of_the_input_is_kept() -> None:
    lines = [record(0), BROKEN, *PIECES]
    assert got(lines) == [(1, json.loads(record(0))), (2, "malformed_json"),
                          (3, json.loads(SPLIT))]


def test_two_split_records_behind_a_bad_line_are_both_kept() -> None:
    other = record(2, note="a b")
    cut = other.index(b"a b")
    lines = [BROKEN, *PIECES, other[:cut], other[cut:]]
    assert got(lines) == [(1, "malformed_json"), (2, json.loads(SPLIT)),
                          (6, json.loads(other))]


def test_the_tail_is_no_whole_record_while_the_first_piece_runs_on_through_it() -> None:
    parser = LineParser("f")
    for lineno, piece in enumerate(PIECES[:2], start=1):
        assert list(parser.feed(lineno, piece)) == []
    # the two middle pieces make a whole object, but the record is still open
    assert not parser.completes(PIECES[2])
    assert parser.completes(PIECES[2] + b"}")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.builds(lambda i, text, number: record(i, note=text, n=number,
                                                         nested={"a": [number, text]}),
                          st.integers(0, 10**6), st.text(max_size=10),
                          st.integers(-10**12, 10**12)), min_size=2, max_size=4),
       st.data())
def test_any_record_cut_in_two_to_five_pieces_comes_back_whole(
        lines: list[bytes], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(lines) - 1))
    rec = lines[k]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(rec) - 1), min_size=1, max_size=4)))
    pieces = [rec[a:b] for a, b in zip([0, *cuts], [*cuts, len(rec)], strict=True)]
    if any(not p.strip() for p in pieces):
        return  # a blank line carries nothing (its bytes would be whitespace only)
    fed = [*lines[:k], *pieces, *lines[k + 1:]]
    want_lines = [i + 1 if i <= k else i + len(pieces) for i in range(len(lines))]
    assert [(r.line, r.record) for r in parse_lines("p", fed)] == list(
        zip(want_lines, [json.loads(x) for x in lines], strict=True))
