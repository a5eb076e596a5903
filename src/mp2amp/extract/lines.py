"""Turn JSON lines into SourceRecords: one per record, never a silent loss.

Shared by the file reader and the Export API client, so that a window's record count
measured while streaming equals what a later read of the saved file yields.

Mixpanel's export sometimes splits one record across two (or more) lines; like Airbyte's
client we join adjacent unparseable lines while the join still fails, and keep the
joined record when it parses. A middle piece, or a few middle pieces together, may be JSON
by themselves (a number cut out of a string, a whole nested object, a key cut in two):
while the record before them is still unfinished JSON with them added, they wait for the
next line too instead of ending the join. A line of whole objects written one after
another (``{..}{..}``, a dump loop without newlines) is one ``concatenated_objects``
rejection that says so (each object is whole, but a record is known by its file and line:
two records of one line could not be told apart on a resume). Lines that never join become
``malformed_json`` rejections, so every input line is accounted for; waiting lines that no
later line can join are first joined among themselves where they parse. Mixpanel's
``terminated early`` line in a saved export is one ``truncated_file`` rejection.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from mp2amp.errors import Rejection
from mp2amp.extract.jsonarray import TOO_DEEP
from mp2amp.models import SourceRecord

# A split record spans a few lines at most; past this, the pending lines are garbage.
MAX_JOINED_LINES = 8
MAX_JOINED_BYTES = 8 * 1024 * 1024
# Mixpanel's export writes this plain-text line when it gave up part-way (mixpanel-utils #5).
TERMINATED_EARLY = (b"terminated early", b"export terminated early")

_PARSE_ERROR = object()
_RUNS_ON = object()  # a waiting record is still unfinished JSON through the new line
_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


def is_terminated_early(line: bytes) -> bool:
    return line.strip().lower() in TERMINATED_EARLY


def parse_json(data: bytes) -> Any:
    """Parse one JSON document; ``_PARSE_ERROR`` when it is not JSON.

    orjson first (fast); the standard library as a fallback for what orjson refuses but
    real exports contain: NaN/Infinity, integers past a double's range. (orjson reads an
    integer past 64 bits but within a double's range as the nearest double, as JavaScript
    does; see the README's dead letters paragraph.)
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        return _PARSE_ERROR
    except RecursionError:
        return _PARSE_ERROR
    except ValueError:  # valid JSON Python refuses: an integer past its 4300 digits
        return long_integer(data) or _PARSE_ERROR


@dataclass(frozen=True, slots=True)
class LongInteger:
    """What ``parse_json`` gives for valid JSON holding an integer past the digits Python
    reads (4300): where the first one is (``properties.n``, ``properties.list[2]``) and
    its length. Its line is rejected as ``non_json_value``, kept whole, naming the field."""

    field: str
    digits: int


def long_integer_rejection(text: str, where: str, shown: str, source: str,
                           line: int, long: LongInteger | None = None) -> Rejection | None:
    """The ``non_json_value`` rejection of a record ``text`` holding an integer too long
    to read (``long``, found here when not given), alike in each format; None if it holds
    none. ``where`` is how the format names the record ("f line 3", "f: JSON array element
    2"), ``shown`` its preview as the message ends it."""
    long = long if long is not None else long_integer(text.encode())
    if long is None:
        return None
    return Rejection(
        "non_json_value",
        f"{where}: {long.field} is an integer of {long.digits:,} digits, past what can be "
        f"read (Amplitude takes 64 bits): {shown}",
        field=long.field, source=source, line=line, record=text)


def long_integer(data: bytes) -> LongInteger | None:
    limit = sys.get_int_max_str_digits()

    def parse_int(text: str) -> Any:
        digits = len(text.lstrip("-"))
        return LongInteger("", digits) if limit and digits > limit else int(text)

    try:
        value = json.loads(data, parse_int=parse_int)
    except (ValueError, RecursionError):
        return None
    todo: list[tuple[str, Any]] = [("", value)]
    while todo:
        path, item = todo.pop()
        if isinstance(item, LongInteger):
            return LongInteger(path or "(the line)", item.digits)
        if isinstance(item, dict):
            todo.extend((f"{path}.{k}" if path else str(k), v)
                        for k, v in reversed(item.items()))
        elif isinstance(item, list):
            todo.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    return None


