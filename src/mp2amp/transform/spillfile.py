"""The SQLite file behind a stateful stage (dedup, sessions): its lifecycle in one place.

A stage keeps its state in memory up to a budget and spills the rest to SQLite: a file it
was given (``path``: state that survives the run) or, on the first spill, a file in a
temporary folder under ``spill_dir`` that is removed on close.
"""

from __future__ import annotations

import sqlite3
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self

# SQLite's own page cache for a spill file (KiB; its default is ~2 MB). The file's pages
# sit in the OS page cache anyway; the 2 MB filled only in long runs, so a 5M-event
# migration's main process held ~5 MB more than a 1M one (median PSS 79 -> 74 MB at 5M
# with 256 KiB here and in the ledger; CPU per event the same within noise).
SPILL_CACHE_KIB = 256


class SpillFile(ABC):
    """Base of the spilling stages; subclasses implement ``checkpoint`` and ``_open``."""

    def __init__(self, spill_dir: str | Path | None) -> None:
        self._db: sqlite3.Connection | None = None
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        self._spill_dir = spill_dir

    @abstractmethod
    def checkpoint(self) -> None:
        """Make the in-memory state durable in the SQLite file (a no-op without one)."""

    @abstractmethod
    def _open(self, path: Path) -> None:
        """Open (or create) the SQLite file at ``path`` as ``self._db``."""

    def _open_temporary(self, prefix: str, name: str) -> None:
        """On the first spill: a SQLite file in a new temporary folder."""
        self._temp = tempfile.TemporaryDirectory(prefix=prefix, dir=self._spill_dir)
        self._open(Path(self._temp.name) / name)

    def close(self) -> None:
        if self._db is not None:
            self.checkpoint()
            self._db.close()
            self._db = None
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
