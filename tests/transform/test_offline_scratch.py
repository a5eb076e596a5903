"""``mp2amp transform``'s scratch folders under ``[run] workdir``: a killed run's is removed
by the next run, one that a running transform holds (or that is brand new) is not."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import orjson

from mp2amp.config import load_config
from mp2amp.pipeline.worklock import WorkLock
from mp2amp.transform.offline import transform_files

EVENT = {"event": "Play", "properties": {"time": 1_700_000_000, "distinct_id": "u-00001",
                                          "$insert_id": "abcdefgh-0001"}}


def _scratch(work: Path, name: str, age_s: float) -> Path:
    folder = work / name
    folder.mkdir(parents=True)
    (folder / "input-000000.jsonl").write_bytes(b"a staged copy\n" * 100)
    then = time.time() - age_s
    os.utime(folder, (then, then))
    return folder


def test_a_killed_runs_scratch_is_removed_and_a_held_or_new_one_kept(tmp_path: Path) -> None:
    work = tmp_path / "work"
    killed = _scratch(work, "transform-killed", 3600)
    held = _scratch(work, "transform-held", 3600)
    young = _scratch(work, "transform-young", 5)
    lock = WorkLock(held)  # a transform running now holds its folder
    os.utime(held, (time.time() - 3600, time.time() - 3600))
    src = tmp_path / "day.jsonl"
    src.write_bytes(orjson.dumps(EVENT) + b"\n")
    config = load_config(None, {"run.workdir": str(work)}, env={})
    out, rejects = io.BytesIO(), io.BytesIO()
    try:
        result = transform_files(config, [str(src)], out, rejects)
    finally:
        lock.release()
    assert result.summary.events_out == 1 and result.summary.balanced
    assert not killed.exists()
    assert held.is_dir() and young.is_dir()
    assert sorted(p.name for p in work.iterdir()) == ["transform-held", "transform-young"]
