"""Stream the elements of a top-level JSON array without loading the whole file.

Elements are decoded one at a time with ``json.JSONDecoder.raw_decode`` over a buffer
that is refilled from the file. Memory holds one element plus one read chunk. One nested
past what that recursive decoder reads is read as a JSON line is (orjson, 1,024 levels),
so what is kept is the same in .json and .jsonl, whatever the stack; it ends with the
bracket that closes it, so a missing ``,`` after it loses nothing, as after any element.
An element that is not valid JSON is reported as ``malformed_json`` and skipped to the
``,`` or ``]`` that ends it, found by its strings and brackets (a bad literal or a
missing quote in a key leaves those intact; a stray ``}`` is part of it), so the elements
after it are still read. An unterminated string ends its element at its line's end (JSON
strings hold no raw newline), so the next line's element is read; when that is the file's
last line and the text after the quote closes the element and the array (a stray quote),
the file is whole. A file that ends before its array does (its
last character is not the ``]`` that closes it: none, an inner list's, or one inside a
string left open, as in a cut ``"[object Object]"``) was cut short: one ``truncated_file``
rejection marks the rest, as for a damaged .gz, so ``[source] damaged_files`` applies. An
element with no end before the file's, in a file that ends with its array's ``]`` (a
bracket left open inside it, or a stray quote after which the text closes the element and
the array), or within ``MAX_ELEMENT_CHARS`` gives up the rest of the file
(``malformed_json``). Invalid UTF-8 rejects its element as ``invalid_utf8``, as it rejects
a JSON line, rather than becoming U+FFFD. A bad element is rejected with its whole text,
as a bad JSON line is. What follows the array other than another array (JSON lines: ``cat
day1.json day2.jsonl``) is read on as JSON lines.

An element's ``line`` is the 1-based line it starts on, so that a pretty-printed array's
dead letter points at it. Records are keyed by file and line (the ledger's rejects and
parked events), so an element starting on a line an earlier one already started on is
numbered on from that one: an array written on one line numbers its elements 1, 2, 3...
"""

from __future__ import annotations

import codecs
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from mp2amp.errors import Rejection
from mp2amp.models import SourceRecord


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


CHUNK = 1 << 20
TOO_DEEP = ("nests arrays and objects too deeply to be read (Amplitude keeps 40 levels): "
            "flatten it")
MAX_ELEMENT_CHARS = 64 << 20
_WS = " \t\r\n"
# between top-level arrays a file joined from several (`cat a.json b.json`) holds each
# one's UTF-8 byte order mark too
BOM = "\ufeff"
_WS_BETWEEN = _WS + BOM
# surrogateescape turns each invalid UTF-8 byte into one of these (never valid text)
_BAD_BYTE = re.compile("[\udc80-\udcff]")
# what matters when skipping a bad element: outside strings, and inside them
_STRUCTURE = re.compile(r'["{}\[\],]')
_IN_STRING = re.compile(r'["\\\n]')
_BRACKETS = re.compile(r"[{}\[\]]")
# a decode error this close to the buffer's end may be an element cut by the read size
# (a literal, escape or surrogate pair is at most 12 characters)
_NEAR_END = 16
_PARSE_ERROR = object()
_TOO_DEEP = object()  # valid JSON, nested deeper than the decoder's recursion can go
_CUT, _ENDLESS = -1, -2  # skip_element found no end: the input ended, or the size cap


