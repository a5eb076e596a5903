"""One ``mp2amp migrate`` per work folder at a time.

Two runs on one ledger would send the same batches twice and mark each other's batches
done. An exclusive ``flock`` on ``workdir/migrate.lock`` prevents it; the kernel drops the
lock when its process dies, kill -9 included, so a crashed run never blocks its resume.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mp2amp.errors import TerminalError

LOCK_NAME = "migrate.lock"


def running_pid(workdir: Path) -> int | None:
    """The pid of the ``mp2amp migrate`` running in ``workdir`` now, or None (read only:
    a shared lock that a running migration's exclusive one refuses)."""
    try:
        fd = os.open(workdir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
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

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
