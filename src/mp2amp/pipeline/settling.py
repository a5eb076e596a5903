"""The stateful half of the load pass for a chunk of the transform worker's items.

``deliverable`` takes a chunk's items through the Settler in record order (dedup, sessions,
counts); ``replayed_values`` replays windows an earlier attempt wrote, for their counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mp2amp.config import Config
from mp2amp.identity import IdentityGraph
from mp2amp.models import Rejected
from mp2amp.pipeline.budgets import stage_budgets
from mp2amp.pipeline.dead_letters import RejectRow, reject_row
from mp2amp.pipeline.progress import Counters, Reporter
from mp2amp.pipeline.transform_worker import (
    EVENT,
    UNSERIALIZABLE,
    ChunkTransformer,
    Item,
    Settler,
)
from mp2amp.transform.dedup import Deduper
from mp2amp.transform.events import Transformer
from mp2amp.transform.sessions import Sessionizer
from mp2amp.transform.stream import TransformSummary


def deliverable(items: list[Item], settle: Settler, rejects: list[RejectRow],
                window_id: str) -> Iterator[tuple[bytes | None, Any, Item]]:
    """A chunk's items through the stateful half, in order: ``(data, None, item)`` for an
    event to deliver (its final bytes), ``(None, event, item)`` for one orjson cannot
    serialize (its dict, for the sink's dead letter). Duplicates, identity records,
    skips and rejections are counted in ``settle.summary``; rejections also go to
    ``rejects``."""
    summary = settle.summary
    for item in items:
        kind = item[0]
        if kind == EVENT:
            data = settle.event(item)
            if data is not None:
                yield data, None, item
        elif kind == UNSERIALIZABLE:
            event = settle.emitted(item[2], item[3] if len(item) > 3 else None)
            if event is not None:
                yield None, event, item
        else:
            outcome = item[2]
            summary.read(item[1])
            summary.add(outcome)
            if isinstance(outcome, Rejected):
                rejects.append(reject_row(outcome.rejection, window_id))


async def replayed_values(config: Config, windows: list[Any], graph: IdentityGraph,
                           transformer: Transformer, scratch: str, counters: Counters,
                           reporter: Reporter) -> dict[str, Any]:
    """The ``values`` report of windows an earlier attempt wrote: they are transformed
    and settled again (nothing is written), as the API path replays its loaded windows,
    so that a resumed run's report covers the whole migration: the Deduper takes a
    duplicate's counts back, as it did when the windows were written."""
    budgets = stage_budgets(config.run.memory_budget)
    with ChunkTransformer(graph, transformer, workers=config.run.transform_workers) as chunks, \
            Sessionizer(config.transform.session_gap_minutes * 60_000,
                        memory_budget=budgets.session_devices, spill_dir=scratch) as sessions, \
            Deduper(memory_budget=budgets.dedup_digests, spill_dir=scratch) as dedup:
        for w in windows:
            settle = Settler(dedup, sessions, TransformSummary())
            async for items in chunks.window(Path(str(w.staged_path))):
                for _ in deliverable(items, settle, [], w.window_id):
                    pass
                counters.done += len(items)
                reporter.update(counters)
        return chunks.stats()
