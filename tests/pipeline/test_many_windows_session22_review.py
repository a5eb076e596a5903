"""Adversarial review (session 22): scale in the number of windows. A Data Pipelines export
has one file per hour (~26,000 for three years), or several overlapping part files per day;
README: staged files deleted to free space are staged again on ``--resume``. Work per window
must not grow with the number of windows.

Counted, never timed: ids rewritten in the ledger's ``unstaged_loaded`` list, and Python
line events executed inside one function (``sys.settrace``, only while that function runs).

Each test was a defect (now fixed): the ``unstaged_loaded`` list rewritten whole per window
(now a ledger row per window), the placeholders list rebuilt per merged-away window, and
every earlier merge scanned per merged-away window."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import pytest
from migrate_kit import amplitude, make_config

from mp2amp.ledger import Ledger
from mp2amp.pipeline import migrate as migrate_module
from mp2amp.pipeline import overlaps, restage
from mp2amp.pipeline.migrate import migrate

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def _files(folder: Path, n: int, *, overlapping: bool) -> Path:
    """``n`` small input files of 3 events: one an hour (Data Pipelines' hourly files), or
    all spanning the same three days (part files that overlap in time: merged into one)."""
    folder.mkdir(parents=True)
    for h in range(n):
        if overlapping:
            times = [T0 + (h * 7919 % 5000) * 60 + i * 86_400 for i in range(3)]
        else:
            times = [T0 + h * 3600 + i * 60 for i in range(3)]
        rows = [{"event": "View", "properties": {
            "time": t, "distinct_id": f"user-{(h + i) % 40}",
            "$insert_id": f"ins-{h}-{i}-abcdef"}} for i, t in enumerate(times)]
        (folder / f"part-{h:05d}.jsonl").write_bytes(
            b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return folder


class _LineCounter:
    """Python line events run, while the functions it wraps run, in the code of one module
    (``module``'s file: its functions and comprehensions, not what they call elsewhere)."""

    def __init__(self, module: Any) -> None:
        self.file = module.__file__
        self.lines = 0

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            self.lines += 1
        return self._local

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        return self._local if frame.f_code.co_filename == self.file else None

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            before = sys.gettrace()
            sys.settrace(self._global)
            try:
                return fn(*args, **kwargs)
            finally:
                sys.settrace(before)
        return counted


def _run_then_resume_without_staged(tmp_path: Path, n: int, overlapping: bool,
                                    before_resume: Callable[[], None]) -> None:
    folder = _files(tmp_path / "in", n, overlapping=overlapping)
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(folder, tmp_path / "work", url)
        first = migrate(cfg)
        assert first.exit_code == 0 and first.totals["sent"] == 3 * n
        shutil.rmtree(tmp_path / "work" / "staged")  # to free space, as README allows
        before_resume()
        again = migrate(cfg, resume=True)
    assert again.exit_code == 0, again.totals
    assert again.totals["windows"] == n and again.totals["sent"] == 3 * n


HOURLY = 300


def test_restaging_deleted_copies_of_many_loaded_windows_rewrites_the_ledger_linearly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handled = [0]  # window ids read or written in the 'unstaged_loaded' meta list
    read, write = Ledger._meta_json, Ledger._set_meta_json

    def counted_read(db: Any, key: str, default: Any) -> Any:
        value = read(db, key, default)
        if key == "unstaged_loaded":
            handled[0] += len(value or ())  # None: no list (an older mp2amp's only)
        return value

    def counted_write(db: Any, key: str, value: Any) -> None:
        if key == "unstaged_loaded":
            handled[0] += len(value)
        write(db, key, value)

    def patch() -> None:
        monkeypatch.setattr(Ledger, "_meta_json", staticmethod(counted_read))
        monkeypatch.setattr(Ledger, "_set_meta_json", staticmethod(counted_write))

    _run_then_resume_without_staged(tmp_path, HOURLY, False, patch)
    # each window goes into the list once and out once: a few ids per window, not all
    assert handled[0] <= 20 * HOURLY, (
        f"{handled[0]:,} window ids read/written in 'unstaged_loaded' to restage "
        f"{HOURLY} windows ({handled[0] / HOURLY:.0f} per window)")


OVERLAPPING = 400


def test_restaging_a_big_merge_group_does_linear_work_per_window(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _LineCounter(restage)

    def patch() -> None:
        monkeypatch.setattr(migrate_module, "restage_missing",
                            counter.wrap(restage.restage_missing))

    _run_then_resume_without_staged(tmp_path, OVERLAPPING, True, patch)
    # ~46 lines a window when linear; the filter alone is ~N^2/2 (80,000 for 400)
    assert counter.lines <= 100 * OVERLAPPING, (
        f"restage_missing ran {counter.lines:,} Python lines for {OVERLAPPING} windows "
        f"({counter.lines / OVERLAPPING:.0f} per window)")


def test_merging_a_big_group_again_does_linear_work_per_window(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _LineCounter(overlaps)

    def patch() -> None:
        monkeypatch.setattr(restage, "merge_groups", counter.wrap(overlaps.merge_groups))

    _run_then_resume_without_staged(tmp_path, OVERLAPPING, True, patch)
    # ~15 lines a window when linear; the scan alone is ~2 N^2 (320,000 for 400)
    assert counter.lines <= 60 * OVERLAPPING, (
        f"merge_groups (again) ran {counter.lines:,} Python lines for {OVERLAPPING} windows "
        f"({counter.lines / OVERLAPPING:.0f} per window)")
