"""Records nested as deeply as the JSON parser reads, which a staged row cannot hold.

orjson reads 1,024 levels. A record's text is staged inside its row, one level deeper,
so a record of exactly 1,024 levels would be staged as a row neither orjson nor the
standard library (its recursion) reads back: the transform died with a traceback and
wrote nothing. Such a record's deepest property is past the 1,000 levels the transform
keeps, so it is staged as the ``too_deep`` rejection the transform would give it, its
text kept for the dead letter. A row an earlier mp2amp staged so reads back the same.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

ORJSON_LEVELS = 1024  # orjson reads no deeper
DEEP_TEXT_BYTES = 2 * ORJSON_LEVELS  # a shorter text cannot nest that deep
# a staged row's sort key, source and line
_ROW_HEAD = re.compile(rb'\[([-+.\deE]+),("(?:[^"\\]|\\.)*"),(\d+),')
_NO_REJECTION = b",null]"


def fills_orjson_depth(raw: bytes) -> bool:
    """Whether a record's text (read by orjson) nests as deep as orjson reads, so that its
    staged row could not be read back. Only a long text with that many brackets is
    parsed again: the check costs a normal line two byte counts at most."""
    if len(raw) < DEEP_TEXT_BYTES or raw.count(b"[") + raw.count(b"{") < ORJSON_LEVELS:
        return False
    try:
        orjson.loads(b"[%s]" % raw)
    except orjson.JSONDecodeError:
        return True
    return False


def too_deep_row(key: float, source: str, line: int, text: str | None = None) -> bytes:
    """The staged row of a record nested too deeply to be staged: a ``too_deep``
    rejection, keeping the record's ``text`` (when known) for the dead letter."""
    return orjson.dumps([key, source, line, None, [
        "too_deep", f"{source} line {line} nests arrays and objects too deeply (about a "
        "thousand levels) to be staged; the record is rejected: flatten it in the source",
        None] + ([] if text is None else [text])])


def unreadable_row(data: bytes) -> list[Any]:
    """A staged row too deep for either JSON parser as its ``too_deep`` rejection row;
    ValueError when it does not start as a row (a damaged file: the caller names it)."""
    head = _ROW_HEAD.match(data)
    if head is None:
        raise ValueError("a staged row too deep to read does not start as one")
    body = data.rstrip()[head.end():]
    # a record staged as is ends its row with no rejection: its text for the dead letter
    text = body[:-len(_NO_REJECTION)].decode() if body.endswith(_NO_REJECTION) else None
    row: list[Any] = orjson.loads(too_deep_row(float(head[1]), orjson.loads(head[2]),
                                               int(head[3]), text))
    return row
