from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.errors import Rejection
from mp2amp.identity.ids import identity_view
from mp2amp.models import SourceRecord
from mp2amp.pipeline.staging import (
    UNKNOWN_TIME,
    read_staged,
    read_staged_identity,
    sort_key,
    stage,
)


def _rec(line: int, t: object) -> SourceRecord:
    return SourceRecord("f.jsonl", line, {"event": "e", "properties": {"time": t}})


def test_sort_key_units_and_junk() -> None:
    # whole seconds sort after every ms of their second (the finer copy of an event first)
    assert sort_key({"properties": {"time": 1_700_000_000}}) == 1_700_000_000.9995
    assert sort_key({"properties": {"time": 1_700_000_000_500}}) == 1_700_000_000.5
    assert sort_key({"properties": {"time": 1_700_000_000_999}}) < 1_700_000_000.9995
    assert sort_key({"properties": {"time": 1_700_000_000_000}}) == 1_700_000_000
    assert sort_key({"properties": {"time": "1700000000"}}) == 1_700_000_000.9995
    assert sort_key({"properties": {"time": 1_700_000_000.25}}) == 1_700_000_000.25
    for junk in (None, "x", True, float("nan"), float("inf")):
        assert sort_key({"properties": {"time": junk}}) == UNKNOWN_TIME
    assert sort_key(None) == UNKNOWN_TIME
    assert sort_key({"properties": []}) == UNKNOWN_TIME


def test_stage_sorts_by_time_keeps_rejections_and_ties_in_order(tmp_path: Path) -> None:
    bad = Rejection("malformed_json", "line is not JSON", None, "f.jsonl", 2)
    records = [_rec(1, 30), SourceRecord("f.jsonl", 2, None, bad), _rec(3, 10), _rec(4, 30),
               _rec(5, 20)]
    dest = tmp_path / "w" / "staged.jsonl"
    assert stage(records, dest) == 5
    out = list(read_staged(dest))
    assert [r.line for r in out] == [2, 3, 5, 1, 4]
    assert out[0].record is None and out[0].rejection == bad
    # the identity pass reads each line's identity view
    assert list(read_staged_identity(dest)) == [identity_view(r.record) for r in out]
    assert not list(tmp_path.glob("w/.stage-*")) and not dest.with_name("staged.jsonl.part").exists()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=50), max_size=60), st.integers(1, 7))
def test_external_sort_equals_in_memory_sort(tmp_path_factory: object, times: list[int],
                                             chunk: int) -> None:
    dest = tmp_path_factory.mktemp("s") / "staged.jsonl"  # type: ignore[attr-defined]
    records = [_rec(i + 1, t) for i, t in enumerate(times)]
    assert stage(records, dest, chunk=chunk) == len(records)
    got = [(r.record["properties"]["time"], r.line) for r in read_staged(dest)]  # type: ignore[index]
    assert got == sorted((t, i + 1) for i, t in enumerate(times))


@given(st.lists(st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\n", b"")),
                max_size=60), st.integers(min_value=1, max_value=200))
@settings(max_examples=150, deadline=None)
def test_staged_ranges_cut_whole_lines_of_at_least_size_bytes(
        tmp_path_factory: object, lines: list[bytes], size: int) -> None:
    from mp2amp.pipeline.staging import read_staged_range, staged_ranges

    path = tmp_path_factory.mktemp("ranges") / "w.jsonl"  # type: ignore[attr-defined]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    expected: list[list[bytes]] = []
    chunk: list[bytes] = []
    chunk_bytes = 0
    for line in lines:
        # a range's lines come back without their identity view (all up to the first tab)
        chunk.append(line[line.find(b"\t") + 1:])
        chunk_bytes += len(line) + 1
        if chunk_bytes >= size:  # the line that reaches ``size`` ends the chunk
            expected.append(chunk)
            chunk = []
            chunk_bytes = 0
    if chunk:
        expected.append(chunk)
    got = [read_staged_range(path, start, end) for start, end in staged_ranges(path, size)]
    assert got == expected


