"""Exact-duplicate dropping: Mixpanel's raw export is not deduplicated (about 0.1% of lines).

A record is a duplicate when an earlier record had the same Amplitude ``insert_id``. That
id is derived from Mixpanel's own deduplication key (``transform/insert_id.py``): event
name, distinct_id, time in ms and ``$insert_id``, or, without a usable ``$insert_id``, a
hash of the whole content without the properties Mixpanel's servers stamp at ingestion
(``mp_processing_time_ms``, ``$mp_api_timestamp_ms``, ...). So a reused ``$insert_id`` on
another event, user or time is kept (its id differs), and two records Mixpanel counts as
one are one here too. Amplitude would drop the second anyway (same insert_id within
7 days): dropping it here means it is counted as a duplicate instead of silently missing.

Memory: each record seen is one 16-byte digest. Past ``memory_budget`` digests the set is
written to SQLite and cleared; a Bloom filter over what is on disk keeps the common case
(a new record) from touching the disk. The filter has a fixed size (10 bits for each of
8 budgets of digests, at least 1M), allocated at the first spill, so memory is flat. With a ``path`` the state is durable at each
``checkpoint()`` (only then) and a later Deduper on the same path resumes it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from mp2amp.transform.spillfile import SpillFile

_DIGEST = hashlib.blake2b(digest_size=16)  # copied per record: cheaper than a new hasher

BLOOM_PER_BUDGET = 8
BLOOM_MIN = 1 << 20

_SCHEMA = "CREATE TABLE IF NOT EXISTS seen (digest BLOB PRIMARY KEY) WITHOUT ROWID"


def insert_id_digest(insert_id: str) -> bytes:
    """16 bytes per remembered event, whatever the id's length."""
    h = _DIGEST.copy()
    h.update(insert_id.encode("utf-8", "replace"))
    return h.digest()


class _Bloom:
    """A Bloom filter over digests that are already uniformly random (no hashing needed)."""

    __slots__ = ("_bits", "_m", "capacity", "count")

    _K = 7  # ~1% false positives at capacity with 10 bits per entry

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._m = capacity * 10
        self._bits = bytearray((self._m + 7) // 8)
        self.count = 0

    def _indexes(self, digest: bytes) -> list[int]:
        h1 = int.from_bytes(digest[:8], "little")
        h2 = int.from_bytes(digest[8:], "little") | 1
        m = self._m
        return [(h1 + i * h2) % m for i in range(self._K)]

    def add(self, digest: bytes) -> None:
        bits = self._bits
        for index in self._indexes(digest):
            bits[index >> 3] |= 1 << (index & 7)
        self.count += 1

    def __contains__(self, digest: bytes) -> bool:
        bits = self._bits
        return all(bits[index >> 3] & (1 << (index & 7)) for index in self._indexes(digest))


class Deduper(SpillFile):
    """Remembers every (insert_id, content) seen; ``is_duplicate`` is True from the 2nd on."""

    def __init__(
        self,
        *,
        memory_budget: int = 2_000_000,
        path: str | Path | None = None,
        spill_dir: str | Path | None = None,
    ) -> None:
        self.memory_budget = max(1, memory_budget)
        self._hot: set[bytes] = set()
        self._bloom: _Bloom | None = None
        super().__init__(spill_dir)
        self.duplicates = 0
        self.spills = 0
        self.disk_lookups = 0  # Bloom hits that had to ask SQLite
        if path is not None:
            self._open(Path(path))

    def is_duplicate(self, insert_id: str) -> bool:
        """True when an event with this insert_id was seen before; otherwise remember it."""
        return self.seen(insert_id_digest(insert_id))

    def seen(self, digest: bytes) -> bool:
        """``is_duplicate`` by ``insert_id_digest(insert_id)``, computed elsewhere (the
        migration's transform worker does it, off this process's core)."""
        hot = self._hot
        if digest in hot or (self._bloom is not None and self._on_disk(digest)):
            self.duplicates += 1
            return True
        hot.add(digest)
        if len(hot) > self.memory_budget:
            self._spill()
        return False

    def checkpoint(self) -> None:
        """Make everything seen so far durable in the SQLite file (a no-op without one).

        Spills between checkpoints are not committed: after a crash, a Deduper on the same
        path holds exactly what the last checkpoint held, so a caller that checkpoints when
        its ledger commits re-reads the uncommitted records as new, not as duplicates."""
        if self._db is None:
            return
        if self._hot:
            self._flush()
        self._db.commit()

    def __len__(self) -> int:
        """Distinct records remembered (memory and disk)."""
        return len(self._hot) + (self._bloom.count if self._bloom is not None else 0)

    # --- storage --------------------------------------------------------------------

    def _on_disk(self, digest: bytes) -> bool:
        assert self._bloom is not None and self._db is not None
        if digest not in self._bloom:
            return False
        self.disk_lookups += 1
        row = self._db.execute("SELECT 1 FROM seen WHERE digest = ?", (digest,)).fetchone()
        return row is not None

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        db.execute(_SCHEMA)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        self._db = db
        self._load_bloom()

    def _load_bloom(self) -> None:
        """One Bloom filter of fixed size for the whole run, so memory stays flat: sized for
        ``BLOOM_PER_BUDGET`` budgets of spilled digests (at least ``BLOOM_MIN``). Past that
        it fills up and more new records take a SQLite look-up: slower, never wrong."""
        assert self._db is not None
        bloom = _Bloom(max(self.memory_budget * BLOOM_PER_BUDGET, BLOOM_MIN))
        for (digest,) in self._db.execute("SELECT digest FROM seen"):
            bloom.add(bytes(digest))
        self._bloom = bloom

    def _spill(self) -> None:
        if self._db is None:
            self._open_temporary("mp2amp-dedup-", "dedup.sqlite")
        self._flush()
        self.spills += 1

    def _flush(self) -> None:
        assert self._db is not None and self._bloom is not None
        hot = self._hot
        self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", ((d,) for d in hot))
        add = self._bloom.add
        for digest in hot:
            add(digest)
        hot.clear()
