"""Staging holds a sorted run in memory: it must cost about the records' own size."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

from mp2amp.models import SourceRecord
from mp2amp.pipeline.staging import stage


def records(n: int) -> list[SourceRecord]:
    rng = random.Random(3)
    return [SourceRecord("f.jsonl", i, {"event": "View", "properties": {
        "time": 1_704_000_000 + rng.randrange(86_400), "distinct_id": f"u{i % 97}",
        "page": "/p/" + "x" * rng.randrange(200, 900)}}) for i in range(1, n + 1)]


def test_a_run_in_memory_costs_about_its_bytes(tmp_path: Path) -> None:
    recs = records(4000)
    tracemalloc.start()
    try:
        stage(recs, tmp_path / "w.jsonl")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = (tmp_path / "w.jsonl").stat().st_size
    # orjson's dumps() results keep a ~16 KB buffer each; held raw, 4000 of them took 60 MB
    assert peak < 4 * size, (peak, size)


def test_runs_cut_by_bytes_give_the_same_file(tmp_path: Path) -> None:
    recs = records(3000)
    stage(recs, tmp_path / "one.jsonl")
    stage(recs, tmp_path / "many.jsonl", chunk_bytes=50_000)
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "many.jsonl").read_bytes()
