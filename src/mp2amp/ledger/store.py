"""SQLite storage of the ledger. One transaction per step, in WAL mode.

Why SQLite: a crash (kill -9 included) at any instant leaves either the old or the new
state of a step, never half of it, and ``--resume`` reads exactly what was committed.

``synchronous=NORMAL``: a commit reaches the OS (so it survives the process being killed)
without waiting for the disk; only the WAL checkpoint fsyncs. A power loss may forget the
last few commits but never corrupts the file, and forgetting is safe here: a batch not
recorded as done is sent again with the same insert_ids, which Amplitude deduplicates.
(``FULL`` cost ~3 ms of fsync per commit, two commits per batch, all on the event loop.)
"""

from __future__ import annotations

import inspect
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mp2amp.errors import TerminalError
from mp2amp.ledger.rejects import Origin, RejectStore
from mp2amp.ledger.schema import SCHEMA_VERSION, create_schema
from mp2amp.ledger.sqlite_io import (
    Writes,
    add_column,
    damaged,
    ledger_trouble,
    naming_damage,
    open_read_only,
    raise_storage_error,
)

_MERGED_INTO = "merged_into"  # meta: merged-away window -> the window holding its records
_LINE_ORDERED = "line_ordered_merges"  # meta: see ``Ledger.line_ordered_merges``
_UNSTAGED_LOADED = "unstaged_loaded"  # meta: loaded windows pending again (``mark_pending``),
# a row per window keyed by this and a colon (a run of thousands of files restaged them
# all; one JSON list read and written per window made that quadratic); an older mp2amp's
# JSON list under the bare key is turned into rows when next written
_UNSTAGED_ROWS = (f"{_UNSTAGED_LOADED}:", f"{_UNSTAGED_LOADED};")  # ";" follows ":"


def _origin_of(key: str) -> Origin:
    """The ``(source, line)`` of a parked row's origin key (``[source, line]`` JSON)."""
    source, line = orjson.loads(key)
    return str(source), int(line)


@dataclass(frozen=True, slots=True)
class WindowRow:
    window_id: str
    seq: int
    kind: str
    spec: dict[str, Any]
    state: str
    staged_path: str | None
    records: int
    counts: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BatchRow:
    batch_id: str
    window_id: str
    seq: int
    events: int
    state: str
    accepted: int
    dead_lettered: int
    parked: int
    attempts: int


