"""Session 17, fourth review of the resume part of c5bf18d: open_ledger's damaged-ledger
refusals (holds_run_files), plan_or_check (one transaction for the plan and its
fingerprint), drop_unplanned_downloads, and real kill -9 runs resumed exactly once.

Tests marked xfail(strict=True) pin defects found by this review; the others guard
behaviour confirmed correct."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    Crash,
    Project,
    amplitude,
    assert_exactly_once,
    crash_on_call,
    get_json,
    make_config,
    write_toml,
)

from mp2amp.config import load_config
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.ledger import Ledger
from mp2amp.pipeline import run_start
from mp2amp.pipeline.migrate import migrate

MP = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01, "backoff_cap": 0.05}


def _requests(url: str) -> int:
    return int(sum(get_json(url + "/_emulator/stats")["requests"].values()))


def _cli(cfg: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)
    return subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                           "--quiet", "--json", *extra], env=env, capture_output=True,
                          timeout=120)


# --- open_ledger: a work folder with an earlier run's files --------------------------------


def test_a_missing_ledger_beside_an_earlier_runs_staged_copies_is_refused(
        project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        assert migrate(cfg, upload_overrides=FAST).exit_code == 0
        before = _requests(url)
        staged = sorted(p.name for p in (work / "staged").iterdir())
        assert staged
        for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
            (work / name).unlink(missing_ok=True)  # a copy of the folder without its ledger
        with contextlib.suppress(Exception):  # refused: what is checked is below
            migrate(cfg, upload_overrides=FAST)
        assert _requests(url) == before, "the whole migration was sent again"
        assert sorted(p.name for p in (work / "staged").iterdir()) == staged


# --- the replan of an Export API run that did nothing yet -----------------------------------


def _export_config(work: Path, mp_url: str, amp_url: str, first: str, last: str,
                   days: int = 1) -> Any:
    return load_config(None, {
        "source.from_date": first, "source.to_date": last, "source.export_window_days": days,
        "mixpanel.api_host": mp_url, "mixpanel.timezone": "America/Los_Angeles",
        "amplitude.api_host": amp_url, "run.workdir": str(work),
    }, env={"AMPLITUDE_API_KEY": API_KEY, "MIXPANEL_SECRET": "emulator-secret"})


def _mixpanel(project: Project) -> MixpanelEmulator:
    return MixpanelEmulator(MixpanelConfig(data_dir=project.root, export_per_hour=None,
                                           export_per_second=None))


def test_a_kill_between_the_replan_and_its_download_cleanup_still_removes_the_dropped_day(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    downloads = work / "export" / "export"
    with _mixpanel(project).running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        with monkeypatch.context() as m:  # downloaded both days, staged nothing
            crash_on_call(m, Ledger, "mark_extracted", 1)
            with pytest.raises(Crash):
                migrate(_export_config(work, mp_url, amp_url, "2024-01-01", "2024-01-02"),
                        upload_overrides=FAST, mixpanel_overrides=MP)
        assert (downloads / "2024-01-01.jsonl").exists()
        corrected = _export_config(work, mp_url, amp_url, "2024-01-02", "2024-01-03")
        with monkeypatch.context() as m:  # killed right after the replan's commit
            m.setattr(run_start, "drop_unplanned_downloads",
                      lambda *a: (_ for _ in ()).throw(Crash("kill -9")))
            with pytest.raises(Crash):
                migrate(corrected, resume=True, upload_overrides=FAST, mixpanel_overrides=MP)
        result = migrate(corrected, resume=True, upload_overrides=FAST, mixpanel_overrides=MP)
        assert result.exit_code == 0
        left = sorted(p.name for p in downloads.iterdir())
        assert not [n for n in left if n.startswith("2024-01-01")], left


# --- a run killed as its ledger was created ---------------------------------------------------


def test_resume_after_a_kill_as_the_ledger_was_created_starts_the_run(
        project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        work.mkdir()
        (work / "ledger.sqlite").write_bytes(b"")  # created, its schema not yet committed
        result = migrate(make_config(project.events, work, url), resume=True,
                         upload_overrides=FAST)
        assert result.exit_code == 0
        assert_exactly_once(url, project.expected)


# --- real kill -9, then --resume: each event once ---------------------------------------------

_POINTS = {
    "planned": "SELECT COUNT(*) FROM windows",
    "staged": "SELECT COUNT(*) FROM windows WHERE state != 'pending'",
    "sent": "SELECT COUNT(*) FROM batches WHERE state = 'done'",
}


def _reached(ledger: Path, sql: str) -> bool:
    if not ledger.exists():
        return False
    try:
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
        try:
            return bool(db.execute(sql).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return False


@pytest.mark.parametrize("point", sorted(_POINTS))
def test_kill9_at_a_point_then_resume_delivers_each_event_once(
        project: Project, tmp_path: Path, point: str) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=100) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url, concurrency=2)
        env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)
        proc = subprocess.Popen([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                                 "--quiet", "--json"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline \
                and not _reached(work / "ledger.sqlite", _POINTS[point]):
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before the kill"
        proc.kill()
        proc.wait(timeout=30)
        run = _cli(cfg, "--resume")
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        assert orjson.loads(run.stdout)["totals"]["balanced"]
        assert_exactly_once(url, project.expected)
