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

An ID's resolved ID is read as Mixpanel's documented query reads it,
``COALESCE(resolved_distinct_id, distinct_id)``: one look-up, no chain followed. Rows
a->b and b->c send a's events to b's cluster (b itself a member of it, as the resolved ID)
and b's to c's. When the table maps one ID to two resolved IDs (two exports left in one
folder, say) the row read last wins (part files in natural name order, lines in order:
the table has no time column to go by); such IDs are counted and named in a warning.

The table is JSON lines, optionally gzip-compressed, in one file or a folder of part
files, local or in a bucket. Rows with junk IDs are skipped and counted; malformed rows
stop the run with every problem listed (file and line each).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mp2amp.errors import InputError
from mp2amp.identity.clustered import MISSING, Lookup, resolve_clustered
from mp2amp.identity.junk import DEVICE_PREFIX, clean_id
from mp2amp.identity.report import EXAMPLES, IdentityReport
from mp2amp.identity.store import BatchWriter, CachedLookup, ScratchDb, cache_entries
from mp2amp.models import Resolved

log = logging.getLogger("mp2amp.identity")

_MAX_PROBLEMS = 20
Row = tuple[str, int, str, int]  # (id, id is a device, resolved, resolved is a device)
Where = tuple[int, str, int]  # a row's file (index in reading order, name) and line
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
    """The table's rows (``located_rows`` without where each was read)."""
    for row, _ in located_rows(location, report):
        yield row


