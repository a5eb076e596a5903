"""Cut a stream of serialized events into request-sized batches (pure, no I/O).

A batch is capped by event count and by the byte size of the JSON request it becomes.
Sizes are computed incrementally from each event's serialized bytes, so the request body
is never built just to be measured. The same stream with the same limits always yields
the same batches, which is what makes batch ids reproducible on resume.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

MAX_EVENTS = 2000                    # Amplitude: "The limit per batch is 2000 events"
BATCH_MAX_BYTES = 10 * 1024 * 1024   # Batch API allows 20 MB; half leaves headroom
# HTTP V2: "Keep request sizes under 1 MB", "request size exceeds 1MB" -> 413. A decimal
# MB, as the emulator counts it: 1 MiB would pay a 413 and a split on every full batch.
HTTPAPI_MAX_BYTES = 1_000_000
# Amplitude's request limits (413 above them): a byte cap past one would 413 all run long
REQUEST_LIMIT_BYTES = {"batch": 20_000_000, "httpapi": HTTPAPI_MAX_BYTES}
# {"api_key":"<key>","events":[...],"options":{"min_id_length":NNNNN}}: the envelope around
# the events. Reserved generously so that the events plus envelope never pass the cap.
ENVELOPE_BYTES = 512

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    max_events: int = MAX_EVENTS
    max_bytes: int = BATCH_MAX_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.max_events <= MAX_EVENTS:
            raise ValueError(f"max_events must be 1..{MAX_EVENTS}, got {self.max_events}")
        if self.max_bytes <= ENVELOPE_BYTES:
            raise ValueError(f"max_bytes must exceed {ENVELOPE_BYTES}, got {self.max_bytes}")

    @property
    def payload_bytes(self) -> int:
        """Bytes available for the events array (envelope reserved)."""
        return self.max_bytes - ENVELOPE_BYTES


def request_bytes(sizes: Iterable[int]) -> int:
    """Bytes of the events array holding events of these serialized sizes: `[a,b,c]`."""
    n = 0
    total = 2  # brackets
    for size in sizes:
        total += size
        n += 1
    return total + max(n - 1, 0)  # commas


@dataclass(slots=True)
class Batcher(Generic[T]):
    """Accumulates items with known serialized sizes; ``add`` returns a closed batch when full.

    An item larger than the byte cap on its own still forms a batch of one: the server
    decides (413), and the uploader dead-letters it as too large. Never an empty batch.
    """

    limits: Limits = field(default_factory=Limits)
    _items: list[T] = field(default_factory=list)
    _bytes: int = 2
    _cap: int = 0          # limits copied to plain ints: add() runs once per event
    _max: int = 0

    def __post_init__(self) -> None:
        self._cap = self.limits.payload_bytes
        self._max = self.limits.max_events

    def add(self, item: T, size: int) -> list[T] | None:
        """Add one item; returns the batch it closed (the items *before* it) if any."""
        items = self._items
        closed: list[T] | None = None
        if items:
            extra = size + 1
            if self._bytes + extra > self._cap:
                closed = self.flush()
                items = self._items
                extra = size
        else:
            extra = size
        items.append(item)
        self._bytes += extra
        # A byte cut leaves one item open, which reaches max_events only when it is 1,
        # and then the open list was already empty: at most one batch closes per add.
        if closed is None and len(items) >= self._max:
            closed = self.flush()
        return closed

    def flush(self) -> list[T] | None:
        """Close the open batch (``None`` when empty)."""
        if not self._items:
            return None
        out, self._items, self._bytes = self._items, [], 2
        return out

    def __len__(self) -> int:
        return len(self._items)

    @property
    def open_bytes(self) -> int:
        return self._bytes


def batches(sized: Iterable[tuple[T, int]], limits: Limits) -> Iterator[list[T]]:
    """All batches of a finite stream of (item, serialized size)."""
    b: Batcher[T] = Batcher(limits)
    for item, size in sized:
        closed = b.add(item, size)
        if closed is not None:
            yield closed
    tail = b.flush()
    if tail is not None:
        yield tail
