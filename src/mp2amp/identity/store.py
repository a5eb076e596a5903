"""SQLite scratch store the identity graph spills to past its memory budget.

The database is scratch: it is rebuilt from the input on every run, so durability is
traded for speed (WAL, ``synchronous=OFF``), writes are buffered and sent with
``executemany`` in one transaction per batch, and lookups go through a bounded cache.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mp2amp.errors import InputError

BATCH_ROWS = 20_000
# Pass-2 caches (the graph's memo, the LRU in front of a spilled table): budget / 16 entries
# within these bounds, a few hundred bytes each. Pass 2 reads events in time order, so the
# recently active IDs a small cache holds take nearly all look-ups; a larger one only grows
# the process with the number of IDs.
CACHE_MIN = 1_024
CACHE_MAX = 16_384
# SQLite's page cache of a spilled graph: ~64 bytes per budgeted ID, within these bounds, so
# a small budget (migrate's) keeps the process small and a large one keeps 50M IDs fast.
PAGE_CACHE_MIN_KIB = 8 * 1024
PAGE_CACHE_MAX_KIB = 256 * 1024
# ... and once the graph is built: pass 2 reads a few pages now and then (its caches take
# nearly every look-up, the OS keeps the file's pages), so a big cache would only grow
# with the spilled tables (e.g. ~8 MiB per file in the transform worker at 5M events).
READ_CACHE_KIB = 1024
_MISSING = object()
_OPEN: weakref.WeakSet[ScratchDb] = weakref.WeakSet()
# A forked child's copies of the parent's connections: SQLite forbids using them, and
# closing them could checkpoint the parent's WAL, so they are kept and never touched.
_INHERITED: list[sqlite3.Connection] = []


def _reconnect_after_fork() -> None:
    for db in list(_OPEN):
        _INHERITED.append(db.conn)
        db.conn = db.connect(READ_CACHE_KIB)


os.register_at_fork(after_in_child=_reconnect_after_fork)


class ScratchDb:
    """One SQLite file under the workdir, created fresh.

    A process forked from the one that built the graph (migrate's transform worker) reads
    it through a connection of its own, opened at the fork."""

    def __init__(self, path: Path, cache_kib: int = PAGE_CACHE_MAX_KIB) -> None:
        self.path = path
        self.cache_kib = cache_kib
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self.conn = self.connect()
            self.conn.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            raise InputError(
                f"cannot create the identity spill database {path}: {exc}; "
                "choose a writable workdir and run again"
            ) from exc
        _OPEN.add(self)

    def connect(self, cache_kib: int | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        cache = self.cache_kib if cache_kib is None else cache_kib
        for pragma in ("synchronous=OFF", "temp_store=FILE", f"cache_size=-{cache}"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

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

    def shrink(self) -> None:
        """Free the page cache (pass 1 filled it; pass 2 reads few pages, often elsewhere:
        migrate's transform worker is forked after ``finish`` and copies this heap), and
        keep it small from now on."""
        self.conn.execute(f"PRAGMA cache_size=-{READ_CACHE_KIB}")
        self.conn.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        _OPEN.discard(self)
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


def page_cache_kib(budget: int) -> int:
    """SQLite page cache (KiB) of a graph of ``budget`` IDs in memory."""
    return max(PAGE_CACHE_MIN_KIB, min(PAGE_CACHE_MAX_KIB, budget * 64 // 1024))


def cache_entries(budget: int) -> int:
    """Entries of a pass-2 cache for a graph of ``budget`` IDs in memory."""
    return max(CACHE_MIN, min(CACHE_MAX, budget // 16))


class CachedLookup:
    """``key -> first column of one row`` through a bounded LRU cache.

    ``get`` returns ``default`` when no row matches; a matching row whose value is NULL
    returns ``None``, so callers can tell "unknown" from "known, no value".
    """

    def __init__(self, db: ScratchDb, sql: str, capacity: int = CACHE_MAX) -> None:
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
