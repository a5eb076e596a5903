"""Session 17, second pass over d94f81a (RetriesSpent, rich escaping, json_text) and 5cf7725
(Ctrl-C: the transform worker ignores SIGINT/SIGTERM, staging workers start with SIGINT
blocked): real ``mp2amp migrate`` subprocesses, signals sent to their process group while
the staging pool works.

The second SIGTERM case was a defect (exit -15 instead of 143), fixed in cli.main().
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import orjson
import pytest

from shared_kit import amplitude_emulator, page_view, stored_by_source_id

KEY = "review17-second-key"
FILES = 2
PER_FILE = 12_000  # ~4.1 MB a file: past POOL_MIN_BYTES, so two spawned staging workers


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[2])


def _pids() -> Iterator[int]:
    return (int(p) for p in os.listdir("/proc") if p.isdigit())


def _live_members(pgid: int) -> list[int]:
    """Processes of the group that still run (a zombie reparented to a PID 1 that does not
    reap is not a process left behind)."""
    out = []
    for pid in _pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[2] == pgid and stat[0] != "Z":
            out.append(pid)
    return out


def _group_gone(pgid: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _live_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _staging_workers(parent: int) -> list[int]:
    found = []
    for pid in _pids():
        stat = _proc_stat(pid)
        if stat is None or stat[1] != parent:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _project(root: Path, url: str) -> Path:
    events = root / "events"
    events.mkdir()
    for day in range(FILES):
        with (events / f"2024-03-0{day + 1}.jsonl").open("wb") as out:
            for i in range(PER_FILE):
                record = page_view(i + day * PER_FILE, blob="x" * 200)
                # shuffled times: the staging workers have a window to sort
                record["properties"]["time"] = 1709251200 + day * 86400 + (i * 7919) % 86000
                out.write(orjson.dumps(record) + b"\n")
    cfg = root / "mp2amp.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["{events}/*.jsonl"]\n'
                   f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{root / "work"}"\n')
    return cfg


def _migrate(cfg: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MIXPANEL_SERVICE_ACCOUNT", "MIXPANEL_SECRET", "MP2AMP_HASH_SALT")}
    env["AMPLITUDE_API_KEY"] = KEY
    return subprocess.Popen([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                             "--quiet", *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own group, as a terminal job


def _when_staging_workers_run(proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        if _staging_workers(proc.pid):
            time.sleep(0.1)  # past their imports: sorting a window
            return
        time.sleep(0.005)
    raise AssertionError("the run ended (or never staged in a pool) before the signal")


def _hint(work: Path, said: str) -> str:
    return (f"{said}; the ledger in {work} keeps everything done so far: run the same "
            "`mp2amp migrate` command with --resume to go on (batches that were in flight "
            "are sent again with the same insert_ids)\n")


# --- regression guard (passes): one Ctrl-C while the staging pool sorts -----------------


def test_ctrl_c_to_the_group_while_the_pool_stages_then_resume_delivers_each_event_once(
        tmp_path: Path) -> None:
    """The spawned staging workers have SIGINT blocked (5cf7725): the run alone answers
    the Ctrl-C, ends them with SIGTERM, and says how to go on; nothing is left running,
    and the resume stages both windows again and sends every event once."""
    work = tmp_path / "work"
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        cfg = _project(tmp_path, url)
        proc = _migrate(cfg)
        _when_staging_workers_run(proc)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err[-2000:]
        assert out == "" and "Traceback" not in err
        assert err == _hint(work, "interrupted")
        assert _group_gone(proc.pid) == [], "a staging process outlived the run"

        resumed = _migrate(cfg, "--resume", "--json")
        out, err = resumed.communicate(timeout=60)
        assert resumed.returncode == 0, err[-2000:]
        totals = orjson.loads(out)["totals"]
        assert totals["balanced"] and totals["sent"] == FILES * PER_FILE
        held = stored_by_source_id(url)
    assert len(held) == FILES * PER_FILE and set(held.values()) == {1}


# --- a second SIGTERM while the run stops -------------------------------------------------


def test_a_second_sigterm_while_the_run_stops_is_ignored_and_it_exits_143(
        tmp_path: Path) -> None:
    """systemd and Kubernetes send SIGTERM to the whole group, and a supervisor may send it
    again; README: "further SIGTERMs while it stops are ignored ... exit 130 or 143"."""
    work = tmp_path / "work"
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        cfg = _project(tmp_path, url)
        proc = _migrate(cfg)
        _when_staging_workers_run(proc)
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert err == _hint(work, "stopped (SIGTERM)")  # the run had stopped and said so ...
    assert "Traceback" not in err
    assert proc.returncode == 143  # ... but then died of the second SIGTERM: -15
    assert _group_gone(proc.pid) == []


# --- the staging worker with SIGINT blocked still ends --------------------------------------


def _sleep_and_report(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_staging_worker_with_sigint_blocked_still_dies_of_sigterm() -> None:
    """``_stop_pool`` ends the workers with SIGTERM: blocking SIGINT must not block it."""
    import multiprocessing

    from mp2amp.pipeline.windows import _sigint_blocked, _stop_pool, die_with_parent

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        with _sigint_blocked():
            future = pool.submit(_sleep_and_report, 30)
        deadline = time.monotonic() + 20
        while not pool._processes and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        (worker,) = list(pool._processes.values())  # type: ignore[attr-defined]
        os.kill(worker.pid, signal.SIGINT)  # blocked: a Ctrl-C does not reach it
        time.sleep(0.3)
        assert worker.is_alive()
        started = time.monotonic()
        _stop_pool(pool)
        with pytest.raises(BrokenProcessPool):
            future.result(timeout=10)
        # generous: the suite runs two workers on two shared cores. Polled, not join():
        # the executor's own thread reaps the broken pool's workers too, and a join() that
        # loses that race can return before the exit status is recorded
        while worker.exitcode is None and time.monotonic() - started < 30:
            worker.join(0.05)
        assert time.monotonic() - started < 30
        assert worker.exitcode == -signal.SIGTERM, worker.exitcode
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
