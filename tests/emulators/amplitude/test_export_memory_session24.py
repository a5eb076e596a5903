"""An hour of stored events is exported and read back a few rows at a time (session 24).

Found measuring ``make demo``: 2.9 GB of peak memory for 200k events. Every upload of a
migration lands in one or two hours of server upload time, and three steps held such an
hour whole: the emulator's export (up to 250,000 rows of a file in a list, then joined,
each row orjson's bytes with the ~16 KB capacity orjson grew it to),
its reading of an hour's file (read, cut at the last newline and split: three copies),
and the demo's read-back (a file unpacked whole, then split). The demo now peaks at
~0.35 GB. The User Privacy API's rewrite of an hour (a review: 413 MB to delete a
third of the demo's people) now goes line by line too. Measured here with tracemalloc (Python's allocations, deterministic), against
the size of what is exported.
"""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path

import orjson

from mp2amp.emulators.amplitude.export import write_export
from mp2amp.emulators.amplitude.store import EventStore, whole_lines
from mp2amp.pipeline.readback import count_export

HOUR = "20240301T10"
UPLOAD_MS = 1_709_287_200_000  # 2024-03-01 10:00 UTC
EVENTS = 12_000
PER_REQUEST = 100


def _stored_hour(root: Path) -> tuple[EventStore, int]:
    """One hour file of 120 requests of 100 events (~6 MB of lines), as ingest writes it:
    small requests, so that what is measured is the hour, not one parsed request."""
    events_dir = root / "events"
    events_dir.mkdir(parents=True)
    size = 0
    with (events_dir / f"{HOUR}.jsonl").open("wb") as f:
        for r in range(EVENTS // PER_REQUEST):
            events = [{"event_type": f"Type {i % 7}", "user_id": f"user-{i % 300:05d}",
                       "device_id": f"device-{i % 500:05d}", "time": UPLOAD_MS - i * 1000,
                       "insert_id": f"ins-{r}-{i}",
                       "event_properties": {"page": f"/p/{i}", "text": "x" * 300}}
                      for i in range(PER_REQUEST)]
            line = orjson.dumps({"t": UPLOAD_MS + r, "p": f"uuid-{r}-", "r": None,
                                 "a": [1000 + i % 300 for i in range(PER_REQUEST)],
                                 "u": [None] * PER_REQUEST, "g": {},
                                 "body": {"api_key": "k", "events": events}}) + b"\n"
            f.write(line)
            size += len(line)
    return EventStore(root), size


def _peak(run: object) -> int:
    tracemalloc.start()
    try:
        run()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_hour_is_exported_without_holding_it(tmp_path: Path) -> None:
    store, file_bytes = _stored_hour(tmp_path / "amp")
    out = io.BytesIO()
    peak = _peak(lambda: write_export(store, HOUR, HOUR, 1, lambda aid: aid, out))
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        names = archive.namelist()
        rows = sum(1 for name in names for _ in io.BytesIO(gzip.decompress(archive.read(name))))
    assert rows == EVENTS and names == ["1/1_2024-03-01_10#1.json.gz"]
    # one request expanded and ~1 MB of rows at a time: under the hour's ~6 MB of lines
    # (before: every row held as orjson's bytes, ~16 KB each whatever its length: ~190 MB)
    assert peak < file_bytes, (peak, file_bytes)


def test_the_export_is_read_back_row_by_row(tmp_path: Path) -> None:
    store, file_bytes = _stored_hour(tmp_path / "amp")
    out = io.BytesIO()
    write_export(store, HOUR, HOUR, 1, lambda aid: aid, out)
    body = out.getvalue()
    by_type: Counter[str] = Counter()
    by_day: Counter[tuple[str, str]] = Counter()
    seen: list[int] = []
    peak = _peak(lambda: seen.append(count_export(body, by_type, by_day)))
    assert seen == [EVENTS] and sum(by_type.values()) == EVENTS
    assert by_type["Type 0"] == EVENTS // PER_REQUEST * len(range(0, PER_REQUEST, 7))
    assert peak < file_bytes / 4, (peak, file_bytes)  # unpacked whole: > the rows' bytes


def test_an_hour_file_is_read_a_line_at_a_time(tmp_path: Path) -> None:
    store, file_bytes = _stored_hour(tmp_path / "amp")
    path = tmp_path / "amp" / "events" / f"{HOUR}.jsonl"
    with path.open("ab") as f:
        f.write(b'{"t": 1, "torn')  # a line still being written: not read
    lengths: list[int] = []
    peak = _peak(lambda: lengths.extend(len(line) for line in whole_lines(path)))
    assert len(lengths) == EVENTS // PER_REQUEST and sum(lengths) == file_bytes
    assert peak < file_bytes / 10, (peak, file_bytes)  # a line (~50 KB) at a time
    assert sum(1 for _ in store.iter_file(path)) == EVENTS
    # from an offset to a stop, as the segmentation index reads what an hour gained
    first = lengths[0]
    assert [len(x) for x in whole_lines(path, first, first + lengths[1])] == [lengths[1]]


def test_a_deletion_rewrites_an_hour_a_line_at_a_time(tmp_path: Path) -> None:
    """Review: the User Privacy API's rewrite read the hour whole and held its rewritten
    lines (orjson's bytes): deleting a third of the demo's people peaked at 413 MB."""
    store, file_bytes = _stored_hour(tmp_path / "amp")
    path = tmp_path / "amp" / "events" / f"{HOUR}.jsonl"
    dropped = {1000 + k for k in range(0, 300, 3)}  # every third person of the hour
    removed: list[int] = []
    peak = _peak(lambda: removed.append(store._rewrite_file(path, dropped, lambda a: a)))
    kept = list(store.iter_file(path))
    assert removed == [EVENTS - len(kept)] and removed[0] > 0
    assert not any(e["_a"] in dropped for e in kept)
    assert {e["_id"] for e in kept} == {f"uuid-{r}-{i:012x}" for r in range(EVENTS // PER_REQUEST)
                                        for i in range(PER_REQUEST) if 1000 + i % 300 not in dropped}
    # a request and ~1 MB pieces at a time (before: the hour read and split, and its
    # rewritten lines held: over twice the file)
    assert peak < file_bytes, (peak, file_bytes)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no spool left
