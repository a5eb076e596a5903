"""The ledger's rejected records: transform rejects and Amplitude's dead letters.

A window's transform rejects are written as its transform finds them, in chunks, into
``rejects_staged`` (a day of big rejected records is never held in memory), and moved into
``rejects`` in one transaction at the window's end (``commit_window_rejects``): until then
the earlier attempt's rejects stay listed, and a run killed in between leaves them alone
(the next ``Ledger`` opened for writing drops the staged rows), never old and new at once.
A window without earlier transform rejects (its first attempt) writes straight into
``rejects``: a run stopped there lists what it rejected so far (in the chunk it stopped in
too: ``keep_rejects_at_stop``), and a resume stages.
"""

from __future__ import annotations

import inspect
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from mp2amp.ledger.sqlite_io import Writes, naming_damage, storable

# a rejected record: (source, line, window, stage, reason, message, field, payload JSON)
RejectRow = tuple[str, int, str, str, str, str, str | None, str | None]
BatchRejectRow = tuple[str, int, str, str, str, str, str | None, str | None, str | None]
Origin = tuple[str, int]  # an event's (source, line): a reject's key

log = logging.getLogger("mp2amp.ledger")
_COLUMNS = "source, line, window_id, stage, reason, message, field, payload, batch_id"


class RejectStore:
    """The rejects half of ``Ledger`` (which provides the connection and transactions)."""

    path: Path
    _db: sqlite3.Connection
    _dead_sources: set[str] | None  # see _drop_dead_letters

    def _tx(self) -> AbstractContextManager[Writes]:
        raise NotImplementedError  # Ledger's

    def forget_window_outcomes(self, window_id: str) -> None:
        """A window is transformed again from the start: drop what a killed attempt staged
        for it. Amplitude's dead letters of its batches that are not done stay listed (a
        resume stopped before resending them still lists them) until their event, sent
        again, gets its outcome: accepted or parked drops the row in that step
        (``_drop_dead_letters``), refused again replaces it (same key), so no event counts
        twice. Its transform rejects stay until the new attempt's replace them
        (``commit_window_rejects``). Parked events of unfinished batches are dropped by
        ``parked_events``."""
        with self._tx() as db:
            db.execute("DELETE FROM rejects_staged WHERE window_id = ?", (window_id,))

    def add_rejects(self, rows: Sequence[RejectRow | BatchRejectRow]) -> None:
        """``(source, line, window_id, stage, reason, message, field, payload_json)``, and
        for an event Amplitude refused in a batch, that ``batch_id`` as a ninth value. Keyed
        by (source, line), so recording the same record again replaces it."""
        self._insert("rejects", rows)

    def has_transform_rejects(self, window_id: str) -> bool:
        """Whether an earlier attempt left transform rejects of the window. Without them
        its new ones go straight into ``rejects`` (``direct``): nothing to keep listed,
        and a day of big rejected records is not written (and kept on disk) twice."""
        return self._db.execute(
            "SELECT 1 FROM rejects WHERE window_id = ? AND stage = 'transform' LIMIT 1",
            (window_id,)).fetchone() is not None

    def stage_window_rejects(self, rows: Sequence[RejectRow | BatchRejectRow], *,
                             direct: bool = False) -> None:
        """Rows (``add_rejects``'s) of the window being transformed, kept apart until
        ``commit_window_rejects`` makes them the window's (``direct``: recorded at once,
        for a window without earlier transform rejects)."""
        self._insert("rejects" if direct else "rejects_staged", rows)

    def keep_rejects_at_stop(self, rows: Sequence[RejectRow | BatchRejectRow], *,
                             direct: bool) -> None:
        """The rejects a window's transform found in a chunk not yet written, when the run
        stops in it (Ctrl-C, SIGTERM, an error): on a window's first attempt (``direct``)
        they are listed, as what it rejected so far; staged ones are not written (the next
        run drops them). One transaction; best effort: the error that stopped the run is
        the one to raise (a full disk may be why)."""
        if not rows or not direct:
            return
        try:
            self._insert("rejects", rows)
        except Exception as exc:
            log.warning("%d rejected records found before the stop are not listed (%s); "
                        "`mp2amp migrate --resume` finds them again", len(rows), exc)

    def commit_window_rejects(self, window_id: str, *, direct: bool = False) -> None:
        """The window's transform rejects are its staged rows now (with the other rows
        staged, ``add_rejects``'s way), in one step: the ledger never holds fewer of them
        than either attempt found, whenever a run stops. ``direct``: they already are."""
        if direct:
            return
        with self._tx() as db:
            db.execute("DELETE FROM rejects WHERE window_id = ? AND stage = 'transform'",
                       (window_id,))
            db.execute(f"INSERT OR REPLACE INTO rejects({_COLUMNS}) SELECT {_COLUMNS} "
                       "FROM rejects_staged WHERE window_id = ?", (window_id,))
            db.execute("DELETE FROM rejects_staged WHERE window_id = ?", (window_id,))

    def replace_transform_rejects(self, window_id: str,
                                  rows: Sequence[RejectRow | BatchRejectRow]) -> None:
        """``stage_window_rejects`` of ``rows`` then ``commit_window_rejects``, in one step."""
        with self._tx():
            self.stage_window_rejects(rows)
            self.commit_window_rejects(window_id)

    def _insert(self, table: str, rows: Sequence[RejectRow | BatchRejectRow]) -> None:
        if not rows:
            return
        self._sources_with_dead_letters().update(
            storable(r[0]) for r in rows if r[3] == "amplitude")
        with self._tx() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO {table}({_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r if len(r) == 9 else (*r, None) for r in rows),
            )

    def _drop_dead_letters(self, db: Writes, origins: Sequence[Origin]) -> None:
        """Amplitude's dead letters of these events, which now have another outcome
        (accepted, parked): left by an attempt that stopped before their batch was done
        (kept until now: ``forget_window_outcomes``), by an mp2amp whose dead letters
        named no batch, or by a replay's 400 recorded apart from its parked row.
        Only sources with a dead letter are looked up: a batch's events cost nothing
        then (a DELETE per event was ~2 us each on the event loop)."""
        dead = self._sources_with_dead_letters()
        if dead:
            db.executemany("DELETE FROM rejects WHERE source = ? AND line = ? AND "
                           "stage = 'amplitude'", [o for o in origins if storable(o[0]) in dead])

    def _sources_with_dead_letters(self) -> set[str]:
        """The sources with an Amplitude dead letter (or that had one this run, staged ones
        included), as stored; read once (this process is the ledger's only writer:
        ``WorkLock``)."""
        if self._dead_sources is None:
            self._dead_sources = {str(r[0]) for r in self._db.execute(
                "SELECT DISTINCT source FROM rejects WHERE stage = 'amplitude'")}
        return self._dead_sources

    def iter_rejects(self) -> Iterator[RejectRow]:
        yield from self._db.execute(
            "SELECT source, line, window_id, stage, reason, message, field, payload "
            "FROM rejects ORDER BY window_id, source, line"
        )

    def reject_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """window -> stage -> reason -> count."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for window_id, stage, reason, n in self._db.execute(
            "SELECT window_id, stage, reason, COUNT(*) FROM rejects "
            "GROUP BY window_id, stage, reason"
        ):
            out.setdefault(window_id, {}).setdefault(stage, {})[reason] = n
        return out


for _name, _method in list(vars(RejectStore).items()):
    if inspect.isfunction(_method) and not _name.startswith("__") and _name != "_tx":
        setattr(RejectStore, _name, naming_damage(_method))
