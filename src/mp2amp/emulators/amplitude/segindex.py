"""A compact, incrementally refreshed index of (event_type -> event times, amplitude_ids) for
segmentation, so repeated queries (one per event type in a reconciliation) do not re-parse
every stored event. Built per hourly file; a file that grew is read from where it was left,
a file that was rewritten (deletions: new inode or smaller) is read again."""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from mp2amp.emulators.amplitude.store import EventStore, whole_lines

MAX_STRING = 1024  # Amplitude keeps 1024 characters of a string (export.py cuts the same)


@dataclass
class _FileIndex:
    inode: int
    size: int = 0
    by_type: dict[str, tuple[array[int], array[int]]] = field(default_factory=dict)


class EventIndex:
    """Thread-safe: queries run in worker threads while the loop appends to the files."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._files: dict[str, _FileIndex] = {}
        self._lock = threading.Lock()

    def _refresh_file(self, path: os.PathLike[str], name: str) -> None:
        stat = os.stat(path)
        entry = self._files.get(name)
        if entry is None or entry.inode != stat.st_ino or stat.st_size < entry.size:
            entry = self._files[name] = _FileIndex(stat.st_ino)
        if stat.st_size == entry.size:
            return
        # only whole lines, read a buffer at a time (an hour's file can be hundreds of MB);
        # the rest is read next time
        for raw in whole_lines(path, entry.size, stat.st_size):
            entry.size += len(raw)
            if not raw.strip():
                continue
            try:
                request = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # a line torn by a kill: never answered 200 (the next start cuts it)
            upload_ms = request["t"]
            for event, aid in zip(request["body"]["events"], request["a"], strict=True):
                if aid is None:
                    continue
                event_type = event["event_type"][:MAX_STRING]  # as the export cuts it
                columns = entry.by_type.get(event_type)
                if columns is None:
                    columns = entry.by_type[event_type] = (array("q"), array("q"))
                sent = event.get("time")
                columns[0].append(sent if sent is not None else upload_ms)
                columns[1].append(aid)

    def refresh(self) -> None:
        with self._lock:
            paths = self.store.hour_files()
            names = {p.name for p in paths}
            for gone in set(self._files) - names:
                del self._files[gone]
            for path in paths:
                self._refresh_file(path, path.name)

    def rows(self, wanted: set[str] | None, excluded: frozenset[str]) -> Iterator[tuple[int, int]]:
        """(time_ms, amplitude_id as assigned) of the events of these types (None: any type
        not in ``excluded``). Call ``refresh`` first."""
        with self._lock:
            columns = [
                cols for entry in self._files.values() for event_type, cols in entry.by_type.items()
                if (event_type in wanted if wanted is not None else event_type not in excluded)
            ]
        for times, aids in columns:
            yield from zip(times, aids, strict=True)
