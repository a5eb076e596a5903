"""Session 26 bad-input soak, extract.jsonarray: JSON lines after an array (`cat
day1.json day2.jsonl`) are read on as JSON lines (they were one 200-character rejection,
the rest of the file lost with exit 0), and a bad element is dead-lettered whole (it was
cut at 200 characters: it could not be fixed and sent again)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mp2amp.extract import jsonarray
from mp2amp.extract.files import SourceFile, iter_file
from mp2amp.extract.jsonarray import iter_array


def ev(n: int, extra: str = "") -> str:
    return json.dumps({"event": f"E{n}", "properties": {
        "time": 1700000000 + n, "distinct_id": f"u{n}", "$insert_id": f"i{n}", "x": extra}},
        ensure_ascii=False)


def read(text: str) -> list[tuple[int, str | None, object]]:
    return [(r.line, None if r.rejection is None else r.rejection.reason,
             r.record["event"] if r.record else r.rejection.record)  # type: ignore[union-attr]
            for r in iter_array("a.json", io.BytesIO(text.encode()))]


def test_json_lines_after_an_array_are_read_on_as_lines() -> None:
    text = "[" + ev(1) + ",\n" + ev(2) + "]\n" + "".join(ev(n) + "\n" for n in range(3, 8))
    assert read(text) == [(n, None, f"E{n}") for n in range(1, 8)]


def test_a_line_that_goes_on_after_the_closing_bracket_is_numbered_past_it() -> None:
    text = "[" + ev(1) + "]" + ev(2) + "\n" + ev(3) + "\n"
    assert read(text) == [(1, None, "E1"), (2, None, "E2"), (3, None, "E3")]


def test_junk_after_an_array_is_rejected_line_by_line_and_the_rest_read() -> None:
    text = "[" + ev(1) + "]\nnot json at all\n" + ev(3) + "\n"
    assert read(text) == [(1, None, "E1"), (2, "malformed_json", "not json at all"),
                          (3, None, "E3")]


def test_the_lines_after_an_array_survive_any_read_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonarray, "CHUNK", 7)  # a multi-byte character cut between reads
    text = "[" + ev(1, "é") + "]\n" + ev(2, "日本") + "\n" + ev(3, "é") + "\n"
    got = list(iter_array("a.json", io.BytesIO(text.encode())))
    assert [(r.line, r.record["properties"]["x"]) for r in got] == [  # type: ignore[index]
        (1, "é"), (2, "日本"), (3, "é")]


def test_a_bad_element_is_dead_lettered_whole() -> None:
    bad = '{"event": "E", "properties": {"p": "' + "v" * 900 + '\x01", "q": x}}'
    got = read("[" + ev(1) + ",\n" + bad + ",\n" + ev(3) + "]")
    assert [(line, reason) for line, reason, _ in got] == [
        (1, None), (2, "malformed_json"), (3, None)]
    assert got[1][2] == bad


def test_through_the_file_reader_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "joined.json"
    path.write_text("[" + ev(1) + ",\n" + ev(2) + "]\n" + ev(3) + "\n" + ev(4) + "\n")
    assert [r.record["event"] for r in iter_file(SourceFile(str(path)))] == [  # type: ignore[index]
        "E1", "E2", "E3", "E4"]
