"""Exact-duplicate dropping: Mixpanel's raw export is not deduplicated (about 0.1% of lines).

A record is a duplicate when an earlier record had the same Amplitude ``insert_id``. That
id is derived from Mixpanel's own deduplication key (``transform/insert_id.py``): event
name, distinct_id, time in whole seconds and ``$insert_id``, or, without a usable ``$insert_id``, a
hash of the whole content without the properties Mixpanel's servers stamp at ingestion
(``mp_processing_time_ms``, ``$mp_api_timestamp_ms``, ...). So a reused ``$insert_id`` on
another event, user or time is kept (its id differs), and two records Mixpanel counts as
one are one here too. Amplitude would drop the second anyway (same insert_id within
7 days): dropping it here means it is counted as a duplicate instead of silently missing.

Memory: each record seen is one 16-byte digest. Past ``memory_budget`` digests the set is
written to SQLite and cleared. Two records with one insert_id have times in one second (the
id hashes the time in whole seconds, or in ms), so times are kept as their second's start
and a record can only repeat a spilled one if that lies within the span of times spilled
so far: in a time-ordered run (windows in order, each sorted) that is almost
never, and the common case (a new record) never touches the disk. Inputs whose windows
overlap in time pay a SQLite look-up for the records inside the spilled span: slower,
never wrong. On disk the digests are keyed by (time, digest): a time-ordered run appends
at the end of the index instead of inserting at random places in it (random inserts cost
~4 us per record at 1M records, most of the deduplication's time). Even appended, an
index insert cost ~1.5 us per record, for look-ups a time-ordered run almost never makes
(6 in a 1M-event migration, at window starts). So a spill only appends its (time, digest)
pairs to a flat scratch file as one segment, with its span of times; a look-up scans the
few segments whose span holds its time (a C ``find`` over ~1 MB), and a segment asked
more than ``_SCANS_PER_SEGMENT`` times is indexed in SQLite, so that inputs of
overlapping windows never scan without end. A checkpoint indexes everything. With a ``path`` the
state is durable at each ``checkpoint()`` (only then) and a later Deduper on the same path
resumes it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mp2amp.transform.spillfile import SPILL_CACHE_KIB, SpillFile

_DIGEST = hashlib.blake2b(digest_size=16)  # copied per record: cheaper than a new hasher

# ``t`` is the record's time in ms (_FIRST when the caller did not know it).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_at (t INTEGER NOT NULL, digest BLOB NOT NULL,
                                    PRIMARY KEY (t, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS span (id INTEGER PRIMARY KEY CHECK (id = 0), lo INTEGER, hi INTEGER);
"""
_FIRST, _LAST = -(2**63), 2**63 - 1  # the times SQLite can hold
_NO_SPAN = (_LAST, _FIRST)  # lo > hi: empty; min()/max() with a time make it that time
_PAIR = struct.Struct(">q16s")  # a spilled (time, digest) in the scratch file
_BLOCK_PAIRS = 50_000  # pairs read from the scratch file at once (1.2 MB)
_SCANS_PER_SEGMENT = 4  # look-ups a spilled segment answers by scanning before it is indexed


@dataclass(slots=True)
class _Segment:
    """One spill in the scratch file: ``count`` pairs from byte ``offset``, times lo..hi."""

    offset: int
    count: int
    lo: int
    hi: int
    scans: int = 0


def insert_id_digest(insert_id: str) -> bytes:
    """16 bytes per remembered event, whatever the id's length."""
    h = _DIGEST.copy()
    h.update(insert_id.encode("utf-8", "replace"))
    return h.digest()