def iter_array(source: str, stream: Readable, first: bytes = b"") -> Iterator[SourceRecord]:
    """SourceRecords of a JSON array file; ``line`` is where the element starts (numbered
    on past the previous element's when it shares its line: each is unique and increasing).

    ``first`` is data already read from ``stream`` (format sniffing).
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    buf = utf8.decode(first)
    pos = 0
    eof = False
    tainted = _BAD_BYTE.search(buf) is not None  # some invalid UTF-8 was read
    newlines = 0  # in the text read before buf[counted]
    counted = 0
    last = 0  # the number the previous record got
    # where skip_element's scan stood when the input ended (_CUT): the brackets still open
    # in the element, and whether inside a string
    open_at_cut, in_string_at_cut = 0, False
    # the last bad element's string ended with its line, and the text it took closes the
    # element and the array: a stray quote, so a file ending there is whole
    line_closed_array = False

    def line_at(p: int) -> int:
        """The 1-based line of ``buf[p]`` (``p`` never moves back)."""
        nonlocal newlines, counted
        if p > counted:
            newlines += buf.count("\n", counted, p)
            counted = p
        return newlines + 1

    def number(p: int) -> int:
        """The record number of what starts at ``buf[p]``: its line, or one past the
        previous record's when that one started on the same line."""
        nonlocal last
        last = max(line_at(p), last + 1)
        return last

    def refill() -> bool:
        nonlocal buf, pos, eof, tainted, counted
        if eof:
            return False
        line_at(pos)  # the text before pos is dropped from the buffer below
        counted = 0
        data = stream.read(CHUNK)
        if not data:
            eof = True
            text = utf8.decode(b"", final=True)
        else:
            text = utf8.decode(data)
        tainted = tainted or _BAD_BYTE.search(text) is not None
        buf = buf[pos:] + text
        pos = 0
        return True

    def skip_element(whole: bool = False) -> int:
        """Move ``pos`` from a bad element's start to the ``,`` or ``]`` after it and
        return where the element now starts in ``buf``; _CUT when the input ends first,
        _ENDLESS when no end is found within MAX_ELEMENT_CHARS. ``whole``: the element is
        valid JSON as far as brackets go (it only nests too deeply for the stdlib), so it
        ends with the bracket that closes it: a missing ',' after it loses nothing."""
        nonlocal pos, open_at_cut, in_string_at_cut, line_closed_array
        start = pos
        depth = 0
        i = pos
        in_string = False
        while True:
            m = (_IN_STRING if in_string else _STRUCTURE).search(buf, i)
            if m is None:
                offset = len(buf) - pos
                if offset > MAX_ELEMENT_CHARS:
                    return _ENDLESS
                if not refill():
                    open_at_cut, in_string_at_cut = depth, in_string
                    return _CUT
                i, start = offset, 0  # refill moved the buffer's start to pos
                continue
            i = m.end()
            ch = m.group()
            if in_string:
                if ch == "\n":
                    # JSON never holds a raw newline in a string: this one was left open
                    # (a cut value). The element ends with its line, so an array of one
                    # element per line reads on with the next (the ',' was in the string).
                    line_closed_array = _stray_quote_closes(
                        _open_string(buf, start, i - 1), depth)
                    pos = i
                    return start
                if ch == "\\":
                    while i >= len(buf):  # the escaped character is still to be read
                        offset = i - pos
                        if not refill():
                            open_at_cut, in_string_at_cut = depth, True
                            return _CUT
                        i, start = offset, 0
                    i += 1
                else:
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "{[":
                depth += 1
            elif ch in "}]" and depth > 0:
                depth -= 1
                if whole and depth == 0:
                    pos = i
                    return start
            elif ch == "]" or (ch == "," and depth == 0):  # a top-level ',' or the array's ']'
                pos = i - 1
                return start
            # a stray top-level '}' (an extra brace) is part of the bad element: ending the
            # element on it would start the next one on it again, endlessly

    def skip_ws(ws: str = _WS) -> bool:
        """Advance past whitespace (``ws``); False at the end of the input."""
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in ws:
                pos += 1
            if pos < len(buf):
                return True
            if not refill():
                return False

    def broken(index: int, what: str, line: int | None = None) -> SourceRecord:
        line = number(pos) if line is None else line
        rej = Rejection(
            "malformed_json",
            f"{source}: JSON array element {index} {what} (line {line}); the rest of this "
            "file cannot be read reliably and is skipped: fix the file or convert it to "
            "JSON lines",
            source=source, line=line, record=_clean(buf[pos:pos + 200]),
        )
        return SourceRecord(source, line, None, rej)

    def cut_short(where: str, line: int | None = None) -> SourceRecord:
        """The input ends before the array does: the file was cut short (a download or
        copy that stopped), reported as a damaged .gz is, so that ``damaged_files``
        applies; the rest it lacks is this one rejection (``line``: the cut element's)."""
        if line is None:  # past the last record's: records are keyed by file and line
            line = number(pos)
        rej = Rejection(
            "truncated_file",
            f"{source} ends {where} without the ']' that closes its JSON array (cut "
            "short); the rest of the file could not be read: restore the file and run again",
            source=source, line=line, record=_clean(buf[pos:pos + 200]) or None,
        )
        return SourceRecord(source, line, None, rej)

    if not skip_ws(_WS_BETWEEN) or buf[pos] != "[":
        yield broken(1, "is missing: the file does not start with '['")
        return
    pos += 1
    index = 0
    first_of_array = True
    while True:
        if not skip_ws():
            if line_closed_array:  # the last line's ']' was the array's, after a stray quote
                return
            yield cut_short(f"after element {index} (line {line_at(pos)})" if index
                            else f"after its '[' (line {line_at(pos)})")
            return
        if buf[pos] == "]":
            pos += 1
            if not skip_ws(_WS_BETWEEN):
                return
            if buf[pos] != "[":
                # JSON lines after the array (`cat day1.json day2.jsonl`): read on as
                # lines, each kept or rejected whole (it was one rejection of 200
                # characters, the rest of the file lost)
                from mp2amp.extract.lines import parse_lines, split_lines  # imports this

                rest = buf[pos:].encode("utf-8", "surrogateescape") + utf8.getstate()[0]
                more = iter(()) if eof else iter(lambda: stream.read(CHUNK), b"")
                yield from parse_lines(source, split_lines(itertools.chain([rest], more)),
                                       max(line_at(pos), last + 1))
                return
            pos += 1  # arrays one after another (`cat day1.json day2.json`): read on
            first_of_array = True
            continue
        # A missing ',' between two whole elements (a hand-joined file) loses nothing
        # when the element is read on; ``]`` after ',' closes the array as usual.
        if index > 0 and not first_of_array and buf[pos] == ",":
            pos += 1
            if not skip_ws():
                yield cut_short(f"after element {index} and a ',' (line {line_at(pos)})")
                return
            if buf[pos] == "]":  # a trailing comma: no element is missing
                continue
        first_of_array = False
        line_closed_array = False
        index += 1
        line = number(pos)
        starts = line_at(pos)  # the line in the file (``line`` counts on along one line)
        long_integer = False
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                # Maybe just incomplete: read more and try again, until the end of input
                # (bounded, so a broken file cannot fill memory). An error well before
                # the buffer's end is a real one and needs no more input.
                cut = exc.pos >= len(buf) - _NEAR_END or exc.msg.startswith("Unterminated")
                if cut and len(buf) - pos < MAX_ELEMENT_CHARS and refill():
                    continue
                value, end = _PARSE_ERROR, pos
            except RecursionError:
                # it used to escape as a traceback and lose the whole file
                value, end = _TOO_DEEP, pos
            except ValueError:  # valid JSON Python refuses: an integer of 4300+ digits
                value, end, long_integer = _PARSE_ERROR, pos, True
            else:
                # A number at the buffer's end may continue in the next chunk.
                if end == len(buf) and not eof and refill():
                    continue
            break
        skipped: int | None = None  # the element's start once skip_element passed it
        raw: bytes | None = None
        if value is _TOO_DEEP:
            # past the recursion the stdlib decoder has left: parsed as a JSON line is
            # (orjson, 1,024 levels), so what is kept never depends on the stack
            skipped = skip_element(whole=True)
            if skipped >= 0:
                value, raw = _parse_deep(buf[skipped:pos])
                if value is not _PARSE_ERROR and value is not _TOO_DEEP:
                    end, pos = pos, skipped
                elif not _closes_itself(buf, skipped, pos):
                    # a bracket left open inside took a later closer (the array's ']') for
                    # the element's: skip it as any bad element, to its ',' or ']'
                    pos, skipped = skipped, None
        if value is _PARSE_ERROR or value is _TOO_DEEP:
            what = "is not valid JSON" if value is _PARSE_ERROR else TOO_DEEP
            start = skip_element() if skipped is None else skipped
            # the input ended inside the element: cut short, unless the file ends with the
            # array's own ']' (a bracket left open inside took it for an inner list's, or a
            # stray quote hides it); a ']' that closes an inner list, or one a cut string's
            # text holds ("[object Object]"), is a cut
            closed = buf.rstrip(_WS).endswith("]") and (
                _stray_quote_closes(_open_string(buf), open_at_cut) if in_string_at_cut
                else open_at_cut == 0)
            if start == _CUT and not closed:
                # pos is still the element's start: its text is kept
                yield cut_short(f"inside element {index} (which starts on line {starts})",
                                line)
                return
            if start < 0:
                yield broken(index, what, line)
                return
            if pos == start and buf[pos] != ",":
                pos += 1  # never read the same place again: the element is its first character
            # the element's whole text, as a bad JSON line's: it can be fixed and sent again
            text = _clean(buf[start:pos].rstrip())
            long = _long_integer_in(text, f"{source}: JSON array element {index}",
                                    f"{text[:80]!r} (line {line})", source, line) \
                if long_integer else None
            if long is not None:
                yield SourceRecord(source, line, None, long)
                continue
            rej = Rejection(
                "malformed_json",
                f"{source}: JSON array element {index} {what}: {text[:80]!r} (line {line}); "
                "skipped, reading goes on with the next element",
                source=source, line=line, record=text,
            )
            yield SourceRecord(source, line, None, rej)
            continue
        if tainted and _BAD_BYTE.search(buf, pos, end) is not None:
            rej = Rejection(
                "invalid_utf8",
                f"{source}: JSON array element {index} is not valid UTF-8: "
                f"{_clean(buf[pos:min(end, pos + 80)])!r} (line {line})",
                source=source, line=line, record=_clean(buf[pos:end]),
            )
            pos = end
            yield SourceRecord(source, line, None, rej)
            continue
        pos = end
        if isinstance(value, dict):
            yield SourceRecord(source, line, value, None, raw)
        else:
            rej = Rejection(
                "not_an_object",
                f"{source}: JSON array element {index} is {type(value).__name__}, "
                f"not a JSON object (line {line})",
                source=source, line=line, record=value,
            )
            yield SourceRecord(source, line, None, rej)


