"""Session 16, third review: the ledger's dead-letter bookkeeping of commit 8406484.

Each defect is pinned as a strict xfail that asserts the behaviour README / the contracts
promise; the unmarked tests guard non-obvious behaviour that was checked and found right.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mp2amp.config import Config, load_config
from mp2amp.errors import Mp2AmpError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate

KEY = "session16-third-review-key"
FAST = {"backoff_base": 0.01, "backoff_cap": 0.02, "throttle_wait": 0.02,
        "park_delay": 0.02, "max_retries": 0}


def record(n: int) -> dict[str, Any]:
    return {"event": "Page View",
            "properties": {"time": 1700000000 + n, "distinct_id": f"user-{n:04d}",
                           "$insert_id": f"ins-{n:06d}", "$device_id": f"device-{n:04d}"}}


def api_config(day: Path, workdir: Path, url: str) -> Config:
    return load_config(None, {"source.files": [str(day)], "amplitude.api_host": url,
                              "run.workdir": str(workdir), "mixpanel.timezone": "UTC"},
                       env={"AMPLITUDE_API_KEY": KEY})


def write_day(path: Path, n: int = 3) -> Path:
    path.write_text("\n".join(json.dumps(record(i)) for i in range(1, n + 1)) + "\n")
    return path


@contextmanager
def small_tmpfs(where: Path, size: str = "1M") -> Iterator[None]:
    """A real small disk (the kernel's ENOSPC), mounted at ``where``; needs root."""
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_but(folder: Path, spare: int) -> None:
    """Fill the disk of ``folder``, then give ``spare`` bytes back (a disk nearly full)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"x" * 512)
    except OSError:
        pass
    os.ftruncate(fd, os.fstat(fd).st_size - spare)
    os.close(fd)


# --- defects --------------------------------------------------------------------------------


def test_a_real_nearly_full_disk_on_resume_of_an_old_ledger_says_free_space_and_resume(
        tmp_path: Path) -> None:
    """README: "This includes the first `--resume` with a ledger an older mp2amp made, which
    adds a column to it: a full or read-only disk then says free space / make it writable
    and `--resume`, never 'move it away'". On a real (tmpfs) disk with a few KiB left the
    migrate.lock is written, then SQLite cannot size the ledger's -shm file."""
    from mp2amp.load.sender import RetriesExhausted

    day = write_day(tmp_path / "day.jsonl")
    work = tmp_path / "work"
    with small_tmpfs(work):
        cfg = api_config(day, work, "http://127.0.0.1:9")  # Amplitude down: the run stops
        with pytest.raises((RetriesExhausted, TerminalError)):
            migrate(cfg, upload_overrides=FAST)
        db = sqlite3.connect(work / "ledger.sqlite")  # as an older mp2amp made it
        db.execute("ALTER TABLE rejects DROP COLUMN batch_id")
        db.commit()
        db.close()
        fill_but(work, 8192)
        with pytest.raises(TerminalError) as stopped:
            migrate(cfg, resume=True, upload_overrides=FAST)
    message = str(stopped.value)
    assert "move it away" not in message, message
    assert "disk is full" in message and "--resume" in message, message


def test_an_output_dir_whose_name_is_not_utf8_is_refused_not_a_traceback(
        tmp_path: Path) -> None:
    """The ledger stores UTF-8 only, which is why 8406484 refuses a non-UTF-8 work folder
    before anything is written; the S3-import sink's local output_dir is recorded in the
    same ledger (the run's fingerprint, the sink attempt) and is not checked."""
    day = write_day(tmp_path / "day.jsonl")
    out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/out-caf\xe9"))  # Latin-1 "cafe"
    cfg = load_config(None, {"source.files": [str(day)], "amplitude.output_dir": str(out),
                             "run.workdir": str(tmp_path / "work"),
                             "mixpanel.timezone": "UTC"}, env={})
    try:
        result = migrate(cfg)
    except Mp2AmpError as exc:  # refused, saying why: what the work folder gets
        assert "UTF-8" in str(exc), exc
        return
    assert result.exit_code == 0
    assert result.totals["sent"] == 3


def _steps(led: Ledger, window: str, row: tuple[Any, ...]) -> int:
    """SQLite VM steps (in thousands) of one window's reject bookkeeping as a load does it:
    ``forget_window_outcomes`` at its start, ``replace_transform_rejects`` at its end."""
    calls = 0

    def tick() -> int:
        nonlocal calls
        calls += 1
        return 0

    led._db.set_progress_handler(tick, 1000)
    try:
        led.forget_window_outcomes(window)
        led.replace_transform_rejects(window, [row])
    finally:
        led._db.set_progress_handler(None, 0)
    return calls


def test_a_windows_reject_bookkeeping_does_not_grow_with_other_windows_rejects(
        tmp_path: Path) -> None:
    """Thousands of small part files (README: 4,000 files migrated in 14 s) with rejected
    records: each window's two reject statements cost the whole table, so the run grows
    with windows x rejects. Measured in SQLite's VM steps (deterministic), a window's
    bookkeeping should not depend on how many rejects the *other* windows have."""
    def ledger_with(n: int, name: str) -> Ledger:
        led = Ledger(tmp_path / name)
        led.add_windows([(f"f{i}.jsonl", "file", {}) for i in range(100)])
        others = [f"f{1 + i % 99}.jsonl" for i in range(n)]  # f0 has none of them
        led.add_rejects([(w, i, w, "transform", "missing_id", "no id", None, '{"a":1}')
                         for i, w in enumerate(others)])
        led.add_rejects([("f0.jsonl", 10**8 + i, "f0.jsonl", "transform", "missing_id",
                          "no id", None, None) for i in range(5)])  # its own: the same
        return led

    row = ("f0.jsonl", 10**9, "f0.jsonl", "transform", "missing_id", "no id", None, None)
    small, big = ledger_with(1_000, "small.sqlite"), ledger_with(60_000, "big.sqlite")
    try:
        few, many = _steps(small, "f0.jsonl", row), _steps(big, "f0.jsonl", row)
    finally:
        small.close()
        big.close()
    assert many <= 3 * max(few, 1), (few, many)


# --- guards ---------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_a_failed_atomic_step_is_undone_whole_and_the_next_ledger_sees_earlier_dead_letters(
        tmp_path: Path) -> None:
    """An ``atomic()`` block that raises after a nested write (``add_rejects`` updates the
    cached set of sources with dead letters before its write) leaves nothing behind and no
    open transaction; a Ledger opened again (a resume) reads the dead letters a former one
    wrote, so accepting their events drops them; a transform reject of the same source
    is never dropped."""
    path = tmp_path / "ledger.sqlite"
    led = Ledger(path)
    led.add_windows([("w", "file", {})])
    led.add_rejects([("f", 1, "w", "amplitude", "silenced", "400", None, "{}", "b-old")])
    led.close()

    led = Ledger(path)  # the resume: its cache is read from the file
    with pytest.raises(Boom), led.atomic():
        led.add_rejects([("g", 7, "w", "amplitude", "silenced", "400", None, "{}", None)])
        led.park("w", "b", '["f",5]', b"{}", "daily_quota")
        raise Boom
    assert not led._db.in_transaction
    assert [r[:2] for r in led.iter_rejects()] == [("f", 1)]
    assert led.parked_counts() == {}
    with led.atomic(), led.atomic():  # re-entered: one transaction
        led.add_rejects([("f", 3, "w", "transform", "missing_id", "no id", None, None)])
    led.batch_sent("b", "w", 0, 3)
    led.batch_done("b", accepted=3, dead_lettered=0, parked=0,
                   accepted_origins=[("f", 1), ("f", 3), ("g", 7)])
    assert [r[:4] for r in led.iter_rejects()] == [("f", 3, "w", "transform")]
    led.close()
