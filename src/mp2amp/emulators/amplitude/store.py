"""Everything the emulator keeps, under ``--data DIR``, so that it survives a restart.

Layout::

    events/YYYYMMDDTHH.jsonl   accepted events, one orjson line each, by UTC hour of
                               server_upload_time (what the Export API selects on)
    dedup/YYYYMMDDTHH.jsonl    one line per request: [upload_ms, [dedup_key, ...]]
    state.json                 amplitude IDs, user/group properties, daily quota counts
    ids.log                    ID assignments and deletions since state.json was written
                               (replayed on start)
    deletions.json             User Privacy API jobs

Each events line is one accepted request: its body exactly as received (no re-encoding,
which is most of the cost of storing) inside one JSON object with what the server added::

    {"t": server_upload_time_ms, "p": uuid_prefix, "r": client_address,
     "a": [amplitude_id as assigned (0: a group update naming no person), or null for
           a duplicate, per body event],
     "u": [user properties as of ingestion, or null, per body event],
     "g": {"<index>": group properties as of ingestion}, "i": [original indices] (only after
     a deletion rewrote the line), "body": {"api_key": ..., "events": [...]}}

A request is journaled before its events are appended: its ids.log line (the IDs and
properties it set, then ``["w", hour, [events_start, events_end, dedup_start, dedup_end]]``)
says where its lines go. On start, when a kill left that last request's events or dedup line
missing, all three are cut back: the request is wholly there or wholly absent, never stored
events naming amplitude IDs the restarted emulator does not know. An empty line then closes
the journal, so a request is checked on one start only (a start that cannot write it, on a
full disk, logs that and goes on: the request is checked again next time). A deletion
journals ``["f", [amplitude_id, ...], null]`` (after the ID entries still pending) before
it rewrites the events files; its running count follows as a ``["c", stored, duplicates]``
entry. An ``f`` with no ``c`` after it is a deletion stopped part-way by a kill: the start
counts the stored events from the files (``count_events``).

``iter_file`` hands back the stored events with ``_a``, ``_t``, ``_id`` (uuid = prefix +
index), ``_u`` and ``_g`` filled in. Only the dedup keys of the last 7 days are loaded back
into memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from mp2amp.emulators.amplitude.config import DEDUP_WINDOW_S
from mp2amp.errors import InputError

HOUR_FORMAT = "%Y%m%dT%H"

log = logging.getLogger("mp2amp.emulators.amplitude")


def hour_name(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime(HOUR_FORMAT)


def hour_start(name: str) -> datetime:
    return datetime.strptime(name, HOUR_FORMAT).replace(tzinfo=UTC)


def whole_lines(path: Path | os.PathLike[str], start: int = 0,
                stop: int | None = None) -> Iterator[bytes]:
    """The lines of ``path`` from byte ``start`` (to ``stop``) that end in a newline, with
    it (a line still being written has none yet), a buffer at a time: an hour's file holds
    every request of that hour, hundreds of MB in a big migration, which reading it whole
    (and cutting and splitting it) held three times over."""
    with open(path, "rb") as fh:
        fh.seek(start)
        at = start
        for raw in fh:
            at += len(raw)
            if not raw.endswith(b"\n") or (stop is not None and at > stop):
                return
            yield raw


def write_atomic(path: Path, data: bytes | Iterable[bytes]) -> None:
    """``data`` (bytes, or pieces of it) in place of ``path``, whole or not at all."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        if isinstance(data, bytes):
            fh.write(data)
        else:
            fh.writelines(data)
    os.replace(tmp, path)


