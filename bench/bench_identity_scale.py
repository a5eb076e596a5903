"""Identity at scale: N distinct IDs through the graph with a small memory budget.

The issue asks that 50M distinct IDs work on this machine (24 GB): the graph must spill
to SQLite and keep memory bounded. Records are streamed (never a list), one per person
linking a device to a user (simplified ID merge), so N IDs come from N/2 records; then
every record is resolved once. The baseline is the same loop with a plain dict holding
the same mapping in memory (which would not fit at full scale: it is measured on the
first 1M records only and reported as a rate).
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mp2amp.identity import IdentityGraph


def _records(people: int) -> Iterator[dict[str, Any]]:
    t = 1_700_000_000.0
    for i in range(people):
        device = f"{i:08x}-5d1c-4c7e-9a3b-{i:012x}"
        user = f"u_{i * 7919:012x}"
        yield {"event": "Login", "properties": {
            "time": t + i, "distinct_id": user, "$device_id": device, "$user_id": user}}


def _baseline(people: int) -> float:
    table: dict[str, str] = {}
    started = time.perf_counter()
    for rec in _records(people):
        p = rec["properties"]
        table[p["$device_id"]] = p["$user_id"]
    for rec in _records(people):
        table.get(rec["properties"]["$device_id"])
    return people / (time.perf_counter() - started)


def run(quick: bool) -> list[dict[str, Any]]:
    ids = 2_000_000 if quick else 50_000_000
    people = ids // 2
    budget = 500_000 if quick else 2_000_000
    with tempfile.TemporaryDirectory(prefix="bench-identity-") as tmp:
        started = time.perf_counter()
        with IdentityGraph("simplified", Path(tmp), memory_budget_ids=budget) as graph:
            for rec in _records(people):
                graph.observe(rec)
            graph.finish()
            observed = time.perf_counter()
            wrong = 0
            for rec in _records(people):
                p = rec["properties"]
                if graph.resolve(p).user_id != p["$user_id"]:
                    wrong += 1
            resolved = time.perf_counter()
        if wrong:
            raise AssertionError(f"{wrong} records resolved to the wrong user")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = _baseline(min(people, 1_000_000))
    return [
        {"name": f"identity observe+finish, {ids:,} IDs, budget {budget:,}",
         "value": people / (observed - started), "unit": "records/s", "baseline": base,
         "goal": "works (spills); baseline = in-memory dict"},
        {"name": f"identity resolve, {ids:,} IDs spilled", "value": people / (resolved - observed),
         "unit": "records/s", "baseline": base, "goal": "every record resolved right"},
        {"name": f"identity peak RSS, {ids:,} IDs", "value": peak_mb, "unit": "MB",
         "goal": f"bounded (total {resolved - started:.0f} s)"},
    ]
