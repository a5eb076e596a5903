"""Windows whose events overlap in time are merged before the load.

Why: a window is staged (and later sent) in time order, and windows follow one another.
Input files that overlap in time (several part files of one Data Pipelines day, two
exports covering the same days) would each be sent in order, but a device's events could
then reach Amplitude out of order across them, and its sessions and duplicates would be
decided on the wrong order. Such windows are merged into the first of them (by
window order), in time order; the others keep an empty staged file, so every window is
still counted (its records in the first one's counts) and dead letters keep naming each
record's own file and line; the ledger keeps which window holds a merged-away one's records
(``Ledger.merged_into``), so Amplitude's dead letters and parked events of those records are
counted there too. Export API days and day files do not overlap: nothing happens.

Crash safety: the merged file is written under a temporary name and renamed, then the
ledger points the windows at the new files in one transaction, then the old staged files
are removed. A crash before the transaction leaves the old files in place, and the next
run merges them again; after it, the merged windows no longer overlap.

The same transaction records each new file's checksum (``changed_copy.record_copy``): the
identity pass checksummed the files merged, and a resume after a kill in the load read a
merged file under a name new to it, recorded it as it found it, and sent a line edited in
place since.
"""

from __future__ import annotations

from pathlib import Path

from mp2amp.ledger import Ledger, WindowRow
from mp2amp.pipeline.changed_copy import record_copy
from mp2amp.pipeline.staged_merge import merge_staged
from mp2amp.pipeline.staging import DIGEST, staged_key_range

MERGEABLE = frozenset({"extracted", "identity"})  # a loaded window is never re-cut


def overlapping_groups(windows: list[WindowRow],
                       started: frozenset[str] = frozenset()) -> list[list[WindowRow]]:
    """Groups of two or more windows whose known event times overlap (a window ending at
    the very time another starts too: copies of one event may be the two ends, and the
    merge decides which copy is sent), each in window order. Windows in
    ``started`` (with batches or transform rejects of an earlier run) are never merged."""
    spans: list[tuple[float, float, WindowRow]] = []
    for w in windows:
        if w.state not in MERGEABLE or not w.staged_path or not w.records \
                or w.window_id in started:
            continue
        span = staged_key_range(Path(w.staged_path))
        if span is not None:
            spans.append((span[0], span[1], w))
    spans.sort(key=lambda s: (s[0], s[2].seq))
    groups: list[list[WindowRow]] = []
    current: list[WindowRow] = []
    end = 0.0
    for start, stop, w in spans:
        if current and start <= end:
            current.append(w)
            end = max(end, stop)
            continue
        if len(current) > 1:
            groups.append(current)
        current, end = [w], stop
    if len(current) > 1:
        groups.append(current)
    return [sorted(g, key=lambda w: w.seq) for g in groups]


def merge_overlapping(ledger: Ledger, windows: list[WindowRow]) -> list[list[str]]:
    """Merge each group of overlapping windows (see the module docstring); returns the
    groups merged, as window ids (empty when none overlap)."""
    # A window with batches from an earlier run (one without this merge, resumed) keeps
    # its layout: the done batches are skipped by id on resume, a merge would move events.
    started = ledger.batch_windows()
    # So does one with transform rejects: a first attempt writes them straight in, before
    # its first batch, and merged away they would stay listed under a window holding none
    # of its records (its merged window's transform lists them again).
    started.update(w.window_id for w in windows if w.state in MERGEABLE
                   and w.window_id not in started and ledger.has_transform_rejects(w.window_id))
    groups = overlapping_groups(windows, frozenset(started))
    if not groups:
        return []
    merge_groups(ledger, groups)
    return [[w.window_id for w in g] for g in groups]


def merge_groups(ledger: Ledger, groups: list[list[WindowRow]]) -> None:
    """Merge each group (in window order) into its first window's new staged file; the
    others get an empty placeholder, all recorded in one transaction (with each new
    file's checksum), then the old staged files are removed."""
    updates: list[tuple[str, str, int]] = []
    copies: list[tuple[str, str, int, object, int]] = []  # ``record_copy``'s
    merged_into: dict[str, str] = {}
    replaced: list[Path] = []
    # a line's place among same-time lines is its own window's (see merge_staged)
    rank = {w.window_id: w.seq for w in ledger.windows()}
    earlier: dict[str, list[str]] = {}  # a head -> the windows merged into it before now
    for away, head_id in ledger.merged_into().items():
        earlier.setdefault(head_id, []).append(away)
    for group in groups:
        paths = [Path(str(w.staged_path)) for w in group]
        head = paths[0]
        merged = head.with_name(head.stem + ".merged.jsonl")
        crc: list[int] = []
        lines = merge_staged(paths, merged, rank, crc)
        updates.append((group[0].window_id, str(merged), lines))
        copies.append((group[0].window_id, merged.name, lines, group[0].spec.get(DIGEST),
                       crc[0]))
        for w, path in zip(group[1:], paths[1:], strict=True):
            empty = path.with_name(path.stem + ".merged-away.jsonl")
            empty.write_bytes(b"")
            updates.append((w.window_id, str(empty), 0))
            copies.append((w.window_id, empty.name, 0, w.spec.get(DIGEST), 0))  # CRC of b""
            merged_into[w.window_id] = group[0].window_id
            # windows merged into this one before now have their records in the head
            merged_into.update((m, group[0].window_id) for m in earlier.get(w.window_id, ()))
        replaced += paths
    with ledger.atomic():
        ledger.restage(updates, merged_into, [g[0].window_id for g in groups])
        for copy in copies:
            record_copy(ledger, *copy)
    kept = {Path(path) for _, path, _ in updates}
    for path in replaced:
        if path not in kept:
            path.unlink(missing_ok=True)


def load_order(windows: list[WindowRow]) -> list[WindowRow]:
    """The windows in the order their events happened (by their first known event time;
    windows without one first, then ties in window order): files listed or named out of
    time order are still loaded oldest first, so a device's events, its sessions and its
    duplicates are decided in time order. Export days and dated day files: unchanged."""
    def start(w: WindowRow) -> float:
        span = staged_key_range(Path(w.staged_path)) if w.staged_path and w.records else None
        return span[0] if span is not None else float("-inf")

    return sorted(windows, key=lambda w: (start(w), w.seq))
