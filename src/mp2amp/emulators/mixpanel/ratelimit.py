"""Sliding-window rate limits plus a concurrency cap, as Mixpanel applies them per project.

The clock is injected so that tests move time instead of sleeping. Only admitted
requests count toward the windows: a request answered 429 does not use up quota.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused and when it may be retried."""

    reason: str
    retry_after: int


class Admission:
    """A granted slot: release it when the request (or its stream) is done."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._in_flight -= 1


class RateLimiter:
    """``windows`` is a list of (max requests, window seconds); ``concurrent`` caps in-flight."""

    def __init__(
        self,
        windows: list[tuple[int | None, float, str]],
        concurrent: int | None,
        clock: Callable[[], float],
    ) -> None:
        self._windows = [(n, span, label) for n, span, label in windows if n is not None]
        self._concurrent = concurrent
        self._clock = clock
        self._stamps: deque[float] = deque()
        self._in_flight = 0
        self._longest = max((span for _, span, _ in self._windows), default=0.0)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def configure(
        self, windows: list[tuple[int | None, float, str]], concurrent: int | None
    ) -> None:
        self._windows = [(n, span, label) for n, span, label in windows if n is not None]
        self._concurrent = concurrent
        self._longest = max((span for _, span, _ in self._windows), default=0.0)

    def reset(self) -> None:
        self._stamps.clear()

    def try_acquire(self) -> Admission | Refusal:
        now = self._clock()
        while self._stamps and self._stamps[0] <= now - self._longest:
            self._stamps.popleft()
        # every exhausted limit is checked: the answer waits out the longest of them, so
        # that a client honouring Retry-After is not refused again by another one
        worst: Refusal | None = None
        if self._concurrent is not None and self._in_flight >= self._concurrent:
            worst = Refusal(f"a maximum of {self._concurrent} concurrent queries", 1)
        for limit, span, label in self._windows:
            recent = [t for t in self._stamps if t > now - span]
            if len(recent) >= limit:
                # the window has room again once recent[-limit] leaves it
                wait = max(1, math.ceil(recent[-limit] + span - now))
                if worst is None or wait > worst.retry_after:
                    worst = Refusal(f"{limit} queries per {label}", wait)
        if worst is not None:
            return worst
        self._stamps.append(now)
        self._in_flight += 1
        return Admission(self)


class VolumeLimiter:
    """Rolling-minute volume caps (ingestion: events and uncompressed bytes per minute).

    Either cap may be None (not applied); a request over either one is refused.
    """

    def __init__(
        self, per_minute: int | None, clock: Callable[[], float], bytes_per_minute: int | None = None
    ) -> None:
        self.per_minute = per_minute
        self.bytes_per_minute = bytes_per_minute
        self._clock = clock
        self._entries: deque[tuple[float, int, int]] = deque()
        self._total = 0
        self._bytes = 0

    def try_take(self, amount: int, size: int = 0) -> int | None:
        """Record ``amount`` events of ``size`` bytes; None when admitted, else seconds to wait."""
        if self.per_minute is None and self.bytes_per_minute is None:
            return None
        now = self._clock()
        while self._entries and self._entries[0][0] <= now - 60.0:
            _, events, nbytes = self._entries.popleft()
            self._total -= events
            self._bytes -= nbytes
        over_events = self.per_minute is not None and self._total + amount > self.per_minute
        over_bytes = self.bytes_per_minute is not None and self._bytes + size > self.bytes_per_minute
        if over_events or over_bytes:
            return self._wait_to_fit(amount, size, now)
        self._entries.append((now, amount, size))
        self._total += amount
        self._bytes += size
        return None

    def _wait_to_fit(self, amount: int, size: int, now: float) -> int:
        """Seconds until enough old entries have left the minute for this batch to fit
        under both caps (not just until the oldest leaves: the retry would be refused)."""
        events, nbytes = self._total, self._bytes
        leaves = now + 60.0  # an empty window: the batch alone is over a cap, never fits
        for stamp, n, b in self._entries:
            events -= n
            nbytes -= b
            leaves = stamp + 60.0
            fits_events = self.per_minute is None or events + amount <= self.per_minute
            fits_bytes = self.bytes_per_minute is None or nbytes + size <= self.bytes_per_minute
            if fits_events and fits_bytes:
                break
        # a batch over a cap on its own never fits: a wait for the empty window is all there is
        return max(1, math.ceil(leaves - now))
