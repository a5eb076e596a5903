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
    # a kept folder is resumed: with other options it would report the old project
    from mp2amp.errors import InputError

    with pytest.raises(InputError, match=r"holds a project made with other options \(--seed 7 "
                                         r"\(asked 8\)\)"):
        demo.run_demo(2_000, tmp_path / "mine", fail_rate=0.0, drop_rate=0.0, seed=8)


def test_a_legacy_project_tells_the_same_story_day_by_day(temp_root: Path) -> None:
    # project-local export times, project-day dates: a migration that did not shift them
    # to UTC would move the evening events to the wrong UTC day (the daily comparison)
    result = demo.run_demo(3_000, None, fail_rate=0.0, drop_rate=0.0, legacy_time=True)
    assert result.ok, (result.daily_mismatches[:5], [r for r in result.rows if not r.ok])
    assert result.generated["legacy_time"] is True
    assert [w.window for w in result.migration.windows][:1] == ["export:2024-03-01"]
    assert len(result.migration.windows) == demo.DEMO_DAYS  # the project's own days


@pytest.mark.parametrize(("timezone", "legacy", "dates"), [
    ("America/Los_Angeles", False, ("2024-03-01", "2024-03-15")),  # local evenings: next UTC day
    ("Asia/Tokyo", False, ("2024-02-29", "2024-03-14")),           # local mornings: day before
    ("UTC", False, ("2024-03-01", "2024-03-14")),
    ("America/Los_Angeles", True, ("2024-03-01", "2024-03-14")),   # legacy: the project's days
])
def test_export_dates_cover_the_generated_days(timezone: str, legacy: bool,
                                               dates: tuple[str, str]) -> None:
    meta = {"start": "2024-03-01", "days": 14, "timezone": timezone, "legacy_time": legacy}
    first, last = demo.export_dates(meta)
    assert (first.isoformat(), last.isoformat()) == dates
