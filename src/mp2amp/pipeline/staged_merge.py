"""Staged windows merged into one, in time order (overlapping input files, ``overlaps``;
``transform``'s files): the order depends only on the lines, not on how they were merged.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO
from zlib import crc32 as _crc32  # as staging sums its copies

from mp2amp.pipeline.staging import (
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

    def keyed(at: int, path: Path) -> Iterator[tuple[float, int, bytes]]:
        with open(path, "rb") as f:
            for line in f:
                yield staged_key(line), at, line

    part = dest.with_name(dest.name + ".part")
    n = crc = 0
    with open(part, "wb") as out:
        group: list[tuple[int, bytes]] = []
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


def _write_summed(out: BinaryIO, lines: list[bytes], crc: int) -> int:
    data = b"".join(lines)
    out.write(data)
    return _crc32(data, crc)


def _first(item: tuple[float, int, bytes]) -> float:
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


def _merged_time(group: list[tuple[int, bytes]], rank: Mapping[str, int]) -> list[bytes]:
    """One time's lines (with the place of the file each came from) in merge order (see
    ``merge_staged``), copies settled: the records are read only when the time has
    several lines."""
    if len(group) < 2:
        return [line for _, line in group]
    rows = sorted(((decode_staged(line), at, line) for at, line in group),
                  key=lambda row: (rank.get(row[0].source, row[1]), row[0].source,
                                   row[0].line, row[2]))
    return _settled([(copy_key(rec.record), ingested_ms(rec.record), line)
                     for rec, _, line in rows])
