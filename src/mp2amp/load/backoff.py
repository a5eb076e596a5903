"""Jittered exponential backoff that honours the server's ``Retry-After``.

Equal jitter: half the exponential step is fixed, half random, so retries of many
requests spread out (no thundering herd) yet never retry immediately. The random source
is injectable so tests are exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from mp2amp.load.responses import MAX_SERVER_WAIT


class RandomSource(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


@dataclass(slots=True)
class Backoff:
    base: float = 0.5          # seconds before the first retry (upper bound of its window)
    cap: float = 60.0          # no computed delay exceeds this
    max_retry_after: float = MAX_SERVER_WAIT  # a longer ask is clamped (misconfigured proxy)
    rng: RandomSource = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={self.base} cap={self.cap}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based).

        ``retry_after`` from the server is a floor: we never come back sooner than asked.
        """
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        step: float = min(self.cap, self.base * 2.0 ** min(attempt - 1, 62))
        computed = step / 2 + self.rng.uniform(0, step / 2)
        if retry_after is not None and retry_after > 0:
            return max(computed, min(retry_after, self.max_retry_after))
        return computed