@given(st.lists(st.tuples(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                    st.sampled_from([0.0, -0.0, UNKNOWN_TIME, 1.7e9])),
                          st.integers(min_value=0, max_value=2**63),
                          st.integers(min_value=0, max_value=2**64 - 1),
                          st.integers(min_value=0, max_value=2**63 - 1)), max_size=40))
def test_sort_prefixes_order_like_time_then_arrival(
        keys: list[tuple[float, int, int, int]]) -> None:
    from mp2amp.pipeline.staging import _prefix

    by_prefix = sorted(keys, key=lambda k: _prefix(*k))
    assert [(k + 0.0, o) for k, o, _, _ in by_prefix] == sorted(
        (k + 0.0, o) for k, o, _, _ in keys)


def test_files_staged_before_identity_views_are_still_read(tmp_path: Path) -> None:
    """A work folder staged by an earlier version (lines without the view) resumes."""
    from mp2amp.pipeline.staging import decode_staged, read_staged_range

    record = {"event": "e", "properties": {"time": 5, "distinct_id": "u1", "big": "x" * 50}}
    old = tmp_path / "old.jsonl"
    old.write_bytes(orjson.dumps([5.0, "f.jsonl", 1, record, None]) + b"\n"
                    + orjson.dumps([-1e18, "f.jsonl", 2, None, ["malformed_json", "m", None]])
                    + b"\n")
    assert list(read_staged_identity(old)) == [identity_view(record), None]
    rows = read_staged_range(old, 0, old.stat().st_size)
    assert [orjson.loads(r)[3] for r in rows] == [record, None]
    assert [decode_staged(line).record for line in old.read_bytes().splitlines()] == [
        record, None]
    assert [r.line for r in read_staged(old)] == [1, 2]


WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"


def _staged_both_ways(records: list[SourceRecord], tmp_path: Path) -> tuple[list[Any], list[Any]]:
    """Staged with each record's source line kept, and re-serialized (raw dropped)."""
    import dataclasses

    kept, dumped = tmp_path / "kept.jsonl", tmp_path / "dumped.jsonl"
    stage(records, kept)
    stage([dataclasses.replace(r, raw=None) for r in records], dumped)
    return ([(r.source, r.line, r.record, r.rejection) for r in read_staged(kept)],
            [(r.source, r.line, r.record, r.rejection) for r in read_staged(dumped)])


def test_source_lines_staged_as_they_are_read_back_as_the_same_records(tmp_path: Path) -> None:
    from mp2amp.extract.lines import parse_lines

    lines = [b'{"event":"a","properties":{"time":3,"distinct_id":"u\\t1"}}\r',
             b'\t{ "event" :\t"b", "properties": {"time": 1.5e0, "x": [1, {"y": null}]}}  ',
             b'{"event":"c","properties":{"time":2,"k":1,"k":2}}',  # a repeated key
             b'{"event":"\\u00e9\\ud83d\\ude00","properties":{"time":2}}',
             b'not json', b'[1]']
    records = list(parse_lines("f.jsonl", lines))
    assert sum(r.raw is not None for r in records) == 4
    kept, dumped = _staged_both_ways(records, tmp_path)
    assert kept == dumped
    # the worker's rows too: a kept line's tabs (whitespace) stay in its row
    from mp2amp.pipeline.staging import read_staged_range

    path = tmp_path / "kept.jsonl"
    rows = read_staged_range(path, 0, path.stat().st_size)
    assert [orjson.loads(r)[3] for r in rows] == [r[2] for r in kept]
    assert any(b"\t" in r for r in rows)
    assert [r[2]["event"] if r[2] else None for r in kept] == [None, None, "b", "c", "é😀", "a"]


@pytest.mark.skipif(not WILD.is_dir(), reason="shared/fixtures/wild not present")
def test_every_wild_mixpanel_line_stages_to_the_record_it_was(tmp_path: Path) -> None:
    from mp2amp.extract.files import iter_records

    files = sorted(str(p) for p in WILD.glob("mixpanel-*.jsonl"))
    records = list(iter_records(files))
    assert sum(r.raw is not None for r in records) > 30
    for i, name in enumerate(files):
        mine = [r for r in records if r.source == name]
        kept, dumped = _staged_both_ways(mine, tmp_path / str(i))
        assert kept == dumped and len(kept) == len(mine)


