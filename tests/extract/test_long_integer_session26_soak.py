"""Soak finding: a JSON line with an integer longer than Python reads (4300 digits) was
reported as ``malformed_json`` ("not valid JSON") though it is valid JSON. It is a
``non_json_value`` naming the field, kept whole, and its neighbours are read on."""

from __future__ import annotations

import json
from pathlib import Path

from mp2amp.extract.files import SourceFile, iter_file
from mp2amp.extract.lines import LineParser


def ev(n: int) -> str:
    return json.dumps({"event": f"E{n}", "properties": {
        "time": 1700000000 + n, "distinct_id": f"u{n}", "$insert_id": f"i{n}"}})


def long_line(digits: int, where: str) -> str:
    number = "9" * digits
    if where == "props":
        return ('{"event": "Big", "properties": {"time": 1700000000, "distinct_id": "u", '
                f'"n": {number}}}}}')
    return ('{"event": "Big", "properties": {"time": 1700000000, "distinct_id": "u", '
            f'"list": [1, {{"deep": -{number}}}]}}}}')


def test_a_long_integer_is_a_non_json_value_naming_the_field() -> None:
    line = long_line(5000, "props")
    (record,) = LineParser("f.jsonl").feed(7, line.encode())
    rej = record.rejection
    assert rej is not None and record.record is None
    assert (rej.reason, rej.field, rej.line) == ("non_json_value", "properties.n", 7)
    assert "5,000 digits" in rej.message and "f.jsonl line 7" in rej.message
    assert rej.record == line  # whole: it can be fixed and sent again


def test_the_field_inside_lists_is_named() -> None:
    (record,) = LineParser("f.jsonl").feed(1, long_line(4500, "list").encode())
    assert record.rejection is not None
    assert record.rejection.field == "properties.list[1].deep"


def test_neighbours_are_read_and_the_line_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text("\n".join([ev(1), long_line(6000, "props"), ev(3)]) + "\n")
    got = [(r.line, r.rejection.reason if r.rejection else r.record["event"])  # type: ignore[index]
           for r in iter_file(SourceFile(str(path)))]
    assert got == [(1, "E1"), (2, "non_json_value"), (3, "E3")]


def test_an_integer_python_reads_is_still_a_record() -> None:
    (record,) = LineParser("f.jsonl").feed(1, long_line(4000, "props").encode())
    assert record.rejection is None and record.record is not None


def test_in_a_json_array_too(tmp_path: Path) -> None:
    path = tmp_path / "day.json"
    path.write_text("[" + ",\n".join([ev(1), long_line(5000, "list"), ev(3)]) + "]\n")
    got = list(iter_file(SourceFile(str(path))))
    assert [(r.line, r.rejection.reason if r.rejection else r.record["event"])  # type: ignore[index]
            for r in got] == [(1, "E1"), (2, "non_json_value"), (3, "E3")]
    rej = got[1].rejection
    assert rej is not None and rej.field == "properties.list[1].deep"
    assert "element 2" in rej.message and rej.record == long_line(5000, "list")


def test_in_pretty_printed_objects_too(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    big = json.loads(ev(1))
    path.write_text(json.dumps(big, indent=2).replace('"i1"', "9" * 4400) + "\n"
                    + json.dumps(json.loads(ev(2)), indent=2) + "\n")
    got = list(iter_file(SourceFile(str(path))))
    assert [(r.line, r.rejection.reason if r.rejection else r.record["event"])  # type: ignore[index]
            for r in got] == [(1, "non_json_value"), (9, "E2")]
    assert got[0].rejection.field == "properties.$insert_id"  # type: ignore[union-attr]