def _long_integer_in(text: str, where: str, shown: str, source: str,
                     line: int) -> Rejection | None:
    """The ``non_json_value`` rejection of an element holding an integer too long to
    read, naming the field as a JSON line's does; None if it holds none."""
    from mp2amp.extract.lines import long_integer_rejection  # extract.lines imports this

    return long_integer_rejection(text, where, shown, source, line)


def _parse_deep(text: str) -> tuple[Any, bytes | None]:
    """An element nested past the stdlib decoder's recursion, read as extract.lines reads
    a JSON line: orjson (1,024 levels), the stdlib for what only it reads (NaN, integers
    past a double's range); ``_TOO_DEEP`` past orjson's depth, ``_PARSE_ERROR`` when orjson
    finds bad syntax the stdlib cannot read either. With orjson's value comes its text on
    one line (SourceRecord.raw, a JSON line's): staging keeps it as is instead of writing
    the value again with the recursive stdlib."""
    if _BAD_BYTE.search(text) is not None:
        return None, None  # not UTF-8: the caller's check rejects it as invalid_utf8
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        too_deep = str(exc).startswith("depth limit exceeded")
    else:
        # a raw CR or LF in valid JSON is whitespace between tokens, never in a string
        return value, text.strip(_WS).replace("\n", " ").replace("\r", " ").encode()
    if too_deep:
        return _TOO_DEEP, None
    try:
        return json.loads(text), None
    except (ValueError, RecursionError):
        # past the stdlib's recursion only orjson's word counts, and it found bad syntax
        # (as extract.lines says of such a line: "not valid JSON")
        return _PARSE_ERROR, None


