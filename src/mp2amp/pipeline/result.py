"""What ``mp2amp migrate`` returns: the totals, one row per window, and its exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mp2amp.pipeline.accounting import WindowCounts
from mp2amp.pipeline.timecheck import TimeHint

EXIT_OK = 0
EXIT_UNBALANCED = 1
EXIT_PARKED = 3


@dataclass(slots=True)
class MigrateResult:
    workdir: str
    resumed: bool
    windows: list[WindowCounts]
    totals: dict[str, Any]
    identity: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    dead_letter_file: str | None = None
    # input files the sources match now but the run did not start with (resume)
    not_in_run: list[str] = field(default_factory=list)
    changed_inputs: list[str] = field(default_factory=list)  # since they were staged
    # the event times look read in the wrong zone (pipeline/timecheck.py): a warning
    time_check: TimeHint | None = None

    @property
    def exit_code(self) -> int:
        if any(w.problem() for w in self.windows) or self.problems:
            return EXIT_UNBALANCED
        if self.totals.get("parked"):
            return EXIT_PARKED
        return EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "workdir": self.workdir,
            "resumed": self.resumed,
            "exit_code": self.exit_code,
            "totals": self.totals,
            "windows": [w.as_dict() for w in self.windows],
            "identity": self.identity,
            "load": self.load,
            "values": self.values,
            "problems": self.problems + [p for w in self.windows if (p := w.problem())],
            "dead_letter_file": self.dead_letter_file,
            "inputs_not_in_run": self.not_in_run,
            "inputs_changed_since_staged": self.changed_inputs,
            "time_check": None if self.time_check is None else self.time_check.as_dict(),
        }