def located_rows(location: Table, report: IdentityReport) -> Iterator[tuple[Row, Where]]:
    """The table's rows, read as ``[source] files`` are (``extract/files.py``): one file, a
    folder of part files (Data Pipelines writes the mappings so), a glob, or an ``s3://`` /
    ``gs://`` URL with the source's storage options; JSON lines, gzipped or not; text the
    standard library parses where orjson does not (an ID cut in half) as for events. Each
    with its file (index in reading order, name) and line: to name both rows of a
    conflict."""
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
    for index, file in enumerate(files):
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
            yield (node, node_dev, target, target_dev), (index, rec.source, rec.line)
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
        file_of: dict[str, int] = {}  # the file of each ID's row: to name both of a conflict
        # by index, not appended: a file with no rows (an empty part) must not shift others
        files: dict[int, str] = {}
        conflicted: set[str] = set()
        conflicts: list[tuple[str, str, str, str, str, int]] = []
        devices: set[str] = set()
        rows = 0
        for (node, node_dev, target, target_dev), (index, source, line) in located_rows(
                path, report):
            rows += 1
            if 2 * rows > budget:
                return False
            files[index] = source
            old = resolved_of.get(node)
            if old is not None and old != target and node not in conflicted:
                conflicted.add(node)
                if len(conflicts) < EXAMPLES:
                    conflicts.append((node, old, files[file_of[node]], target, source, line))
            resolved_of[node] = target  # the row read last wins
            file_of[node] = index
            if node_dev:
                devices.add(node)
            if target_dev:
                devices.add(target)
        file_of.clear()
        targets = set(resolved_of.values())
        for target in targets:
            resolved_of.setdefault(target, target)
        best: dict[str, tuple[int, str]] = {}
        for node, target in resolved_of.items():
            self._consider(best, node, node in devices, target)
        for target in targets:
            # a resolved ID with a row of its own (a->b, b->c) is still a member of the
            # cluster named after it: a goes to b, as COALESCE(resolved_distinct_id, ...)
            if resolved_of[target] != target:
                self._consider(best, target, target in devices, target)
        user_of: dict[str, str | None] = {}
        for node, target in resolved_of.items():
            chosen = best.get(target)
            user_of[node] = chosen[1] if chosen is not None else None
        self.user_of = user_of
        report.table_rows = rows
        _report_conflicts(report, len(conflicted), [
            _conflict_text(c, c[0] in devices, c[1] in devices, c[3] in devices)
            for c in conflicts])
        return True

    def _consider(self, best: dict[str, tuple[int, str]], node: str, is_device: bool,
                  target: str) -> None:
        score = self._score(node, is_device, target)
        if score == NOT_USER:
            return
        current = best.get(target)
        if current is None or (score, node) < current:
            best[target] = (score, node)

    def _load_spilled(self, path: Table, report: IdentityReport, db: ScratchDb,
                      cached: int) -> None:
        db.script(
            "CREATE TABLE tmap(id TEXT PRIMARY KEY, dev INTEGER NOT NULL, "
            "resolved TEXT NOT NULL, rdev INTEGER NOT NULL, src INTEGER NOT NULL, "
            "line INTEGER NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE ruser(resolved TEXT PRIMARY KEY, user TEXT) WITHOUT ROWID;"
            "CREATE TABLE devs(id TEXT PRIMARY KEY) WITHOUT ROWID;"
            # IDs a later row maps elsewhere, first seen first (as in memory)
            "CREATE TABLE tconflict(seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
            "old TEXT NOT NULL, old_src INTEGER NOT NULL, new TEXT NOT NULL, "
            "new_src INTEGER NOT NULL, new_line INTEGER NOT NULL);"
            "CREATE TRIGGER tmap_conflict AFTER UPDATE OF resolved ON tmap "
            # (the upsert's conflict rule would override an OR IGNORE here: tested instead)
            "WHEN old.resolved <> new.resolved AND NOT EXISTS "
            "(SELECT 1 FROM tconflict WHERE id = new.id) BEGIN "
            "INSERT INTO tconflict(id, old, old_src, new, new_src, new_line) "
            "VALUES (new.id, old.resolved, old.src, new.resolved, new.src, new.line); END;"
        )
        # the row read last wins (the trigger notes a changed resolved ID)
        writer = BatchWriter(
            db, "INSERT INTO tmap(id, dev, resolved, rdev, src, line) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET dev = excluded.dev, resolved = excluded.resolved,"
            " rdev = excluded.rdev, src = excluded.src, line = excluded.line")
        # An ID is a device if any row says so (as in memory), not only its last row
        devs = BatchWriter(db, "INSERT OR IGNORE INTO devs(id) VALUES (?)")
        files: dict[int, str] = {}  # by index, as in memory: an empty file shifts nothing
        rows = 0
        for row, (index, source, line) in located_rows(path, report):
            rows += 1
            files[index] = source
            writer.add((*row, index, line))
            if row[1]:
                devs.add((row[0],))
            if row[3]:
                devs.add((row[2],))
        writer.flush()
        devs.flush()
        db.script(
            "INSERT OR IGNORE INTO tmap(id, dev, resolved, rdev, src, line) "
            "SELECT resolved, 0, resolved, 0, 0, 0 FROM tmap GROUP BY resolved;"
            "UPDATE tmap SET dev = 1 WHERE id IN (SELECT id FROM devs);"
        )
        out = BatchWriter(db, "INSERT INTO ruser(resolved, user) VALUES (?, ?)")
        target: str | None = None
        chosen: str | None = None
        chosen_score = NOT_USER
        # by id: the smallest of the best score wins, as in memory; every resolved ID is a
        # member of its own cluster, also when it has a row of its own (a->b, b->c)
        for resolved, node, dev in db.rows(
                "SELECT resolved, id, dev FROM tmap UNION ALL "
                "SELECT resolved, resolved, EXISTS(SELECT 1 FROM devs d WHERE d.id = t.resolved)"
                " FROM tmap t GROUP BY resolved ORDER BY 1, 2"):
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
        count = db.one("SELECT COUNT(*) FROM tconflict")
        is_dev = "EXISTS(SELECT 1 FROM devs WHERE id = {})"
        _report_conflicts(report, int(count[0]) if count else 0, [
            _conflict_text((node, old, files[old_src], new, files[new_src], new_line),
                           bool(node_dev), bool(old_dev), bool(new_dev))
            for node, old, old_src, new, new_src, new_line, node_dev, old_dev, new_dev in db.rows(
                f"SELECT id, old, old_src, new, new_src, new_line, {is_dev.format('c.id')}, "
                f"{is_dev.format('c.old')}, {is_dev.format('c.new')} FROM tconflict c "
                f"ORDER BY seq LIMIT {EXAMPLES}")])
        self.lookup = CachedLookup(
            db,
            "SELECT r.user FROM tmap t JOIN ruser r ON r.resolved = t.resolved WHERE t.id = ?",
            cached,
        )

    def _score(self, node: str, is_device: bool, resolved: str) -> int:
        """0 the resolved ID, 1 the graph's user, 2 another user-like member, else NOT_USER."""
        if is_device:
            return NOT_USER
        # a user the events' graph knows (a lone $user_id, a UUID among them) is one even
        # where its look says device: else its plain events went to an anonymous device
        known = self.graph_user is not None and self.graph_user(node) == node
        if not known and not self.may_be_user(node):
            return NOT_USER
        if node == resolved:
            return 0
        return 1 if known else 2

    def get(self, key: str) -> Any:
        if self.lookup is not None:
            return self.lookup.get(key, MISSING)
        return self.user_of.get(key, MISSING)

    def resolve(self, props: dict[str, Any]) -> Resolved | None:
        """The event's IDs from the table, or ``None`` when none of its IDs is in it."""
        return resolve_clustered(props, self.get, self.may_be_user, self.retroactive, True)


def _shown(value: str, is_device: bool) -> str:
    return DEVICE_PREFIX + value if is_device else value


def _conflict_text(conflict: tuple[str, str, str, str, str, int], node_dev: bool,
                   old_dev: bool, new_dev: bool) -> str:
    node, old, old_file, new, new_file, new_line = conflict
    return (f"{_shown(node, node_dev)} -> {_shown(old, old_dev)} ({old_file}), then -> "
            f"{_shown(new, new_dev)} ({new_file}:{new_line})")


def _report_conflicts(report: IdentityReport, count: int, examples: list[str]) -> None:
    """Counted in the report, and said once with examples (they name files, which the
    report, compared between runs, does not): the table contradicts itself."""
    report.table_conflicts = count
    if count:
        log.warning(
            "the identity mapping table maps %d ID(s) to more than one resolved ID (e.g. %s): "
            "the row read last is used (part files in natural name order, lines in order). "
            "Two exports of the table in one folder? Remove the older one and run again",
            count, "; ".join(examples[:3]))
