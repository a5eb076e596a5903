"""Progress reporting for long runs: a rich live display on a terminal, periodic plain log
lines otherwise (CI, files, pipes), nothing at all when silenced. Injected, never global."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class Counters:
    """What a run reports as it goes."""

    phase: str = "starting"
    total: int = 0
    done: int = 0
    sent: int = 0
    retries: int = 0
    throttles: int = 0
    dead_letters: int = 0
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


class Reporter(Protocol):
    def update(self, counters: Counters) -> None: ...
    def close(self, counters: Counters) -> None: ...


class NullReporter:
    def update(self, counters: Counters) -> None:
        return None

    def close(self, counters: Counters) -> None:
        return None


class LogReporter:
    """One line every ``interval`` seconds: greppable, no escape codes."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last = 0.0

    def _line(self, c: Counters) -> str:
        return (
            f"mp2amp: t={time.monotonic() - c.started:.1f}s phase={c.phase} "
            f"done={c.done}/{c.total} sent={c.sent} "
            f"rate={c.rate():.0f}/s retries={c.retries} throttles={c.throttles} "
            f"dead_letters={c.dead_letters}"
        )

    def update(self, counters: Counters) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(self._line(counters), file=self.stream, flush=True)

    def close(self, counters: Counters) -> None:
        print(self._line(counters), file=self.stream, flush=True)


class RichReporter:
    """A live bar with events/s, ETA, retries, throttles and dead letters."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.fields[phase]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f} ev/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("retries {task.fields[retries]} throttles {task.fields[throttles]} "
                       "dead {task.fields[dead]}"),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(
            "run", total=None, phase="starting", rate=0.0, retries=0, throttles=0, dead=0
        )
        self._progress.start()

    def update(self, counters: Counters) -> None:
        self._progress.update(
            self._task,
            total=counters.total or None,
            completed=counters.done,
            phase=counters.phase,
            rate=counters.rate(),
            retries=counters.retries,
            throttles=counters.throttles,
            dead=counters.dead_letters,
        )

    def close(self, counters: Counters) -> None:
        self.update(counters)
        self._progress.stop()


def choose_reporter(quiet: bool, stream: TextIO | None = None) -> Reporter:
    """Rich on a terminal, log lines elsewhere, nothing when quiet."""
    if quiet:
        return NullReporter()
    out = stream or sys.stderr
    if out.isatty():
        return RichReporter()
    return LogReporter(out)
