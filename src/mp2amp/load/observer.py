"""What the uploader tells its caller (the ledger) about every batch and every event.

Each submitted event ends in exactly one of: accepted (in ``on_batch_accepted``),
dead-lettered (``on_dead_letter``) or parked (``on_parked``, daily quota still exceeded at
the end of the run; a resume sends it again). Callbacks run on the event loop thread and
must be quick (a SQLite insert is fine); an exception in one stops the run.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from mp2amp.load.packed import Packed

Origin = tuple[str, int]  # (source file / URL / "export:2024-01-01", 1-based line)


@dataclass(slots=True, eq=False)
class Submitted:
    """One event inside the uploader: its serialized bytes, where it came from and where it
    goes. Only the bytes are kept (``event`` decodes them on demand): a Python dict of an
    event weighs several times its JSON, and thousands of events wait in the queues."""

    data: bytes               # the event serialized once (orjson); requests join these bytes
    origin: Origin
    batch_id: str
    device: str | None
    user: str | None
    lane: int
    park_attempts: int = 0    # daily-quota rounds this event has been through
    seq: int = 0              # submission order: a device's events must keep it
    packed: Packed | None = None  # while its batch waits compressed, ``data`` is empty
    slot: int = 0                 # and the event is this one of ``packed`` (packed.py)

    @property
    def event(self) -> dict[str, Any]:
        data = self.data if self.packed is None else self.packed.event_bytes(self.slot)
        value: dict[str, Any] = orjson.loads(data)
        return value

    @property
    def insert_id(self) -> str | None:
        value = self.event.get("insert_id")
        return value if isinstance(value, str) else None


def parked_key(item: Submitted) -> tuple[str, str]:
    """What a parked event holds back: its device, or its user when it has no device."""
    return ("d", item.device) if item.device is not None else ("u", item.user or "")


class LoadObserver(Protocol):
    def on_batch_sent(self, batch_id: str, n: int) -> None:
        """Before the first request carrying this batch leaves (``n`` events).

        Record it as in flight: after a crash, in-flight batches are sent again with the
        same insert_ids, which Amplitude deduplicates."""

    def on_batch_accepted(self, batch_id: str, events: Sequence[Submitted]) -> None:
        """Every event of the batch is settled; ``events`` are the ones Amplitude accepted
        (200). The others were reported through ``on_dead_letter`` / ``on_parked`` first."""

    def on_dead_letter(self, event: dict[str, Any], origin: Origin, reason: str,
                       message: str, batch_id: str | None = None) -> None:
        """Amplitude rejected this event for good (``reason`` is a code from
        ``responses.REASONS``); it is also in the dead-letter file. ``batch_id``: the batch
        it belongs to (None: it never made one), so that a crash before that batch is
        accepted lets the resume forget this outcome (the batch is sent again whole).
        Observers whose ``on_dead_letter`` takes no ``batch_id`` are called without it."""

    def on_parked(self, event: dict[str, Any], origin: Origin, reason: str,
                  batch_id: str) -> None:
        """Still over Amplitude's daily quota at the end of the run: not sent, not lost.
        Submit it again in a later run (``migrate --resume``). ``batch_id`` is the batch it
        belongs to: the parking counts only once that batch is reported accepted (a crash
        in between resends the whole batch)."""


class NullObserver:
    """Observer that records nothing (benchmarks, one-off uploads)."""

    def on_batch_sent(self, batch_id: str, n: int) -> None:
        return None

    def on_batch_accepted(self, batch_id: str, events: Sequence[Submitted]) -> None:
        return None

    def on_dead_letter(self, event: dict[str, Any], origin: Origin, reason: str,
                       message: str, batch_id: str | None = None) -> None:
        return None

    def on_parked(self, event: dict[str, Any], origin: Origin, reason: str,
                  batch_id: str) -> None:
        return None


def takes_batch_id(observer: LoadObserver) -> bool:
    """Whether ``observer.on_dead_letter`` takes ``batch_id`` (by name or ``**kwargs``):
    observers written before it was added are still called as they expect."""
    try:
        params = inspect.signature(observer.on_dead_letter).parameters.values()
    except (TypeError, ValueError):  # no signature to read: the old call is the safe one
        return False
    return any(p.name == "batch_id" or p.kind is p.VAR_KEYWORD for p in params)
