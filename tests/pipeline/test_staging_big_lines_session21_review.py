"""Review of 556269e (big staged lines wait in a side file, ``staging._Stash``; a merge
leaves them in their files, ``staged_merge._Far``): the claim is that staged and merged
output is byte-identical to the code before it for every input. Checked differentially:
the same records staged (merged) with ``BIG_LINE`` set past every line, which takes the
old path exactly (no stub, no ``_Far``), and with the real one.

Found: in an Export API day (ties by content) the stub sorts before every ordinary line of
its prefix (its NUL), where the old code ordered them by their rows (view, key, source,
line): the same record written twice with other spacing or escapes, once under 64 KB and
once over, stages in another order than before (other bytes, other line numbers)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from mp2amp.extract.files import SourceFile, iter_file
from mp2amp.extract.lines import parse_lines, split_lines
from mp2amp.models import SourceRecord
from mp2amp.pipeline import staged_merge, staging
from mp2amp.pipeline.staged_merge import merge_staged
from mp2amp.pipeline.staged_names import remove_leftovers
from mp2amp.pipeline.staging import read_staged, stage

T = 1_700_000_000
B = staging.BIG_LINE
HUGE = 1 << 40  # past every line: the code before 556269e


def _staged_both(recs: list[SourceRecord], tmp: Path, monkeypatch: pytest.MonkeyPatch,
                 **kw: object) -> tuple[bytes, str, bytes, str]:
    new = stage(recs, tmp / "new", **kw)  # type: ignore[arg-type]
    with monkeypatch.context() as m:
        m.setattr(staging, "BIG_LINE", HUGE)
        old = stage(recs, tmp / "old", **kw)  # type: ignore[arg-type]
    assert int(new) == int(old)
    return (tmp / "old").read_bytes(), old.digest, (tmp / "new").read_bytes(), new.digest


# Fixed (was xfail): a stub's NUL, right after its prefix, sorted it before every line
# of that prefix; a stub now carries its line's head.
@pytest.mark.parametrize("keep_lines", [False, True])
def test_export_day_same_record_spaced_across_64kb_stages_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_lines: bool) -> None:
    rec = {"event": "A", "properties": {"time": T, "distinct_id": "u", "blob": "x" * 65_000}}
    compact = orjson.dumps(rec)  # its staged line is under 64 KB
    spaced = json.dumps(rec).encode()[:-1] + b" " * 600 + b"}"  # the same, over 64 KB
    body = compact + b"\n" + spaced + b"\n"
    recs = list(parse_lines("export:2024-01-01", split_lines([body])))
    assert [r.record for r in recs] == [rec, rec]
    assert len(compact) + 200 < B <= len(spaced) + 81  # a staged line's prefix: 81 bytes
    old, old_digest, new, new_digest = _staged_both(
        recs, tmp_path, monkeypatch, by_content=True, keep_lines=keep_lines)
    assert new_digest == old_digest
    # before: (view, key, source, line) ordered them: line 1 (compact) first
    assert [len(line) for line in new.splitlines()] == [len(line) for line in old.splitlines()]
    assert new == old


# --- guards: what stages and merges as before -------------------------------------------

def _line(rng: random.Random) -> bytes:
    props: dict[str, object] = {"time": T + rng.randrange(3) + rng.choice([0, 0.5]),
                                "distinct_id": f"u{rng.randrange(3)}"}
    if rng.random() < 0.6:
        props["$insert_id"] = f"i{rng.randrange(3)}"
    if rng.random() < 0.5:
        props["mp_processing_time_ms"] = (T + rng.randrange(4)) * 1000
    target = rng.choice([100, B - 300, B - 160, B - 120, B - 90, B, 2 * B])
    ch = rng.choice(["x", "\u00e9", "\u20ac", "\u0000"])
    props["blob"] = ch * (target // (6 if ch == "\u0000" else len(ch.encode())))
    props["zlast"] = "y" * rng.randrange(3)  # the sort key's fields after the big one
    line = orjson.dumps({"event": rng.choice(["A", "B"]), "properties": props})
    v = rng.random()
    if v < 0.1:
        line = line[:rng.randrange(len(line))]  # malformed, kept as its text
    elif v < 0.15:
        line = b'"' + b"z" * rng.choice([B - 150, B - 140, 10]) + b'"'  # not an object
    return line + (b"\r" if rng.random() < 0.1 else b"")


def _lines(rng: random.Random, n: int) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(n):
        out.append(rng.choice(out) if out and rng.random() < 0.25 else _line(rng))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_random_big_and_small_lines_stage_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = random.Random(seed)
    body = b"\n".join(_lines(rng, 30)) + b"\n"
    for src, modes in (("day.jsonl", [{}]),
                       ("export:2024-01-01", [{"by_content": True},
                                              {"by_content": True, "keep_lines": True}])):
        recs = list(parse_lines(src, split_lines([body])))
        for kw in modes:
            for chunk_bytes in (staging.CHUNK_BYTES, 150_000):
                old, od, new, nd = _staged_both(recs, tmp_path, monkeypatch,
                                                chunk_bytes=chunk_bytes, **kw)
                assert (new, nd) == (old, od), (src, kw, chunk_bytes)


@pytest.mark.parametrize("seed", range(4))
def test_random_windows_with_big_lines_merge_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = random.Random(100 + seed)
    shared = _lines(rng, 20)
    paths = []
    for i in range(3):
        f = tmp_path / f"in{i}.jsonl"
        f.write_bytes(b"\n".join(_lines(rng, 12) + rng.sample(shared, 8)) + b"\n")
        stage(iter_file(SourceFile(str(f))), tmp_path / f"s{i}")
        paths.append(tmp_path / f"s{i}")
    for files in (staged_merge.MERGE_FILES, 2):  # 2: in rounds
        monkeypatch.setattr(staged_merge, "MERGE_FILES", files)
        sums: list[int] = []
        n = merge_staged(paths, tmp_path / "new", None, sums)
        with monkeypatch.context() as m:
            m.setattr(staged_merge, "BIG_LINE", HUGE)
            assert merge_staged(paths, tmp_path / "old", None, sums) == n
        assert sums[0] == sums[1]
        assert (tmp_path / "new").read_bytes() == (tmp_path / "old").read_bytes()


_KILLED = """
import sys, time, orjson
from pathlib import Path
from mp2amp.models import SourceRecord
from mp2amp.pipeline.staging import stage
def recs():
    for i in range(1, 6):
        rec = {"event": "A", "properties": {"time": 1_700_000_000 - i, "blob": "x" * 200_000}}
        yield SourceRecord("day", i, rec, None, orjson.dumps(rec))
    print("stashed", flush=True)
    time.sleep(60)
stage(recs(), Path(sys.argv[1]), chunk=2)
"""


def test_kill_9_while_staging_big_lines_leaves_nothing_a_resume_keeps(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(staged / "w-0123456789.jsonl")],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"stashed"
        time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    left = [p for p in staged.iterdir()]
    assert len(left) == 1 and (left[0] / staging._Stash.NAME).exists()
    remove_leftovers(staged, [])
    assert list(staged.iterdir()) == []
    # and a finished staging leaves no side file anywhere
    recs = [SourceRecord("day", i, {"event": "A", "properties": {"time": T, "b": "x" * B}})
            for i in range(1, 4)]
    stage(recs, staged / "w.jsonl", chunk=2)
    assert [p.name for p in staged.iterdir()] == ["w.jsonl"]
    assert [r.line for r in read_staged(staged / "w.jsonl")] == [1, 2, 3]