def _pieces(fh: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    fh.seek(0)
    while piece := fh.read(size):
        yield piece


def cut_torn_tail(path: Path, chunk: int = 65536) -> None:
    """Truncate ``path`` after its last newline (a torn line can be MBs: read backwards)."""
    with open(path, "r+b") as fh:
        size = end = fh.seek(0, os.SEEK_END)
        keep = 0
        while end > 0:
            start = max(0, end - chunk)
            fh.seek(start)
            newline = fh.read(end - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        if keep < size:
            fh.truncate(keep)


def read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON ({exc}); the emulator's state is damaged, "
            "restore it or start with an empty --data directory"
        ) from None


class EventStore:
    """Append-only hourly event files plus the in-memory dedup index."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.events_dir = data_dir / "events"
        self.dedup_dir = data_dir / "dedup"
        self.events_dir.mkdir(parents=True, exist_ok=True)
        self.dedup_dir.mkdir(parents=True, exist_ok=True)
        self.seen: dict[str, int] = {}
        self._open_hour: str | None = None
        self._events_fh: Any = None
        self._dedup_fh: Any = None
        self._pruned_at = 0.0
        self._ids_fh: Any = None
        # the open hour files' sizes: where a failed write is cut back to
        self._events_size = 0
        self._dedup_size = 0
        self._ids_size = 0  # ids.log's, where a failed journal write is cut back to
        self._forgetting: set[int] | None = None  # whom ids.log's last deletion line names

    def repair(self) -> None:
        """Cut the line a killed process left unfinished at the end of each file, so the
        next request starts a line of its own, then take back a request the kill left
        half-written (only the owner of the directory may: a live emulator may be writing
        those lines)."""
        for path in (*self.events_dir.glob("*.jsonl"), *self.dedup_dir.glob("*.jsonl"),
                     self.root / "ids.log"):
            if path.exists():
                cut_torn_tail(path)
        self._take_back_unfinished()

    def _take_back_unfinished(self) -> None:
        """Only the last request can be unfinished (one writer, one request at a time): when
        its journal line names an events or dedup line that did not land, cut all three.
        Either way an empty line then closes the journal, so that the next start does not
        check that request again (its hour's dedup file may be gone by then, deleted as
        older than 7 days, which is not a kill's lost line)."""
        journal = self.root / "ids.log"
        if not journal.exists():
            return
        data = journal.read_bytes()
        start = data.rfind(b"\n", 0, max(len(data) - 1, 0)) + 1
        try:
            entries = orjson.loads(data[start:])
        except orjson.JSONDecodeError:
            return  # unreadable: read_ids skips it as well
        intent = entries[-1] if isinstance(entries, list) and entries else None
        if not (isinstance(intent, list) and len(intent) == 3 and intent[0] == "w"):
            return  # an /identify line, or one written before requests were journaled first
        hour, (events_start, events_end, dedup_start, dedup_end) = intent[1], intent[2]
        events, dedup = self.events_dir / f"{hour}.jsonl", self.dedup_dir / f"{hour}.jsonl"
        if self._unfinished(events, events_start, events_end, dedup, dedup_start, dedup_end):
            for path, size in ((events, events_start), (dedup, dedup_start), (journal, start)):
                if _size(path) > size:
                    os.truncate(path, size)
        self._close_journal()
        self.close()

    def _close_journal(self) -> None:
        """The empty line that marks the last request checked. Optional: without it (a full
        disk) the next start checks that request again, which finds it whole again."""
        try:
            self.append_ids([])
        except OSError as exc:
            log.warning("%s: could not write the line that marks the last request checked "
                        "(%s); the emulator starts all the same and checks it again at the "
                        "next start", self.root / "ids.log", exc)

    @staticmethod
    def _unfinished(events: Path, events_start: int, events_end: int,
                    dedup: Path, dedup_start: int, dedup_end: int) -> bool:
        """A kill's shape: the request opened both hour files before its journal line, so a
        lost line leaves an existing file ending where that line starts. A missing file
        was deleted since (any other shape is not a kill's either: left as it is)."""
        events_size, dedup_size = _size(events), _size(dedup)
        events_lost = events.exists() and events_size == events_start
        dedup_lost = (events_size == events_end and dedup.exists()
                      and dedup_size == dedup_start and dedup_end > dedup_start)
        return events_lost or dedup_lost

    # --- dedup -------------------------------------------------------------------

    def load_dedup(self, now_ms: int) -> None:
        """Rebuild the dedup index from the journal files of the last 7 days."""
        oldest = now_ms - DEDUP_WINDOW_S * 1000
        cutoff_hour = hour_name(oldest - 3600_000)
        seen = self.seen
        for path in sorted(self.dedup_dir.glob("*.jsonl")):
            if path.stem < cutoff_hour:
                path.unlink()
                continue
            for raw in path.read_bytes().splitlines():
                try:
                    upload_ms, keys = orjson.loads(raw)
                except (orjson.JSONDecodeError, ValueError):
                    continue  # a torn last line from a killed process: that request failed
                if upload_ms >= oldest:
                    for key in map(current_dedup_key, keys):
                        seen[key] = upload_ms

    def prune_dedup(self, now_ms: int) -> None:
        """Forget keys older than the window (at most once an hour: it is a full scan)."""
        if now_ms - self._pruned_at < 3600_000:
            return
        self._pruned_at = now_ms
        oldest = now_ms - DEDUP_WINDOW_S * 1000
        self.seen = {k: t for k, t in self.seen.items() if t >= oldest}

    # --- append --------------------------------------------------------------------

    def _handles(self, hour: str) -> tuple[Any, Any]:
        if hour != self._open_hour:
            self.close()
            self._events_fh = open(self.events_dir / f"{hour}.jsonl", "ab")  # noqa: SIM115
            self._dedup_fh = open(self.dedup_dir / f"{hour}.jsonl", "ab")  # noqa: SIM115
            self._events_size = self._events_fh.tell()  # append mode: the end of the file
            self._dedup_size = self._dedup_fh.tell()
            self._open_hour = hour
        return self._events_fh, self._dedup_fh

    def append(
        self, body: bytes, annotation: dict[str, Any], dedup_keys: list[str], upload_ms: int,
        journal: list[list[Any]],
    ) -> None:
        """Write one request's ``journal`` line in ids.log, then the request (``body`` must be
        one line of valid JSON), then its dedup keys.

        All or nothing: when a write fails (disk full...) the three files are cut back to
        where they ended and the error is raised, so the retried request is not a duplicate
        and the journal claims nothing that was not stored. The journal goes first and names
        where the other two lines go, so that ``repair`` can take back a request a kill
        interrupted (see the module docstring).
        """
        hour = hour_name(upload_ms)
        events_fh, dedup_fh = self._handles(hour)
        # in pieces: concatenating would copy the (MB-sized) body twice
        events_line = (orjson.dumps(annotation)[:-1], b',"body":', body, b"}\n")
        dedup_line = orjson.dumps([upload_ms, dedup_keys]) + b"\n" if dedup_keys else b""
        events_end = self._events_size + sum(map(len, events_line))
        dedup_end = self._dedup_size + len(dedup_line)
        intent = ["w", hour, [self._events_size, events_end, self._dedup_size, dedup_end]]
        self._ids_handle()
        journal_start = self._ids_size
        try:
            self.append_ids([*journal, intent])  # cuts ids.log back itself when it fails
            events_fh.writelines(events_line)
            events_fh.flush()
            if dedup_line:
                dedup_fh.write(dedup_line)
                dedup_fh.flush()
        except BaseException:
            self._cut_back(hour, journal_start)
            raise
        self._events_size = events_end
        self._dedup_size = dedup_end
        self._forgetting = None

    def _cut_back(self, hour: str, journal_size: int) -> None:
        """Drop what a failed append wrote; the next append reopens the files."""
        events_size, dedup_size = self._events_size, self._dedup_size
        for fh in (self._events_fh, self._dedup_fh):
            with suppress(OSError):  # the bytes still buffered may fail again: cut below
                fh.close()
        self._events_fh = self._dedup_fh = None
        self._open_hour = None
        os.truncate(self.events_dir / f"{hour}.jsonl", events_size)
        os.truncate(self.dedup_dir / f"{hour}.jsonl", dedup_size)
        os.truncate(self.root / "ids.log", journal_size)
        self._ids_size = journal_size

    def close(self) -> None:
        for fh in (self._events_fh, self._dedup_fh, self._ids_fh):
            if fh is not None:
                fh.close()
        self._events_fh = self._dedup_fh = self._ids_fh = None
        self._open_hour = None

    # --- amplitude ID journal ---------------------------------------------------------

    def _ids_handle(self) -> Any:
        if self._ids_fh is None:
            # unbuffered: one write per line either way, and no buffered bytes of a failed
            # write linger to land after the cut
            self._ids_fh = open(self.root / "ids.log", "ab", buffering=0)  # noqa: SIM115
            self._ids_size = self._ids_fh.tell()  # append mode: the end of the file
        return self._ids_fh

    def append_ids(self, entries: list[list[Any]]) -> None:
        """One journal line; a failed write is cut back (not left torn for the next line to
        be glued to, which would make both unreadable) and the error raised."""
        fh = self._ids_handle()
        data = orjson.dumps(entries) + b"\n"
        rest = memoryview(data)
        try:
            while rest:  # a raw write may land only part of the line (then the rest fails)
                rest = rest[fh.write(rest):]
        except BaseException:
            os.truncate(self.root / "ids.log", self._ids_size)
            raise
        self._ids_size += len(data)

    def read_ids(self) -> list[list[Any]]:
        path = self.root / "ids.log"
        entries: list[list[Any]] = []
        if path.exists():
            for raw in path.read_bytes().splitlines():
                try:
                    entries.extend(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    continue  # a torn last line: that request was never answered
        return entries

    def reset_ids(self) -> None:
        """After state.json holds every mapping: start an empty journal."""
        if self._ids_fh is not None:
            self._ids_fh.close()
            self._ids_fh = None
        (self.root / "ids.log").unlink(missing_ok=True)
        self._forgetting = None

    # --- read ----------------------------------------------------------------------

    def hour_files(self, first: str | None = None, last: str | None = None) -> list[Path]:
        paths = sorted(self.events_dir.glob("*.jsonl"))
        return [p for p in paths if (first is None or p.stem >= first)
                and (last is None or p.stem <= last)]

    def iter_file(self, path: Path) -> Iterator[dict[str, Any]]:
        for raw in whole_lines(path):
            if raw := raw.rstrip(b"\n"):
                try:
                    request = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # a line torn by a kill (cut at the next start): never answered 200
                yield from expand(request)

    def iter_events(self) -> Iterator[dict[str, Any]]:
        for path in self.hour_files():
            yield from self.iter_file(path)

    def journal_deletion(self, pending: list[list[Any]], drop_aids: set[int]) -> None:
        """Journal the forgetting of these people before ``rewrite_without`` runs.

        A restart replays it (state.json may never be saved after it), and a kill part-way
        leaves the job unfinished for the next advance to redo. ``pending`` (ID entries of a
        failed request, not yet journaled) goes first: replayed after the forgetting, they
        would map an erased person's device back. A line naming no request, too: the last
        request landed whole and its events line is about to move, so ``repair`` must not
        read the new sizes as a kill's.
        """
        self.close()
        self.append_ids([*pending, ["f", sorted(drop_aids), None]])
        self.close()
        self._forgetting = set(drop_aids)

    def insert_id_counts(self) -> list[list[Any]]:
        """``[who, insert_id, times stored]`` of every stored event, counted by its dedup
        key: ``who`` is the device_id, else the user_id, else (a group update naming nobody)
        its groups as sorted JSON, so that two groups' updates sharing an insert_id are two
        events, not one stored twice. A user-only event and one sent with its hashed device
        share a key, so both count under the ``who`` stored first."""
        counts: Counter[tuple[str, str]] = Counter()
        whos: dict[tuple[str, str], str] = {}
        for event in self.iter_events():
            insert_id = event.get("insert_id")
            if insert_id:
                device_id, user_id = event.get("device_id"), event.get("user_id")
                who = device_id or user_id or groups_json(event.get("groups"))
                key = (device_id or (hashed_device_id(user_id) if user_id else who), insert_id)
                whos.setdefault(key, who)
                counts[key] += 1
        return [[whos[key], key[1], n] for key, n in counts.items()]

    def rewrite_without(self, drop_aids: set[int], canonical: Callable[[int], int],
                        erased: Callable[[int], None] | None = None) -> int:
        """Remove every event of these people (by canonical amplitude_id); returns how many.
        ``erased`` is told each file's count once that file is rewritten, so that a failure
        part-way (disk full) still counts what is gone. Call ``journal_deletion`` first (with
        the ID entries pending); without it, the deletion is journaled here."""
        if self._forgetting != drop_aids:
            self.journal_deletion([], drop_aids)
        self.close()
        removed = 0
        for path in self.hour_files():
            count = self._rewrite_file(path, drop_aids, canonical)
            removed += count
            if count and erased is not None:
                erased(count)
        return removed

    def _rewrite_file(self, path: Path, drop_aids: set[int],
                      canonical: Callable[[int], int]) -> int:
        """``path`` without the events of ``drop_aids``, line by line into an unnamed spool
        file, then put in its place when something went (an hour's file is hundreds of MB in
        a big migration: held whole with its rewritten lines, a deletion of a third of the
        demo's people peaked at 413 MB)."""
        removed = kept = 0
        with open(path, "rb") as src, tempfile.TemporaryFile(dir=self.root) as spool:
            for line in src:
                raw = line.rstrip(b"\r\n")
                if not raw:
                    continue
                try:
                    request = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    spool.write(raw + b"\n")  # a torn line holds no event anyone reads
                    kept += 1
                    continue
                before = sum(aid is not None for aid in request["a"])
                survivors = [e for e in expand(request) if canonical(e["_a"]) not in drop_aids]
                if len(survivors) == before:
                    spool.write(raw + b"\n")
                    kept += 1
                    continue
                removed += before - len(survivors)
                if survivors:
                    spool.write(encode_survivors(request, survivors) + b"\n")
                    kept += 1
            if removed and kept:
                write_atomic(path, _pieces(spool))
        if removed and not kept:
            path.unlink()
        return removed

    def count_events(self) -> int:
        """The stored events, counted from the files (a full read: only after a deletion a
        kill stopped part-way, when the journaled count is no longer true)."""
        count = 0
        for path in self.hour_files():
            for raw in whole_lines(path):
                try:
                    aids = orjson.loads(raw)["a"] if raw.strip() else []
                except orjson.JSONDecodeError:
                    continue  # a torn line: never answered 200, never counted
                count += sum(aid is not None for aid in aids)
        return count


def hashed_device_id(user_id: str) -> str:
    """Amplitude fills a missing device_id with a hash of the user_id (reference 1.6)."""
    return hashlib.md5(user_id.encode(), usedforsecurity=False).hexdigest()


def current_dedup_key(key: str) -> str:
    """``key`` as ingestion writes it now. A user-only event's key was once NUL, user_id,
    US, insert_id rather than its hashed device's; a folder written then still holds such
    keys (read here as the new one: dedup files expire in 7 days, so no rewrite)."""
    if not key.startswith("\x00"):
        return key
    user_id, _, insert_id = key[1:].partition("\x1f")
    return f"{hashed_device_id(user_id)}\x1f{insert_id}"


def groups_json(groups: Any) -> str:
    """A ``groups`` value as sorted JSON: what identifies a group update without IDs (its
    dedup key and its ``/_emulator/insert_ids`` row). Validation keeps it under 40 levels,
    well within what orjson serialises."""
    return orjson.dumps(groups, option=orjson.OPT_SORT_KEYS).decode()


def deletion_uncounted(journal: list[list[Any]]) -> bool:
    """Whether the journal's last deletion (``f``) has no count (``c``) after it: the
    process stopped part-way through its rewrite, so the stored events must be recounted."""
    for entry in reversed(journal):
        if entry[0] == "c":
            return False
        if entry[0] == "f":
            return True
    return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def expand(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The stored events of one request line, with the server's fields filled in."""
    upload_ms, prefix, remote = request["t"], request["p"], request.get("r")
    snaps, groups, indices = request["u"], request.get("g") or {}, request.get("i")
    for k, (event, aid) in enumerate(zip(request["body"]["events"], request["a"], strict=True)):
        if aid is None:
            continue  # a duplicate: answered 200, never stored
        index = indices[k] if indices is not None else k
        event["_a"] = aid
        event["_i"] = index
        event["_t"] = upload_ms
        event["_id"] = f"{prefix}{index:012x}"
        if snaps[k] is not None:
            event["_u"] = snaps[k]
        group_snap = groups.get(str(k))
        if group_snap:
            event["_g"] = group_snap
        if remote is not None and event.get("ip") == "$remote":
            event["ip"] = remote
        yield event


_SERVER_FIELDS = ("_a", "_i", "_t", "_id", "_u", "_g")


def encode_survivors(request: dict[str, Any], survivors: list[dict[str, Any]]) -> bytes:
    """A request line holding only ``survivors`` (expanded events), uuids unchanged."""
    annotation = {
        "t": request["t"], "p": request["p"], "r": request.get("r"),
        "a": [e["_a"] for e in survivors], "u": [e.get("_u") for e in survivors],
        "g": {str(k): e["_g"] for k, e in enumerate(survivors) if e.get("_g")},
        "i": [e["_i"] for e in survivors],
        "body": {"events": [{k: v for k, v in e.items() if k not in _SERVER_FIELDS}
                            for e in survivors]},
    }
    return orjson.dumps(annotation)
