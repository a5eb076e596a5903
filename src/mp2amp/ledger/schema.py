"""The ledger's tables (``store.Ledger`` creates them, and adds what an older ledger lacks)."""

import sqlite3

SCHEMA_VERSION = 1

# SQLite's page cache for the ledger (KiB; its default is ~2 MB): a run appends batch rows
# and reads little back, and the full default cache was part of why a long run's memory
# peaked higher than a short one's (see transform/spillfile.py).
CACHE_KIB = 256

# the columns of a rejected record's row: a window's rows while it is transformed again
# (rejects_staged) are those of its rows kept (rejects)
_REJECT_COLUMNS = """
    source TEXT NOT NULL,
    line INTEGER NOT NULL,
    window_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    field TEXT,
    payload TEXT,
    batch_id TEXT,
    PRIMARY KEY (source, line)
"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    window_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    staged_path TEXT,
    records INTEGER NOT NULL DEFAULT 0,
    counts TEXT NOT NULL DEFAULT '{{}}',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    window_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    events INTEGER NOT NULL,
    state TEXT NOT NULL,
    accepted INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    parked INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_window ON batches(window_id, state);
CREATE TABLE IF NOT EXISTS parked (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    window_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    origin TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'parked'
);
CREATE TABLE IF NOT EXISTS rejects ({_REJECT_COLUMNS});
-- a window's rejects are replaced (and forgotten) by window: without it every window read
-- the whole table (windows x rejects)
CREATE INDEX IF NOT EXISTS rejects_by_window ON rejects (window_id, stage);
-- the rejects of the window being transformed, written as they come (a day of big rejected
-- records held in memory took GBs), moved into rejects at its end (rejects.py); an older
-- ledger gets the table when it is opened for writing
CREATE TABLE IF NOT EXISTS rejects_staged ({_REJECT_COLUMNS});
CREATE INDEX IF NOT EXISTS rejects_staged_by_window ON rejects_staged (window_id);
"""


def create_schema(db: sqlite3.Connection) -> None:
    """The ledger's tables on ``db`` (those it has are kept), in WAL mode."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # see store.py's docstring
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # its reads are few
    # one transaction with the schema version: `status` never reads a ledger that has
    # tables but no version yet (a run just starting)
    db.executescript(f"BEGIN IMMEDIATE;{SCHEMA};INSERT OR IGNORE INTO meta(key, value) "
                     f"VALUES('schema_version', '{SCHEMA_VERSION}');COMMIT;")
