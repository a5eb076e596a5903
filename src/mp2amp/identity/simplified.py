"""Simplified ID Merge: devices join the first user they are seen with.

Pass 1 records, for every device, the user of the earliest event (by UTC time: the
``seconds`` staging gives, else ``time``; ties go to the smallest user ID) that carried
both the device and a ``$user_id``. Taking the minimum instead of "the first line read"
makes the result independent of file order. Pass 2 reads that map. The map lives in a
dict until it holds more than the memory budget, then in SQLite (table ``dev``), with a
small cache in front of the per-event writes.

An export row Mixpanel re-keyed from its device to the device's user
(``$distinct_id_before_identity`` or ``$preshuffle_distinct_id`` a ``$device:`` ID, or
the ``$device_id``) is the
device's anonymous event: it keeps that device, and ``retroactive=False`` withholds the
user as from any anonymous event.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from mp2amp.identity.ids import before_identity, distinct_id, event_seconds, strip_device
from mp2amp.identity.junk import DEVICE_PREFIX, clean_id
from mp2amp.identity.report import EXAMPLES, IdentityReport, note
from mp2amp.identity.store import BatchWriter, CachedLookup, ScratchDb, cache_entries
from mp2amp.models import Resolved

_UPSERT = (
    "INSERT INTO dev(device, t, user, shared) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(device) DO UPDATE SET "
    "shared = (dev.shared OR excluded.shared OR excluded.user <> dev.user), "
    "t = CASE WHEN (excluded.t, excluded.user) < (dev.t, dev.user) THEN excluded.t ELSE dev.t END, "
    "user = CASE WHEN (excluded.t, excluded.user) < (dev.t, dev.user) "
    "THEN excluded.user ELSE dev.user END"
)
_RECENT = 16_384  # per-event write cache while spilled (bounded)


class SimplifiedIds:
    def __init__(
        self,
        report: IdentityReport,
        budget: int,
        open_db: Callable[[str], ScratchDb],
        retroactive: bool,
    ) -> None:
        self.report = report
        self.budget = budget
        self.open_db = open_db
        self.retroactive = retroactive
        self.links: dict[str, tuple[float, str]] = {}
        self.shared: set[str] = set()
        self.db: ScratchDb | None = None
        self.writer: BatchWriter | None = None
        self.recent: dict[str, tuple[float, str]] = {}
        self.user_of: dict[str, str] = {}
        self.lookup: CachedLookup | None = None

    # --- pass 1 ------------------------------------------------------------------

    def observe(self, props: dict[str, Any], seconds: float | None = None) -> None:
        user = clean_id(props.get("$user_id"))
        if user is None:
            return
        device = strip_device(clean_id(props.get("$device_id")))
        if device is None:
            dist = distinct_id(props)
            if dist is None or not dist.startswith(DEVICE_PREFIX):
                return
            device = strip_device(dist)
            if device is None:
                return
        if device == user:
            return
        self.link(device, user, event_seconds(props) if seconds is None else seconds)

    def link(self, device: str, user: str, t: float) -> None:
        if self.writer is not None:
            seen = self.recent.get(device)
            if seen is not None and seen[1] == user and seen[0] <= t:
                return  # an earlier identical link is already written
            if len(self.recent) >= _RECENT:
                self.recent.clear()
            self.recent[device] = (t, user)
            self.writer.add((device, t, user, 0))
            return
        current = self.links.get(device)
        if current is None:
            self.links[device] = (t, user)
            if 2 * len(self.links) > self.budget:  # a device and its user
                self.spill()
            return
        if current[1] != user:
            self.shared.add(device)
        if (t, user) < current:
            self.links[device] = (t, user)

    def spill(self) -> None:
        db = self.open_db("simplified")
        db.script(
            "CREATE TABLE dev(device TEXT PRIMARY KEY, t REAL NOT NULL, user TEXT NOT NULL, "
            "shared INTEGER NOT NULL) WITHOUT ROWID"
        )
        self.writer = BatchWriter(db, _UPSERT)
        for device, (t, user) in self.links.items():
            self.writer.add((device, t, user, 1 if device in self.shared else 0))
        self.writer.flush()
        self.report.spilled = True
        self.db = db
        self.links = {}
        self.shared = set()

    # --- finish -----------------------------------------------------------------------

    def finish(self) -> None:
        report = self.report
        if self.writer is None or self.db is None:
            self.user_of = {device: user for device, (_, user) in self.links.items()}
            self.links = {}
            report.links = len(self.user_of)
            users = set(self.user_of.values())
            report.ids = report.links + len(users)
            report.clusters = report.clusters_with_user = len(users)
            report.shared_devices = len(self.shared)
            for device in heapq.nsmallest(EXAMPLES, self.shared):
                note(report.shared_device_examples, device)
            return
        self.writer.flush()
        db = self.db
        row = db.one("SELECT COUNT(*), COUNT(DISTINCT user), SUM(shared) FROM dev")
        assert row is not None
        report.links = int(row[0])
        report.clusters = report.clusters_with_user = int(row[1])
        report.ids = report.links + report.clusters
        report.ids_spilled = report.links
        report.shared_devices = int(row[2] or 0)
        for (device,) in db.rows("SELECT device FROM dev WHERE shared ORDER BY device LIMIT 10"):
            note(report.shared_device_examples, device)
        self.lookup = CachedLookup(db, "SELECT user FROM dev WHERE device = ?",
                                   cache_entries(self.budget))

    def is_shared(self, device: str) -> bool:
        """Whether pass 1 saw several users with ``device`` (after ``finish``)."""
        if self.db is not None:
            row = self.db.one("SELECT shared FROM dev WHERE device = ?", (device,))
            return bool(row and row[0])
        return device in self.shared

    # --- pass 2 -----------------------------------------------------------------------

    def resolve(self, props: dict[str, Any]) -> Resolved:
        user = clean_id(props.get("$user_id"))
        device = strip_device(clean_id(props.get("$device_id")))
        dist = distinct_id(props)
        if dist is not None and dist.startswith(DEVICE_PREFIX):
            if device is None:
                device = strip_device(dist)
            dist = None
        before = before_identity(props)
        rekeyed_to: str | None = None  # the user Mixpanel re-keyed an anonymous event to
        if before is not None and (before.startswith(DEVICE_PREFIX) or before == device):
            # ingested under its device: anonymous, whatever user the export names
            if device is None:
                device = strip_device(before)
            rekeyed_to = dist if dist != device else None
            dist = None
        if user is not None:
            return Resolved(user, device)
        if dist is not None and dist != device:
            return Resolved(dist, device)  # a non-device distinct_id is a user ID
        if device is None:
            return Resolved(None, None)
        # Mixpanel's own answer for a re-keyed event (its linking event may lie outside
        # the export's dates); else the device's first user as pass 1 found it
        owner = rekeyed_to or self._owner(device)
        if not self.retroactive:  # anonymous as sent; the owner only for the privacy rules
            return Resolved(None, device, owner)
        return Resolved(owner, device)

    def _owner(self, device: str) -> str | None:
        if self.lookup is not None:
            found: str | None = self.lookup.get(device)
            return found
        return self.user_of.get(device)
