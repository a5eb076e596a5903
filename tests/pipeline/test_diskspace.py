"""A full disk stops ``migrate`` with what to do (exit 2), and ``--resume`` then finishes;
a work folder that cannot be written is named, not a traceback.

A full disk is a crash at that instant for the ledger; what is tested here is that the run
says so (not the traceback of whichever write noticed, nor a later error that hides it)
and that freeing space and resuming delivers every event exactly once.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    Project,
    amplitude,
    assert_exactly_once,
    crash_at_batch,
    make_config,
    write_toml,
)

from mp2amp.errors import TerminalError
from mp2amp.extract.files import SourceFile, iter_file
from mp2amp.ledger import Ledger
from mp2amp.pipeline import migrate as migrate_module
from mp2amp.pipeline import staging, windows
from mp2amp.pipeline.diskspace import is_disk_full, unwritable_file
from mp2amp.pipeline.migrate import migrate

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(("exc", "full"), [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (sqlite3.OperationalError("database or disk is full"), True),
    (sqlite3.OperationalError("no such table: windows"), False),
    (ValueError("disk is full"), False),
], ids=["ENOSPC", "EDQUOT", "EACCES", "SQLITE_FULL", "sqlite-other", "not-io"])
def test_is_disk_full(exc: BaseException, full: bool) -> None:
    assert is_disk_full(exc) is full


def test_staging_raises_the_full_disk_not_its_cleanup(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A sorted run cut short by the full disk used to stay in the run folder, whose
    removal then failed with "Directory not empty" and hid the real error."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(orjson.dumps({"event": "E", "properties": {
        "time": 1_700_000_000 + i, "distinct_id": f"u{i}"}}).decode() + "\n"
        for i in range(10)))
    written = staging._write_run

    def full_after_a_run(buf: list[bytes], tmpdir: Path, n: int) -> Path:
        if n == 0:
            return written(buf, tmpdir, n)
        (tmpdir / f"run-{n:05d}").write_bytes(b"half a run")
        raise NO_SPACE

    monkeypatch.setattr(staging, "_write_run", full_after_a_run)
    dest = tmp_path / "staged" / "w.jsonl"
    with pytest.raises(OSError) as raised:
        staging.stage(iter_file(SourceFile(str(src), None)), dest, chunk=3)
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in dest.parent.iterdir()) == []  # no runs, no .part


def test_a_full_ledger_raises_sqlite_full(tmp_path: Path) -> None:
    """SQLite may roll back by itself on SQLITE_FULL; the ledger's own ROLLBACK must then
    not raise "no transaction is active" in its place."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pages = ledger._db.execute("PRAGMA page_count").fetchone()[0]
    ledger._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(sqlite3.OperationalError) as raised:
        ledger.add_windows([(f"w{i}" * 200, "file", {"url": "x" * 500}) for i in range(500)])
    assert is_disk_full(raised.value)
    assert not ledger._db.in_transaction
    ledger.close()


