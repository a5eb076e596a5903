"""Review of the overlap merge on staged files: mixed time units, staged files of older
versions (no identity view), raw source lines with tabs."""

from __future__ import annotations

from pathlib import Path

import orjson

from mp2amp.ledger import WindowRow
from mp2amp.models import SourceRecord
from mp2amp.pipeline.overlaps import overlapping_groups
from mp2amp.pipeline.staged_merge import merge_staged
from mp2amp.pipeline.staging import (
    read_staged,
    read_staged_identity,
    read_staged_range,
    stage,
    staged_key_range,
    staged_ranges,
)


def _record(t: float | str, n: int) -> dict[str, object]:
    return {"event": f"e{n}", "properties": {"time": t, "distinct_id": f"d{n % 2}",
                                             "$insert_id": f"i{n}"}}


def _stage(path: Path, source: str, times: list[float | str], raw: bool = False) -> WindowRow:
    recs = []
    for n, t in enumerate(times, start=1):
        rec = _record(t, n)
        recs.append(SourceRecord(source, n, rec, None,
                                 raw=orjson.dumps(rec).replace(b":", b":\t") if raw else None))
    count = stage(recs, path)
    return WindowRow(source, int(source[1:]), "file", {}, "extracted", str(path), count, {})


def test_seconds_and_milliseconds_files_overlap_and_merge_in_one_time_order(
        tmp_path: Path) -> None:
    a = _stage(tmp_path / "a", "w0", [1_700_000_100, 1_700_000_300])
    b = _stage(tmp_path / "b", "w1", [1_700_000_200_000, "1700000400000"], raw=True)
    c = _stage(tmp_path / "c", "w2", [1_700_000_500.5])
    assert staged_key_range(Path(str(b.staged_path))) == (1_700_000_200.0, 1_700_000_400.0)
    assert [[w.window_id for w in g] for g in overlapping_groups([a, b, c])] == [["w0", "w1"]]
    dest = tmp_path / "m"
    assert merge_staged([Path(str(a.staged_path)), Path(str(b.staged_path))], dest) == 4
    rows = list(read_staged(dest))
    assert [(r.source, r.line) for r in rows] == [("w0", 1), ("w1", 1), ("w0", 2), ("w1", 2)]
    assert rows[1].record == _record(1_700_000_200_000, 1)  # the record as the source had it
    views = list(read_staged_identity(dest))
    assert len(views) == 4 and all(v is not None for v in views)
    raw_rows = [orjson.loads(r) for s, e in staged_ranges(dest, 64)
                for r in read_staged_range(dest, s, e)]
    assert [r[1] for r in raw_rows] == ["w0", "w1", "w0", "w1"]


def test_a_staged_file_of_an_older_version_merges_with_a_new_one(tmp_path: Path) -> None:
    new = _stage(tmp_path / "new", "w0", [100, 300])
    old_path = tmp_path / "old"  # no identity view: only the row
    old_path.write_bytes(b"".join(
        orjson.dumps([t, "w1", n, _record(t, n), None]) + b"\n"
        for n, t in enumerate([50, 200, 400], start=1)))
    old = WindowRow("w1", 1, "file", {}, "extracted", str(old_path), 3, {})
    assert staged_key_range(old_path) == (50.0, 400.0)
    assert len(overlapping_groups([new, old])) == 1
    dest = tmp_path / "m"
    assert merge_staged([Path(str(new.staged_path)), old_path], dest) == 5
    assert [(r.source, r.line) for r in read_staged(dest)] == [
        ("w1", 1), ("w0", 1), ("w1", 2), ("w0", 2), ("w1", 3)]
    views = list(read_staged_identity(dest))
    assert len(views) == 5 and all(v is not None for v in views)
    rows = [orjson.loads(r) for s, e in staged_ranges(dest, 1 << 20)
            for r in read_staged_range(dest, s, e)]
    # the new file's whole seconds sort at .9995 (session 14); the old file's as written
    assert [r[0] for r in rows] == [50, 100.9995, 200, 300.9995, 400]
