"""Client-side limiter for Mixpanel's Raw Export limits: N an hour, M a second, K at once.

Sliding windows over request *start* times, plus a shared pause set by a 429 or a
``Retry-After`` so that every worker backs off, not just the one that was told. A start
the server refused with a 429 is refunded: Mixpanel counts the queries it admitted.
Clock and sleep are injectable, so tests check the schedule without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from mp2amp.errors import RateLimited, TerminalError, TransientError

log = logging.getLogger("mp2amp.extract")

# A margin on each window: Mixpanel counts arrivals, we count departures, and a request
# that arrives "early" costs a 429 and a wait. Arrivals bunch up by the difference in
# connecting time: a soak on a loaded machine saw three new connections arrive >100 ms
# late and a fourth (1.100 s after the first departure) refused; a TLS handshake over the
# internet takes longer still. Half a second costs nothing next to 60 queries an hour.
HOUR = 3600.0 + 5.0
SECOND = 1.5
# A journal line that takes back the start written as the same text after the sign.
REFUND = "-"


@dataclass(frozen=True, slots=True)
class Start:
    """One admitted request start: its clock time and, when journaled, its journal text."""

    at: float
    journaled: str | None = None


class RateLimiter:
    def __init__(
        self,
        *,
        per_hour: int,
        per_second: int,
        max_concurrent: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        journal: Path | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.per_hour = per_hour
        self.per_second = per_second
        self.clock = clock
        self.sleep = sleep
        self._starts: deque[float] = deque()
        self._paused_until = 0.0
        self._admit = asyncio.Lock()
        self._running = asyncio.Semaphore(max_concurrent)
        self.waited = 0.0  # seconds spent waiting for the limits (reported by callers)
        self.answered = False  # the server answered a request of this run (any status)
        # Mixpanel counts the project's queries, not this process's: the start times (wall
        # clock) of a work folder's queries are kept, so a --resume right after a stop
        # counts its predecessor's last hour instead of drawing 429s.
        self._journal = journal
        self._wall = wall
        if journal is not None:
            self._resume_from(journal)

    def _resume_from(self, journal: Path) -> None:
        try:
            text = journal.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read %s (%s): earlier queries of this hour are not counted",
                        journal, exc)
            return
        now_wall, now = self._wall(), self.clock()
        words = text.split()
        refunded = Counter(w[len(REFUND):] for w in words if w.startswith(REFUND))
        recent: list[float] = []
        for word in words:
            if word.startswith(REFUND):
                continue
            if refunded[word] > 0:  # a start the server refused (429): not a query
                refunded[word] -= 1
                continue
            try:
                started = float(word)
            except ValueError:  # a line a kill cut short
                continue
            age = max(now_wall - started, 0.0)  # a clock set back: as if just now
            if age < HOUR:
                recent.append(age)
        self._starts.extend(now - age for age in sorted(recent, reverse=True))
        try:  # keep only the last hour's (the file would grow with every query)
            part = journal.with_name(journal.name + ".part")
            part.write_text("".join(f"{now_wall - age:.3f}\n"
                                    for age in sorted(recent, reverse=True)), encoding="ascii")
            part.replace(journal)
        except OSError:
            pass  # the longer file reads the same

    def _record(self, word: str) -> bool:
        """Append ``word`` as a journal line; whether it was written."""
        if self._journal is None:
            return False
        try:
            self._journal.parent.mkdir(parents=True, exist_ok=True)
            with open(self._journal, "a", encoding="ascii") as f:
                f.write(f"{word}\n")
        except OSError as exc:  # counting is a courtesy to the limit: never stop the run
            log.warning("cannot record Mixpanel export queries in %s (%s): a resume within "
                        "the hour may draw 429s (waited out)", self._journal, exc)
            self._journal = None
            return False
        return True

    def refund(self, start: Start) -> None:
        """Take back a start the server refused with a 429, or that never connected:
        Mixpanel counts only the queries it admitted, so a throttle or an outage must not
        use up the hour's budget."""
        with contextlib.suppress(ValueError):  # already out of the windows: nothing to do
            self._starts.remove(start.at)
        if start.journaled is not None:
            self._record(REFUND + start.journaled)

    def pause(self, seconds: float) -> None:
        """No request starts in the next ``seconds`` (the server asked us to back off)."""
        self._paused_until = max(self._paused_until, self.clock() + seconds)

    def delay_needed(self) -> float:
        """Seconds until one more request may start; 0 when it may start now."""
        now = self.clock()
        while self._starts and self._starts[0] <= now - HOUR:
            self._starts.popleft()
        wait = self._paused_until - now
        if len(self._starts) >= self.per_hour:
            wait = max(wait, self._starts[-self.per_hour] + HOUR - now)
        if len(self._starts) >= self.per_second:
            wait = max(wait, self._starts[-self.per_second] + SECOND - now)
        return max(wait, 0.0)

    async def acquire(self) -> Start:
        async with self._admit:
            while (wait := self.delay_needed()) > 0:
                if wait > 5:
                    log.info("Mixpanel export limit (%d/hour, %d/s): waiting %.0f s",
                             self.per_hour, self.per_second, wait)
                self.waited += wait
                await self.sleep(wait)
            start = self.clock()
            self._starts.append(start)
            word = f"{self._wall():.3f}"
            return Start(start, word if self._record(word) else None)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Start]:
        """Hold one of the concurrent slots for a whole request (stream included); the
        start is what ``refund`` takes back if the server answers 429."""
        async with self._running:
            yield await self.acquire()