class Ledger(RejectStore):
    """The journal of one work folder. Not shared between processes at the same time."""

    def __init__(self, path: Path, *, read_only: bool = False, create: bool = True) -> None:
        """Open (or, unless ``read_only``, create) the ledger at ``path``. A file that is
        not an mp2amp ledger (another SQLite database; with ``read_only`` also an empty
        file) is refused and left as it is. A file with a database header but no tables
        (a copy made without its -wal) is refused as damaged when ``read_only``, and so is
        any file with no tables without ``create`` (a resume): a new schema there would
        start the run from zero, and moving it away leaves a folder migrate refuses."""
        self.path = path
        self._outer = False  # inside a write transaction (``_tx``)
        try:
            if read_only:  # `status`: never creates or changes anything
                self._db = open_read_only(path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(path), isolation_level=None,
                                           check_same_thread=False)
            tables = {r[0] for r in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            empty = not tables and path.stat().st_size == 0
            if not tables and ((not create and not read_only) or (read_only and not empty)):
                self._db.close()
                raise damaged(path, ("it is empty" if empty else "it holds no tables")
                              + ": a copy cut short, or made without its ledger.sqlite-wal "
                              "file")
            if (tables or read_only) and "meta" not in tables:
                self._db.close()
                raise TerminalError(
                    f"{path} is not an mp2amp ledger (" + (
                        f"a database with the tables {', '.join(sorted(tables))}" if tables
                        else "an empty file") + "); point --workdir at the work folder of "
                    "an mp2amp run, or move the file away to start a new run there")
            if not read_only:
                create_schema(self._db)
                # a ledger of an mp2amp before dead letters named their batch
                add_column(self._db, "rejects", "batch_id", "TEXT")
                # a killed attempt's staged rejects: its window is transformed again
                self._db.execute("DELETE FROM rejects_staged")
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "_db"):  # the file stays as it is, for a look or a retry
                self._db.close()
            trouble = ledger_trouble(path, exc)
            if trouble is not None:
                raise trouble from exc
            if not read_only:
                raise_storage_error(exc, path)  # a full disk: free space and --resume
            raise TerminalError(
                f"the ledger {path} cannot be opened ({exc}); move it away to start a new run"
            ) from exc
        self._on_send: tuple[str, str] | None = None
        self._dead_sources: set[str] | None = None  # see _drop_dead_letters
        version = self.get_meta("schema_version")
        if version is None and not read_only:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif version is None or not version.isdigit() or int(version) != SCHEMA_VERSION:
            self._db.close()
            raise TerminalError(
                f"the ledger {path} has schema version {version}, this mp2amp writes "
                f"{SCHEMA_VERSION}; finish that run with the mp2amp that started it"
            )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside sees one committed state (a migration may be writing meanwhile:
        separate reads could see a window loaded but not its last batch)."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # the reads' own error is the one to raise
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Every write inside is one transaction: a crash keeps all of them or none (an
        event's dead letter and its parked row's outcome, say)."""
        with self._tx():
            yield

    @contextmanager
    def _tx(self) -> Iterator[Writes]:
        if self._outer:  # inside ``atomic``: its transaction commits this step's writes
            yield Writes(self._db)
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._outer = True
        try:
            yield Writes(self._db)
        except BaseException:
            # SQLite may have rolled back already (a full disk does that): a second
            # ROLLBACK would raise and hide the error that got here
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._outer = False
        self._db.execute("COMMIT")

    # --- meta ---------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def record_when_sent(self, key: str, value: str) -> None:
        """Set the meta ``key`` (unless it is set) in the transaction that records the next
        batch sent (or parked event accepted): what a run sends with (its API key's
        digest) is on record before Amplitude can take anything under it."""
        self._on_send = (key, value)

    def _sent(self, db: Writes) -> None:
        if self._on_send is not None:
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES(?, ?)", self._on_send)

    def sending(self) -> None:
        """``record_when_sent``'s meta, for a send with no batch row (a parked replay)."""
        with self._tx() as db:
            self._sent(db)

    def drop_meta(self, key: str, value: str) -> bool:
        """Delete the meta ``key`` if it still holds ``value``; True if it did."""
        with self._tx() as db:
            return db.execute("DELETE FROM meta WHERE key = ? AND value = ?",
                              (key, value)).rowcount > 0

    # --- windows ------------------------------------------------------------------

    def add_windows(self, windows: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Register windows ``(window_id, kind, spec)`` in order; known ones are kept as they are."""
        now = time.time()
        with self._tx() as db:
            for seq, (window_id, kind, spec) in enumerate(windows):
                db.execute(
                    "INSERT OR IGNORE INTO windows(window_id, seq, kind, spec, updated_at) "
                    "VALUES(?, ?, ?, ?, ?)",
                    (window_id, seq, kind, orjson.dumps(spec).decode(), now),
                )

    def replace_windows(self, windows: list[tuple[str, str, dict[str, Any]]]) -> None:
        """The run's windows are ``windows`` now (``add_windows``'s form), in one step: a
        run that staged and sent nothing yet, planned again from a corrected config."""
        with self._tx() as db:
            db.execute("DELETE FROM windows")
            db.execute("DELETE FROM meta WHERE key IN (?, ?, ?) OR (key >= ? AND key < ?)",
                       (_MERGED_INTO, _LINE_ORDERED, _UNSTAGED_LOADED,
                        *_UNSTAGED_ROWS))
            self.add_windows(windows)

    def windows(self) -> list[WindowRow]:
        rows = self._db.execute(
            "SELECT window_id, seq, kind, spec, state, staged_path, records, counts "
            "FROM windows ORDER BY seq"
        ).fetchall()
        return [self._window_row(r) for r in rows]

    def window(self, window_id: str) -> WindowRow | None:
        """One window's row (a run of thousands of files asks per window: reading them all
        each time made that quadratic)."""
        row = self._db.execute(
            "SELECT window_id, seq, kind, spec, state, staged_path, records, counts "
            "FROM windows WHERE window_id = ?", (window_id,)).fetchone()
        return None if row is None else self._window_row(row)

    def _window_row(self, r: Any) -> WindowRow:
        try:
            return WindowRow(r[0], r[1], r[2], orjson.loads(r[3]), r[4], r[5], r[6],
                             orjson.loads(r[7]))
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise TerminalError(
                f"the ledger {self.path} is damaged: window {r[0]} has unreadable "
                f"spec or counts ({exc}); move the work folder away to start a new run"
            ) from None

    def mark_extracted(self, window_id: str, staged_path: str, records: int,
                       spec: dict[str, Any] | None = None) -> None:
        """``window_id`` is staged; ``spec`` replaces its spec (what its source was like
        when it was staged), when given."""
        with self._tx() as db:
            was_loaded = self._is_unstaged_loaded(db, window_id)
            db.execute(
                "UPDATE windows SET state = ?, staged_path = ?, records = ?, "
                "updated_at = ? WHERE window_id = ?",
                ("loaded" if was_loaded else "extracted", staged_path, records, time.time(),
                 window_id),
            )
            if was_loaded:
                self._unstaged_loaded(db, window_id, add=False)
            if spec is not None:
                db.execute("UPDATE windows SET spec = ? WHERE window_id = ?",
                           (orjson.dumps(spec).decode(), window_id))

    def mark_pending(self, window_id: str) -> None:
        """Stage ``window_id`` again (its staged file is gone); its record count and
        batches stay, so that the new copy can be checked against them. A loaded window
        is loaded again once staged (``mark_extracted``): a run reads it for its identity
        graph and replays it, it never sends or writes it again."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM windows WHERE window_id = ?",
                             (window_id,)).fetchone()
            if row is not None and row[0] == "loaded":
                self._unstaged_loaded(db, window_id, add=True)
            db.execute("UPDATE windows SET state = 'pending', staged_path = NULL, "
                       "updated_at = ? WHERE window_id = ?", (time.time(), window_id))

    def unstaged_loaded(self) -> set[str]:
        """The loaded windows pending again because their copy was gone (``mark_pending``)."""
        rows = self._db.execute("SELECT key FROM meta WHERE key >= ? AND key < ?",
                                _UNSTAGED_ROWS).fetchall()
        listed = self.get_meta(_UNSTAGED_LOADED)  # an older mp2amp's list
        return ({str(r[0])[len(_UNSTAGED_LOADED) + 1:] for r in rows}
                | set(orjson.loads(listed) if listed else ()))

    @classmethod
    def _is_unstaged_loaded(cls, db: Writes, window_id: str) -> bool:
        cls._rows_of_unstaged_list(db)
        return db.execute("SELECT 1 FROM meta WHERE key = ?",
                          (f"{_UNSTAGED_LOADED}:{window_id}",)).fetchone() is not None

    @classmethod
    def _unstaged_loaded(cls, db: Writes, window_id: str, *, add: bool) -> None:
        cls._rows_of_unstaged_list(db)
        key = f"{_UNSTAGED_LOADED}:{window_id}"
        if add:
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES(?, '1')", (key,))
        else:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))

    @classmethod
    def _rows_of_unstaged_list(cls, db: Writes) -> None:
        listed = cls._meta_json(db, _UNSTAGED_LOADED, None)
        if listed is not None:
            db.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES(?, '1')",
                           [(f"{_UNSTAGED_LOADED}:{w}",) for w in listed])
            db.execute("DELETE FROM meta WHERE key = ?", (_UNSTAGED_LOADED,))

    def restage(self, updates: Sequence[tuple[str, str, int]],
                merged_into: dict[str, str] | None = None,
                line_ordered: Sequence[str] = ()) -> None:
        """New staged files for these windows, ``(window_id, staged_path, records)``, and
        which window now holds each merged-away window's records, all in one transaction
        (windows merged because they overlap in time). ``line_ordered``: the windows
        whose new merged file is in an order that depends only on its lines (see
        ``line_ordered_merges``)."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE windows SET staged_path = ?, records = ?, updated_at = ? "
                "WHERE window_id = ?",
                [(path, records, now, window_id) for window_id, path, records in updates],
            )
            if merged_into:
                known = self._meta_json(db, _MERGED_INTO, {})
                known.update(merged_into)  # a window merged away again keeps its place
                self._set_meta_json(db, _MERGED_INTO, known)
            if line_ordered:
                heads = self._meta_json(db, _LINE_ORDERED, [])
                have = set(heads)
                heads += [h for h in dict.fromkeys(line_ordered) if h not in have]
                self._set_meta_json(db, _LINE_ORDERED, heads)

    @staticmethod
    def _meta_json(db: Writes, key: str, default: Any) -> Any:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return orjson.loads(row[0]) if row is not None and row[0] else default

    @staticmethod
    def _set_meta_json(db: Writes, key: str, value: Any) -> None:
        db.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                   (key, orjson.dumps(value).decode()))

    def merged_into(self) -> dict[str, str]:
        """Merged-away window -> the window that holds (and counts) its records, in the
        order they were merged."""
        value = self.get_meta(_MERGED_INTO)
        return {} if value is None else dict(orjson.loads(value))

    def line_ordered_merges(self) -> set[str]:
        """The windows whose merged file this mp2amp made: its order depends only on its
        lines, so its sources staged and merged again give it back however it was merged
        (an earlier mp2amp's order also depended on the steps it was merged in)."""
        value = self.get_meta(_LINE_ORDERED)
        return set() if not value else set(orjson.loads(value))

    def mark_identity(self, window_ids: Sequence[str], report: dict[str, Any]) -> None:
        """The identity graph holds these extracted windows (it is rebuilt from the staged
        files on every run, so this records what the last graph was built from)."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE windows SET state = 'identity', updated_at = ? "
                "WHERE window_id = ? AND state = 'extracted'",
                [(now, w) for w in window_ids],
            )
            db.execute(
                "INSERT INTO meta(key, value) VALUES('identity_report', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (orjson.dumps(report).decode(),),
            )

    def mark_loaded(self, window_id: str, counts: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE windows SET state = 'loaded', counts = ?, updated_at = ? "
                "WHERE window_id = ?",
                (orjson.dumps(counts).decode(), time.time(), window_id),
            )

    def set_window_counts(self, window_id: str, counts: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("UPDATE windows SET counts = ?, updated_at = ? WHERE window_id = ?",
                       (orjson.dumps(counts).decode(), time.time(), window_id))

    # --- batches ------------------------------------------------------------------

    def batch_sent(self, batch_id: str, window_id: str, seq: int, events: int) -> None:
        """Record that a batch is about to be sent (before the request goes out)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO batches(batch_id, window_id, seq, events, state, attempts, updated_at) "
                "VALUES(?, ?, ?, ?, 'sent', 1, ?) ON CONFLICT(batch_id) DO UPDATE SET "
                "attempts = attempts + 1, updated_at = excluded.updated_at",
                (batch_id, window_id, seq, events, time.time()),
            )
            self._sent(db)

    def batch_done(self, batch_id: str, *, accepted: int, dead_lettered: int, parked: int,
                   accepted_origins: Sequence[Origin] = ()) -> str:
        """Every event of the batch has an outcome; returns the batch's window.

        Dead letters and parked events of the batch were recorded (idempotently, keyed by
        origin) before this, so "done" implies they are durable. ``accepted_origins``: the
        ``(source, line)`` of the events Amplitude took; a dead letter an earlier attempt
        left for one of them is dropped in the same step (see ``_drop_dead_letters``).
        """
        with self._tx() as db:
            self._drop_dead_letters(db, accepted_origins)
            row = db.execute(
                "SELECT window_id FROM batches WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            if row is None:
                raise TerminalError(f"ledger: batch {batch_id} finished but was never recorded")
            db.execute(
                "UPDATE batches SET state = 'done', accepted = ?, dead_lettered = ?, parked = ?, "
                "updated_at = ? WHERE batch_id = ?",
                (accepted, dead_lettered, parked, time.time(), batch_id),
            )
            return str(row[0])

    def done_batch_count(self, window_id: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM batches WHERE window_id = ? AND state = 'done'", (window_id,)
        ).fetchone()
        return int(row[0])

    def done_batches(self, window_id: str) -> dict[int, BatchRow]:
        rows = self._db.execute(
            "SELECT batch_id, window_id, seq, events, state, accepted, dead_lettered, parked, "
            "attempts FROM batches WHERE window_id = ? AND state = 'done'",
            (window_id,),
        ).fetchall()
        return {r[2]: BatchRow(*r) for r in rows}

    def has_batches(self) -> bool:
        return self._db.execute("SELECT 1 FROM batches LIMIT 1").fetchone() is not None

    def batch_windows(self) -> set[str]:
        """The windows with a batch recorded (read by the index, never every batch)."""
        return {str(r[0]) for r in self._db.execute("SELECT DISTINCT window_id FROM batches")}

    def batch_counts(self) -> dict[str, tuple[int, int, int]]:
        """Per window: its batches, those done, and the events of those not done (one row
        per window: a long run's 500,000 batches are counted, never read)."""
        return {str(w): (int(n), int(done), int(unsent)) for w, n, done, unsent in
                self._db.execute(
                    "SELECT window_id, COUNT(*), SUM(state = 'done'), "
                    "SUM(CASE WHEN state = 'done' THEN 0 ELSE events END) "
                    "FROM batches GROUP BY window_id")}

    def is_done_batch(self, batch_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM batches WHERE batch_id = ? AND state = 'done'",
                                (batch_id,)).fetchone() is not None

    def batches(self) -> list[BatchRow]:
        rows = self._db.execute(
            "SELECT batch_id, window_id, seq, events, state, accepted, dead_lettered, parked, "
            "attempts FROM batches ORDER BY window_id, seq"
        ).fetchall()
        return [BatchRow(*r) for r in rows]

    # --- parked events (daily quota) ----------------------------------------------

    def park(self, window_id: str, batch_id: str, origin: str, event: bytes, reason: str) -> None:
        """An event still over the daily quota: kept here until a later run delivers it
        (a dead letter an earlier attempt left for it is dropped: its outcome is this)."""
        with self._tx() as db:
            self._drop_dead_letters(db, [_origin_of(origin)])
            db.execute(
                "INSERT INTO parked(window_id, batch_id, origin, event, reason) "
                "VALUES(?, ?, ?, ?, ?) ON CONFLICT(origin) DO UPDATE SET state = 'parked', "
                "batch_id = excluded.batch_id, event = excluded.event",
                (window_id, batch_id, origin, event.decode(), reason),
            )

    def unfinished_parked_events(self) -> Iterator[bytes]:
        """The events parked in a batch that is not done (a crash came first): the next
        ``parked_events`` sets them aside (``resend``), as their batch is sent again whole.
        Set aside, they are still listed until that batch is done: a resume killed before
        it sent the batch again leaves them for the next to keep their devices behind."""
        for (event,) in self._db.execute(
            "SELECT event FROM parked WHERE state IN ('parked', 'resend') AND "
            "batch_id != 'parked' AND "
            "batch_id NOT IN (SELECT batch_id FROM batches WHERE state = 'done') ORDER BY id"
        ):
            yield str(event).encode()

    def parked_events(self, page: int = 1024) -> Iterator[tuple[str, str, bytes]]:
        """``(window_id, origin, event_json)`` of every event still parked whose batch is
        done, in event-time order (an event without a numeric ``time`` first; ties in the
        order they were parked), read ``page`` at a time: the quota can park millions.
        Parked events of an unfinished batch are not replayed: that batch is sent again
        whole, and parks them again if the quota still says no. They are set aside
        (``resend``: neither parked nor counted) rather than dropped, so that
        ``unfinished_parked_events`` still lists them if this run is killed before that
        batch is done; once it is, they are dropped (an event parked again is a ``parked``
        row again). The order is fixed when this starts (in a temporary table, on disk
        past SQLite's cache); an event parked again while they are read is read as it is
        now."""
        with self._tx() as db:
            done = "(SELECT batch_id FROM batches WHERE state = 'done')"
            db.execute(f"DELETE FROM parked WHERE state = 'resend' AND batch_id IN {done}")
            db.execute(
                f"UPDATE parked SET state = 'resend' WHERE state = 'parked' AND "
                f"batch_id != 'parked' AND batch_id NOT IN {done}"
            )
            db.execute("DROP TABLE IF EXISTS temp.replay_order")
            db.execute("CREATE TEMP TABLE replay_order (n INTEGER PRIMARY KEY, pid INTEGER)")
            db.execute(
                "INSERT INTO temp.replay_order(pid) SELECT id FROM parked WHERE state = "
                "'parked' ORDER BY CASE WHEN json_type(event, '$.time') IN ('integer', "
                "'real') THEN json_extract(event, '$.time') ELSE 0 END, id")
        try:
            after = 0
            while True:
                rows = self._db.execute(
                    "SELECT r.n, p.window_id, p.origin, p.event FROM temp.replay_order r "
                    "JOIN parked p ON p.id = r.pid WHERE r.n > ? ORDER BY r.n LIMIT ?",
                    (after, page)).fetchall()
                if not rows:
                    return
                after = rows[-1][0]
                for _, window_id, origin, event in rows:
                    yield window_id, origin, event.encode()
        finally:
            with suppress(sqlite3.Error):
                self._db.execute("DROP TABLE IF EXISTS temp.replay_order")

    def resolve_parked(self, origin: str, outcome: str) -> None:
        """``outcome`` is ``accepted`` or ``dead_lettered``. Accepted, a dead letter an
        earlier attempt left for the event is dropped in the same step."""
        with self._tx() as db:
            # a row set aside for its batch's resend is that batch's to settle
            db.execute("UPDATE parked SET state = ? WHERE origin = ? AND state != 'resend'",
                       (outcome, origin))
            if outcome == "accepted":
                self._drop_dead_letters(db, [_origin_of(origin)])
                self._sent(db)

    # --- parked counts (the rejects: ``RejectStore``) -------------------------------

    def parked_counts(self) -> dict[str, dict[str, int]]:
        """Per window: parked events by state (parked / accepted / dead_lettered); rows set
        aside for their batch's resend (``parked_events``) are none of these."""
        out: dict[str, dict[str, int]] = {}
        for window_id, state, n in self._db.execute(
            "SELECT window_id, state, COUNT(*) FROM parked WHERE state != 'resend' "
            "GROUP BY window_id, state"
        ):
            out.setdefault(window_id, {})[state] = n
        return out

    # --- summary ------------------------------------------------------------------

    def batch_totals(self) -> dict[str, dict[str, int]]:
        """Per window: events in done batches by outcome, and batches still in flight."""
        out: dict[str, dict[str, int]] = {}
        for window_id, state, n, acc, dead, parked in self._db.execute(
            "SELECT window_id, state, COUNT(*), SUM(accepted), SUM(dead_lettered), SUM(parked) "
            "FROM batches GROUP BY window_id, state"
        ):
            w = out.setdefault(
                window_id,
                {"batches_done": 0, "batches_in_flight": 0, "accepted": 0, "dead_lettered": 0,
                 "parked": 0},
            )
            if state == "done":
                w["batches_done"] += n
                w["accepted"] += acc or 0
                w["dead_lettered"] += dead or 0
                w["parked"] += parked or 0
            else:
                w["batches_in_flight"] += n
        return out


for _name, _method in list(vars(Ledger).items()):
    if inspect.isfunction(_method) and not _name.startswith("__") and _name != "snapshot":
        setattr(Ledger, _name, naming_damage(_method))