def _too_deep(data: bytes) -> bool:
    """Whether parsing failed on the nesting depth, not on the syntax."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return str(exc).startswith("depth limit exceeded")
    return False


def _cut_short(data: bytes) -> bool:
    """Whether ``data`` is the start of a JSON document that stops before its end (what
    the first pieces of a split record are), not JSON that goes wrong part-way."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "end of data" in str(exc):
            return True
    else:
        return False
    try:  # what only the standard library reads (NaN, huge integers, a BOM): its own words
        json.loads(data.decode("utf-8-sig"))
    except json.JSONDecodeError as exc:
        return exc.msg.startswith("Unterminated string") or exc.pos >= len(exc.doc.rstrip())
    except (ValueError, RecursionError):
        return False
    return False


def split_objects(line: bytes) -> list[dict[str, Any]] | None:
    """The objects of a line that holds two or more whole JSON objects one after another
    (whitespace between them or not), else ``None``. Only for a line that did not parse."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out: list[dict[str, Any]] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _WS:
            pos += 1
        if pos == end:
            return out if len(out) > 1 else None
        if text[pos] != "{":  # only objects: a stray value is no record boundary
            return None
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return None
        out.append(value)


def is_json(data: bytes) -> bool:
    """Whether ``data`` is one whole JSON document."""
    return parse_json(data) is not _PARSE_ERROR


def _preview(data: bytes, limit: int = 80) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return text + ("..." if len(data) > limit else "")


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


class LineParser:
    """Feed numbered lines, get SourceRecords; call ``finish()`` at the end of the input.

    Blank lines yield nothing. Every other line ends up in exactly one SourceRecord
    (a joined record is reported at the line where it starts)
    """

    def __init__(self, source: str) -> None:
        self.source = source
        # (line number, line, its value alone or _PARSE_ERROR), oldest first
        self._pending: list[tuple[int, bytes, Any]] = []
        self._pending_bytes = 0

    def feed(self, lineno: int, line: bytes) -> Iterator[SourceRecord]:
        line = line.rstrip(b"\r\n")
        if not line.strip():
            return
        if self._pending:
            yield from self._feed_waiting(lineno, line)
            return
        value = parse_json(line)
        if value is _PARSE_ERROR:
            objects = split_objects(line)
            if objects is not None:
                yield self._concatenated(lineno, line, len(objects))
                return
            self._hold(lineno, line, value)
            return
        yield self._classify(lineno, line, value)

    def _feed_waiting(self, lineno: int, line: bytes) -> Iterator[SourceRecord]:
        """``feed`` while earlier lines wait to be joined."""
        joined = self._join(line)
        if isinstance(joined, tuple):
            start, data, value = joined
            first, earlier = self._pending[start][0], self._pending[:start]
            self._clear()
            yield from self._settle(earlier)
            yield self._classify(first, data, value)
            return
        value = parse_json(line)
        if joined is _RUNS_ON:  # a later start parses, but an earlier record is still open
            self._hold(lineno, line, value)
            yield from self._trim()
            return
        if value is _PARSE_ERROR:
            objects = split_objects(line)
            if objects is not None:  # whole records: what is pending joins nothing
                yield from self._flush_pending()
                yield self._concatenated(lineno, line, len(objects))
                return
        elif not self._continued_by(line):
            yield from self._flush_pending()
            yield self._classify(lineno, line, value)
            return
        # Not JSON alone, or JSON alone (a number cut out of a string, a whole nested
        # object) that a waiting record still runs on through: later lines decide.
        self._hold(lineno, line, value)
        yield from self._trim()

    def _starts(self) -> list[int]:
        """Where a split record may begin: a waiting line that is no JSON by itself (a
        record's first piece never is; a whole value cannot run on into a record)."""
        return [i for i, (_, _, value) in enumerate(self._pending) if value is _PARSE_ERROR]

    def _pieces(self, start: int, line: bytes) -> bytes:
        return b"".join([*(part for _, part, _ in self._pending[start:]), line])

    def _join(self, line: bytes) -> tuple[int, bytes, Any] | object | None:
        """The longest join of waiting lines and ``line`` that parses: an unrelated bad
        line before the first piece of a split record must not block the join.

        ``_RUNS_ON`` when the join that parses leaves out an earlier start that is still
        unfinished JSON with ``line``: its middle pieces (a nested object cut in two, a key
        cut in two) parse together, but the record they belong to has not ended yet.
        """
        starts = self._starts()
        for k, start in enumerate(starts):
            joined = self._pieces(start, line)
            value = parse_json(joined)
            if value is _PARSE_ERROR:
                continue
            if any(_cut_short(self._pieces(s, line)) for s in starts[:k]):
                return _RUNS_ON
            return start, joined, value
        return None

    def _continued_by(self, line: bytes) -> bool:
        """Whether a waiting record, with ``line`` after it, is still unfinished JSON."""
        return any(_cut_short(self._pieces(start, line)) for start in self._starts())

    def _hold(self, lineno: int, line: bytes, value: Any) -> None:
        self._pending.append((lineno, line, value))
        self._pending_bytes += len(line)

    def _trim(self) -> Iterator[SourceRecord]:
        if len(self._pending) <= MAX_JOINED_LINES and self._pending_bytes <= MAX_JOINED_BYTES:
            return
        # Report the oldest (with what it joins); the rest may still start a record,
        # unless no piece of it can.
        yield from self._pop_first()
        while self._pending and self._pending[0][2] is not _PARSE_ERROR:
            yield from self._pop_first()

    def _pop_first(self) -> Iterator[SourceRecord]:
        """Report the oldest waiting line, joined with the lines after it when they parse."""
        taken, record = self._first_of(self._pending)
        self._pending_bytes -= sum(len(part) for _, part, _ in self._pending[:taken])
        del self._pending[:taken]
        yield record

    def _settle(self, lines: list[tuple[int, bytes, Any]]) -> Iterator[SourceRecord]:
        """Waiting lines that no later line can join: the records they make among
        themselves (a split record held behind a bad line that looked unfinished), each
        of the others alone."""
        while lines:
            taken, record = self._first_of(lines)
            lines = lines[taken:]
            yield record

    def _first_of(self, lines: list[tuple[int, bytes, Any]]) -> tuple[int, SourceRecord]:
        """How many of ``lines`` the first one takes, and the record they make: the
        longest join from it that parses, else the first line alone."""
        lineno, line, value = lines[0]
        if value is _PARSE_ERROR:
            for end in range(len(lines), 1, -1):
                data = b"".join(part for _, part, _ in lines[:end])
                joined = parse_json(data)
                if joined is not _PARSE_ERROR:
                    return end, self._classify(lineno, data, joined)
            return 1, self._malformed(lineno, line)
        return 1, self._classify(lineno, line, value)

    def completes(self, line: bytes) -> bool:
        """Whether ``line`` is a whole JSON value, alone or as the last part of the split
        record the parser holds (what ``feed`` would join it into), and no waiting record
        runs on through it (a stream cut right after a middle piece that is JSON alone)."""
        line = line.rstrip(b"\r\n")
        if self._pending:
            joined = self._join(line)
            if joined is not None:
                return joined is not _RUNS_ON
            if parse_json(line) is not _PARSE_ERROR:
                return not self._continued_by(line)
        return parse_json(line) is not _PARSE_ERROR or split_objects(line) is not None

    @property
    def idle(self) -> bool:
        """No line is waiting to be joined with the next one."""
        return not self._pending

    def finish(self) -> Iterator[SourceRecord]:
        yield from self._flush_pending()

    def _concatenated(self, lineno: int, line: bytes, count: int) -> SourceRecord:
        old_mac = b"\r" in line.rstrip(b"\r")  # lines ended by a bare CR: one long line
        why = (" (they are separated by bare carriage returns: convert the line endings "
               "to \\n)") if old_mac else ""
        return SourceRecord(self.source, lineno, None, Rejection(
            "concatenated_objects",
            f"{self.source} line {lineno} holds {count} JSON objects one after another, not "
            f"one record{why}: put each on its own line and migrate them from that file (the "
            "file's other lines are not held back)", source=self.source, line=lineno,
            record=line.decode("utf-8", "replace")))

    def _clear(self) -> None:
        self._pending = []
        self._pending_bytes = 0

    def _flush_pending(self) -> Iterator[SourceRecord]:
        pending = self._pending
        self._clear()
        yield from self._settle(pending)

    def _malformed(self, lineno: int, line: bytes) -> SourceRecord:
        if is_terminated_early(line):
            rej = self._terminated_early(lineno, line)
        else:
            joins = " (and does not join with the next line into a record)"
            try:
                line.decode("utf-8")
                reason, what = "malformed_json", "is not valid JSON"
            except UnicodeDecodeError:
                reason, what = "invalid_utf8", "is not valid UTF-8"
            else:
                if _too_deep(line):  # valid JSON: "not valid JSON" would send you looking
                    what, joins = TOO_DEEP, ""
            rej = Rejection(
                reason,
                f"{self.source} line {lineno} {what}{joins}: {_preview(line)!r}",
                # bytes that are not UTF-8 as \xNN: the original can be read off the record
                source=self.source, line=lineno, record=line.decode("utf-8", "backslashreplace"),
            )
        return SourceRecord(self.source, lineno, None, rej)

    def _terminated_early(self, lineno: int, line: bytes) -> Rejection:
        """A saved export that Mixpanel stopped part-way is a file cut short, as a cut .gz
        is: ``truncated_file``, so that ``[source] damaged_files`` stops migrate before any
        of it is sent (the Export API stream never gets here: it fetches the day again)."""
        return Rejection(
            "truncated_file",
            f"{self.source} line {lineno}: the line 'terminated early' means Mixpanel "
            "stopped this export part-way (the records after it were never written); the "
            "rest of the export is missing: export the window again, replace the file and "
            "run again", source=self.source, line=lineno,
            record=line.decode("utf-8", "replace"))

    def _classify(self, lineno: int, raw: bytes, value: Any) -> SourceRecord:
        if isinstance(value, dict):
            return SourceRecord(self.source, lineno, value, None)
        if isinstance(value, LongInteger):
            rej = long_integer_rejection(
                raw.decode("utf-8", "replace"), f"{self.source} line {lineno}",
                repr(_preview(raw)), self.source, lineno, value)
            return SourceRecord(self.source, lineno, None, rej)
        rej = Rejection(
            "not_an_object",
            f"{self.source} line {lineno} is {_type_name(value)}, not a JSON object: "
            f"{_preview(raw)!r}",
            source=self.source, line=lineno, record=raw.decode("utf-8", "replace"),
        )
        return SourceRecord(self.source, lineno, None, rej)


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream whose chunks ignore line boundaries.

    Splits on ``\\n`` only: ``str.splitlines`` would also split on Unicode line
    separators that real string values contain.
    """
    # The unfinished line's pieces, joined once its end arrives: joining them to every
    # chunk (and splitting it all again) made a 50 MB line cost ~16 s in 64 KB chunks.
    pending: list[bytes] = []
    for chunk in chunks:
        if not chunk:
            continue
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        if pending:
            pending.append(chunk)
            data = b"".join(pending)
            pending = []
        else:
            data = chunk
        parts = data.split(b"\n")
        tail = parts.pop()
        if tail:
            pending.append(tail)
        yield from parts
    if pending:
        yield b"".join(pending)


def parse_lines(source: str, lines: Iterable[bytes], first_line: int = 1) -> Iterator[SourceRecord]:
    """SourceRecords of JSON lines, numbered from ``first_line``."""
    parser = LineParser(source)
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for lineno, line in enumerate(lines, start=first_line):
        # Fast path for the common case (a whole object on its own line, nothing
        # pending); everything else, including re-parsing, goes through the parser.
        if parser.idle:
            try:
                value = loads(line)
            except decode_error:
                value = None
            if type(value) is dict:
                yield SourceRecord(source, lineno, value, None, line)
                continue
        yield from parser.feed(lineno, line)
    yield from parser.finish()
