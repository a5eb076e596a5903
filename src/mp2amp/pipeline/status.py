"""``mp2amp status``: progress and counts of a run, read from its ledger only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.accounting import WindowCounts, totals, window_counts
from mp2amp.pipeline.attempts import last_attempt
from mp2amp.pipeline.worklock import running_pid


@dataclass(slots=True)
class StatusResult:
    ledger: str
    windows: list[WindowCounts]
    states: dict[str, int]
    batches: dict[str, int]
    totals: dict[str, Any] = field(default_factory=dict)
    last_attempt: dict[str, Any] | None = None  # how the last migrate run ended
    running_pid: int | None = None  # a migrate running in the folder now (0: pid unknown)

    @property
    def complete(self) -> bool:
        """Every window loaded and no event still waiting for Amplitude's daily quota (a
        resume delivers those: a script polling for ``complete`` must not stop before)."""
        return (bool(self.windows) and all(w.state == "loaded" for w in self.windows)
                and not any(w.parked for w in self.windows))

    @property
    def loaded(self) -> bool:
        return bool(self.windows) and all(w.state == "loaded" for w in self.windows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger,
            "complete": self.complete,
            "states": self.states,
            "batches": self.batches,
            "totals": self.totals,
            "last_attempt": self.last_attempt,
            "running_pid": self.running_pid,
            "windows": [w.as_dict() for w in self.windows],
            "problems": [p for w in self.windows if (p := w.problem())] if self.loaded else [],
        }


def former_default_hint(workdir: Path) -> str:
    """Where to look when ``workdir`` holds no ledger but the current folder's ``.mp2amp``
    does: mp2amp put the default work folder there until it went beside the config file."""
    here = Path.cwd() / ".mp2amp"
    if (here / "ledger.sqlite").exists() and here.resolve() != workdir.resolve():
        return (f" (a migration's work folder is in {here}, where an earlier mp2amp put the "
                f"default: add --workdir {here} to use it)")
    return ""


def status(workdir: Path) -> StatusResult:
    path = workdir / "ledger.sqlite"
    if not path.exists():
        hint = former_default_hint(workdir)
        raise TerminalError(f"no migration in {workdir} (no ledger.sqlite){hint}; start one "
                            "with `mp2amp migrate`, or point --workdir at its work folder")
    try:
        ledger = Ledger(path, read_only=True)  # `status` never writes into the file
    except TerminalError:
        pid = running_pid(workdir)
        if pid is not None and path.stat().st_size < 64 * 1024:  # being created right now
            raise TerminalError(f"no migration in {workdir} yet: one is starting (pid "
                                f"{pid or '?'}); run `mp2amp status` again in a moment") from None
        raise
    try:
        with ledger.snapshot():  # one state of the ledger, though a migration may be writing
            rows = window_counts(ledger)
            batches = {"done": 0, "in_flight": 0}
            for b in ledger.batches():
                batches["done" if b.state == "done" else "in_flight"] += 1
            attempt = last_attempt(ledger)
        states: dict[str, int] = {}
        for r in rows:
            states[r.state] = states.get(r.state, 0) + 1
        return StatusResult(str(path), rows, states, batches, totals(rows), attempt,
                            running_pid(workdir))
    finally:
        ledger.close()
