"""How ``[run] memory_budget`` is shared between the stages that keep per-ID state.

One number in the config: the per-ID entries (IDs, devices, content digests) the run keeps
in memory, all stages together. Each stage gets its share here, so that the run's peak
memory is decided in one place; past its share a stage spills to SQLite, so memory stays
flat however many IDs the input has.

Measured on a generated 1M-event migration (~75k devices, ~110k distinct ID triples), an
entry costs about 250 bytes for the identity graph (a device, its user, the link's time),
200 for a session (key and two times) and 90 for a digest. Pass 2 reads events in time
order, so small in-memory shares mostly hit: with 50k sessions in memory, 8% of events
take a SQLite look-up, a few microseconds each.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StageBudgets:
    identity_ids: int  # IDs the identity graph keeps in dicts before it spills to SQLite
    session_devices: int  # devices/users whose open session is kept in memory
    dedup_digests: int  # content digests held in memory by the deduplicator


def stage_budgets(memory_budget: int) -> StageBudgets:
    """Half to the identity graph (its pass-1 links; pass 2 holds fewer), a quarter each to
    the open sessions and the content digests (the default, 200k, is ~40 MB in all)."""
    return StageBudgets(
        identity_ids=max(1_000, memory_budget // 2),
        session_devices=max(1_000, memory_budget // 4),
        dedup_digests=max(1_000, memory_budget // 4),
    )
