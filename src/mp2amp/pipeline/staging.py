"""Staging: one window's source records, sorted by event time, in a local file.

Why: Amplitude should receive a device's events in time order (sessions and first-seen
properties depend on it) and the sessionizer needs them in order too, but neither the
Export API nor files promise any order. Each window is sorted here with a flat-memory
external merge sort, and its staged file is what pass 1 (identity) and pass 2 (transform
and load) read, as often as a resume needs, without asking Mixpanel again.

A staged line is ``<identity view>\t[sort_key, source, line, record | null, rejection | null]``;
unusable lines keep their place (and their rejection) so that they are counted and
dead-lettered. ``line`` is the line in the source file; an Export API day's is the
record's place in the staged order (``renumber``), which a day fetched again repeats.
The identity view (``identity.ids.identity_view``: the few fields the identity pass
reads, or ``null``) lets that pass parse ~100 bytes per line instead of the whole record;
JSON from orjson never holds a raw tab, so the first tab splits the line. Files staged
before the view existed (no tab) are still read.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import orjson

from mp2amp.errors import Rejection
from mp2amp.identity.ids import identity_view
from mp2amp.models import UTC_TIME_MARK, SourceRecord
from mp2amp.pipeline.renumber import renumbered
from mp2amp.pipeline.staged_depth import (
    DEEP_TEXT_BYTES,
    fills_orjson_depth,
    too_deep_row,
    unreadable_row,
)
from mp2amp.pipeline.staged_keys import _ALL, _SIGN, UtcKey, _crc32, content_hash
from mp2amp.pipeline.staged_keys import UNKNOWN_TIME as UNKNOWN_TIME
from mp2amp.pipeline.staged_keys import WHOLE_SECOND_AT as WHOLE_SECOND_AT
from mp2amp.pipeline.staged_keys import LocalZone as LocalZone
from mp2amp.pipeline.staged_keys import _seconds as _seconds
from mp2amp.pipeline.staged_keys import copy_key as copy_key
from mp2amp.pipeline.staged_keys import ingested_ms as ingested_ms
from mp2amp.pipeline.staged_keys import sort_key as sort_key
from mp2amp.pipeline.staged_keys import utc_key as utc_key
from mp2amp.pipeline.staged_ranges import read_staged_range as read_staged_range
from mp2amp.pipeline.staged_ranges import staged_ranges as staged_ranges
from mp2amp.transform.values import json_safe

CHUNK_RECORDS = 20_000  # a sorted run; small, as two staging workers run beside the identity pass
CHUNK_BYTES = 8 * 1024 * 1024  # a sorted run is also cut at this size: records vary a lot
# A staged line this long waits in a side file, its place held by a short stub (``_Stash``):
# the merge holds a line of each run, and a run per 10 MB line held the whole window.
BIG_LINE = 1 << 16
# Sorted runs merged at once (an open file each); more are first merged in rounds, 64 at a
# time, into longer runs: a window over ~8 GB (a month exported into one file) made a run
# per 8 MB and opened them all, past the usual limit of 1024 open files.
MERGE_RUNS = 64
def _encode(rec: SourceRecord, order: int, to_utc: UtcKey | None = None,
            by_content: bool = False) -> bytes:
    """The staged line with a sort prefix: bytes that sort as (time, arrival order) do
    (``by_content``: (time, content hash)), then the record's copy key, ingestion time
    (see ``settle_copies``) and content hash."""
    rej = rec.rejection
    record = rec.record
    if by_content:
        order = content = content_hash(rec)
    elif rej is None and rec.raw is not None:
        # only for the digest: a file read again gives the same lines, and serializing
        # the record again would cost more (~0.4 us) than the checksum (~0.2 us)
        content = _crc32(rec.raw)
    else:
        content = content_hash(rec)
    key, whole = _seconds(record)
    if to_utc is not None and key != UNKNOWN_TIME and record is not None \
            and UTC_TIME_MARK not in record:  # a Data Pipelines row: UTC already
        key = to_utc(key, record["properties"])  # the second itself, then its place in it
    if whole:
        key += WHOLE_SECOND_AT
    prefix = _prefix(key, order, copy_key(record), ingested_ms(record), content)
    if rec.raw is not None and rej is None:
        if len(rec.raw) >= DEEP_TEXT_BYTES and fills_orjson_depth(rec.raw):
            # a row one level deeper than orjson reads: staged as the rejection it gets
            return b"%snull\t%s\n" % (prefix, too_deep_row(key, rec.source, rec.line,
                                                              rec.raw.decode("utf-8")))
        # The line the record was parsed from is its JSON already: orjson parses it into
        # the same record again, so it is not serialized a second time (~0.9 us a line).
        view = orjson.dumps(identity_view(record), default=str)
        return b"%s%s\t[%s,%s,%d,%s,null]\n" % (prefix, view, orjson.dumps(key),
                                                orjson.dumps(rec.source), rec.line, rec.raw)
    # the rejection's own record too: a line that did not parse keeps its text for the
    # dead letter (older staged files have three fields)
    extra = None if rej is None or rej.record is record else rej.record
    row = [
        key,
        rec.source,
        rec.line,
        record,
        None if rej is None else [rej.reason, rej.message, rej.field]
        + ([] if extra is None else [extra]),
    ]
    if (record is None or json_safe(record)) and (extra is None or json_safe(extra)):
        view = orjson.dumps(identity_view(record), default=str)
        # The concatenation also makes a right-sized copy: orjson (3.13) returns bytes
        # objects that keep a ~16 KB buffer, so holding a chunk of raw dumps() results
        # took 15x the memory.
        return b"%s%s\t%s\n" % (prefix, view, orjson.dumps(row, default=str))
    # What only the standard library's parser gives (NaN, Infinity, integers past 64 bits,
    # lone surrogates) or nesting past orjson's depth: orjson would write NaN as null (a
    # changed value) or refuse the rest. The standard library writes it as parsed, and
    # ``load_staged`` reads it back, so the transform sees (and names) what a file gave.
    try:
        view, body = _stdlib_json(identity_view(record)), _stdlib_json(row)
    except RecursionError:
        view, body = b"null", too_deep_row(key, rec.source, rec.line)
    return b"%s%s\t%s\n" % (prefix, view, body)


def _stdlib_json(value: Any) -> bytes:
    # ensure_ascii: a lone surrogate becomes an escape (and no raw tab or newline is written)
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()


def load_staged(data: bytes) -> Any:
    """A staged row or view: orjson's, or the standard library's for the few records
    ``_encode`` wrote with it (NaN and the like). A row too deep for both (an earlier
    mp2amp staged a record of orjson's full depth as is) is a ``too_deep`` rejection."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except RecursionError:
        return unreadable_row(data)


_PACK_DOUBLE = struct.Struct(">d").pack
_PREFIX = 81  # 16 hex digits each: time, order, copy key, ingestion time, content hash; a tab
_TIME = 16  # the time's digits
_CONTENT = slice(64, 80)  # the content hash's digits


def _prefix(key: float, order: int, copy: int = 0, ingested: int = 0, content: int = 0) -> bytes:
    """Fixed-width hex whose byte order is the order of (key, order): the sorts and the
    merge compare bytes in C, and the runs are read back without parsing anything. The
    copy key, ingestion time and content hash after it ride along (an order by content
    ties only for lines that say the same)."""
    bits = int.from_bytes(_PACK_DOUBLE(key + 0.0), "big")  # + 0.0: -0.0 sorts as 0.0
    bits = bits ^ _ALL if bits & _SIGN else bits | _SIGN  # IEEE 754 order as unsigned order
    return b"%016x%016x%016x%016x%016x\t" % (bits, order, copy, ingested, content)


def settle_copies(items: Iterable[bytes]) -> Iterator[bytes]:
    """Prefixed staged lines in sort order (their prefix kept). Of copies of one event
    (one time, one copy key) Mixpanel's reports show the latest ingested, and the copy
    sent is the first: the latest ingested takes the first copy's place, the others follow
    in their places. Other lines keep their place (arrival, or content, order)."""
    group: list[bytes] = []
    time = b""
    for item in items:
        if item[:_TIME] == time:
            group.append(item)
            continue
        if len(group) == 1:
            yield group[0]
        elif group:
            yield from _settled([(g[32:48], int(g[48:64], 16), g) for g in group])
        group = [item]
        time = item[:_TIME]
    if len(group) == 1:
        yield group[0]
    elif group:
        yield from _settled([(g[32:48], int(g[48:64], 16), g) for g in group])


def _write_settled(out: BinaryIO, items: Iterable[bytes], source: bytes | None = None,
                   stash: _Stash | None = None) -> str:
    """Write the prefixed lines settled (``settle_copies``); returns the digest of their
    content hashes in that order: the same records in that order, wherever from.
    ``source`` (the window's, as JSON and a comma): each line is numbered by its place
    (``renumber``). ``stash``: where the stubs' lines are."""
    digest = hashlib.blake2b(digest_size=16)
    hashes: list[bytes] = []
    write, keep = out.write, hashes.append
    settled = settle_copies(items) if stash is None else stash.unstashed(settle_copies(items))
    for n, item in enumerate(settled, start=1):
        write(item[_PREFIX:] if source is None else renumbered(item[_PREFIX:], n, source))
        keep(item[_CONTENT])
        if len(hashes) >= 4096:  # one update per few thousand lines: it costs per call
            digest.update(b"".join(hashes))
            hashes.clear()
    digest.update(b"".join(hashes))
    return digest.hexdigest()


_Line = TypeVar("_Line")  # a line, or where a merge left a big one (staged_merge)
_NO_COPY_KEYS = (b"0" * 16, 0)  # as a staged prefix holds it, as ``copy_key`` gives it


def _settled(group: list[tuple[Any, int, _Line]]) -> list[_Line]:
    """One time's lines as (copy key, ingestion time, line), copies reordered in place."""
    places: dict[Any, list[int]] = {}
    for at, (key, _, _) in enumerate(group):
        if key not in _NO_COPY_KEYS:
            places.setdefault(key, []).append(at)
    lines = [line for _, _, line in group]
    for spots in places.values():
        if len(spots) > 1:
            latest_first = sorted(spots, key=lambda at: (-group[at][1], at))
            for spot, at in zip(spots, latest_first, strict=True):
                lines[spot] = group[at][2]
    return lines


def _head_end(item: bytes) -> int:
    """Where a prefixed staged line's head ends: its view, then ``\t[`` time, source (a
    JSON string), line and the comma after it; -1 when it is not so written."""
    try:
        at = item.index(b"\t[", _PREFIX) + 2
        at = item.index(b'"', item.index(b",", at))  # the time (a number), the source
        while True:  # the source's closing quote: the first one not escaped
            at = item.index(b'"', at + 1)
            slashes = at - 1
            while item[slashes] == 0x5C:
                slashes -= 1
            if (at - 1 - slashes) % 2 == 0:
                break
        return item.index(b",", item.index(b",", at) + 1) + 1  # then the line
    except ValueError:
        return -1


class _Stash:
    """Big staged lines (``BIG_LINE``) in a side file of the sort runs' folder, each one's
    place in the sort held by a stub: its prefix and its line's head (view, time, source,
    line: unique in a window, so a stub sorts against any line exactly as its line did,
    also against the same record written with other spacing and not stashed), then a NUL
    (never in a staged line: JSON escapes it) and where the line is."""

    NAME = "run-99999"  # named as a run: a killed run's leftovers are known by their names

    def __init__(self, folder: Path) -> None:
        self._file = open(folder / self.NAME, "w+b")  # noqa: SIM115 (closed by ``close``)
        self._end = 0

    def stub(self, item: bytes) -> bytes:
        """``item``'s stub, or ``item`` itself when its head cannot be found."""
        head = _head_end(item)
        if head < 0:
            return item
        body = memoryview(item)[_PREFIX:]
        self._file.write(body)
        at, self._end = self._end, self._end + len(body)
        return b"%s\0%d,%d\n" % (item[:head], at, len(body))

    def unstashed(self, items: Iterable[bytes]) -> Iterator[bytes]:
        """``items`` with each stub's line back in its place (one at a time)."""
        f = self._file
        f.flush()
        for item in items:
            nul = item.find(b"\0", _PREFIX)
            if nul < 0:
                yield item
                continue
            at, size = item[nul + 1:-1].split(b",")
            f.seek(int(at))
            yield item[:_PREFIX] + f.read(int(size))

    def close(self) -> None:
        self._file.close()


class StagingStopped(Exception):
    """``stage`` was told to stop (the run is stopping): nothing of the window was kept."""


DIGEST = "digest"  # the window spec's key of its records' digest as staged (``Staged``)
TIES = "ties"  # an Export API day's spec: "content" once staged with ties by content
LINES = "lines"  # an Export API day's spec: "staged" once its lines are staged places


class Staged(int):
    """A staged window's record count, with the digest of its records in staged order
    (``digest``): a window staged again must give the same one, or batches cut from the
    first copy would now hold other events."""

    digest: str

    def __new__(cls, count: int, digest: str) -> Staged:
        staged = super().__new__(cls, count)
        staged.digest = digest
        return staged

    def __reduce__(self) -> tuple[Any, ...]:  # from a staging process
        return Staged, (int(self), self.digest)


def stage(records: Iterable[SourceRecord], dest: Path, chunk: int = CHUNK_RECORDS,
          chunk_bytes: int = CHUNK_BYTES, local: LocalZone | None = None,
          stop: threading.Event | None = None, by_content: bool = False,
          keep_lines: bool = False) -> Staged:
    """Write ``records`` sorted by (time, arrival order) to ``dest`` (of copies of one
    event the latest ingested first: ``settle_copies``); returns the count, with the
    digest of the records in that order.
    ``local``: a legacy project's zones, so that local times sort by their UTC time.
    ``stop``: set by a run that is stopping (staging runs in a thread, which cancelling
    the run does not end): staging then ends soon, raising ``StagingStopped``, and never
    renames a window into place once the run has let go of its work folder.
    ``by_content``: ties are ordered by what the records say instead (``content_hash``),
    for a source that promises no order (the Export API: a day fetched again may come in
    another order, and must stage as before), and each record's line becomes its place in
    that order (``renumber``: what keys its dead letters), unless ``keep_lines`` (a day an
    earlier mp2amp staged with its arrival lines). A file read again gives its lines in
    the same order, and that order is the best guess for same-time events of a device.

    So staging is deterministic. The file is written to a temporary name and renamed, so
    a crash never leaves a half-staged window behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    runs: list[Path] = []
    buf: list[bytes] = []
    size = 0
    count = 0
    tmpdir = Path(tempfile.mkdtemp(prefix=".stage-", dir=dest.parent))
    to_utc = utc_key(local)
    stash: _Stash | None = None
    try:
        for count, rec in enumerate(records, start=1):
            item = _encode(rec, count, to_utc, by_content)
            if len(item) >= BIG_LINE:
                stash = stash or _Stash(tmpdir)
                item = stash.stub(item)
            buf.append(item)
            size += len(item)
            if not count & 4095 and stop is not None and stop.is_set():
                raise StagingStopped(str(dest))
            if len(buf) >= chunk or size >= chunk_bytes:
                runs.append(_write_run(buf, tmpdir, len(runs)))
                buf = []
                size = 0
        # the window's source (all of its records'), for renumbering
        source = orjson.dumps(rec.source) + b"," if by_content and count else None
        source = None if keep_lines else source
        if runs:
            if buf:
                runs.append(_write_run(buf, tmpdir, len(runs)))
                buf = []
            runs = _fewer_runs(runs, tmpdir, stop, dest)
        part = dest.with_name(dest.name + ".part")
        with open(part, "wb") as out:
            if not runs:
                buf.sort()
                digest = _write_settled(out, buf, source, stash)
            else:
                with ExitStack() as stack:
                    files = [stack.enter_context(open(p, "rb")) for p in runs]
                    digest = _write_settled(out, heapq.merge(*files), source, stash)
            out.flush()
            os.fsync(out.fileno())
        if stop is not None and stop.is_set():
            part.unlink(missing_ok=True)
            raise StagingStopped(str(dest))
        part.replace(dest)
    finally:
        if stash is not None:
            stash.close()
        # all of it, a run cut short by a full disk included, and never an error of its
        # own that would hide the one that got here
        shutil.rmtree(tmpdir, ignore_errors=True)
    return Staged(count, digest)


def staged_key(line: bytes) -> float:
    """The sort key (event time in seconds) of a staged line: the row's first field."""
    start = line.find(b"\t") + 2  # past the view and "\t[" (or just "[" without a view)
    return float(line[start:line.index(b",", start)])


def damage_of(path: Path) -> str | None:
    """What a ``truncated_file`` rejection staged in ``path`` says (its source was cut
    short), or None. Such rows have no event time, so they sort first: only the head of
    the file is read."""
    with open(path, "rb") as f:
        for line in f:
            if staged_key(line) > UNKNOWN_TIME:
                return None
            rej = decode_staged(line).rejection
            if rej is not None and rej.reason == "truncated_file":
                return rej.message
    return None


def staged_key_range(path: Path) -> tuple[float, float] | None:
    """The first and the last known event time of a staged window (lines of unknown time
    sort first and are skipped), or None when it holds none."""
    with open(path, "rb") as f:
        first = None
        for line in f:
            key = staged_key(line)
            if key > UNKNOWN_TIME:
                first = key
                break
        if first is None:
            return None
        # the last line: read backwards from the end until a whole line is in hand
        end = f.seek(0, os.SEEK_END)
        size = 1 << 16
        while True:
            start = max(0, end - size)
            f.seek(start)
            block = f.read(end - start)
            cut = block.rfind(b"\n", 0, len(block) - 1)
            if cut >= 0 or start == 0:
                return first, staged_key(block[cut + 1:])
            size *= 4


def _run_path(tmpdir: Path, n: int) -> Path:
    """The ``n``-th sorted run's file: ``run-00000`` on, never the stash's name (a window
    of ~100,000 runs, ~800 GB, got to it), six digits and more past it."""
    stash = int(_Stash.NAME.partition("-")[2])
    return tmpdir / f"run-{n if n < stash else n + 1:05d}"


def _write_run(buf: list[bytes], tmpdir: Path, n: int) -> Path:
    buf.sort()
    path = _run_path(tmpdir, n)
    with open(path, "wb") as f:
        f.writelines(buf)
    return path


def _fewer_runs(runs: list[Path], tmpdir: Path, stop: threading.Event | None,
                dest: Path) -> list[Path]:
    """``runs`` merged in rounds into at most ``MERGE_RUNS`` runs (each round's inputs
    removed as it is written). The runs are sorted by their whole lines, so the final
    merge gives the same bytes however many rounds came first."""
    made = len(runs)  # the next run's number
    while len(runs) > MERGE_RUNS:
        merged: list[Path] = []
        for at in range(0, len(runs), MERGE_RUNS):
            group = runs[at:at + MERGE_RUNS]
            if len(group) == 1:
                merged.append(group[0])
                continue
            if stop is not None and stop.is_set():
                raise StagingStopped(str(dest))
            path = _run_path(tmpdir, made)
            made += 1
            with ExitStack() as stack, open(path, "wb") as out:
                files = [stack.enter_context(open(p, "rb")) for p in group]
                out.writelines(heapq.merge(*files))
            for p in group:
                p.unlink()
            merged.append(path)
        runs = merged
    return runs


def read_staged(path: Path) -> Iterator[SourceRecord]:
    """The staged window back as SourceRecords, in time order."""
    with open(path, "rb") as f:
        for raw in f:
            yield decode_staged(raw)


def read_staged_identity(path: Path) -> Iterator[dict[str, Any] | None]:
    """The identity view of each line of the staged window (``None`` where the identity
    pass has nothing to read), in time order: what that pass reads, without parsing the
    records (see the module docstring)."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    with open(path, "rb") as f:
        for raw in f:
            tab = raw.find(b"\t")
            text = raw[:tab] if tab >= 0 else raw
            try:
                value = loads(text)
            except decode_error:  # written by the standard library (see _encode)
                value = load_staged(text)
            yield value if tab >= 0 else identity_view(value[3])


def decode_staged(raw: bytes) -> SourceRecord:
    """One staged line (a whole line: its first tab ends the identity view) back as a
    SourceRecord."""
    _, source, line, record, rej = load_staged(raw[raw.find(b"\t") + 1:])
    return staged_record(source, line, record, rej)


def staged_record(source: str, line: int, record: Any, rej: list[Any] | None) -> SourceRecord:
    """The SourceRecord of a staged line's decoded fields."""
    rejection = None if rej is None else Rejection(
        rej[0], rej[1], rej[2], source, line, rej[3] if len(rej) > 3 else None)
    return SourceRecord(source, line, record, rejection)
