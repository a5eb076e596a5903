"""Per-window accounting from the ledger: ``read = sent + rejected + skipped + duplicate``.

``read`` is what the extraction staged (the ledger's record count), not what the load read
back from the staged copy: records missing from a copy (cut short after staging) were never
sent, and the window says so with both numbers. ``sent`` counts what Amplitude accepted;
``rejected`` what the transform refused plus what Amplitude refused (dead letters);
``parked`` what waits for Amplitude's daily quota (a resume delivers it). A window that does
not add up is named with its numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mp2amp.ledger import Ledger


@dataclass(slots=True)
class WindowCounts:
    window: str
    state: str
    read: int = 0
    identity: int = 0
    duplicate: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)      # transform, by reason
    dead_lettered: dict[str, int] = field(default_factory=dict)  # Amplitude, by reason
    sent: int = 0
    parked: int = 0
    batches: int | None = 0  # None: not known yet (recorded when the window's last batch is cut)
    batches_done: int = 0
    staged_path: str | None = None
    # records the load read back from the staged copy; None: not recorded (not loaded)
    read_from_copy: int | None = None

    @property
    def copy_complete(self) -> bool:
        return self.read_from_copy is None or self.read_from_copy == self.read

    @property
    def accounted(self) -> int:
        return (self.sent + self.identity + self.duplicate + sum(self.skipped.values())
                + sum(self.rejected.values()) + sum(self.dead_lettered.values()) + self.parked)

    @property
    def balanced(self) -> bool:
        return self.state == "loaded" and self.copy_complete and self.read == self.accounted

    def problem(self) -> str | None:
        if self.state != "loaded":
            return f"{self.window}: not loaded yet (state {self.state})"
        if not self.copy_complete:
            return self._copy_problem()
        if self.read != self.accounted:
            return (f"{self.window}: read {self.read} but accounted for {self.accounted} "
                    f"(sent {self.sent} + identity {self.identity} + duplicate {self.duplicate}"
                    f" + skipped {sum(self.skipped.values())} + rejected "
                    f"{sum(self.rejected.values())} + dead-lettered "
                    f"{sum(self.dead_lettered.values())} + parked {self.parked})")
        return None

    def _copy_problem(self) -> str:
        n = self.read_from_copy or 0
        what = (f"{self.read - n} of its records were not sent" if n < self.read
                else f"{n - self.read} records the extraction did not stage were sent")
        return (f"{self.window}: the extraction staged {self.read} records but the load read "
                f"{n} from the staged copy {self.staged_path}: the copy changed after staging "
                f"(cut short or replaced), and {what}; a resume cannot change that (the "
                "window's batches are done): within 7 days of this run, run the migration "
                "again in a new work folder ([run] workdir; for import files also a new "
                "amplitude.output_dir), and Amplitude drops the events it already has (same "
                "insert_ids)")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["balanced"] = self.balanced
        return d


def window_counts(ledger: Ledger) -> list[WindowCounts]:
    rejects = ledger.reject_counts()
    parked = ledger.parked_counts()
    totals = ledger.batch_totals()
    out = []
    for w in ledger.windows():
        c = w.counts
        batch = totals.get(w.window_id, {})
        park = parked.get(w.window_id, {})
        dead = dict(rejects.get(w.window_id, {}).get("amplitude", {}))
        out.append(WindowCounts(
            window=w.window_id,
            state=w.state,
            read=w.records,  # as staged: a copy cut short since is not the window
            identity=int(c.get("identity_records", 0)),
            duplicate=int(c.get("duplicates", 0)),
            skipped=dict(c.get("skipped", {})),
            rejected=dict(rejects.get(w.window_id, {}).get("transform", {})),
            dead_lettered=dead,
            # accepted in their batch, or later after waiting for the quota
            sent=batch.get("accepted", 0) + park.get("accepted", 0)
            + int(c.get("written", 0)),  # S3-import files instead of the API
            # a parked event later dead-lettered is in ``dead`` (its reject row)
            parked=park.get("parked", 0),
            batches=int(c["batches"]) if "batches" in c else None if w.state != "loaded" else 0,
            batches_done=batch.get("batches_done", 0),
            staged_path=w.staged_path,
            read_from_copy=int(c["records_read"]) if "records_read" in c else None,
        ))
    return out


def totals(rows: list[WindowCounts], *, planned: bool = True) -> dict[str, Any]:
    """``planned``: the run planned its windows (False: killed before, nothing adds up
    yet, though all() of no windows would say balanced)."""
    out: dict[str, Any] = {"windows": len(rows), "read": 0, "sent": 0, "identity": 0,
                           "duplicate": 0, "skipped": 0, "rejected": 0, "dead_lettered": 0,
                           "parked": 0}
    for r in rows:
        out["read"] += r.read
        out["sent"] += r.sent
        out["identity"] += r.identity
        out["duplicate"] += r.duplicate
        out["skipped"] += sum(r.skipped.values())
        out["rejected"] += sum(r.rejected.values())
        out["dead_lettered"] += sum(r.dead_lettered.values())
        out["parked"] += r.parked
    out["balanced"] = planned and all(r.balanced for r in rows)
    return out
