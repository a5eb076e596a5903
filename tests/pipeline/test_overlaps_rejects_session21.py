"""Session 21: a window's first attempt writes its transform rejects straight into the
ledger (defbfdc), so a run killed before the window's first batch leaves rejects and no
batches. Such a window counts as started: merged away by a later run (its staged copy
changed, so it now overlaps another), its rejects would stay listed under a window that
holds none of its records, beside the merged window's own (``overlaps.merge_overlapping``)."""

from __future__ import annotations

from pathlib import Path

from mp2amp.ledger import Ledger
from mp2amp.models import SourceRecord
from mp2amp.pipeline.overlaps import merge_overlapping
from mp2amp.pipeline.staging import stage

T = 1_700_000_000


def _staged(tmp_path: Path, ledger: Ledger, name: str, times: list[int]) -> None:
    path = tmp_path / f"{name}.jsonl"
    stage([SourceRecord(name, n, {"event": "E", "properties": {
        "time": t, "distinct_id": "d", "$insert_id": f"{name}{n}"}})
        for n, t in enumerate(times, 1)], path)
    ledger.mark_extracted(name, str(path), len(times))


def test_a_window_with_rejects_and_no_batches_is_not_merged_away(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([(n, "file", {}) for n in "abc"])
    for name in "abc":  # all three overlap in time
        _staged(tmp_path, ledger, name, [T + 1, T + 5, T + 9])
    # b's first attempt rejected its line 2, then the run was killed before any batch
    ledger.stage_window_rejects([("b", 2, "b", "transform", "invalid_event",
                                  "b line 2: no event name", "event", None)], direct=True)
    assert not ledger.batches()

    merged = merge_overlapping(ledger, ledger.windows())

    assert merged == [["a", "c"]]  # b keeps its layout, as a window with batches does
    windows = {w.window_id: w for w in ledger.windows()}
    assert "b" not in ledger.merged_into()
    # its rejects name a window that still holds its records: listed once, under it
    assert windows["b"].records == 3
    assert [(r[0], r[1], r[2]) for r in ledger.iter_rejects()] == [("b", 2, "b")]
    ledger.close()
