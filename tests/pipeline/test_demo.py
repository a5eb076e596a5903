"""``mp2amp demo`` end to end on a small project, and what it leaves on disk."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

import mp2amp.pipeline.demo as demo


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_a_passing_demo_removes_its_temporary_folder(temp_root: Path) -> None:
    result = demo.run_demo(3_000, None, fail_rate=0.05, drop_rate=0.01)
    assert result.ok, (result.daily_mismatches, [r for r in result.rows if not r.ok])
    assert result.rows and all(r.ok for r in result.rows)
    assert result.migration.totals["balanced"]
    assert not result.kept and list(temp_root.iterdir()) == []
    assert result.as_dict()["workdir_kept"] is False


def test_a_failing_demo_keeps_its_folder_and_a_given_one_stays(
        temp_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = demo._compare

    def mismatching(*args: Any) -> Any:
        rows, _ = real(*args)
        return rows, ["Purchase on 2024-03-01: expected 1, Amplitude has 0"]

    monkeypatch.setattr(demo, "_compare", mismatching)
    failed = demo.run_demo(2_000, None, fail_rate=0.0, drop_rate=0.0)
    assert not failed.ok and failed.kept and Path(failed.workdir).is_dir()
    assert Path(failed.workdir).parent == temp_root

    monkeypatch.setattr(demo, "_compare", real)
    given = demo.run_demo(2_000, tmp_path / "mine", fail_rate=0.0, drop_rate=0.0)
    assert given.ok and given.kept and (tmp_path / "mine" / "work" / "ledger.sqlite").is_file()