def test_a_range_reads_rows_with_tabs_blank_lines_and_no_last_newline(tmp_path: Path) -> None:
    from mp2amp.pipeline.staging import read_staged_range

    path = tmp_path / "w.jsonl"
    # a view, then a row that keeps the tabs of its source line; a line without a view
    # (an older staged file); a blank line; a last line without its newline
    path.write_bytes(b'{"a":1}\t[1,"s",1,{"k":\t"v"},null]\n[2,"s",2,{},null]\n\n{}\tlast')
    assert read_staged_range(path, 0, path.stat().st_size) == [
        b'[1,"s",1,{"k":\t"v"},null]', b'[2,"s",2,{},null]', b"", b"last"]


def _copy(source: str, line: int, plan: str, ingested: object, raw: bool,
          event: str = "Buy", insert_id: str | None = "abc-0000000001") -> SourceRecord:
    props: dict[str, Any] = {"time": 1_700_000_000_250, "distinct_id": "dev-1", "plan": plan,
                             "mp_processing_time_ms": ingested}
    if insert_id is not None:
        props["$insert_id"] = insert_id
    record = {"event": event, "properties": props}
    return SourceRecord(source, line, record, raw=orjson.dumps(record) if raw else None)


@pytest.mark.parametrize("raw", [True, False])
def test_of_same_time_copies_the_latest_ingested_takes_the_first_copys_place(
        tmp_path: Path, raw: bool) -> None:
    # Mixpanel's reports show the latest ingested of an event's copies; the copy kept is
    # the first staged, so it must be that one (unknown ingestion times go last). Other
    # events of that time keep their arrival order, whatever their ingestion times.
    records = [_copy("f.jsonl", 1, "other", 1_700_000_009_000, raw, event="View",
                     insert_id="view-000000001"),
               _copy("f.jsonl", 2, "free", 1_700_000_002_000, raw),
               _copy("f.jsonl", 3, "none", None, raw),
               _copy("f.jsonl", 4, "tap", 1_700_000_001_000, raw, event="Tap", insert_id=None),
               _copy("f.jsonl", 5, "pro", 1_700_000_090_000, raw),
               _rec(6, 1_700_000_000_100)]
    stage(records, tmp_path / "w.jsonl", chunk=2)  # the external merge too
    assert [r.line for r in read_staged(tmp_path / "w.jsonl")] == [6, 1, 5, 2, 4, 3]
    stage(records, tmp_path / "one.jsonl")
    assert [r.line for r in read_staged(tmp_path / "one.jsonl")] == [6, 1, 5, 2, 4, 3]


def test_copies_need_the_same_event_distinct_id_and_insert_id(tmp_path: Path) -> None:
    records = [_copy("f.jsonl", 1, "a", 1_000, True),
               _copy("f.jsonl", 2, "b", 9_000, True, event="Sell"),
               _copy("f.jsonl", 3, "c", 8_000, True, insert_id="abc-0000000002")]
    stage(records, tmp_path / "w.jsonl")
    assert [r.line for r in read_staged(tmp_path / "w.jsonl")] == [1, 2, 3]


def test_a_merge_of_overlapping_windows_puts_the_latest_ingested_copy_first(
        tmp_path: Path) -> None:
    from mp2amp.pipeline.staged_merge import merge_staged

    stage([_copy("a.jsonl", 1, "free", 1_700_000_002_000, True),
           _copy("a.jsonl", 2, "later", 1_700_000_099_000, True, event="View")], tmp_path / "a")
    stage([_copy("b.jsonl", 1, "pro", 1_700_000_090_000, True),
           _copy("b.jsonl", 2, "none", None, True)], tmp_path / "b")
    assert merge_staged([tmp_path / "a", tmp_path / "b"], tmp_path / "m") == 4
    assert [(r.source, r.line) for r in read_staged(tmp_path / "m")] == [
        ("b.jsonl", 1), ("a.jsonl", 2), ("a.jsonl", 1), ("b.jsonl", 2)]
