"""Session reconstruction: Mixpanel exports carry no session, Amplitude's charts need one.

Amplitude's own SDKs call a session the run of events of one device with no gap longer
than the inactivity timeout between consecutive events, and name it by the time in ms of
its first event (``session_id``). The Sessionizer rebuilds exactly that, per device (per
user for events without a device_id), across input files and days: its state is the
session start and the last event time of every device.

Out-of-order events (exports are day files, not sorted streams; ``migrate`` sorts each
window by time, and ``transform`` stages its files the same way):

* a late event inside the current session (not before its start) joins it;
* a late event before the session start but within the gap of it also joins it: the
  session keeps the id already given to its other events (ids are never rewritten, the
  earlier events are already written), so that id is then not the earliest event's time;
* an event older than that belongs to a session whose state is gone; it gets a session of
  its own (``session_id`` = its own time) and the device's current session is left alone.

Events in time order per device therefore get exactly Amplitude's sessions.

Memory: past ``memory_budget`` devices the least recently seen half is spilled to SQLite
and read back when that device shows up again. With a ``path`` the state is a file that
``checkpoint()`` makes durable and a later Sessionizer on the same path resumes. Spills
between checkpoints are not committed, so after a crash the file holds the state of the
last checkpoint: checkpoint when the ledger commits, and a resume replays from there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from mp2amp.errors import ConfigError
from mp2amp.transform.spillfile import SPILL_CACHE_KIB, SpillFile

DEFAULT_GAP_MS = 30 * 60 * 1000
NO_SESSION = -1  # Amplitude: "-1 is the same as no session"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    who TEXT PRIMARY KEY, start_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL
) WITHOUT ROWID;
"""


class Sessionizer(SpillFile):
    """Assigns ``session_id`` to events, one device (or user) at a time."""

    def __init__(
        self,
        gap_ms: int = DEFAULT_GAP_MS,
        *,
        memory_budget: int = 1_000_000,
        path: str | Path | None = None,
        spill_dir: str | Path | None = None,
    ) -> None:
        if gap_ms <= 0:
            raise ConfigError([f"transform.session_gap_minutes: the gap must be positive, "
                               f"got {gap_ms} ms"])
        self.gap_ms = gap_ms
        self.memory_budget = max(2, memory_budget)
        # who -> (start_ms, last_ms); dict order is recency order (moved to the end on use)
        self._hot: dict[str, tuple[int, int]] = {}
        super().__init__(spill_dir)
        self.spilled = 0  # devices written to disk by spills (not checkpoints)
        self.reloaded = 0
        if path is not None:
            self._open(Path(path))

    # --- public ---------------------------------------------------------------------

    def session_id(self, device_id: str | None, user_id: str | None, time_ms: int) -> int:
        """The session of an event of this device (or user) at ``time_ms``."""
        if device_id:
            who = "d:" + device_id
        elif user_id:
            who = "u:" + user_id
        else:
            return NO_SESSION
        hot = self._hot
        state = hot.pop(who, None)
        if state is None and self._db is not None:
            state = self._load(who)
        gap = self.gap_ms
        if state is None:
            session = (time_ms, time_ms)
        else:
            start, last = state
            if time_ms >= last:
                session = (start, time_ms) if time_ms - last <= gap else (time_ms, time_ms)
            elif time_ms >= start - gap:
                session = state  # late, but inside (or just before) the current session
            else:
                hot[who] = state  # an older session: its own id, current state untouched
                return time_ms
        hot[who] = session
        if len(hot) > self.memory_budget:
            self._spill()
        return session[0]

    def checkpoint(self) -> None:
        """Write all in-memory state to the SQLite file (a no-op without one)."""
        if self._db is None:
            return
        self._write(self._hot.items())
        self._db.commit()

    def __len__(self) -> int:
        """Devices/users known (in memory and on disk)."""
        if self._db is None:
            return len(self._hot)
        self._write(self._hot.items())  # counted in this connection, not committed
        row = self._db.execute("SELECT count(*) FROM sessions").fetchone()
        return int(row[0])

    # --- storage --------------------------------------------------------------------

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level="DEFERRED")
        db.executescript(_SCHEMA)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{SPILL_CACHE_KIB}")
        row = db.execute("SELECT value FROM meta WHERE key='gap_ms'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('gap_ms', ?)", (str(self.gap_ms),))
            db.commit()
        elif int(row[0]) != self.gap_ms:
            db.close()
            raise ConfigError([
                f"transform.session_gap_minutes: the saved session state in {path} was built "
                f"with a gap of {int(row[0]) // 60000} min, the config says "
                f"{self.gap_ms // 60000} min; keep the gap or start a new run"])
        self._db = db

    def _spill(self) -> None:
        if self._db is None:
            self._open_temporary("mp2amp-sessions-", "sessions.sqlite")
        hot = self._hot
        count = len(hot) // 2
        oldest = [(who, hot[who]) for who, _ in zip(hot, range(count), strict=False)]
        self._write(oldest)
        for who, _ in oldest:
            del hot[who]
        self.spilled += count

    def _write(self, items: Iterable[tuple[str, tuple[int, int]]]) -> None:
        assert self._db is not None
        self._db.executemany(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)",
            ((who, start, last) for who, (start, last) in items),
        )

    def _load(self, who: str) -> tuple[int, int] | None:
        assert self._db is not None
        row = self._db.execute("SELECT start_ms, last_ms FROM sessions WHERE who = ?",
                               (who,)).fetchone()
        if row is None:
            return None
        self.reloaded += 1
        return int(row[0]), int(row[1])