def _open_string(buf: str, lo: int = 0, hi: int | None = None) -> str:
    """The text after the quote left open at the end of ``buf[lo:hi]`` (an escaped quote
    is text)."""
    hi = len(buf) if hi is None else hi
    quote = buf.rfind('"', lo, hi)
    while quote > lo and _escaped(buf, quote):
        quote = buf.rfind('"', lo, quote)
    return buf[max(quote + 1, lo):hi]


def _escaped(text: str, at: int) -> bool:
    """Whether ``text[at]`` follows an odd number of backslashes."""
    n = 0
    while at - n > 0 and text[at - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _stray_quote_closes(tail: str, depth: int) -> bool:
    """Whether ``tail``, the text after a quote left open, read as if that quote were a
    stray one, ends with a ']' and closes more than the ``depth`` brackets still open in
    its element: the element and then the array, a whole file with a broken string
    (``"open}]``), not one cut inside a string whose text so far ends with ']'
    (``"[object Object]``). More, not exactly as many: ``depth`` was counted with the
    quotes after the stray one paired wrongly, so brackets the element opens in its
    text were taken for string text (``"5" TV","p":{"a":1}}]`` looks 1 deep, is 2)."""
    if not tail.rstrip(_WS).endswith("]"):
        return False
    for m in _BRACKETS.finditer(tail):
        depth += 1 if m.group() in "{[" else -1
    return depth < 0


def _closes_itself(buf: str, start: int, end: int) -> bool:
    """Whether ``buf[start:end]`` ends with the bracket that closes its first one."""
    return buf[end - 1] == {"{": "}", "[": "]"}.get(buf[start])


def _clean(text: str) -> str:
    """``text`` with the bytes that were not UTF-8 shown as ``\\xNN`` escapes (printable,
    storable, and the original bytes can be read off it to fix the file)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
