"""A full disk stops ``migrate`` with what to do, instead of a traceback.

Why: the work folder holds a staged copy of every window (about 1.3x the input's
uncompressed size: the record plus its sort key and identity view) and, while a window is
sorted, its runs too; a long migration can fill a disk that looked big enough. Running out
is like a crash at that instant, which the ledger is made for: free some space (or move the
work folder) and ``--resume``. What must not happen is the traceback of whichever write
noticed it first, or a later error hiding it.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mp2amp.errors import TerminalError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """A write failed for want of space (or quota): the OS's, or SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        return "disk is full" in str(exc)  # SQLITE_FULL: "database or disk is full"
    return False


def disk_full_message(workdir: Path, where: str | None) -> str:
    place = f"writing {where}" if where else f"writing in the work folder {workdir}"
    return (f"the disk is full ({place}); nothing done so far is lost: free some space, or "
            "move the work folder to a bigger disk and point [run] workdir at it, then run "
            "the same `mp2amp migrate` command with --resume. The work folder needs about "
            "1.3x the uncompressed size of the input for its staged windows, plus as much "
            "again as the largest window while it is sorted")


@contextmanager
def stop_when_disk_full(workdir: Path) -> Iterator[None]:
    """Turn a full disk anywhere in the run into a ``TerminalError`` saying what to do."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        if not is_disk_full(exc):
            raise
        # SQLite names no file (the ledger, or a spill file in the work folder's scratch)
        where = exc.filename if isinstance(exc, OSError) else None
        raise TerminalError(disk_full_message(workdir, None if where is None else str(where))
                            ) from exc
