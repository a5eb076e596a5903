"""Session 21: staging and the merge of overlapping windows keep memory flat however many
huge lines a window has. Staging cut a sorted run at 8 MB, so each 10 MB line was a run
of its own, and the merge of the runs held a line of each: the whole window (25 such
lines peaked migrate at 351 MB, 50 at 570). Big lines now wait in a side file, a stub
holding their place in the sort (``staging._Stash``); a merge of staged windows leaves
them in their files (``staged_merge._Far``), also in a time's group of lines."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import amplitude, stored_counts
from test_huge_input_session21_review import _event, _migrate_peak

from mp2amp.errors import Rejection
from mp2amp.models import SourceRecord
from mp2amp.pipeline import staged_merge, staging
from mp2amp.pipeline.staged_merge import merge_staged
from mp2amp.pipeline.staged_names import sort_runs_folder
from mp2amp.pipeline.staging import read_staged, stage

T = 1_700_000_000

# stage (or merge) in a fresh process; print its peak RSS (MB) before and after
_STAGE = """
import resource, sys
from pathlib import Path
import orjson
from mp2amp.extract.files import SourceFile, iter_file
from mp2amp.pipeline.staged_merge import merge_staged
from mp2amp.pipeline.staging import stage
what, n, size, same, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
T = int(sys.argv[6])
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
def write(path, n, first):
    with path.open("wb") as f:
        for i in range(first, first + n):
            f.write(orjson.dumps({"event": "A", "properties": {
                "time": T + (0 if same == "same" else n - i), "distinct_id": "u",
                "$insert_id": f"i{i}", "blob": "x" * size}}) + b"\\n")
if what == "stage":
    write(tmp / "day.jsonl", n, 0)
    before = peak()
    stage(iter_file(SourceFile(str(tmp / "day.jsonl"))), tmp / "staged")
else:  # two staged windows of one time, merged
    for name, first in (("a", 0), ("b", n)):
        write(tmp / name, n, first)
        stage(iter_file(SourceFile(str(tmp / name))), tmp / (name + ".staged"))
        (tmp / name).unlink()
    before = peak()
    merge_staged([tmp / "a.staged", tmp / "b.staged"], tmp / "merged")