class Deduper(SpillFile):
    """Remembers every insert_id seen; ``is_duplicate`` is True from the 2nd on."""

    def __init__(
        self,
        *,
        memory_budget: int = 2_000_000,
        path: str | Path | None = None,
        spill_dir: str | Path | None = None,
    ) -> None:
        self.memory_budget = max(1, memory_budget)
        self._hot: dict[bytes, int] = {}  # digest -> its record's time
        self._hot_lo, self._hot_hi = _NO_SPAN  # the times of the digests in memory
        self._disk_lo, self._disk_hi = _NO_SPAN  # ... and of those spilled (file or SQLite)
        self._pending: IO[bytes] | None = None  # the scratch file of spilled segments
        self._segments: list[_Segment] = []  # ... those not yet indexed in SQLite
        self._pending_end = 0  # where the next segment goes
        self._durable = path is not None
        super().__init__(spill_dir)
        self.duplicates = 0
        self.spills = 0
        self.disk_lookups = 0  # records whose time fell inside the spilled span
        if path is not None:
            self._open(Path(path))

    def is_duplicate(self, insert_id: str, time_ms: int | None = None) -> bool:
        """True when an event with this insert_id was seen before; otherwise remember it.
        ``time_ms`` is the event's time (None: unknown, then the disk is always asked)."""
        return self.seen(insert_id_digest(insert_id), time_ms)

    def seen(self, digest: bytes, time_ms: int | None = None) -> bool:
        """``is_duplicate`` by ``insert_id_digest(insert_id)``, computed elsewhere (the
        migration's transform worker does it, off this process's core)."""
        hot = self._hot
        if digest in hot:
            self.duplicates += 1
            return True
        if time_ms is None:
            self._hot_lo, self._hot_hi = _FIRST, _LAST  # unknown: it may have any time
            if self._disk_lo <= self._disk_hi and self._on_disk(digest, None):
                self.duplicates += 1
                return True
            hot[digest] = _FIRST
        else:
            # one key per second: a seconds export and a ms export of one event share an
            # insert_id (it hashes whole seconds), so they must meet on disk too
            time_ms -= time_ms % 1000
            if self._disk_lo <= time_ms <= self._disk_hi and self._on_disk(digest, time_ms):
                self.duplicates += 1
                return True
            if time_ms < self._hot_lo:
                self._hot_lo = time_ms
            if time_ms > self._hot_hi:
                self._hot_hi = time_ms
            hot[digest] = time_ms
        if len(hot) > self.memory_budget:
            self._spill()
        return False

    def checkpoint(self) -> None:
        """Make everything seen so far durable in the SQLite file (a no-op without one).

        Spills between checkpoints are not committed: after a crash, a Deduper on the same
        path holds exactly what the last checkpoint held, so a caller that checkpoints when
        its ledger commits re-reads the uncommitted records as new, not as duplicates."""
        if not self._durable or self._db is None:
            return
        if self._hot:
            self._flush()
        self._index(list(self._segments))
        self._db.commit()

    def __len__(self) -> int:
        """Distinct records remembered (memory and disk)."""
        on_disk = 0
        self._index(list(self._segments))
        if self._db is not None:
            on_disk = self._db.execute("SELECT COUNT(*) FROM seen_at").fetchone()[0]
        return len(self._hot) + int(on_disk)

    # --- storage --------------------------------------------------------------------

    def _on_disk(self, digest: bytes, time_ms: int | None) -> bool:
        """Whether the file holds ``digest`` with this time or an unknown one (any time
        when ``time_ms`` is unknown: a scan, which no caller in mp2amp needs)."""
        self.disk_lookups += 1
        for segment in list(self._segments):
            if time_ms is not None and not segment.lo <= time_ms <= segment.hi:
                continue  # the digest's time is its record's: it cannot be in there
            if segment.scans < _SCANS_PER_SEGMENT:
                segment.scans += 1
                if self._scan(segment, digest, time_ms):
                    return True
            else:
                self._index([segment])
        if self._db is None:
            return False
        if time_ms is None:
            row = self._db.execute("SELECT 1 FROM seen_at WHERE digest = ? LIMIT 1",
                                   (digest,)).fetchone()
        else:
            row = self._db.execute("SELECT 1 FROM seen_at WHERE t IN (?, ?) AND digest = ?",
                                   (time_ms, _FIRST, digest)).fetchone()
        return row is not None

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        db.executescript(_SCHEMA)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{SPILL_CACHE_KIB}")
        self._db = db
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'seen'").fetchone():
            # a file of an earlier version (digests without times): their time is unknown
            with db:
                db.execute("INSERT OR IGNORE INTO seen_at SELECT ?, digest FROM seen", (_FIRST,))
                db.execute("DROP TABLE seen")
                db.execute("DELETE FROM span")
        row = db.execute("SELECT lo, hi FROM span").fetchone()
        if row is not None:
            self._disk_lo, self._disk_hi = int(row[0]), int(row[1])
        elif db.execute("SELECT 1 FROM seen_at LIMIT 1").fetchone() is not None:
            self._disk_lo, self._disk_hi = _FIRST, _LAST  # an older file: any time

    def _spill(self) -> None:
        self._flush()
        self.spills += 1

    def _flush(self) -> None:
        """The digests in memory to the scratch file, as one segment."""
        hot = self._hot
        if self._pending is None:
            self._pending = tempfile.TemporaryFile(prefix="mp2amp-dedup-",  # noqa: SIM115
                                                   dir=self._spill_dir)
        pack = _PAIR.pack
        self._pending.seek(self._pending_end)
        # pair by pair into the file's buffer: a joined segment would be a transient copy
        # of the whole spill (~4 MB at the migration's 50k digests)
        self._pending.writelines(pack(t, d) for d, t in hot.items())
        self._segments.append(_Segment(self._pending_end, len(hot), self._hot_lo, self._hot_hi))
        self._pending_end += len(hot) * _PAIR.size
        hot.clear()
        self._disk_lo = min(self._disk_lo, self._hot_lo)
        self._disk_hi = max(self._disk_hi, self._hot_hi)
        self._hot_lo, self._hot_hi = _NO_SPAN

    def _blocks(self, segment: _Segment) -> Iterator[bytes]:
        """The segment's pairs, in blocks of whole pairs (memory stays flat)."""
        assert self._pending is not None
        left = segment.count * _PAIR.size
        offset = segment.offset
        while left > 0:
            self._pending.seek(offset)
            block = self._pending.read(min(left, _BLOCK_PAIRS * _PAIR.size))
            if not block:
                raise OSError(f"the deduplication scratch file ended early at byte {offset}")
            yield block
            offset += len(block)
            left -= len(block)

    def _scan(self, segment: _Segment, digest: bytes, time_ms: int | None) -> bool:
        """Whether the segment holds the digest at this time or an unknown one (at any
        time when ``time_ms`` is unknown). Matches must sit on a pair's boundary."""
        if time_ms is None:
            needles = [(digest, 8)]  # the digest follows the pair's 8-byte time
        else:
            needles = [(_PAIR.pack(time_ms, digest), 0), (_PAIR.pack(_FIRST, digest), 0)]
        for block in self._blocks(segment):  # blocks of whole pairs: no match spans two
            for needle, shift in needles:
                at = block.find(needle)
                while at >= 0:
                    if (at - shift) % _PAIR.size == 0:
                        return True
                    at = block.find(needle, at + 1)
        return False

    def _index(self, segments: list[_Segment]) -> None:
        """These segments into SQLite (opened on first need); the file is emptied once
        no segment is left in it."""
        if not segments:
            return
        if self._db is None:
            self._open_temporary("mp2amp-dedup-", "dedup.sqlite")
        assert self._db is not None
        for segment in segments:
            # in arrival order, which is time order in a time-ordered run: appended where
            # the index ends
            for block in self._blocks(segment):
                self._db.executemany("INSERT OR IGNORE INTO seen_at VALUES (?, ?)",
                                     _PAIR.iter_unpack(block))
            self._segments.remove(segment)
        if not self._segments and self._pending is not None:
            self._pending.seek(0)
            self._pending.truncate()
            self._pending_end = 0
        self._db.execute("INSERT OR REPLACE INTO span VALUES (0, ?, ?)",
                         (self._disk_lo, self._disk_hi))

    def close(self) -> None:
        super().close()
        if self._pending is not None:
            self._pending.close()
            self._pending = None
            self._segments.clear()
            self._pending_end = 0
