"""An Export API day's staged lines numbered by their place in the staged order.

Why: a record's (source, line) keys its dead letter and its parked rows in the ledger, and
the Export API promises no order. Numbered as they arrived, a day fetched again in another
order gave other records the lines of a done batch's dead letters, which were then
replaced (lost, the run unbalanced). The day is staged in (time, content) order, which a
day fetched again gives again, so a record's place in it is a line number every fetch
gives the same record (and the merge of overlapping days, which orders same-time lines by
line, keeps that order).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_NO_REJECTION = b",null]\n"  # how a staged row of a usable record ends


def renumbered(row: bytes, line: int, source: bytes) -> bytes:
    """A staged line (``view\\t[key,source,line,...]``, without its sort prefix) with
    ``line`` as its line number. ``source``: the window's source as JSON and a comma, as
    its rows start it: those are rewritten in place (~0.2 us); any other row is parsed."""
    start = row.index(b",", row.find(b"\t")) + 1  # past the key, a number
    if not row.startswith(source, start) or not row.endswith(_NO_REJECTION):
        return _renumbered_row(row, line)
    digits = start + len(source)
    return b"%s%d%s" % (row[:digits], line, row[row.index(b",", digits):])


def _renumbered_row(row: bytes, line: int) -> bytes:
    """``renumbered`` for a rejected line (its message names its line, as the dead letter
    does: the new number) or a row of another source."""
    tab = row.find(b"\t")
    body = row[tab + 1:].rstrip(b"\n")
    try:
        fields, dumps = orjson.loads(body), _orjson_row
    except orjson.JSONDecodeError:  # written by the standard library (NaN and the like)
        fields, dumps = json.loads(body), _stdlib_row
    was, fields[2] = fields[2], line
    rej = fields[4]
    if isinstance(rej, list) and len(rej) > 1 and isinstance(rej[1], str):
        rej[1] = _named_line(rej[1], str(fields[1]), was, line)
    return row[:tab + 1] + dumps(fields) + b"\n"


def _named_line(message: str, source: str, was: Any, line: int) -> str:
    """The message with "<source> line <was>" naming the new line instead."""
    now = f"{source} line {line}"
    return re.sub(re.escape(f"{source} line {was}") + r"(?!\d)", lambda _: now, message,
                  count=1)


def _orjson_row(fields: Any) -> bytes:
    return orjson.dumps(fields, default=str)


def _stdlib_row(fields: Any) -> bytes:
    # as staging writes such rows: no raw tab or newline, NaN kept as written
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode()
