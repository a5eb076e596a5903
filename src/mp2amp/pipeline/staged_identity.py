"""What the identity pass reads of a staged window: each line's identity view and the UTC
seconds its event happened at.

Why the seconds come from staging: in a legacy-time project an export row's
``properties.time`` is local wall clock while a Data Pipelines row's is UTC, and in the
DST fall-back hour the wall clock runs backwards. Staging already turned every record's
time into UTC for its sort key (the staged row's first field), so the identity pass
orders its links (a shared device's first user, Original ID Merge's links) by that,
never by the raw time. Files staged by an older mp2amp carry the same key.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from mp2amp.identity.ids import identity_view
from mp2amp.pipeline.staged_ranges import damaged_staged
from mp2amp.pipeline.staging import (
    UNKNOWN_TIME,
    WHOLE_SECOND_AT,
    load_staged,
    staged_key,
)
from mp2amp.pipeline.staging import (
    _seconds as seconds_of,
)


def identity_seconds(view: Any, key: float) -> float | None:
    """The UTC seconds the identity pass orders a line's event by: its sort key without the
    whole-second shift; None where the time is unknown (the pass reads properties.time)."""
    if view is None or key == UNKNOWN_TIME:
        return None
    _, whole = seconds_of(view)
    return float(round(key - WHOLE_SECOND_AT)) if whole else key


def _old_row(value: Any) -> list[Any]:
    """A line without a view (an older staged file) as its row: a list of 5 fields. A
    line cut at its tab leaves a whole view that parses: its shape names the damage."""
    if value.__class__ is not list or len(value) != 5:
        raise ValueError(f"a {type(value).__name__} where a staged row of 5 fields was due")
    return value


def read_staged_identity_timed(path: Path, sums: list[int] | None = None
                               ) -> Iterator[tuple[dict[str, Any] | None, float | None]]:
    """Each line's identity view (``None`` where the identity pass has nothing to read)
    and its UTC seconds (``identity_seconds``), in time order. ``sums``: the CRC-32 of the
    file's bytes is appended once all is read (``changed_copy.check_copy_text``: a line
    edited in place since staging; every line is in hand here, so it costs no read)."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    crc, checksum = 0, zlib.crc32
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            crc = checksum(raw, crc)
            tab = raw.find(b"\t")
            text = raw[:tab] if tab >= 0 else raw
            try:
                try:
                    value = loads(text)
                except decode_error:  # written by the standard library (staging._encode)
                    value = load_staged(text)
                view = value if tab >= 0 else identity_view(_old_row(value)[3])
                key = staged_key(raw)
            except (ValueError, TypeError, IndexError) as exc:  # cut short, say
                raise damaged_staged(path, f"line {number}", exc) from None
            yield view, identity_seconds(view, key)
    if sums is not None:
        sums.append(crc)
