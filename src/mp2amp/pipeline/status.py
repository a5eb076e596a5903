"""``mp2amp status``: progress and counts of a run, read from its ledger only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.ledger.sqlite_io import damaged
from mp2amp.pipeline.accounting import WindowCounts, totals, window_counts
from mp2amp.pipeline.attempts import last_attempt as last_attempt  # tests patch it here
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
        """Every window loaded, no event still waiting for Amplitude's daily quota (a
        resume delivers those: a script polling for ``complete`` must not stop before), and
        the run over: none holds the folder (its last window is loaded before it writes
        the dead-letter file and records its end) and the last one was not killed before
        its end (then ``--resume`` does what it left)."""
        return (self.loaded and not any(w.parked for w in self.windows)
                and self.running_pid is None
                and (self.last_attempt or {}).get("outcome") != "running")

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
        _refuse_emptied(path)
        raise
    try:
        (rows, batches, attempt, planned), pid = _settled_read(ledger, workdir)
        states: dict[str, int] = {}
        for r in rows:
            states[r.state] = states.get(r.state, 0) + 1
        return StatusResult(str(path), rows, states, batches, totals(rows, planned=planned),
                            attempt, pid)
    finally:
        ledger.close()


_Read = tuple[list[WindowCounts], dict[str, int], dict[str, Any] | None, bool]


def _read(ledger: Ledger) -> _Read:
    with ledger.snapshot():  # one state of the ledger, though a migration may be writing
        rows = window_counts(ledger)
        counts = ledger.batch_counts().values()
        done = sum(c[1] for c in counts)
        batches = {"done": done, "in_flight": sum(c[0] for c in counts) - done}
        return rows, batches, last_attempt(ledger), bool(rows) or _planned(ledger)


def _planned(ledger: Ledger) -> bool:
    """Whether a run with no windows planned them (none): the plan's windows and the
    run's fingerprint are written in one step, so a run killed before it has neither."""
    from mp2amp.pipeline.fingerprint import FINGERPRINT_META  # ~0.1 s, for this case only

    return ledger.get_meta(FINGERPRINT_META) is not None


def _settled_read(ledger: Ledger, workdir: Path) -> tuple[_Read, int | None]:
    """The snapshot and the pid of the migrate holding the folder, agreeing: a run that
    ended between the read and the lock check looked killed (its batches 'sent but not
    confirmed'). A run records its end before it lets go of the lock, so a read started
    after it let go has the end; a run that started and ended within one read is caught by
    reading once more when the snapshot shows a run going with no lock held."""
    for tries in range(3):
        before = running_pid(workdir)
        got = _read(ledger)
        after = running_pid(workdir)
        if after is not None:  # a run holds the folder: what is in flight is in flight
            return got, after
        going = got[2] is not None and got[2].get("outcome") == "running"
        if before is None and (tries or not going):
            return got, None
    return got, before  # runs kept ending as they were read: the last one was going


def _refuse_emptied(path: Path) -> None:
    """An empty ledger beside an earlier run's files is damaged, as migrate calls it (a
    missing one is refused there too): moving it away would not start a new run."""
    from mp2amp.pipeline.run_start import holds_run_files  # only on this rare path

    try:
        empty = path.stat().st_size == 0
    except OSError:
        return
    if empty and holds_run_files(path.parent):
        raise damaged(path, "it is empty, while the work folder holds an earlier run's "
                      "staged copies or downloads: a copy cut short, say")
