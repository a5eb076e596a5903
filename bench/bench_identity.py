"""Identity stage: observe (pass 1), resolve (pass 2), spill to SQLite, memory per ID.

Synthetic people, each with a device that first browses anonymously and then logs in,
so records look like a Simplified/Original ID Merge export: per person a few anonymous
events, a login (original: an ``$identify``) and identified events. Resolve is measured
over every record, in the order read, against a plain ``dict.get`` loop over the same
records (the cheapest possible lookup) as the baseline.
"""

from __future__ import annotations

import gc
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from mp2amp.identity import IdentityGraph

EVENTS_PER_PERSON = 8


def _records(people: int, mode: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    t = 1_700_000_000.0
    for i in range(people):
        device = f"{i:08x}-5d1c-4c7e-9a3b-{i:012x}"
        user = f"u_{i * 7919:010x}"
        anon_dist = "$device:" + device if mode == "simplified" else device
        anon = {"distinct_id": anon_dist, "$device_id": device}
        known = {"distinct_id": user, "$device_id": device, "$user_id": user}
        for k in range(EVENTS_PER_PERSON):
            t += 1.5
            props = dict(anon if k < 3 else known)
            props["time"] = t
            out.append({"event": "Page View", "properties": props})
        if mode == "original":
            out.append({"event": "$identify", "properties": {
                "time": t, "distinct_id": user, "$anon_distinct_id": device,
                "$device_id": device, "$user_id": user}})
    return out


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _run_graph(mode: str, records: list[dict[str, Any]], budget: int,
               workdir: Path) -> tuple[float, float, float, IdentityGraph]:
    graph = IdentityGraph(mode, workdir, memory_budget_ids=budget)
    started = time.perf_counter()
    for rec in records:
        graph.observe(rec)
    observed = time.perf_counter()
    graph.finish()
    finished = time.perf_counter()
    resolve = graph.resolve
    for rec in records:
        resolve(rec["properties"])
    resolved = time.perf_counter()
    return observed - started, finished - observed, resolved - finished, graph


def _baseline_lookup(records: list[dict[str, Any]]) -> float:
    table = {r["properties"]["$device_id"]: r["properties"].get("$user_id") for r in records}
    started = time.perf_counter()
    get = table.get
    for rec in records:
        get(rec["properties"].get("$device_id"))
    return time.perf_counter() - started


def _python_bytes_per_id(mode: str, records: list[dict[str, Any]], budget: int,
                         workdir: Path) -> tuple[float, int]:
    """Peak Python heap of observe+finish (tracemalloc), per distinct ID; and the ID count."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    graph = IdentityGraph(mode, workdir, memory_budget_ids=budget)
    for rec in records:
        graph.observe(rec)
    graph.finish()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ids = max(graph.report.ids, 1)
    graph.close()
    return (peak - before) / ids, ids


def run(quick: bool) -> list[dict[str, Any]]:
    people = 5_000 if quick else 100_000
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for mode in ("simplified", "original"):
            records = _records(people, mode)
            base = _baseline_lookup(records)
            obs, fin, res, graph = _run_graph(mode, records, 10 * people + 10, root / mode)
            ids = graph.report.ids
            graph.close()
            rows.append({"name": f"identity {mode}: resolve, in memory", "unit": "events/s",
                         "value": _rate(len(records), res),
                         "baseline": _rate(len(records), base),
                         "goal": "well under 2 µs per event (> 500k/s); baseline: bare dict.get"})
            rows.append({"name": f"identity {mode}: observe (pass 1), in memory", "unit": "records/s",
                         "value": _rate(len(records), obs),
                         "goal": "faster than the transform (>= 100k/s)"})
            rows.append({"name": f"identity {mode}: finish, in memory", "unit": "ids/s",
                         "value": _rate(ids, fin), "goal": "seconds for millions of IDs"})
            budget = max(ids // 100, 1)  # 1 % of the IDs fit in memory: spill at once
            obs_s, fin_s, res_s, spilled = _run_graph(mode, records, budget, root / f"{mode}-spill")
            assert spilled.report.spilled
            spilled.close()
            rows.append({"name": f"identity {mode}: observe+finish, spilled to SQLite",
                         "unit": "ids/s", "value": _rate(ids, obs_s + fin_s),
                         "baseline": _rate(ids, obs + fin),
                         "goal": "50M IDs in under an hour (>= 14k ids/s); baseline: in memory"})
            rows.append({"name": f"identity {mode}: resolve, spilled to SQLite", "unit": "events/s",
                         "value": _rate(len(records), res_s),
                         "baseline": _rate(len(records), res), "goal": "baseline: in memory"})
            per_id, _ = _python_bytes_per_id(mode, records, 10 * people + 10, root / f"{mode}-mem")
            rows.append({"name": f"identity {mode}: peak Python heap per ID, in memory", "unit": "bytes",
                         "value": per_id,
                         "goal": "budget 2M IDs in memory; past it memory stays flat"})
            # Growth per extra ID when spilled (peak heap at two sizes): what 50M IDs cost.
            half = records[: len(records) // 2]
            small, small_ids = _python_bytes_per_id(mode, half, budget, root / f"{mode}-s1")
            large, large_ids = _python_bytes_per_id(mode, records, budget, root / f"{mode}-s2")
            slope = (large * large_ids - small * small_ids) / max(large_ids - small_ids, 1)
            rows.append({"name": f"identity {mode}: Python heap growth per ID, spilled",
                         "unit": "bytes", "value": slope,
                         "goal": "x 50M IDs fits in 24 GB (< 200 bytes/ID)"})
    return rows


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
