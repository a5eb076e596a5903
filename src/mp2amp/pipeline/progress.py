"""Progress reporting for long runs: a rich live display on a terminal, periodic plain log
lines otherwise (CI, files, pipes), nothing at all when silenced. Injected, never global.

The numbers come from ``Counters``; what refreshes the display is ``ticking``: a task on
the run's event loop that samples the live numbers (the uploader's report during the
load) and calls ``Reporter.update`` every ``tick`` seconds, so the display keeps moving
while requests, retries and backoff waits are in flight and no record is transformed."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TextIO

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
)
from rich.text import Text

# Seconds between two plain log lines (README: "one plain line every 10 s").
LOG_INTERVAL = 10.0
# Seconds between two refreshes of the terminal display.
DISPLAY_TICK = 1.0


@dataclass
class Counters:
    """What a run reports as it goes.

    ``done``/``total`` count the phase's units: windows (extract), records (identity,
    load, write). In the load a record is done once it has its outcome: its event was
    accepted, dead-lettered or parked by Amplitude, or it was never to be sent
    (duplicate, identity record, skipped, rejected). ``sent`` counts events Amplitude
    accepted (or written to import files)."""

    phase: str = "starting"
    total: int = 0
    done: int = 0
    sent: int = 0
    retries: int = 0
    throttles: int = 0
    dead_letters: int = 0
    started: float = field(default_factory=time.monotonic)
    phase_started: float = field(default_factory=time.monotonic)
    _done_at_phase_start: int = 0
    _sent_at_phase_start: int = 0

    def begin(self, phase: str, total: int, done: int = 0) -> None:
        """A new phase: its own total, its own clock for rate and ETA. ``done``: units an
        earlier run did (a resume): shown as done, but not as this run's pace."""
        self.phase = phase
        self.total = total
        self.done = done
        self.phase_started = time.monotonic()
        self._done_at_phase_start = done
        self._sent_at_phase_start = self.sent

    def done_earlier(self, n: int) -> None:
        """``n`` more of the phase's units turned out to be done by an earlier run (a
        resume's delivered batches, skipped): the caller counts them in ``done``; they
        are not this run's pace."""
        self._done_at_phase_start += n

    def pace_from_now(self) -> None:
        """This run's own work starts now (a resume replays what earlier runs delivered
        first, for minutes on a big one): the clock of the rate and the ETA, and what
        counts as done before it."""
        self.phase_started = time.monotonic()
        self._done_at_phase_start = self.done
        self._sent_at_phase_start = self.sent

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rate(self) -> float:
        """Events sent per second since the phase began."""
        elapsed = time.monotonic() - self.phase_started
        sent = self.sent - self._sent_at_phase_start
        return sent / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at the phase's pace so far; None before any progress."""
        if self.total and self.done >= self.total:
            return 0.0
        elapsed = time.monotonic() - self.phase_started
        done = self.done - self._done_at_phase_start
        if not self.total or done <= 0 or elapsed <= 0:
            return None
        return (self.total - self.done) * elapsed / done


class Reporter(Protocol):
    def update(self, counters: Counters) -> None: ...
    def close(self, counters: Counters) -> None: ...


class NullReporter:
    tick = 0.0  # nothing to refresh

    def update(self, counters: Counters) -> None:
        return None

    def close(self, counters: Counters) -> None:
        return None


class LogReporter:
    """One line every ``interval`` seconds: greppable, no escape codes. Without a stream
    (stderr closed: ``sys.stderr`` is None) nothing is written: the run goes on."""

    def __init__(self, stream: TextIO | None = None, interval: float = LOG_INTERVAL) -> None:
        self.stream: TextIO | None = stream or sys.stderr
        self.interval = interval
        self.tick = min(DISPLAY_TICK, interval)  # often enough to keep the interval
        self._last: float | None = None

    def _line(self, c: Counters) -> str:
        eta = c.eta()
        return (
            f"mp2amp: t={c.elapsed():.1f}s phase={c.phase} "
            f"done={c.done}/{c.total} sent={c.sent} "
            f"rate={c.rate():.0f}/s retries={c.retries} throttles={c.throttles} "
            f"dead_letters={c.dead_letters} eta={'?' if eta is None else f'{eta:.0f}s'}"
        )

    def update(self, counters: Counters) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            self._print(self._line(counters))

    def close(self, counters: Counters) -> None:
        if self._last is None:  # a run refused by its checks: its error is the only line
            return
        self._print(self._line(counters))

    def _print(self, line: str) -> None:
        if self.stream is None:  # print(file=None) would write to stdout, the result's
            return
        try:
            print(line, file=self.stream, flush=True)
        except (OSError, ValueError):  # its reader is gone (a broken pipe), or it is closed:
            self.stream = None         # the run goes on without progress lines


class _TwoLineProgress(Progress):
    """The bar on one line, the load's numbers on the next: both fit 80 columns."""

    def __init__(self, *columns: str | ProgressColumn, **kwargs: Any) -> None:
        self.detail = Text()  # before the first draw, which may come from the constructor
        super().__init__(*columns, **kwargs)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield self.detail


