"""Seeded export faults: the ways real Mixpanel exports break.

* ``terminated_early`` - the body ends with the plain-text line ``terminated early``
  after some records (what mixpanel-utils and Airbyte have seen).
* ``drop``  - the connection is cut mid-stream, halfway through the record after
  ``after_lines``: no final chunk, the client sees an incomplete body.
* ``split`` - one record is broken across two lines (Airbyte joins such lines back).

Each export request draws once from a seeded RNG: with probability ``fail_rate`` it gets
one fault of a kind drawn from ``kinds``, placed after ``after_lines`` lines (or a seeded
position in the first 100). ``queue`` forces the faults of the next requests in order,
so a test can ask for exactly one dropped connection. Everything can be changed at
runtime through ``POST /_emulator/faults``.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mp2amp.emulators.mixpanel.config import FAULT_KINDS

TERMINATED_EARLY_LINE = b"terminated early\n"


@dataclass(frozen=True, slots=True)
class FaultPlan:
    kind: str
    after_lines: int


class FaultError(ValueError):
    """A fault setting from the control endpoint is invalid."""


class FaultInjector:
    def __init__(
        self,
        fail_rate: float,
        seed: int,
        kinds: Sequence[str],
        after_lines: int | None,
    ) -> None:
        self.fail_rate = fail_rate
        self.seed = seed
        self.kinds = list(kinds)
        self.after_lines = after_lines
        self._rng = random.Random(seed)
        self._queue: deque[FaultPlan] = deque()
        self.injected: Counter[str] = Counter()

    def next_plan(self) -> FaultPlan | None:
        """The fault for the next export request, if any (consumes one RNG draw)."""
        if self._queue:
            return self._queue.popleft()
        if self.fail_rate <= 0 or not self.kinds or self._rng.random() >= self.fail_rate:
            return None
        kind = self._rng.choice(self.kinds)
        return FaultPlan(kind, self._position())

    def _position(self) -> int:
        return self.after_lines if self.after_lines is not None else self._rng.randint(1, 100)

    def configure(self, body: Any) -> None:
        """Apply ``POST /_emulator/faults``: fail_rate, seed, kinds, after_lines, queue."""
        if not isinstance(body, dict):
            raise FaultError("expected a JSON object")
        unknown = set(body) - {"fail_rate", "seed", "kinds", "after_lines", "queue"}
        if unknown:
            raise FaultError(f"unknown fields {sorted(unknown)}")
        rate = body.get("fail_rate", self.fail_rate)
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise FaultError(f"fail_rate must be a number between 0 and 1, got {rate!r}")
        kinds = body.get("kinds", self.kinds)
        queue = body.get("queue", [])
        for name, value in (("kinds", kinds), ("queue", queue)):
            if not isinstance(value, list) or any(k not in FAULT_KINDS for k in value):
                raise FaultError(f"{name} must be a list drawn from {list(FAULT_KINDS)}")
        after = body.get("after_lines", self.after_lines)
        if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 0):
            raise FaultError(f"after_lines must be a non-negative integer or null, got {after!r}")
        seed = body.get("seed", self.seed)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise FaultError(f"seed must be an integer, got {seed!r}")
        self.fail_rate = float(rate)
        self.kinds = list(kinds)
        self.after_lines = after
        if "seed" in body:
            self.seed = seed
            self._rng = random.Random(seed)
        for kind in queue:
            self._queue.append(FaultPlan(kind, self._position()))

    def describe(self) -> dict[str, Any]:
        return {
            "fail_rate": self.fail_rate,
            "seed": self.seed,
            "kinds": list(self.kinds),
            "after_lines": self.after_lines,
            "queued": [plan.kind for plan in self._queue],
            "injected": dict(self.injected),
        }


def split_line(line: bytes, rng: random.Random) -> bytes:
    """Break one JSON line in two at a seeded character position (keeps UTF-8 intact)."""
    text = line.rstrip(b"\n").decode("utf-8", errors="surrogateescape")
    if len(text) < 2:
        return line
    cut = rng.randint(1, len(text) - 1)
    head, tail = text[:cut], text[cut:]
    return (head + "\n" + tail + "\n").encode("utf-8", errors="surrogateescape")