print(before, peak())
"""


def _peak_growth(tmp: Path, what: str, n: int, size: int, same: str = "") -> int:
    tmp.mkdir()
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", _STAGE, what, str(n),
                           str(size), same, str(tmp), str(T)],
                          capture_output=True, text=True, timeout=240, check=True)
    before, after = map(int, proc.stdout.split())
    return after - before


def test_staging_memory_does_not_grow_with_the_number_of_huge_lines(tmp_path: Path) -> None:
    few = _peak_growth(tmp_path / "few", "stage", 3, 9_000_000)
    many = _peak_growth(tmp_path / "many", "stage", 24, 9_000_000)
    # each 9 MB line was a sorted run, and the merge held one line of each (~200 MB more)
    assert many - few < 40, (few, many)


def test_a_merge_of_a_time_of_huge_lines_holds_none_whole(tmp_path: Path) -> None:
    few = _peak_growth(tmp_path / "few", "merge", 2, 5_000_000, "same")
    many = _peak_growth(tmp_path / "many", "merge", 12, 5_000_000, "same")
    # the 24 lines of one time were held together, each decoded too (~250 MB more)
    assert many - few < 40, (few, many)


def test_huge_lines_keep_migrate_memory_flat(tmp_path: Path) -> None:
    n = 24  # 10 MB records, two with a NaN (non_json_value rejects: staged the other way)
    events = tmp_path / "events"
    events.mkdir()
    with (events / "day.jsonl").open("wb") as f:
        for i in range(n):
            line = orjson.dumps(_event("A", n - i, blob="x" * 10_000_000, bad=1))
            f.write((line.replace(b'"bad":1', b'"bad":NaN') if i % 12 == 5 else line) + b"\n")
    with amplitude(tmp_path / "amp") as url:
        code, peak_mb, stderr, result = _migrate_peak(tmp_path, events, url)
        stored = stored_counts(url)
    assert code == 0, stderr[-2000:]
    assert result["totals"]["sent"] == n - 2 == len(stored)
    assert result["totals"]["rejected"] == 2
    # 5 such lines peak at ~140 MB here; 24 peaked at ~340 before (a run each)
    assert peak_mb < 200, f"peak RSS {peak_mb} MB for {n} lines of 10 MB"


def _records() -> list[SourceRecord]:
    """Ordinary lines: copies of events at shared times, exact duplicates (ties by content
    broken by their lines), rejected lines (renumbered), lines staged from their text."""
    rng = random.Random(5)
    recs: list[SourceRecord] = []
    for i in range(1, 3001):
        props: dict[str, Any] = {
            "time": T + rng.randrange(50), "distinct_id": f"u{i % 7}",
            "$insert_id": f"id{rng.randrange(400)}", "page": "x" * rng.randrange(300),
            "mp_processing_time_ms": rng.randrange(1, 10**12)}
        rec = {"event": "View", "properties": props}
        if i % 50 == 0:
            recs.append(SourceRecord("day", i, None, Rejection(
                "invalid_json", f"day line {i}: bad", None, "day", i, "{oops")))
        elif i % 13 == 0:
            recs.append(SourceRecord("day", i, recs[-1].record))
        else:
            recs.append(SourceRecord("day", i, rec, None, orjson.dumps(rec) if i % 2 else None))
    return recs


@pytest.mark.parametrize(("by_content", "keep_lines"),
                         [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("chunk_bytes", [staging.CHUNK_BYTES, 40_000])
def test_lines_staged_through_stubs_stage_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_content: bool, keep_lines: bool,
        chunk_bytes: int) -> None:
    recs = _records()
    near = stage(recs, tmp_path / "near", chunk_bytes=chunk_bytes, by_content=by_content,
                 keep_lines=keep_lines)
    monkeypatch.setattr(staging, "BIG_LINE", 0)  # every line a stub
    far = stage(recs, tmp_path / "far", chunk_bytes=chunk_bytes, by_content=by_content,
                keep_lines=keep_lines)
    assert far.digest == near.digest
    assert (tmp_path / "far").read_bytes() == (tmp_path / "near").read_bytes()


def test_lines_merged_from_their_files_merge_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = _records()
    paths = []
    for n in range(3):  # three overlapping windows, with copies across them
        paths.append(tmp_path / f"w{n}")
        stage([SourceRecord(f"w{n}", r.line, r.record, r.rejection, r.raw)
               for r in recs[n::3]], paths[-1])
    rank = {"w0": 0, "w1": 1, "w2": 2}
    sums: list[int] = []
    lines = merge_staged(paths, tmp_path / "near", rank, sums)
    monkeypatch.setattr(staged_merge, "BIG_LINE", 0)  # every line left in its file
    assert merge_staged(paths, tmp_path / "far", rank, sums) == lines == len(recs)
    assert sums[0] == sums[1]
    assert (tmp_path / "far").read_bytes() == (tmp_path / "near").read_bytes()
    assert len(list(read_staged(tmp_path / "far"))) == len(recs)


def test_a_killed_stagings_side_file_is_known_as_a_leftover(tmp_path: Path) -> None:
    runs = tmp_path / ".stage-abcd1234"
    runs.mkdir()
    (runs / "run-00000").write_bytes(b"")
    (runs / staging._Stash.NAME).write_bytes(b"")  # removed with the runs (staged_names)
    assert sort_runs_folder(runs)


@pytest.mark.parametrize("big_line", [0, 400])
@pytest.mark.parametrize("source", ['day "one", \\"2\\"', "export:2024-01-02", "c,\\\\"])
def test_a_stub_sorts_by_its_lines_head_whatever_the_source(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big_line: int, source: str) -> None:
    """By content, the same record written with other spacing on both sides of
    ``BIG_LINE`` (one stubbed, one not) stages as without stubs: a stub carries its line's
    head (view, time, source, line), found past a source holding quotes, backslashes and
    commas; a NaN (the standard library's rows) too."""
    recs: list[SourceRecord] = []
    for i in range(1, 301):
        props: dict[str, Any] = {"time": T + i % 5, "distinct_id": f"u{i % 3}",
                                 "page": "y" * (i % 9) * 50}
        if i % 37 == 0:
            props["bad"] = float("nan")
        rec = {"event": "View", "properties": props}
        raw = orjson.dumps(rec, option=orjson.OPT_INDENT_2) if i % 2 else None
        if i % 37 == 0:
            raw = None  # NaN: staged through the standard library's writer
        recs.append(SourceRecord(source, i, rec, None, raw))
    for keep_lines in (False, True):
        monkeypatch.setattr(staging, "BIG_LINE", 1 << 30)
        near = stage(recs, tmp_path / f"near{keep_lines}", by_content=True,
                     keep_lines=keep_lines)
        monkeypatch.setattr(staging, "BIG_LINE", big_line)
        far = stage(recs, tmp_path / f"far{keep_lines}", by_content=True,
                    keep_lines=keep_lines)
        assert far.digest == near.digest
        assert (tmp_path / f"far{keep_lines}").read_bytes() == \
            (tmp_path / f"near{keep_lines}").read_bytes()
