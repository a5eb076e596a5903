"""How the ledger talks to SQLite: texts made storable, read-only opening, damage named.

Why a lone surrogate is escaped: Python strings may hold one (a ``\\ud800`` JSON escape in a
record, a file name that is not UTF-8), SQLite stores UTF-8 only and refuses it with a
``UnicodeEncodeError``. A dead letter naming such a property stopped the run, and every
resume stopped the same way. Every write goes through ``Writes``, so no text can do that.
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mp2amp.errors import TerminalError


def storable(text: str) -> str:
    """``text`` as SQLite can store it: lone surrogates written as ``\\udXXX`` escapes
    (idempotent: an escaped text is left as it is)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _storable_params(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(storable(p) if isinstance(p, str) else p for p in params)


class Writes:
    """The ledger's connection inside a write transaction: every text parameter is made
    ``storable`` on its way in."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, _storable_params(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._db.executemany(sql, (_storable_params(r) for r in rows))


def add_column(db: sqlite3.Connection, table: str, column: str, kind: str) -> None:
    """Add ``column`` to a ``table`` a former mp2amp made without it (SQLite keeps the
    rows: the new column is NULL in them)."""
    if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


_FULL, _READONLY, _CANTOPEN, _IOERR = 13, 8, 14, 10  # SQLITE_FULL, _READONLY, _CANTOPEN, _IOERR
_FEW_BYTES = 1 << 20  # free space under which an I/O error opening the ledger is a full disk


def raise_storage_error(exc: sqlite3.DatabaseError, path: Path) -> None:
    """Raise what a full disk or an unwritable work folder is, when that is why opening the
    ledger ``path`` for writing failed (creating its tables, adding a column an older
    ledger lacks): the run's storage handling then says to free space, or make the folder
    writable, and ``--resume``. Moving the ledger away would throw the run's state away."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF  # extended codes carry it in the low byte
    text = str(exc)
    if primary in {_FULL, _READONLY} or "disk is full" in text or "readonly database" in text:
        raise exc
    if primary == _CANTOPEN and not os.access(path.parent, os.W_OK):  # no -wal/-shm there
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path)) from exc
    if primary == _IOERR and _free_bytes(path.parent) < _FEW_BYTES:
        # a nearly full disk: SQLite cannot size the -shm file (SQLITE_IOERR_SHMSIZE)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return _FEW_BYTES  # cannot tell: not taken for a full disk


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes. A WAL ledger needs its ``-shm`` file to be read; in
    a folder nobody may write (a read-only mount, a backup, another user's work folder) a
    cleanly finished run left none and none can be made, so the file is opened as
    immutable there: nothing can be writing to it."""
    uri = path.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None,
                         check_same_thread=False)
    try:
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        if os.access(path.parent, os.W_OK):
            raise
        db.close()
        db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None,
                             check_same_thread=False)
    return db


# SQLite's codes for a damaged file: every other error (locked, full, read-only) is not
_DAMAGED = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_LOCKED = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED: another connection writes


def _primary(exc: sqlite3.DatabaseError) -> int | None:
    """SQLite's primary result code: Python reports extended ones (SQLITE_CORRUPT_INDEX is
    779), which carry it in their low byte."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def damaged(path: Path, exc: sqlite3.DatabaseError | str) -> TerminalError:
    """What a damaged ledger stops the command with (``exc``: SQLite's words, or ours)."""
    return TerminalError(
        f"the ledger {path} is damaged ({exc}): the record of this run cannot be read. If "
        "you have a whole copy of it (with its ledger.sqlite-wal file beside it), put that "
        "back and run the same command again; otherwise keep a copy of the work folder for "
        "a look, then start the migration again in a new work folder (Amplitude ignores an "
        "insert_id it has had in the last 7 days, so what was already sent is not doubled "
        "within that time)")


def _locked(path: Path, exc: sqlite3.DatabaseError) -> TerminalError:
    # moving the ledger away would throw the run's record away: it is only in use
    return TerminalError(
        f"the ledger {path} is locked ({exc}): another program has it open for writing (an "
        "sqlite3 shell, a backup or sync tool); nothing of the run is lost: close that "
        "program, then run the same command again (`mp2amp migrate --resume` to go on with "
        "the run)")


def ledger_trouble(path: Path, exc: sqlite3.DatabaseError) -> TerminalError | None:
    """What a damaged or locked ledger stops the command with; None for other errors."""
    primary = _primary(exc)
    if primary in _DAMAGED:
        return damaged(path, exc)
    if primary in _LOCKED:
        return _locked(path, exc)
    return None


def naming_damage(method: Any) -> Any:
    """``method`` (of an object with a ``path``) with a damaged or locked file reported as
    a ``TerminalError`` naming the ledger (not a traceback); generators are guarded while
    they are iterated."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def gen_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                trouble = ledger_trouble(self.path, exc)
                if trouble is not None:
                    raise trouble from exc
                raise
        return gen_wrapper

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            trouble = ledger_trouble(self.path, exc)
            if trouble is not None:
                raise trouble from exc
            raise
    return wrapper
