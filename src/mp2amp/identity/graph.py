"""``IdentityGraph``: the identity stage's one entry point (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mp2amp.errors import ConfigError, InvariantViolation
from mp2amp.identity.ids import BEFORE_IDENTITY, IDENTITY_EVENTS, ORIGINAL_EVENT, count_junk
from mp2amp.identity.junk import default_user_id_predicate, forget_usable_ids
from mp2amp.identity.original import OriginalIds
from mp2amp.identity.report import IdentityReport
from mp2amp.identity.simplified import SimplifiedIds
from mp2amp.identity.store import ScratchDb, cache_entries, page_cache_kib
from mp2amp.identity.table import MappingTable, Table
from mp2amp.models import Resolved

MODES = ("simplified", "original")
MIXPANEL_CLUSTER_CAP = 500
Key = tuple[str | None, str | None, str | None]


class IdentityGraph:
    """Pass 1: ``observe`` every record; then ``finish``; pass 2: ``resolve`` every event."""

    def __init__(
        self,
        mode: str,
        workdir: Path | str,
        memory_budget_ids: int = 2_000_000,
        retroactive: bool = True,
        user_id_predicate: Callable[[str], bool] | None = None,
        table: Path | str | None = None,
        cluster_cap: int = MIXPANEL_CLUSTER_CAP,
        table_options: dict[str, Any] | None = None,
    ) -> None:
        problems = []
        if mode not in MODES:
            problems.append(f"id_merge must be one of {', '.join(MODES)}, not {mode!r}")
        if memory_budget_ids < 1:
            problems.append(f"memory_budget_ids must be at least 1, not {memory_budget_ids}")
        if cluster_cap < 2:
            problems.append(f"cluster_cap must be at least 2, not {cluster_cap}")
        if problems:
            raise ConfigError(problems)
        self.workdir = Path(workdir)
        self.predicate = user_id_predicate or default_user_id_predicate
        self.report = IdentityReport(mode=mode, retroactive=retroactive, cluster_cap=cluster_cap)
        self._dbs: list[ScratchDb] = []
        self._budget = memory_budget_ids
        self._mode: SimplifiedIds | OriginalIds
        if mode == "simplified":
            self._mode = SimplifiedIds(self.report, memory_budget_ids, self._open_db, retroactive)
        else:
            self._mode = OriginalIds(
                self.report, memory_budget_ids, self._open_db, retroactive, self.predicate,
                cluster_cap,
            )
        # a path, folder, glob or s3:// / gs:// URL (``table_options``: how to open a URL)
        self._table_path = Table(str(table), dict(table_options or {})) \
            if table is not None else None
        self._retroactive = retroactive
        self._table: MappingTable | None = None
        self._finished = False
        # Two generations: a full young one becomes the old one (the previous old one is
        # dropped) and old hits move back to young: an approximate LRU at dict-lookup cost,
        # bounded to 2 * memo_entries.
        self.memo_entries = cache_entries(memory_budget_ids)  # ~450 bytes each
        self._memo: dict[Key, Resolved] = {}
        self._memo_old: dict[Key, Resolved] = {}

    def _open_db(self, name: str) -> ScratchDb:
        db = ScratchDb(self.workdir / f"identity-{name}.sqlite", page_cache_kib(self._budget))
        self._dbs.append(db)
        return db

    def observe(self, record: Any, seconds: float | None = None) -> bool:
        """Feed one source record; True for ``$identify``/``$create_alias``/``$merge``.

        Records that are not ``{"event", "properties": {...}}`` objects (profiles, junk)
        are ignored and return False: the transform rejects them with a reason.
        ``seconds``: the event's UTC time (as staging ordered it), which orders links in
        place of ``properties.time``: a legacy project's times are local wall clock, and
        its Data Pipelines rows UTC. None: ``properties.time`` is UTC (or all there is).
        """
        if self._finished:
            raise InvariantViolation("IdentityGraph.observe() called after finish(); "
                                     "pass 1 must see every record before pass 2 starts")
        if not isinstance(record, dict):
            return False
        props = record.get("properties")
        if not isinstance(props, dict):
            return False
        event = record.get("event")
        if ORIGINAL_EVENT in props:  # renamed by Mixpanel's hot shard: as restore_hotshard
            original = props[ORIGINAL_EVENT]
            if isinstance(original, str) and original:
                event = original
        self.report.records_observed += 1
        count_junk(props, self.report)
        is_identity = False
        if isinstance(event, str) and event in IDENTITY_EVENTS:
            is_identity = True
            counts = self.report.identity_records
            counts[event] = counts.get(event, 0) + 1
        if isinstance(self._mode, OriginalIds):
            self._mode.observe(props, event, seconds)
        elif not is_identity:
            # Simplified ID Merge ignores identity events (Mixpanel's docs): only the
            # $device_id/$user_id pairs on ordinary events link a device to a user.
            self._mode.observe(props, seconds)
        return is_identity

    def finish(self) -> IdentityReport:
        """Build the clusters (and load the mapping table); idempotent."""
        if not self._finished:
            self._mode.finish()
            if self._table_path is not None:
                # after the mode's finish: the table prefers the user the events' graph chose
                graph_user = self._mode.get if isinstance(self._mode, OriginalIds) else None
                self._table = MappingTable(
                    self._table_path, self.report, self._budget, self._open_db,
                    self.predicate, self._retroactive, self.report.mode, graph_user,
                )
            for db in self._dbs:
                db.shrink()
            forget_usable_ids()  # pass 2 looks up few IDs (memoized): it fills its own
            self._finished = True
        return self.report

    def shared_device(self, device: str) -> bool:
        """Whether several users were seen with ``device`` (it stays with the first: an
        exclusion listing it must not take that user's other devices). Original ID Merge:
        a link of the device to a second user was refused."""
        if not self._finished:
            self.finish()
        return self._mode.is_shared(device)

    def resolve(self, props: dict[str, Any]) -> Resolved:
        """The Amplitude user_id/device_id of one event (both None: no usable ID).

        After ``finish()`` the answer depends only on the event's ID fields, and a person's
        events repeat the same ones, so answers are memoized by (``$user_id``,
        ``$device_id``, ``distinct_id``) when those are plain strings and the rarer ID
        fields are absent; this is what keeps pass 2 fast.
        """
        if not self._finished:
            self.finish()
        user = props.get("$user_id")
        device = props.get("$device_id")
        dist = props.get("distinct_id")
        if (
            (user is None or type(user) is str)
            and (device is None or type(device) is str)
            and (dist is None or type(dist) is str)
            and BEFORE_IDENTITY[0] not in props
            and BEFORE_IDENTITY[1] not in props
            and "mp_original_distinct_id" not in props
        ):
            key = (user, device, dist)
            found = self._memo.get(key)
            if found is None:
                found = self._memo_old.get(key)
                if found is None:
                    found = self._compute(props)
                memo = self._memo
                if len(memo) >= self.memo_entries:
                    self._memo_old = memo
                    memo = self._memo = {}
                memo[key] = found
            return found
        return self._compute(props)

    def _compute(self, props: dict[str, Any]) -> Resolved:
        if self._table is not None:
            found = self._table.resolve(props)
            if found is not None:
                return found
        return self._mode.resolve(props)

    def close(self) -> None:
        for db in self._dbs:
            db.close()
        self._dbs = []

    def __enter__(self) -> IdentityGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