MAX_RETRY_AFTER = 3600.0  # Mixpanel's longest limit is per hour: a longer ask is a proxy's


def backoff_delay(attempt: int, retry_after: float | None, base: float, cap: float) -> float:
    """Seconds before attempt ``attempt + 1``: jittered exponential backoff (so windows do
    not retry in lockstep), and at least the server's ``Retry-After`` when it gave one (at
    most an hour): a short one must not spend every attempt of an outage in seconds."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    backoff = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        return max(backoff, min(retry_after, MAX_RETRY_AFTER))
    return backoff


class RetriesSpent(TerminalError):
    """A unit of work used up its attempts (a Mixpanel outage, a throttle that never
    lifts): the run stops with exit 2, like Amplitude's ``RetriesExhausted``, and the
    message says how to continue; exit 1 is kept for a window that does not add up."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # the last throttle's ask, when it gave one


class RetryBudget:
    """How long to wait after a transient error of one unit of work (a window, a page), or
    the error that stops it. A 429 is the server saying "later", not a failure: several
    requests racing for one freed slot would otherwise use up ``max_attempts`` and stop a
    run that only had to wait, so throttles have their own, larger cap."""

    def __init__(self, what: str, max_attempts: int, max_rate_limited: int,
                 base: float, cap: float, then: str = "run again") -> None:
        self.what = what
        self.then = then  # what the user does once the budget is spent
        self.max_attempts, self.max_rate_limited = max_attempts, max_rate_limited
        self.base, self.cap = base, cap
        self.failures = self.throttled = 0

    def delay(self, exc: TransientError) -> float:
        """Seconds to wait before trying again; raises ``RetriesSpent`` (the run stops) when
        this error uses the budget up."""
        if isinstance(exc, RateLimited):
            self.throttled += 1
            if self.throttled >= self.max_rate_limited:
                raise RetriesSpent(f"{self.what} was throttled {self.throttled} times, giving "
                                   f"up for now (last: {_last(exc)}); {self.then} later to "
                                   "continue where it stopped", retry_after=exc.retry_after
                                   ) from exc
            if exc.retry_after is not None:  # the server said how long: exactly that
                return min(exc.retry_after, MAX_RETRY_AFTER)
            tries = self.throttled
        else:
            self.failures += 1
            if self.failures >= self.max_attempts:
                raise RetriesSpent(f"{self.what} failed {self.failures} times, giving up for "
                                   f"now (last: {_last(exc)}); {self.then} to continue "
                                   "where it stopped") from exc
            tries = self.failures
        return backoff_delay(tries, exc.retry_after, self.base, self.cap)


_PROMISE = re.compile(r"; (?:retrying with backoff|waiting and retrying|fetching the whole "
                      r"[^;()]*? again)")


def _last(exc: TransientError) -> str:
    """The last error's message without its "retrying" promise: the budget is spent."""
    return _PROMISE.sub("", str(exc))
