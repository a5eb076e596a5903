"""SQLite scratch store the identity graph spills to past its memory budget.

The database is scratch: it is rebuilt from the input on every run, so durability is
traded for speed (WAL, ``synchronous=OFF``), writes are buffered and sent with
``executemany`` in one transaction per batch, and lookups go through a bounded cache.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mp2amp.errors import InputError

BATCH_ROWS = 20_000
CACHE_ENTRIES = 200_000
_MISSING = object()


class ScratchDb:
    """One SQLite file under the workdir, created fresh."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(
                f"cannot create the identity spill database {path}: {exc}; "
                "choose a writable workdir and run again"
            ) from exc
        for pragma in (
            "journal_mode=WAL",
            "synchronous=OFF",
            "temp_store=FILE",
            "cache_size=-262144",  # 256 MiB page cache
        ):
            self.conn.execute(f"PRAGMA {pragma}")

    def script(self, sql: str) -> None:
        self.conn.executescript(sql)

    def write_many(self, sql: str, rows: Sequence[Sequence[Any]] | Iterable[Sequence[Any]]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany(sql, rows)
        self.conn.execute("COMMIT")

    def rows(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        cursor: Iterator[tuple[Any, ...]] = self.conn.execute(sql, args)
        return cursor  # the cursor itself: no generator frame per row

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(sql, args).fetchone()
        return row

    def close(self) -> None:
        self.conn.close()


class BatchWriter:
    """Buffers rows for one statement and writes them ``BATCH_ROWS`` at a time."""

    def __init__(self, db: ScratchDb, sql: str) -> None:
        self.db = db
        self.sql = sql
        self.pending: list[tuple[Any, ...]] = []

    def add(self, row: tuple[Any, ...]) -> None:
        self.pending.append(row)
        if len(self.pending) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.db.write_many(self.sql, self.pending)
            self.pending = []


class CachedLookup:
    """``key -> first column of one row`` through a bounded LRU cache.

    ``get`` returns ``default`` when no row matches; a matching row whose value is NULL
    returns ``None``, so callers can tell "unknown" from "known, no value".
    """

    def __init__(self, db: ScratchDb, sql: str, capacity: int = CACHE_ENTRIES) -> None:
        self.db = db
        self.sql = sql
        self.capacity = capacity
        self.cache: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str, default: Any = None) -> Any:
        cache = self.cache
        hit = cache.get(key, _MISSING)
        if hit is not _MISSING:
            cache.move_to_end(key)
            return default if hit is _MISSING_ROW else hit
        row = self.db.one(self.sql, (key,))
        value = _MISSING_ROW if row is None else row[0]
        cache[key] = value
        if len(cache) > self.capacity:
            cache.popitem(last=False)
        return default if value is _MISSING_ROW else value


_MISSING_ROW = object()
