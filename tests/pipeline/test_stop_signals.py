"""Ctrl-C and SIGTERM stop ``mp2amp migrate`` cleanly, and ``--resume`` finishes the job.

The signal goes to the whole process group, as a terminal's Ctrl-C and systemd's stop
send it (the transform worker and the staging pool get it too), while batches are in
flight. The run must say what was kept and how to go on, exit 130 / 143, leave no process
behind, and the resumed run must deliver every event exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import API_KEY, Project, amplitude, assert_exactly_once, write_toml
from test_kill_resume import ledger_rows

from mp2amp.pipeline import stopping

LATENCY_MS = 150  # every request waits this long: the signal lands while batches fly


def _migrate(cfg: Path, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)
    return subprocess.Popen([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                             "--quiet", *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own group, as a terminal job


def _when_batches_done(proc: subprocess.Popen[str], ledger: Path, n: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        done = ledger_rows(ledger, "SELECT COUNT(*) FROM batches WHERE state = 'done'")
        if done and int(str(done[0][0])) >= n:
            return
        time.sleep(0.01)
    raise AssertionError("the run ended (or never loaded) before the signal could be sent")


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "stopped (SIGTERM)"),
])
def test_a_signal_mid_load_stops_with_a_resume_hint_and_resume_delivers_each_event_once(
        project: Project, tmp_path: Path, signum: int, code: int, said: str) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=LATENCY_MS) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url, concurrency=4)
        proc = _migrate(cfg)
        _when_batches_done(proc, work / "ledger.sqlite", 2)
        os.killpg(proc.pid, signum)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err[-2000:]
        assert out == ""
        assert err == (f"{said}; the ledger in {work} keeps everything done so far: run the "
                       "same `mp2amp migrate` command with --resume to go on (batches that "
                       "were in flight are sent again with the same insert_ids)\n")
        assert _group_gone(proc.pid), "a worker or staging process outlived the run"
        done = ledger_rows(work / "ledger.sqlite", "SELECT COUNT(*) FROM batches "
                           "WHERE state = 'done'")
        assert int(str(done[0][0])) >= 2  # what was accepted before the signal is kept

        resumed = _migrate(cfg, "--resume", "--json")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err[-2000:]
        assert orjson.loads(out)["totals"]["balanced"]
        assert_exactly_once(url, project.expected)


def test_sigterm_as_soon_as_the_ledger_exists_then_resume(project: Project,
                                                          tmp_path: Path) -> None:
    """Early: while the windows are planned or staged (the staging pool may be at work)."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=LATENCY_MS) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url, concurrency=4)
        proc = _migrate(cfg)
        deadline = time.monotonic() + 60
        while not (work / "ledger.sqlite").exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err[-2000:]
        assert err.startswith(f"stopped (SIGTERM); the ledger in {work} keeps everything")
        assert _group_gone(proc.pid), "a worker or staging process outlived the run"
        resumed = _migrate(cfg, "--resume", "--json")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err[-2000:]
        assert orjson.loads(out)["totals"]["balanced"]
        assert_exactly_once(url, project.expected)


def test_run_turns_sigterm_into_terminated_at_the_next_await() -> None:
    reached: list[str] = []

    async def job() -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            reached.append("cancelled at the await")  # context managers close here
            raise
        return "finished"

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(stopping.Terminated) as stopped:
        stopping.run(job())
    assert reached == ["cancelled at the await"]
    assert stopped.value.exit_code == 143
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is removed again


def test_a_second_sigterm_does_not_cut_the_cleanup_short() -> None:
    """Sent while the run cleans up (its context managers' awaits, asyncio's shutdown):
    the first one stops the run, the others are ignored until ``run`` returns."""
    cleaned: list[str] = []

    async def job() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # while the handler is installed
            await asyncio.sleep(0.05)
            cleaned.append("cleanup finished")

    def late_sigterm() -> None:  # from a thread, as the run ends
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(stopping.Terminated):
        stopping.run(_then(job(), late_sigterm))
    assert cleaned == ["cleanup finished"]
    assert signal.getsignal(signal.SIGTERM) == before


async def _then(coro: Any, after: Any) -> None:
    try:
        await coro
    finally:
        await asyncio.to_thread(after)  # the executor asyncio.run waits for at its end


def test_run_returns_the_result_and_works_off_the_main_thread() -> None:
    async def job() -> int:
        await asyncio.sleep(0)
        return 7

    assert stopping.run(job()) == 7
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(stopping.run(job())))
    thread.start()
    thread.join()
    assert results == [7]  # no signal handler there (asyncio allows none), same result
