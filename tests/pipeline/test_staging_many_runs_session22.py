"""A window of many sorted runs (over ~8 GB: a month exported into one file) is merged in
rounds, never with every run open at once: the usual limit of 1024 open files stopped it
with "Too many open files". The rounds give the same bytes and digest as one merge."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.errors import Rejection
from mp2amp.models import SourceRecord
from mp2amp.pipeline import staging
from mp2amp.pipeline.staging import StagingStopped, stage

T = 1_704_067_200


def _records(n: int) -> list[SourceRecord]:
    """Copies at shared times, rejected lines, lines staged from their text, big lines."""
    rng = random.Random(22)
    recs: list[SourceRecord] = []
    for i in range(1, n + 1):
        props: dict[str, Any] = {
            "time": T + rng.randrange(40), "distinct_id": f"u{i % 9}",
            "$insert_id": f"id{rng.randrange(300)}", "page": "p" * rng.randrange(200),
            "mp_processing_time_ms": rng.randrange(1, 10**12)}
        if i % 97 == 0:
            props["blob"] = "b" * (staging.BIG_LINE + 10)  # stubbed in its run
        rec = {"event": "View", "properties": props}
        if i % 50 == 0:
            recs.append(SourceRecord("day", i, None, Rejection(
                "invalid_json", f"day line {i}: bad", None, "day", i, "{oops")))
        elif i % 13 == 0:
            recs.append(SourceRecord("day", i, recs[-1].record))
        else:
            recs.append(SourceRecord("day", i, rec, None, orjson.dumps(rec) if i % 2 else None))
    return recs


@pytest.mark.parametrize("by_content", [False, True])
def test_runs_merged_in_rounds_give_the_same_file(tmp_path: Path, by_content: bool) -> None:
    recs = _records(2000)
    one = stage(recs, tmp_path / "one", by_content=by_content)
    # a run of 3 records: 667 runs, merged 64 at a time, then those 11 runs together
    rounds = stage(recs, tmp_path / "rounds", chunk=3, by_content=by_content)
    assert rounds == one == 2000
    assert rounds.digest == one.digest
    assert (tmp_path / "rounds").read_bytes() == (tmp_path / "one").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "rounds"]


def test_runs_past_the_open_file_limit_are_staged(tmp_path: Path) -> None:
    """Under a limit of 100 open files, 1500 runs: one merge of them all ran out of files."""
    script = f"""
import resource, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
from test_staging_many_runs_session22 import _records
from mp2amp.pipeline.staging import stage
recs = _records(3000)
print(stage(recs, __import__("pathlib").Path({str(tmp_path / "w")!r}), chunk=2))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "3000"
    stage(_records(3000), tmp_path / "expected")
    assert (tmp_path / "w").read_bytes() == (tmp_path / "expected").read_bytes()


def test_a_stop_between_rounds_keeps_nothing(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    merges = 0
    merge = staging.heapq.merge

    def merge_then_stop(*files: Any, **kw: Any) -> Any:
        nonlocal merges
        merges += 1
        if merges == 2:  # the second round's group: the run is stopping now
            stop.set()
        return merge(*files, **kw)

    monkeypatch.setattr(staging.heapq, "merge", merge_then_stop)
    with pytest.raises(StagingStopped):
        stage(_records(600), tmp_path / "w", chunk=2, stop=stop)
    assert list(tmp_path.iterdir()) == []  # no .part, no sort runs left
