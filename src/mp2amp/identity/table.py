"""A Data Pipelines identity mapping table: ``{"distinct_id", "resolved_distinct_id"}`` rows.

When given it is authoritative: the IDs sharing a ``resolved_distinct_id`` (and that ID
itself) form one cluster. Its user_id is, ``$device:`` IDs never:

* the resolved ID when it may be a user ID: in Simplified ID Merge any ID (the resolved
  ID is the ``$user_id``, UUIDs included); in Original ID Merge one the predicate accepts;
* else (Original ID Merge picks a device as canonical too) the member the graph built from
  the events chose as a user (the one carried as ``$user_id`` first: the app's own ID);
* else the smallest member that may be a user ID; else none.

An event whose own distinct_id is a user ID not in the table, or that has no ID in it,
falls back to the graph built from the events (``COALESCE(resolved_distinct_id,
distinct_id)``): it is not moved onto the owner of its ``$device_id``. A user ID is, as
for the cluster's user_id, any ID but a device's in Simplified ID Merge (UUIDs too), one
the predicate accepts in Original ID Merge. The table is read
after pass 1, so the graph's choice is known when it loads.

The table is JSON lines, optionally gzip-compressed, in one file or a folder of part
files, local or in a bucket. Rows with junk IDs are skipped and counted; malformed rows
stop the run with every problem listed (file and line each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mp2amp.errors import InputError
from mp2amp.identity.clustered import MISSING, Lookup, resolve_clustered
from mp2amp.identity.junk import DEVICE_PREFIX, clean_id
from mp2amp.identity.report import IdentityReport
from mp2amp.identity.store import BatchWriter, CachedLookup, ScratchDb, cache_entries
from mp2amp.models import Resolved

_MAX_PROBLEMS = 20
Row = tuple[str, int, str, int]  # (id, id is a device, resolved, resolved is a device)
NOT_USER = 3  # score of a member that may not be the cluster's user_id (``_score``)


def _any_id(value: str) -> bool:
    """Simplified ID Merge: every ID but a ``$device:`` one is a user ID (checked apart)."""
    return True


@dataclass(frozen=True)
class Table:
    """Where the table is: a path, folder, glob or URL, and the options to open a URL."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)


def _node(value: str) -> tuple[str | None, int]:
    if value.startswith(DEVICE_PREFIX):
        return clean_id(value[8:]), 1
    return value, 0


def read_rows(location: Table, report: IdentityReport) -> Iterator[Row]:
    """The table's rows, read as ``[source] files`` are (``extract/files.py``): one file, a
    folder of part files (Data Pipelines writes the mappings so), a glob, or an ``s3://`` /
    ``gs://`` URL with the source's storage options; JSON lines, gzipped or not; text the
    standard library parses where orjson does not (an ID cut in half) as for events."""
    from mp2amp.extract.files import expand_paths, iter_file  # the extract stage's reader

    problems: list[str] = []
    skipped = 0
    try:
        # a folder's part files whatever their names (Data Pipelines gives them no
        # extension), not only what a folder of events would give
        files = expand_paths([location.url], storage_options=location.storage_options or None,
                             every_file=True)
    except InputError as exc:
        raise InputError(f"cannot read the identity mapping table: {exc}") from None
    for file in files:
        for rec in iter_file(file):
            where = f"{rec.source}:{rec.line}"
            if rec.rejection is not None:
                what = rec.rejection.message
                kind = {"malformed_json": "not valid JSON",
                        "not_an_object": "expected a JSON object"}.get(rec.rejection.reason)
                problems.append(f"{where}: {kind} ({what})" if kind else f"{where}: {what}")
                continue
            row: Any = rec.record
            if not isinstance(row, dict):
                problems.append(f"{where}: expected a JSON object, got {type(row).__name__}")
                continue
            missing = [k for k in ("distinct_id", "resolved_distinct_id") if k not in row]
            if missing:
                problems.append(f"{where}: field {', '.join(missing)} missing")
                continue
            ident = clean_id(row["distinct_id"])
            resolved = clean_id(row["resolved_distinct_id"])
            if ident is None or resolved is None:
                skipped += 1
                continue
            node, node_dev = _node(ident)
            target, target_dev = _node(resolved)
            if node is None or target is None:
                skipped += 1
                continue
            yield node, node_dev, target, target_dev
    if problems:
        shown = problems[:_MAX_PROBLEMS]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise InputError(
            f"the identity mapping table has {len(problems)} malformed row(s); "
            "fix them and run again:\n  " + "\n  ".join(shown) + more
        )
    report.table_rows_skipped = skipped


