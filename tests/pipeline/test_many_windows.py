"""Thousands of small input files (Data Pipelines writes hourly part files): the per-window
work must not read every window's ledger row again (that made a run quadratic: 4,000
files of 10 events took 150 s, 85% of it in Ledger.windows(); 14 s after)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from migrate_kit import amplitude, make_config

from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate

FILES = 300


def test_a_run_of_many_files_reads_the_window_list_a_fixed_number_of_times(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for h in range(FILES):
        rows = [{"event": "View", "properties": {
            "time": 1_704_067_200 + h * 3600 + i * 60, "distinct_id": f"user-{(h + i) % 40}",
            "$insert_id": f"ins-{h}-{i}-abcdef"}} for i in range(3)]
        (folder / f"part-{h:05d}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n"
                                                             for r in rows))
    calls: list[int] = []
    listed = Ledger.windows

    def counted(self: Ledger) -> object:
        calls.append(1)
        return listed(self)

    monkeypatch.setattr(Ledger, "windows", counted)
    with amplitude(tmp_path / "amp") as url:
        result = migrate(make_config(folder, tmp_path / "work", url))
    assert result.exit_code == 0 and result.totals["sent"] == 3 * FILES
    assert result.totals["windows"] == FILES
    assert len(calls) < 30, f"Ledger.windows() read {len(calls)} times for {FILES} windows"
