"""Streaming gzip writers: bounded buffers, byte-identical output for the same input.

gzip headers carry a timestamp and a file name; both are fixed (``mtime=0``, no name)
so that a seed reproduces every byte. Compression is ISA-L (an ``isal_zlib`` gzip stream:
standard gzip members any reader opens, the bytes ``isal.igzip`` writes, the CRC computed
as it compresses) at level 1: ~0.65 us per event against ~3.4 us for zlib level 1, with a
slightly better ratio (~10x on this JSON), and the generator is CPU-bound. The small files
(profiles, groups, identity mappings: ``write_jsonl_gz``) use zlib level 1: ISA-L's stream
was seen to give other bytes for the same records now and then, which broke "a seed
reproduces every byte".
"""

from __future__ import annotations

import zlib
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson
from isal import isal_zlib

# byte strings held before a write (lines, or the ~9 pieces of a spliced event line): big
# enough to amortise, small enough to stay flat (a few MB)
FLUSH_AT = 16_384


class GzipLines:
    """Append lines to a ``.gz`` file (or, ``compress=False``, a plain one); counts lines so
    callers can name a line. ``--no-gzip`` skips even ISA-L's ~0.65 us per record.

    The event hot loop appends to ``pending`` itself, a line as the pieces it is spliced
    from (a method call, or a copy, per line is a measurable share of an event), keeps
    ``lines`` right, and calls ``flush`` once ``FLUSH_AT`` byte strings wait.
    """

    __slots__ = ("_gz", "_raw", "lines", "path", "pending")

    def __init__(self, path: Path, compress: bool = True, stable: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        # a gzip stream straight from ISA-L (wbits 31: header with no time and no name, CRC
        # computed as it compresses), the same bytes igzip.IGzipFile(mtime=0) writes.
        # ``stable``: zlib instead, for the small files: ISA-L's level-1 stream now and then
        # gave other bytes for the same records (profiles/users.jsonl.gz and
        # identity/mappings.jsonl.gz in full test runs; its buffers are not zeroed).
        compressor: Any = zlib if stable else isal_zlib
        self._gz: Any = compressor.compressobj(1, compressor.DEFLATED, 31) if compress else None
        self.pending: list[bytes] = []
        self.lines = 0

    def write(self, data: bytes, lines: int = 1) -> None:
        """``data`` ends with a newline; ``lines`` is how many newlines it holds."""
        self.pending.append(data)
        self.lines += lines
        if len(self.pending) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self._raw.write(data if self._gz is None else self._gz.compress(data))

    def close(self) -> None:
        self.flush()
        if self._gz is not None:
            self._raw.write(self._gz.flush())
        self._raw.close()

    def __enter__(self) -> GzipLines:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def write_jsonl_gz(path: Path, records: Any) -> int:
    """Write an iterable of JSON-able records as gzip JSONL; returns how many."""
    count = 0
    with GzipLines(path, stable=True) as out:
        for record in records:
            out.write(orjson.dumps(record) + b"\n")
            count += 1
    return count


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
