"""Input files staged by worker processes while the identity pass follows behind: the same
staged windows and the same Amplitude events as staging one file at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from migrate_kit import (
    FAST,
    TIMEZONE,
    Project,
    amplitude,
    assert_exactly_once,
    make_config,
    mp2amp,
    transform_outcome,
    write_toml,
)
from test_kill_resume import start

import mp2amp.pipeline.windows as windows
from mp2amp.errors import InputError, TerminalError
from mp2amp.extract.files import SourceFile
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.progress import Counters, NullReporter


def _staged(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "staged").iterdir())}


def test_pool_stages_the_same_windows_and_events(project: Project, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude(tmp_path / "amp-thread") as url:
        alone = migrate(make_config(project.events, tmp_path / "thread", url),
                        upload_overrides=FAST)
    monkeypatch.setattr(windows, "POOL_MIN_BYTES", 0)
    used: list[object] = []
    real_pool = windows._staging_pool
    monkeypatch.setattr(windows, "_staging_pool", lambda files: used.append(
        pool := real_pool(files)) or pool)
    with amplitude(tmp_path / "amp-pool") as url:
        pooled = migrate(make_config(project.events, tmp_path / "pool", url),
                         upload_overrides=FAST)
        assert pooled.exit_code == EXIT_OK, pooled.as_dict()["problems"]
        assert_exactly_once(url, project.expected)
    assert used and used[0] is not None, "the pool was not used"
    assert _staged(tmp_path / "pool") == _staged(tmp_path / "thread")
    assert pooled.totals == alone.totals
    assert pooled.identity == alone.identity


def test_an_unreadable_file_stops_the_run_from_a_worker(project: Project,
                                                        tmp_path: Path) -> None:
    files = sorted(project.events.iterdir())
    missing = tmp_path / "gone.jsonl.gz"
    sources = [SourceFile(str(files[0])), SourceFile(str(missing)), SourceFile(str(files[1]))]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([(s.url, "file", {"path": s.url}) for s in sources])
    pool = ProcessPoolExecutor(max_workers=2)
    try:
        with pytest.raises(InputError, match=r"gone\.jsonl\.gz"):
            asyncio.run(windows._stage_files(
                ledger, tmp_path, ledger.windows(), {s.url: s for s in sources}, pool,
                Counters(), NullReporter(), None))
        # the window before the bad one is staged and marked; the bad one is not
        states = [r.state for r in ledger.windows()]
    finally:
        pool.shutdown(wait=True)
        ledger.close()
    assert states[:2] == ["extracted", "pending"]


def test_kill9_while_workers_stage_leaves_no_worker_and_resumes(tmp_path: Path) -> None:
    """Enough data for the pool (POOL_MIN_BYTES) in a real `mp2amp migrate` process, killed
    while its workers stage: the workers die with it, and --resume delivers each event once."""
    import psutil

    events = tmp_path / "p" / "events"
    mp2amp("generate", "--out", str(tmp_path / "p"), "--users", "2200", "--days", "7",
           "--seed", "9", "--timezone", TIMEZONE)
    assert sum(f.stat().st_size for f in events.iterdir()) >= windows.POOL_MIN_BYTES
    expected, _, _ = transform_outcome(events, tmp_path / "transform")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", events, work, url)
        proc = start(cfg, resume=False)
        workers: list[psutil.Process] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
            workers = psutil.Process(proc.pid).children(recursive=True)
            time.sleep(0.02)
        assert len(workers) >= 2, "no staging workers seen"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived the killed migration: {alive}"
        proc = start(cfg, resume=True)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert_exactly_once(url, expected)


def _killed(url: str, fs: object, dest: str, local: object = None) -> int:
    """Run in a staging process (spawned: it imports this module): dies as the OOM killer
    would have it die."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def test_a_killed_staging_process_stops_the_run_with_what_to_do(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to end in a BrokenProcessPool traceback (exit 1)."""
    monkeypatch.setattr(windows, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(windows, "stage_in_worker", _killed)
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url)
        with pytest.raises(TerminalError) as stopped:
            migrate(config, upload_overrides=FAST)
        assert str(stopped.value) == (
            "a staging process ended unexpectedly (killed: if nobody did it, the system ran "
            "out of memory, see dmesg); nothing is lost: run the same `mp2amp migrate` "
            "command with --resume to go on")
        monkeypatch.undo()
        resumed = migrate(config, resume=True, upload_overrides=FAST)
        assert resumed.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)


def _sorting_for_a_while(url: str, fs: object, dest: str, local: object = None) -> int:
    """Run in a staging process: a window that takes long to sort."""
    time.sleep(60)
    raise AssertionError("should have been stopped")


def test_a_stop_during_staging_ends_the_staging_processes_at_once(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (to this process only, as `docker stop` sends it) while big windows are
    sorted: the staging processes are ended, not waited for (a minute here, past a
    `docker stop` grace period); the windows stay pending and are staged on --resume."""
    import threading

    from mp2amp.pipeline.stopping import Terminated

    monkeypatch.setattr(windows, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(windows, "stage_in_worker", _sorting_for_a_while)
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url)
        started = time.monotonic()
        timer.start()
        with pytest.raises(Terminated):
            migrate(config, upload_overrides=FAST)
        assert time.monotonic() - started < 30, "waited for the staging processes"
        monkeypatch.undo()
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        assert {w.state for w in ledger.windows()} == {"pending"}
        ledger.close()
        resumed = migrate(config, resume=True, upload_overrides=FAST)
        assert resumed.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
