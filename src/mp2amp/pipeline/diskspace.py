"""A full or read-only disk stops ``migrate`` with what to do, instead of a traceback.

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
UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def is_disk_full(exc: BaseException) -> bool:
    """A write failed for want of space (or quota): the OS's, or SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        return "disk is full" in str(exc)  # SQLITE_FULL: "database or disk is full"
    return False


def _inside(path: str, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return True


def disk_full_message(workdir: Path, where: str | None, reason: str | None = None) -> str:
    """``reason``: the system's words (a quota is not a full disk: where to free space
    differs)."""
    said = f": {reason}" if reason else ""
    if where is not None and not _inside(where, workdir):  # a local output_dir, say
        return (f"the disk is full (writing {where}{said}); nothing done so far is lost: free "
                "some space there, then run the same `mp2amp migrate` command with --resume")
    place = f"writing {where}" if where else f"writing in the work folder {workdir}"
    place += said
    return (f"the disk is full ({place}); nothing done so far is lost: free some space, or "
            "move the work folder to a bigger disk and point [run] workdir at it, then run "
            "the same `mp2amp migrate` command with --resume. The work folder needs about "
            "1.3x the uncompressed size of the input for its staged windows, plus as much "
            "again as the largest window while it is sorted")


def unwritable_file(exc: BaseException, workdir: Path) -> str | None:
    """The file of the work folder that could not be written (read-only disk, no
    permission), or None when ``exc`` is something else (an input file's error included)."""
    if isinstance(exc, sqlite3.OperationalError) and "readonly database" in str(exc):
        return str(workdir)  # SQLITE_READONLY names no file
    if not isinstance(exc, OSError) or exc.errno not in UNWRITABLE_ERRNOS \
            or exc.filename is None:
        return None
    try:
        inside = Path(exc.filename).resolve().is_relative_to(workdir.resolve())
    except (OSError, ValueError, TypeError):
        return None
    return str(exc.filename) if inside else None  # (an input file's error is not ours)


def written_file(exc: BaseException) -> str | None:
    """The file a full disk refused: a copy's error names its source first and the file
    being written second (``filename2``), which is the one on the full disk."""
    if not isinstance(exc, OSError):
        return None
    where = exc.filename2 if exc.filename2 is not None else exc.filename
    return None if where is None else str(where)


def storage_error(exc: BaseException, workdir: Path) -> TerminalError | None:
    """What a full disk, or a work folder that cannot be written, stops the run with (the
    message the CLI prints and ``status`` repeats); None for any other error."""
    if is_disk_full(exc):
        # SQLite names no file (the ledger, or a spill file in the work folder's scratch)
        reason = exc.strerror if isinstance(exc, OSError) else None
        return TerminalError(disk_full_message(workdir, written_file(exc), reason))
    blocked = unwritable_file(exc, workdir)
    if blocked is None:
        return None
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return TerminalError(
        f"cannot write {blocked} ({reason}); make the work folder writable, or set [run] "
        "workdir to a writable folder (a run that has started goes on only from its own "
        "folder, with --resume)")


@contextmanager
def stop_on_storage_errors(workdir: Path) -> Iterator[None]:
    """Turn a full disk anywhere in the run, or a work folder that cannot be written,
    into a ``TerminalError`` saying what to do."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        stop = storage_error(exc, workdir)
        if stop is None:
            raise
        raise stop from exc
