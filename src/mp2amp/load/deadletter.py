"""The append-only dead-letter file: one JSON line per event Amplitude (or a stage) rejected.

Each line: ``{"reason", "message", "source", "line", "event"}``, enough to find the source
record and to fix and replay it. Known secrets are masked out of messages before writing,
so a server that echoes a key cannot leak it into the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

MASK = "***"


class DeadLetterFile:
    """Appends dead letters to ``path`` (created with its folder; never truncated)."""

    def __init__(self, path: str | os.PathLike[str], *, secrets: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self._secrets = tuple(s for s in secrets if s)
        self._fh: IO[bytes] | None = None
        self.written = 0

    def write(self, event: Any, origin: tuple[str, int] | None, reason: str,
              message: str) -> None:
        source, line = origin if origin is not None else (None, None)
        row = {
            "reason": reason,
            "message": self._mask(message),
            "source": source,
            "line": line,
            "event": event,
        }
        try:
            data = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
        except TypeError:  # what orjson refuses (ints past 64 bits, odd types) is kept anyway
            data = json.dumps(row, default=repr, ensure_ascii=False).encode() + b"\n"
        self._open().write(data)
        self.written += 1

    def flush(self) -> None:
        """Push written lines to the OS (called after each batch, so a crash keeps them)."""
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> DeadLetterFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - held open across many writes
        return self._fh

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def read_dead_letters(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All rows of a dead-letter file (tests, ``status``)."""
    p = Path(path)
    if not p.exists():
        return []
    return [orjson.loads(line) for line in p.read_bytes().splitlines() if line.strip()]
