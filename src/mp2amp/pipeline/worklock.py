"""One ``mp2amp migrate`` per work folder at a time.

Two runs on one ledger would send the same batches twice and mark each other's batches
done. An exclusive ``flock`` on ``workdir/migrate.lock`` prevents it; the kernel drops the
lock when its process dies, kill -9 included, so a crashed run never blocks its resume.

The holder also takes an open-file-description (OFD) write lock on the file, which
``running_pid`` can test with ``F_OFD_GETLK`` without taking any lock: a probe that locked
(even shared, for microseconds) would make a migrate starting in that instant refuse.
"""

from __future__ import annotations

import fcntl
import os
import struct
from contextlib import suppress
from pathlib import Path

from mp2amp.errors import TerminalError

LOCK_NAME = "migrate.lock"
# struct flock (64-bit off_t): l_type, l_whence, l_start, l_len (0: to the end), l_pid
_FLOCK = struct.Struct("@hhqqi0q")
_OFD_GETLK: int | None = getattr(fcntl, "F_OFD_GETLK", None)  # Linux only
_OFD_SETLK: int | None = getattr(fcntl, "F_OFD_SETLK", None)


def _ofd_held(fd: int) -> bool | None:
    """Whether another open file holds a write lock on ``fd``'s file; None when OFD locks
    cannot be tested here (not Linux, or a filesystem without them)."""
    if _OFD_GETLK is None:
        return None
    query = _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
    try:
        answer = fcntl.fcntl(fd, _OFD_GETLK, query)
    except OSError:
        return None
    return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)


def _ofd_set(fd: int, kind: int) -> None:
    if _OFD_SETLK is not None:
        # no OFD locks on this file system: running_pid falls back to the flock then
        with suppress(OSError):
            fcntl.fcntl(fd, _OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, 0, 0, 0))


def running_pid(workdir: Path) -> int | None:
    """The pid of the ``mp2amp migrate`` running in ``workdir`` now, or None (read only:
    takes no lock, except where OFD locks are missing: a brief shared flock then)."""
    try:
        fd = os.open(workdir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        held = _ofd_held(fd)
        if held is None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                held = True
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
        if not held:
            return None
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)


class WorkLock:
    """Held from construction until ``release()``."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / LOCK_NAME
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            self._fd = None
            raise TerminalError(
                f"another `mp2amp migrate` (pid {holder}) is running in {workdir}; wait for "
                "it to finish (or stop it), then run `mp2amp migrate --resume`") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        _ofd_set(self._fd, fcntl.F_WRLCK)  # the marker running_pid tests; flock excludes

    def release(self) -> None:
        if self._fd is not None:
            _ofd_set(self._fd, fcntl.F_UNLCK)  # first: a next holder's marker never fails
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