def test_migrate_stops_on_a_full_disk_and_resume_delivers_each_event_once(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staged = windows.stage
    calls: list[int] = []

    def full_on_the_second_window(records: Any, dest: Path, *args: Any, **kw: Any) -> int:
        calls.append(1)
        if len(calls) == 2:
            dest.with_name(dest.name + ".part").write_bytes(b"cut short")
            raise OSError(errno.ENOSPC, "No space left on device", str(dest) + ".part")
        return staged(records, dest, *args, **kw)

    monkeypatch.setattr(windows, "stage", full_on_the_second_window)
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        with pytest.raises(TerminalError) as stopped:
            migrate(config)
        assert str(stopped.value).startswith(
            f"the disk is full (writing {work}/staged/")
        assert "nothing done so far is lost" in str(stopped.value)
        assert "with --resume" in str(stopped.value)
        assert stopped.value.exit_code == 2
        monkeypatch.setattr(windows, "stage", staged)  # space was freed
        result = migrate(config, resume=True)
        assert result.totals["balanced"] and result.exit_code == 0
        assert_exactly_once(url, project.expected)


def test_a_full_ledger_mid_load_stops_and_resume_delivers_each_event_once(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crash_at_batch(monkeypatch, 3, sqlite3.OperationalError("database or disk is full"))
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        with pytest.raises(TerminalError) as stopped:
            migrate(config)
        assert str(stopped.value).startswith(
            f"the disk is full (writing in the work folder {work}); nothing done so far")
        monkeypatch.undo()
        result = migrate(config, resume=True)
        assert result.totals["balanced"] and result.exit_code == 0
        assert_exactly_once(url, project.expected)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_real_full_disk_through_the_cli(project: Project, tmp_path: Path) -> None:
    """The kernel's ENOSPC on a small tmpfs (needs the right to mount: root here)."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "1M"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        work = disk / "work"
        env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)
        with amplitude(tmp_path / "amp") as url:
            cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url)
            run = [sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "--quiet"]
            proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 2, proc.stderr[-2000:]
            assert proc.stderr.startswith("error: the disk is full (writing "), proc.stderr
            assert "Traceback" not in proc.stderr
            subprocess.run(["mount", "-o", "remount,size=200M", str(disk)], check=True)
            proc = subprocess.run([*run, "--resume", "--json"], env=env, capture_output=True,
                                  text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert orjson.loads(proc.stdout)["totals"]["balanced"]
            assert_exactly_once(url, project.expected)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_unwritable_file_names_only_the_work_folders_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    inside = str(work / "staged" / "w.jsonl")
    assert unwritable_file(OSError(errno.EROFS, "Read-only file system", inside), work) == inside
    assert unwritable_file(OSError(errno.EACCES, "Permission denied", inside), work) == inside
    # an input file's error is the extract's to report, and "not found" is not this
    assert unwritable_file(OSError(errno.EACCES, "Permission denied", "/data/in.gz"), work) \
        is None
    assert unwritable_file(OSError(errno.ENOENT, "No such file", inside), work) is None
    assert unwritable_file(OSError(errno.EROFS, "Read-only file system"), work) is None
    assert unwritable_file(sqlite3.OperationalError("attempt to write a readonly database"),
                           work) == str(work)


_EVENT = '{"event":"E","properties":{"time":1704067200,"distinct_id":"u1"}}\n'


def test_a_work_folder_that_cannot_be_written_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"

    def denied(workdir: Path) -> None:
        raise OSError(errno.EACCES, "Permission denied", str(workdir / "migrate.lock"))

    monkeypatch.setattr(migrate_module, "WorkLock", denied)
    (tmp_path / "day.jsonl").write_text(_EVENT)  # inputs are planned before the folder
    config = make_config(tmp_path / "day.jsonl", work, "http://127.0.0.1:9")
    with pytest.raises(TerminalError) as stopped:
        migrate(config)
    assert str(stopped.value) == (
        f"cannot write {work}/migrate.lock (Permission denied); make the work folder "
        "writable, or set [run] workdir to a writable folder (a run that has started goes "
        "on only from its own folder, with --resume)")
    assert stopped.value.exit_code == 2


def test_a_read_only_work_folder_through_the_cli(tmp_path: Path) -> None:
    """An existing work folder on a read-only mount (the kernel's EROFS)."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "1M"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        (disk / "work").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        (tmp_path / "day.jsonl").write_text(_EVENT)  # inputs are planned before the folder
        cfg = write_toml(tmp_path / "mp2amp.toml", tmp_path / "day.jsonl", disk / "work",
                         "http://127.0.0.1:9")
        proc = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg)],
                              env=dict(os.environ, AMPLITUDE_API_KEY=API_KEY),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == (
            f"error: cannot write {disk}/work/migrate.lock (Read-only file system); make the "
            "work folder writable, or set [run] workdir to a writable folder (a run that has "
            "started goes on only from its own folder, with --resume)\n")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_outside_the_work_folder_is_not_told_to_move_the_work_folder(
        tmp_path: Path) -> None:
    """A local S3-import output_dir on another disk: freeing space there is the advice."""
    from mp2amp.pipeline.diskspace import disk_full_message

    work = tmp_path / "work"
    out = str(tmp_path / "import" / "mp2amp-a1-00000.json.gz")
    assert disk_full_message(work, out) == (
        f"the disk is full (writing {out}); nothing done so far is lost: free some space "
        "there, then run the same `mp2amp migrate` command with --resume")
    inside = disk_full_message(work, str(work / "staged" / "w.jsonl"))
    assert "move the work folder to a bigger disk" in inside
