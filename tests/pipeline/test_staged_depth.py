"""A record as deep as orjson reads (1,024 levels) cannot sit inside a staged row, one
level deeper: staging rejects it as ``too_deep`` (its text kept for the dead letter), and
a row an earlier mp2amp staged so reads back as that rejection, not a RecursionError."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mp2amp.models import SourceRecord
from mp2amp.pipeline import transform_worker
from mp2amp.pipeline.staged_depth import fills_orjson_depth
from mp2amp.pipeline.staging import decode_staged, read_staged, read_staged_identity, stage


def text(n: int, levels: int) -> bytes:
    """A record ``levels + 2`` levels deep (the record, its properties, then ``d``)."""
    return (b'{"event":"E","properties":{"time":%d,"distinct_id":"u%d","d":%s%s}}'
            % (1700000000 + n, n, b"[" * levels, b"]" * levels))


def raw_record(n: int, levels: int) -> SourceRecord:
    raw = text(n, levels)
    return SourceRecord("day.jsonl", n, orjson.loads(raw), None, raw)


def test_only_a_record_of_orjsons_full_depth_fills_it() -> None:
    assert fills_orjson_depth(text(1, 1022))
    assert not fills_orjson_depth(text(1, 1021))
    assert not fills_orjson_depth(b'{"a":[' + b"[1]," * 2000 + b'[1]]}')  # wide, not deep


def test_staging_rejects_a_record_as_deep_as_orjson_reads_and_keeps_its_text(
        tmp_path: Path) -> None:
    dest = tmp_path / "staged.jsonl"
    assert stage([raw_record(1, 1022), raw_record(2, 1021)], dest) == 2
    rows = {rec.line: rec for rec in read_staged(dest)}
    rej = rows[1].rejection
    assert rows[1].record is None and rej is not None and rej.reason == "too_deep"
    assert "day.jsonl line 1" in rej.message and "flatten it" in rej.message
    assert rej.record == text(1, 1022).decode()  # the dead letter holds the line as read
    # one level less is a record like any other (the transform names its deep property)
    kept = rows[2].record
    assert rows[2].rejection is None and kept is not None
    assert kept["properties"]["distinct_id"] == "u2"
    # the identity pass has nothing to read of the rejected one (staged first: its time)
    views = list(read_staged_identity(dest))
    assert views[0] is None and views[1] is not None


def old_staged_row(n: int, levels: int) -> bytes:
    """A row as staged before the fix: the record's text as is, one level past orjson."""
    return b'[1700000001.9995,"day.jsonl",%d,%s,null]\n' % (n, text(n, levels))


def test_a_row_an_earlier_mp2amp_staged_too_deep_reads_back_as_its_rejection() -> None:
    rec = decode_staged(b'{"user_id":null}\t' + old_staged_row(7, 1022))
    assert rec.source == "day.jsonl" and rec.line == 7 and rec.record is None
    assert rec.rejection is not None and rec.rejection.reason == "too_deep"
    assert rec.rejection.record == text(7, 1022).decode()
    # the transform worker's reader too (it used to let the RecursionError out)
    row = transform_worker._load_row(old_staged_row(7, 1022))
    assert row[:4] == [1700000001.9995, "day.jsonl", 7, None] and row[4][0] == "too_deep"


def test_a_damaged_row_too_deep_to_read_still_stops_the_run_naming_it() -> None:
    with pytest.raises(transform_worker._UnreadableRow):
        transform_worker._load_row(b"[" * 1100 + b"]" * 1100)
