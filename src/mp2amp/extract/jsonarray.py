"""Stream the elements of a top-level JSON array without loading the whole file.

Elements are decoded one at a time with ``json.JSONDecoder.raw_decode`` over a buffer
that is refilled from the file. Memory holds one element plus one read chunk.
Unlike JSON lines, a broken array cannot be resynchronised: the element where parsing
fails is reported as ``malformed_json`` and the rest of that file is not read (the
rejection says so).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import Protocol

from mp2amp.errors import Rejection
from mp2amp.models import SourceRecord


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


CHUNK = 1 << 20
MAX_ELEMENT_CHARS = 64 << 20
_WS = " \t\r\n"


def iter_array(source: str, stream: Readable, first: bytes = b"") -> Iterator[SourceRecord]:
    """SourceRecords of a JSON array file; ``line`` is the element index + 1.

    ``first`` is data already read from ``stream`` (format sniffing).
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    buf = utf8.decode(first)
    pos = 0
    eof = False

    def refill() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        data = stream.read(CHUNK)
        if not data:
            eof = True
            buf = buf[pos:] + utf8.decode(b"", final=True)
        else:
            buf = buf[pos:] + utf8.decode(data)
        pos = 0
        return True

    def skip_ws() -> bool:
        """Advance past whitespace; False at the end of the input."""
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos < len(buf):
                return True
            if not refill():
                return False

    def broken(index: int, what: str) -> SourceRecord:
        rej = Rejection(
            "malformed_json",
            f"{source}: JSON array element {index} {what}; the rest of this file cannot be "
            "read reliably and is skipped: fix the file or convert it to JSON lines",
            source=source, line=index, record=buf[pos:pos + 200],
        )
        return SourceRecord(source, index, None, rej)

    if not skip_ws() or buf[pos] != "[":
        yield broken(1, "is missing: the file does not start with '['")
        return
    pos += 1
    index = 0
    while True:
        if not skip_ws():
            yield broken(index + 1, "is missing: the array is not closed with ']'")
            return
        if buf[pos] == "]":
            pos += 1
            if skip_ws():
                yield broken(index + 1, "follows the closing ']' (one array per file)")
            return
        if index > 0:
            if buf[pos] != ",":
                yield broken(index + 1, "is not preceded by ','")
                return
            pos += 1
            if not skip_ws():
                yield broken(index + 1, "is missing after ','")
                return
        index += 1
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                # Maybe just incomplete: read more and try again, until the end of input
                # (bounded, so a broken file cannot fill memory).
                if len(buf) - pos < MAX_ELEMENT_CHARS and refill():
                    continue
                yield broken(index, "is not valid JSON")
                return
            # A number at the buffer's end may continue in the next chunk.
            if end == len(buf) and not eof and refill():
                continue
            break
        pos = end
        if isinstance(value, dict):
            yield SourceRecord(source, index, value, None)
        else:
            rej = Rejection(
                "not_an_object",
                f"{source}: JSON array element {index} is {type(value).__name__}, "
                "not a JSON object",
                source=source, line=index, record=value,
            )
            yield SourceRecord(source, index, None, rej)