class _SecondsColumn(ProgressColumn):
    """A time from the task's field ``name`` (seconds; None: not known yet), as h:mm:ss.

    The run's elapsed time and ``Counters.eta()``, not rich's per-task ones: rich stops a
    task's clock when the task reaches its total, so a phase after a finished one
    with the same total (identity -> load on a resume) showed ETA 0:00:00 and a frozen
    clock; and the log lines and the bar now agree."""

    def __init__(self, name: str, style: str, *, round_up: bool = False) -> None:
        super().__init__()
        self.name = name
        self.style = style
        self.round_up = round_up  # an ETA: 0:00:00 only once nothing is left

    def render(self, task: Task) -> Text:
        seconds = task.fields.get(self.name)
        if seconds is None or not math.isfinite(seconds):
            return Text("-:--:--", style=self.style)
        whole = math.ceil(seconds) if self.round_up else int(seconds)
        # a display error stops the run (the ticker's rule): never past timedelta's range
        return Text(str(timedelta(seconds=min(max(0, whole), _LONGEST))), style=self.style)


_LONGEST = 10**10  # seconds (~317 years): an ETA from a pace of almost nothing


class RichReporter:
    """A live bar with events/s, ETA, retries, throttles and dead letters.

    Drawn only when ``update`` is called (no refresh thread): ``ticking`` calls it every
    ``tick`` seconds, the pipeline also after each chunk (at most every 0.1 s drawn)."""

    def __init__(self, console: Console | None = None, tick: float = DISPLAY_TICK) -> None:
        self.tick = tick
        self._progress = _TwoLineProgress(
            TextColumn("[bold]{task.fields[phase]}"),
            BarColumn(),
            MofNCompleteColumn(),
            _SecondsColumn("elapsed", "progress.elapsed"),
            TextColumn("ETA"),
            _SecondsColumn("eta", "progress.remaining", round_up=True),
            console=console or Console(stderr=True),
            transient=False,
            auto_refresh=False,
        )
        self._task = self._progress.add_task("run", total=None, phase="starting",
                                             elapsed=0.0, eta=None)
        self._phase = "starting"
        self._since = 0.0  # the display's clock at its first update: the run's elapsed time
        self._drawn = 0.0
        # started at the first update: a run refused by its checks draws no bar and never
        # hides the terminal's cursor
        self._started = False

    def update(self, counters: Counters) -> None:
        clock = self._progress.get_time
        if not self._started:
            self._started = True
            self._since = clock()
            self._progress.start()
        if counters.phase != self._phase:  # rich's "finished" (the bar's style) is per task
            self._phase = counters.phase
            self._progress.reset(self._task, total=counters.total or None,
                                 completed=counters.done)
        self._progress.update(self._task, total=counters.total or None,
                              completed=counters.done, phase=counters.phase,
                              elapsed=clock() - self._since, eta=counters.eta())
        self._progress.detail = Text(
            f"  sent {counters.sent} · {counters.rate():.0f} ev/s · retries {counters.retries}"
            f" · throttles {counters.throttles} · dead letters {counters.dead_letters}",
            no_wrap=True, overflow="ellipsis")
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._drawn = now
            self._progress.refresh()

    def close(self, counters: Counters) -> None:
        if not self._started:  # nothing was drawn: nothing to close (the cursor is shown)
            return
        self.update(counters)
        self._progress.refresh()
        self._progress.stop()


class Ticker:
    """Set ``sample`` to a function that copies live numbers into the counters."""

    def __init__(self) -> None:
        self.sample: Callable[[], None] | None = None

    def refresh(self) -> None:
        if self.sample is not None:
            self.sample()


@asynccontextmanager
async def ticking(reporter: Reporter, counters: Counters,
                  period: float | None = None) -> AsyncIterator[Ticker]:
    """Refresh ``reporter`` every ``period`` seconds (default: its ``tick``) while the body
    runs. The task is cancelled and awaited on every way out; an error of the reporter
    stops the run (the body is cancelled and the error raised in its place), as it
    would if the body itself had called ``update``."""
    ticker = Ticker()
    if period is None:
        period = float(getattr(reporter, "tick", DISPLAY_TICK))
    if period <= 0:
        yield ticker
        return
    body = asyncio.current_task()
    failure: list[BaseException] = []

    async def tick() -> None:
        try:
            while True:
                await asyncio.sleep(period)
                ticker.refresh()
                reporter.update(counters)
        except Exception as exc:
            failure.append(exc)
            if body is not None:
                body.cancel()

    task = asyncio.create_task(tick(), name="mp2amp-progress")

    async def stop() -> None:
        task.cancel()
        try:
            await asyncio.gather(task, return_exceptions=True)
        except asyncio.CancelledError:
            if not failure:  # cancelled from outside (Ctrl-C): keep going out
                raise
        if failure and body is not None and body.cancelling():
            body.uncancel()  # the cancel was ours, to surface the reporter's error

    try:
        yield ticker
    except asyncio.CancelledError:
        await stop()
        if failure:
            raise failure[0] from None
        raise
    except BaseException:
        await stop()
        raise
    await stop()
    if failure:
        raise failure[0]


def choose_reporter(quiet: bool, stream: TextIO | None = None,
                    interval: float = LOG_INTERVAL) -> Reporter:
    """Rich on a terminal, log lines elsewhere, nothing when quiet or when there is no
    stderr (``2>&-``, some daemon launchers: Python sets ``sys.stderr`` to None)."""
    out = stream or sys.stderr
    if quiet or out is None:
        return NullReporter()
    # TERM=dumb (Emacs shells, some CI consoles): rich draws no live display there until
    # the run ends, so such a terminal gets the plain lines
    if out.isatty() and os.environ.get("TERM", "").lower() != "dumb":
        return RichReporter()
    return LogReporter(out, interval)
