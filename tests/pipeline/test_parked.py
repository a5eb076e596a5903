"""Amplitude's daily quota: events over it are parked (exit 3, counted apart), and a
resume once the quota allows delivers them, each once. Never dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from migrate_kit import FAST, Clock, Project, amplitude, assert_exactly_once, make_config

from mp2amp.config import Config
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, EXIT_PARKED, MigrateResult, migrate
from mp2amp.pipeline.observer import LedgerObserver

QUOTA = 40  # events per device or user per rolling 24 h





def test_daily_quota_parks_then_resume_delivers(project: Project, tmp_path: Path) -> None:
    clock = Clock()
    upload = {**FAST, "park_delay": 0.05, "park_retries": 1, "concurrency": 4}
    with amplitude(tmp_path / "amp", daily_quota=QUOTA, now=clock) as url:
        cfg = make_config(project.events, tmp_path / "work", url)
        first = migrate(cfg, upload_overrides=upload)
        assert first.exit_code == EXIT_PARKED, first.as_dict()["problems"]
        parked = first.totals["parked"]
        assert parked > 0
        assert first.totals["sent"] + parked == len(project.expected)
        assert all(w.balanced for w in first.windows)
        # each batch's row says what became of its events: parked ones are not dead letters
        rows = Ledger(cfg.run.workdir / "ledger.sqlite").batches()
        assert sum(b.parked for b in rows) == parked
        assert sum(b.dead_lettered for b in rows) == first.totals["dead_lettered"]
        assert sum(b.accepted for b in rows) == first.totals["sent"]

        last = resume_until_delivered(cfg, clock, upload)
        assert last.totals["parked"] == 0
        assert last.totals["sent"] == len(project.expected)
        assert_exactly_once(url, project.expected)


def resume_until_delivered(cfg: Config, clock: Clock, upload: dict[str, Any]) -> MigrateResult:
    """Resume a day later, as often as the quota needs (a busy device may need days)."""
    for _ in range(6):
        clock.offset += 25 * 3600  # the quota's 24 hours have passed
        result = migrate(cfg, resume=True, upload_overrides=upload)
        assert result.totals["balanced"], result.as_dict()["problems"]
        # loaded windows are only replayed: what is submitted again is what was parked
        assert result.load["submitted"] - result.load["skipped"] >= result.totals["parked"]
        if result.exit_code != EXIT_PARKED:
            assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
            return result
    raise AssertionError("parked events never delivered")


class Crash(Exception):
    """Stands for kill -9 right after a parked event was written to the ledger."""


def test_crash_right_after_parking_then_resume(project: Project, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The parked row names its batch, which never finished: resume sends that batch again
    and drops the row, so the event is neither lost nor counted twice."""
    clock = Clock()
    upload = {**FAST, "park_delay": 0.05, "park_retries": 0, "concurrency": 4}
    original = LedgerObserver.on_parked

    def park_then_crash(self: LedgerObserver, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        raise Crash

    with amplitude(tmp_path / "amp", daily_quota=QUOTA, now=clock) as url:
        cfg = make_config(project.events, tmp_path / "work", url)
        with monkeypatch.context() as m:
            m.setattr(LedgerObserver, "on_parked", park_then_crash)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=upload)
        result = resume_until_delivered(cfg, clock, upload)
        assert_exactly_once(url, project.expected)
    assert result.totals["sent"] == len(project.expected)