class MappingTable:
    def __init__(
        self,
        path: Table,
        report: IdentityReport,
        budget: int,
        open_db: Callable[[str], ScratchDb],
        predicate: Callable[[str], bool],
        retroactive: bool,
        mode: str,
        graph_user: Lookup | None,
    ) -> None:
        # may a member be the cluster's user_id; in pass 2, is the event's own ID a user's
        # (Simplified ID Merge: any non-$device: ID, as its graph reads distinct_id)
        self.may_be_user = predicate if mode == "original" else _any_id
        self.retroactive = retroactive
        self.graph_user = graph_user  # ID -> the user the events' graph gives it
        self.user_of: dict[str, str | None] = {}
        self.lookup: CachedLookup | None = None
        if not self._load_in_memory(path, report, budget):
            self._load_spilled(path, report, open_db("table"), cache_entries(budget))

    def _load_in_memory(self, path: Table, report: IdentityReport, budget: int) -> bool:
        resolved_of: dict[str, str] = {}
        devices: set[str] = set()
        rows = 0
        for node, node_dev, target, target_dev in read_rows(path, report):
            rows += 1
            if 2 * rows > budget:
                return False
            resolved_of[node] = target
            if node_dev:
                devices.add(node)
            if target_dev:
                devices.add(target)
        for target in set(resolved_of.values()):
            resolved_of.setdefault(target, target)
        best: dict[str, tuple[int, str]] = {}
        for node, target in resolved_of.items():
            score = self._score(node, node in devices, target)
            if score == NOT_USER:
                continue
            current = best.get(target)
            if current is None or (score, node) < current:
                best[target] = (score, node)
        user_of: dict[str, str | None] = {}
        for node, target in resolved_of.items():
            chosen = best.get(target)
            user_of[node] = chosen[1] if chosen is not None else None
        self.user_of = user_of
        report.table_rows = rows
        return True

    def _load_spilled(self, path: Table, report: IdentityReport, db: ScratchDb,
                      cached: int) -> None:
        db.script(
            "CREATE TABLE tmap(id TEXT PRIMARY KEY, dev INTEGER NOT NULL, "
            "resolved TEXT NOT NULL, rdev INTEGER NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE ruser(resolved TEXT PRIMARY KEY, user TEXT) WITHOUT ROWID;"
            "CREATE TABLE devs(id TEXT PRIMARY KEY) WITHOUT ROWID;"
        )
        writer = BatchWriter(db, "INSERT OR REPLACE INTO tmap(id, dev, resolved, rdev) VALUES (?, ?, ?, ?)")
        # An ID is a device if any row says so (as in memory), not only its last row
        devs = BatchWriter(db, "INSERT OR IGNORE INTO devs(id) VALUES (?)")
        rows = 0
        for row in read_rows(path, report):
            rows += 1
            writer.add(row)
            if row[1]:
                devs.add((row[0],))
            if row[3]:
                devs.add((row[2],))
        writer.flush()
        devs.flush()
        db.script(
            "INSERT OR IGNORE INTO tmap(id, dev, resolved, rdev) "
            "SELECT resolved, 0, resolved, 0 FROM tmap GROUP BY resolved;"
            "UPDATE tmap SET dev = 1 WHERE id IN (SELECT id FROM devs);"
        )
        out = BatchWriter(db, "INSERT INTO ruser(resolved, user) VALUES (?, ?)")
        target: str | None = None
        chosen: str | None = None
        chosen_score = NOT_USER
        # by id: the smallest of the best score wins, as in memory
        for resolved, node, dev in db.rows("SELECT resolved, id, dev FROM tmap ORDER BY resolved, id"):
            if resolved != target:
                if target is not None:
                    out.add((target, chosen))
                target, chosen, chosen_score = resolved, None, NOT_USER
            if chosen_score > 0:  # no look-ups once the resolved ID itself is chosen
                score = self._score(node, bool(dev), resolved)
                if score < chosen_score:
                    chosen, chosen_score = node, score
        if target is not None:
            out.add((target, chosen))
        out.flush()
        report.table_rows = rows
        report.spilled = True
        self.lookup = CachedLookup(
            db,
            "SELECT r.user FROM tmap t JOIN ruser r ON r.resolved = t.resolved WHERE t.id = ?",
            cached,
        )

    def _score(self, node: str, is_device: bool, resolved: str) -> int:
        """0 the resolved ID, 1 the graph's user, 2 another user-like member, else NOT_USER."""
        if is_device or not self.may_be_user(node):
            return NOT_USER
        if node == resolved:
            return 0
        if self.graph_user is not None and self.graph_user(node) == node:
            return 1
        return 2

    def get(self, key: str) -> Any:
        if self.lookup is not None:
            return self.lookup.get(key, MISSING)
        return self.user_of.get(key, MISSING)

    def resolve(self, props: dict[str, Any]) -> Resolved | None:
        """The event's IDs from the table, or ``None`` when none of its IDs is in it."""
        return resolve_clustered(props, self.get, self.may_be_user, self.retroactive, True)
