"""Stream a file of pretty-printed JSON objects written one after another (``jq .``
output, ``json.dump(indent=2)`` per event) without loading the whole file.

Read as JSON lines, each of its lines was rejected (an object spans more lines than a
split record is ever joined from), so a whole valid export ended in the rejects. Objects
are decoded with ``json.JSONDecoder.raw_decode`` over a buffer refilled from the file;
``line`` is the line where the object starts. A value that does not decode is rejected
up to the next line that opens a value at its first column (where such files start
every top-level value), so the objects after it are still read.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator

from mp2amp.errors import Rejection
from mp2amp.extract.jsonarray import _BAD_BYTE, MAX_ELEMENT_CHARS, TOO_DEEP, Readable, _clean
from mp2amp.extract.lines import long_integer_rejection
from mp2amp.models import SourceRecord

CHUNK = 1 << 20
_WS = " \t\r\n\ufeff"  # a BOM: files joined with cat each start with theirs
_NEAR_END = 16
# a value opened at a line's first column: such files indent everything nested
_TOP_LEVEL = re.compile("\n\ufeff?[{\\[]")


def is_pretty(first: bytes) -> bool:
    """Whether a file starts with a line holding only ``{``: never a JSON line, always a
    pretty-printed object."""
    text = first.lstrip()
    end = text.find(b"\n")
    return end > 0 and text[:end].strip() == b"{"


def iter_concatenated(source: str, stream: Readable, first: bytes = b"") -> Iterator[SourceRecord]:
    """SourceRecords of the JSON values in ``stream``; ``first`` was already read from it.

    Values that start on one line (``}{...}{...}``) are one ``concatenated_objects``
    rejection, as in a JSON lines file: a record is known by its file and line (in the
    ledger too), so two records of one line could not be told apart."""
    group: list[SourceRecord] = []
    for rec in _values(source, stream, first):
        if group and rec.line != group[0].line:
            yield _one_per_line(source, group)
            group = []
        group.append(rec)
    if group:
        yield _one_per_line(source, group)


def _one_per_line(source: str, group: list[SourceRecord]) -> SourceRecord:
    if len(group) == 1:
        return group[0]
    line = group[0].line
    text = "".join(json.dumps(r.record, ensure_ascii=False) if r.record is not None
                   else str(r.rejection.record if r.rejection else "") for r in group)
    return SourceRecord(source, line, None, Rejection(
        "concatenated_objects",
        f"{source} line {line} starts {len(group)} JSON values one after another, not one "
        "record: put each on its own line and migrate them from that file (the file's "
        "other records are not held back)", source=source, line=line, record=text))


_LONG_INTEGER = "holds an integer too long to read (4300+ digits)"


def _values(source: str, stream: Readable, first: bytes = b"") -> Iterator[SourceRecord]:
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    buf = utf8.decode(first)
    pos = 0
    eof = False
    line_no, line_pos = 1, 0  # the line number at buf[line_pos]

    def refill() -> bool:
        nonlocal buf, pos, eof, line_no, line_pos
        if eof:
            return False
        data = stream.read(CHUNK)
        eof = not data
        text = utf8.decode(data, final=eof)
        line_no += buf.count("\n", line_pos, pos)
        buf, line_pos = buf[pos:] + text, 0
        pos = 0
        return bool(data) or bool(text)

    def line_at(i: int) -> int:
        nonlocal line_no, line_pos
        line_no += buf.count("\n", line_pos, i)
        line_pos = i
        return line_no

    def skip_bad() -> str:
        """Move ``pos`` to the next line that opens an object or array at its first
        column (or the end of the input); return the text skipped."""
        nonlocal pos
        i = pos + 1
        while True:
            m = _TOP_LEVEL.search(buf, i)
            found = m.start() if m else -1
            if found >= 0:
                text, pos = buf[pos:found + 1], found + 1
                return text
            scanned = len(buf) - pos
            if scanned > MAX_ELEMENT_CHARS or not refill():
                text, pos = buf[pos:], len(buf)
                return text
            i = max(scanned - 1, 1)  # refill moved buf[pos] to buf[0]

    def decode() -> tuple[object, int, str]:
        """The value at ``pos``, where it ends, and what is wrong with it ("" if nothing)."""
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                # maybe only cut by the read size: read more, within bounds
                cut = exc.pos >= len(buf) - _NEAR_END or exc.msg.startswith("Unterminated")
                if cut and len(buf) - pos < MAX_ELEMENT_CHARS and refill():
                    continue
                return None, pos, "is not valid JSON"
            except RecursionError:
                return None, pos, TOO_DEEP
            except ValueError:  # valid JSON Python refuses: an integer of 4300+ digits
                return None, pos, _LONG_INTEGER
            if end == len(buf) and not eof and refill():  # a number may go on
                continue
            return value, end, ""

    while True:
        while True:  # past the whitespace between objects, reading on as needed
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos < len(buf) or not refill():
                break
        if pos >= len(buf):
            return
        lineno = line_at(pos)
        value, end, problem = decode()
        if problem:
            text = _clean(skip_bad().rstrip())
            long = long_integer_rejection(text, f"{source} line {lineno}",
                                    f"{text[:80]!r}; skipped, reading goes on", source,
                                    lineno) if problem == _LONG_INTEGER else None
            if long is not None:  # valid JSON: named as a JSON line's or an element's is
                yield SourceRecord(source, lineno, None, long)
                continue
            rej = Rejection(
                "malformed_json",
                f"{source} line {lineno}: the object starting here {problem}: "
                f"{text[:80]!r}; skipped up to the next object, reading goes on",
                source=source, line=lineno, record=text)
            yield SourceRecord(source, lineno, None, rej)
            continue
        if _BAD_BYTE.search(buf, pos, end) is not None:
            rej = Rejection(
                "invalid_utf8",
                f"{source} line {lineno}: the object starting here is not valid UTF-8",
                source=source, line=lineno, record=_clean(buf[pos:end]))
            pos = end
            yield SourceRecord(source, lineno, None, rej)
            continue
        pos = end
        if isinstance(value, dict):
            yield SourceRecord(source, lineno, value, None)
        else:
            rej = Rejection(
                "not_an_object",
                f"{source} line {lineno}: the value starting here is "
                f"{type(value).__name__}, not a JSON object",
                source=source, line=lineno, record=value)
            yield SourceRecord(source, lineno, None, rej)
