"""How ``[run] memory_budget`` is shared between the stages that keep per-ID state.

One number in the config; each stage gets its own cap from it here, so that the run's
peak memory is decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

DEDUP_IN_MEMORY = 200_000  # content digests in memory; the rest in SQLite behind a Bloom filter


@dataclass(frozen=True, slots=True)
class StageBudgets:
    identity_ids: int  # IDs the identity graph keeps in dicts before it spills to SQLite
    session_devices: int  # devices/users whose open session is kept in memory
    dedup_digests: int  # content digests held in memory by the deduplicator


def stage_budgets(memory_budget: int) -> StageBudgets:
    """Digests are one per event, so they would grow with the run up to the whole budget;
    past a small share they go to SQLite, where the usual case (not a duplicate) costs
    one Bloom look-up."""
    return StageBudgets(
        identity_ids=memory_budget,
        session_devices=memory_budget,
        dedup_digests=max(1_000, min(memory_budget, DEDUP_IN_MEMORY)),
    )
