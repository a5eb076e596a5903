"""Injected failures for reliability tests, drawn from one seeded generator.

``fail_rate``: answer 500/502/503/504 before touching the request (nothing ingested).
``drop_after_ingest_rate``: store the events, then close the connection without an answer,
so the client sees an ambiguous failure for a request that did succeed.
``latency_ms``: wait this long before handling each API request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

FAIL_STATUSES = (500, 502, 503, 504)
FAIL_ERRORS = {
    500: "Internal server error", 502: "Bad gateway",
    503: "Service unavailable", 504: "Gateway timeout",
}


@dataclass
class Faults:
    fail_rate: float = 0.0
    latency_ms: float = 0.0
    drop_after_ingest_rate: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def failure(self) -> int | None:
        """A 5xx status to answer instead of handling the request, or None."""
        if self.fail_rate and self.rng.random() < self.fail_rate:
            return self.rng.choice(FAIL_STATUSES)
        return None

    def drop_after_ingest(self) -> bool:
        return bool(self.drop_after_ingest_rate) and self.rng.random() < self.drop_after_ingest_rate

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply a /_emulator/faults body; returns the problems (nothing changes if any)."""
        problems: list[str] = []
        known = {"fail_rate", "latency_ms", "drop_after_ingest_rate", "seed", "eps_limit",
                 "daily_quota"}
        for key, value in changes.items():
            if key not in known:
                problems.append(f"unknown fault setting {key!r} (known: {sorted(known)})")
            elif key in ("fail_rate", "drop_after_ingest_rate") and not (
                isinstance(value, int | float) and 0 <= value <= 1
            ):
                problems.append(f"{key} must be a number between 0 and 1")
            elif key == "latency_ms" and not (isinstance(value, int | float) and value >= 0):
                problems.append("latency_ms must be a number >= 0")
            elif key == "seed" and type(value) is not int:
                problems.append("seed must be an integer")
            elif key in ("eps_limit", "daily_quota") and value is not None and not (
                type(value) is int and value >= 1
            ):
                problems.append(f"{key} must be a positive integer (or null for the default)")
        if problems:
            return problems
        for key in ("fail_rate", "latency_ms", "drop_after_ingest_rate"):
            if key in changes:
                setattr(self, key, float(changes[key]))
        if "seed" in changes:
            self.seed = int(changes["seed"])
            self.rng = random.Random(self.seed)
        return []

    def to_json(self) -> dict[str, Any]:
        return {"fail_rate": self.fail_rate, "latency_ms": self.latency_ms,
                "drop_after_ingest_rate": self.drop_after_ingest_rate, "seed": self.seed}
