"""Staged windows merged into one, in time order (overlapping input files, ``overlaps``;
``transform``'s files): the order depends only on the lines, not on how they were merged.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from zlib import crc32 as _crc32  # as staging sums its copies

from mp2amp.pipeline.staging import (
    BIG_LINE,
    _settled,
    copy_key,
    decode_staged,
    ingested_ms,
    staged_key,
)

MERGE_FILES = 64  # staged files merged at once (open files); more are merged in rounds


def merge_staged(paths: list[Path], dest: Path, rank: Mapping[str, int] | None = None,
                 sums: list[int] | None = None) -> int:
    """Staged windows merged into one, in time order; written to a temporary name and
    renamed. Returns the lines (``sums``: the file's CRC-32 is appended, ``changed_copy``).

    Lines of one time are ordered by their own source's ``rank`` (its window order; a
    source not in it: its file's place in ``paths``), then by their place in that source
    as staged (its line: a file's lines are in file order, an Export API day's are its
    places in (time, content) order, ``renumber``; then the row itself), and only then
    are copies of one event settled (the latest ingested first, as staging does). So the
    order depends only on the lines, not on how they were merged before: a group merged
    in two steps ({a, c}, then b on a resume) gives the file a one-pass merge of its
    sources gives when they are staged again, hence the same batches. Without ``rank``,
    each file is one source, in order."""
    if rank is None:
        rank = _first_sources(paths)
    if len(paths) > MERGE_FILES:  # in rounds, each a file; the order depends on the lines
        rounds = [dest.with_name(f"{dest.name}.round{n}")
                  for n in range(-(-len(paths) // MERGE_FILES))]
        try:
            for n, part_dest in enumerate(rounds):
                merge_staged(paths[n * MERGE_FILES:(n + 1) * MERGE_FILES], part_dest, rank)
            return merge_staged(rounds, dest, rank, sums)
        finally:
            for path in rounds:
                path.unlink(missing_ok=True)

    def keyed(at: int, path: Path) -> Iterator[tuple[float, int, Line]]:
        with open(path, "rb") as f:
            for line in f:
                if len(line) < BIG_LINE:
                    yield staged_key(line), at, line
                else:  # left in its file: one time's group of them would hold them all
                    yield staged_key(line), at, _Far(path, f.tell() - len(line), len(line))

    part = dest.with_name(dest.name + ".part")
    n = crc = 0
    with open(part, "wb") as out:
        group: list[tuple[int, Line]] = []
        time = None
        for key, at, line in heapq.merge(*map(keyed, range(len(paths)), paths), key=_first):
            if key != time and group:
                crc = _write_summed(out, _merged_time(group, rank), crc)
                group = []
            group.append((at, line))
            time = key
            n += 1
        crc = _write_summed(out, _merged_time(group, rank), crc)
        out.flush()
        os.fsync(out.fileno())
    part.replace(dest)
    if sums is not None:
        sums.append(crc)
    return n


@dataclass(frozen=True, slots=True)
class _Far:
    """A big staged line (``BIG_LINE``) where it is in its file, read when needed."""

    path: Path
    at: int
    size: int

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.at)
            return f.read(self.size)


Line = bytes | _Far


def _write_summed(out: BinaryIO, lines: list[Line], crc: int) -> int:
    try:
        data = b"".join(lines)  # type: ignore[arg-type]  # a _Far among them: TypeError
    except TypeError:
        for line in lines:  # one at a time; a chained CRC-32 is the whole's
            data = line if isinstance(line, bytes) else line.read()
            out.write(data)
            crc = _crc32(data, crc)
        return crc
    out.write(data)
    return _crc32(data, crc)


def _first(item: tuple[float, int, Line]) -> float:
    return item[0]


def _first_sources(paths: list[Path]) -> dict[str, int]:
    """Each file's source (of its first line) -> the file's place: files of one window
    each."""
    rank: dict[str, int] = {}
    for at, path in enumerate(paths):
        with open(path, "rb") as f:
            line = f.readline()
        if line:
            rank.setdefault(decode_staged(line).source, at)
    return rank


def _merged_time(group: list[tuple[int, Line]], rank: Mapping[str, int]) -> list[Line]:
    """One time's lines (with the place of the file each came from) in merge order (see
    ``merge_staged``), copies settled: the records are read only when the time has
    several lines, and only what orders them is kept."""
    if len(group) < 2:
        return [line for _, line in group]
    rows = sorted((_merge_order(at, line, rank) for at, line in group), key=_first_of)
    return _settled([row[1:] for row in rows])


def _merge_order(at: int, line: Line, rank: Mapping[str, int]
                 ) -> tuple[tuple[int, str, int, bytes], int, int, Line]:
    """(merge order, copy key, ingestion time, line) of one of a time's lines."""
    if isinstance(line, bytes):
        text = row = line
    else:  # last, the row itself; for a big one its digest (two such rows of one source and
        # line are hardly ever merged), so that a time's group holds none whole
        text = line.read()
        row = b"\xff" + hashlib.blake2b(text, digest_size=16).digest()
    rec = decode_staged(text)
    return ((rank.get(rec.source, at), rec.source, rec.line, row),
            copy_key(rec.record), ingested_ms(rec.record), line)


def _first_of(row: tuple[tuple[int, str, int, bytes], int, int, Line]
              ) -> tuple[int, str, int, bytes]:
    return row[0]
