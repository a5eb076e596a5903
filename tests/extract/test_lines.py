"""Line-level parsing: split records rejoined, every bad kind rejected with its location."""

from __future__ import annotations

from mp2amp.extract.lines import LineParser, parse_lines, split_lines
from mp2amp.models import SourceRecord


def parse(text: bytes) -> list[SourceRecord]:
    return list(parse_lines("f.jsonl", split_lines([text])))


def test_chunks_ignore_line_boundaries() -> None:
    body = b'{"a":1}\n{"b":"x\xe2\x80\xa8y"}\n{"c":3}'
    chunked = [body[i:i + 3] for i in range(0, len(body), 3)]
    # U+2028 inside a value must not split the line.
    assert list(split_lines(chunked)) == body.split(b"\n")


def test_split_record_is_rejoined_at_its_first_line() -> None:
    recs = parse(b'{"event":"a"}\n{"event":"b","proper\nties":{"x":1}}\n{"event":"c"}\n')
    assert [(r.line, r.record) for r in recs] == [
        (1, {"event": "a"}), (2, {"event": "b", "properties": {"x": 1}}), (4, {"event": "c"})]


def test_record_split_in_three_and_after_an_unrelated_bad_line() -> None:
    recs = parse(b'garbage\n{"event":\n"b","x"\n:1}\n')
    assert recs[0].rejection is not None and recs[0].rejection.reason == "malformed_json"
    assert recs[0].line == 1
    assert (recs[1].line, recs[1].record) == (2, {"event": "b", "x": 1})
    assert len(recs) == 2


def test_every_malformed_kind_names_file_and_line() -> None:
    recs = parse(b'{"ok":1}\n{"broken": \n[1,2]\n"text"\n42\nnull\n\xff\xfe{}\nterminated early\n')
    kinds = [(r.line, r.rejection.reason if r.rejection else None) for r in recs]
    assert kinds == [(1, None), (2, "malformed_json"), (3, "not_an_object"),
                     (4, "not_an_object"), (5, "not_an_object"), (6, "not_an_object"),
                     (7, "invalid_utf8"), (8, "truncated_file")]
    for rec in recs[1:]:
        assert rec.record is None and rec.rejection is not None
        assert rec.rejection.source == "f.jsonl" and rec.rejection.line == rec.line
        assert "f.jsonl" in rec.rejection.describe()
        assert f"f.jsonl line {rec.line}" in rec.rejection.message  # the message alone too
    assert "line 3" in recs[2].rejection.message  # type: ignore[union-attr]


def test_blank_lines_yield_nothing_but_keep_numbering() -> None:
    recs = parse(b'\n\r\n{"a":1}\r\n  \n{"b":2}')
    assert [(r.line, r.record) for r in recs] == [(3, {"a": 1}), (5, {"b": 2})]


def test_big_integers_and_nan_are_kept_not_rejected() -> None:
    recs = parse(b'{"n":123456789012345678901234567890,"f":NaN}\n')
    assert recs[0].record is not None and recs[0].record["n"] == 123456789012345678901234567890


def test_long_run_of_garbage_is_reported_line_by_line() -> None:
    parser = LineParser("g")
    out = [r for i in range(1, 21) for r in parser.feed(i, b"{{{ nope")]
    out += list(parser.finish())
    assert [r.line for r in out] == list(range(1, 21))
    assert all(r.rejection and r.rejection.reason == "malformed_json" for r in out)


def test_split_record_with_several_json_middle_pieces_is_rejoined() -> None:
    # a string value cut at two places, leaving two numbers alone on their lines
    recs = parse(b'{"event":"a"}\n{"event":"b","street":"Main\n12\n34\nCity"}\n{"event":"c"}\n')
    assert [(r.line, r.record) for r in recs] == [
        (1, {"event": "a"}), (2, {"event": "b", "street": "Main1234City"}), (6, {"event": "c"})]


def test_cut_short_line_before_whole_records_keeps_them() -> None:
    # a truncated record that could still run on: the next lines stand alone once they
    # cannot continue it, each at its own line
    recs = parse(b'{"event":"a","properties":\n{"event":"b"}\n{"event":"c"}\n7\n')
    kinds = [(r.line, r.record, r.rejection.reason if r.rejection else None) for r in recs]
    assert kinds == [(1, None, "malformed_json"), (2, {"event": "b"}, None),
                     (3, {"event": "c"}, None), (4, None, "not_an_object")]


def test_json_piece_waiting_at_the_end_of_input_stands_alone() -> None:
    recs = parse(b'{"event":"a","n":\n{"event":"b"}\n')
    assert [(r.line, r.record) for r in recs] == [(1, None), (2, {"event": "b"})]
    assert recs[0].rejection is not None and recs[0].rejection.reason == "malformed_json"


def test_json_pieces_are_not_held_past_the_join_limit() -> None:
    # a first piece followed by many numbers still inside its string: once the first
    # piece is given up, the numbers waiting after it stand alone, in order
    lines = [b'{"event":"a","s":"x'] + [b"%d" % i for i in range(1, 12)]
    parser = LineParser("g")
    out = [r for n, line in enumerate(lines, start=1) for r in parser.feed(n, line)]
    out += list(parser.finish())
    assert [r.line for r in out] == list(range(1, 13))
    assert out[0].rejection is not None and out[0].rejection.reason == "malformed_json"
    assert all(r.rejection and r.rejection.reason == "not_an_object" for r in out[1:])


def test_split_record_with_nan_and_a_json_middle_piece_is_rejoined() -> None:
    # NaN is read by the standard library only: the join is still found
    recs = parse(b'{"f":NaN,"s":"Main\n12\nCity"}\n')
    assert len(recs) == 1 and recs[0].line == 1 and recs[0].record is not None
    assert recs[0].record["s"] == "Main12City"
