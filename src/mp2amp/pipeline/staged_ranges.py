"""Byte ranges of a staged window's whole lines, and their rows, for the transform's
workers (each reads its own ranges of the file; see ``staging`` for the line format)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from mp2amp.errors import TerminalError


def damaged_staged(path: Path | str, where: str, exc: Exception) -> TerminalError:
    """What a staged line that cannot be read stops the run with: the staged copy lost
    bytes after staging (a work folder copied by a copy that stopped short, say).
    Deleted, the file is staged again from its source on --resume and checked against
    what was sent from it."""
    return TerminalError(
        f"the staged copy {path} is damaged: {where} cannot be read ({exc}); it lost bytes "
        "after it was staged (a work folder copied by a copy that stopped short, say). "
        "Delete that file and run the same command with --resume: its window is staged "
        "again from its source and checked against what was already sent of it")


def staged_ranges(path: Path, size: int) -> Iterator[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of whole lines of the staged window: each ends with
    the line that holds its ``size``-th byte (the last range may be shorter)."""
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        start = 0
        while start < total:
            f.seek(start + max(1, size) - 1)
            f.readline()  # to the end of the line that byte is in
            end = min(f.tell(), total)
            yield start, end
            start = end


def read_staged_range(path: Path | str, start: int, end: int) -> list[bytes]:
    """The rows of one ``staged_ranges`` range: each line without its identity view and
    newline, for ``orjson.loads``. (Not for ``decode_staged``: a row may hold a tab, as
    whitespace of the source line it keeps.)"""
    with open(path, "rb") as f:
        f.seek(start)
        block = f.read(end - start)
    # Each row is cut out of the block once (splitting into lines, then cutting off the
    # view, copied every row twice: 0.95 -> 0.69 us a line in the transform worker).
    rows: list[bytes] = []
    append = rows.append
    find = block.find
    pos = 0
    size = len(block)
    while pos < size:
        nl = find(b"\n", pos)  # only "\n" ends a line (not "\r")
        if nl < 0:
            nl = size  # a last line without its newline
        tab = find(b"\t", pos, nl)  # -1 without a view (an older staged file): the whole line
        append(block[tab + 1 if tab >= 0 else pos:nl])
        pos = nl + 1
    return rows
