"""Generator throughput on one core: events written per second, end to end (plan, build,
dirt, orjson, gzip level 1, truth), against a baseline of plain ``orjson.dumps`` of the same
number of small dicts (the floor any JSON-writing generator pays)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from mp2amp.generate import GenerateConfig, generate_project


def _baseline(count: int) -> float:
    started = time.perf_counter()
    dumps = orjson.dumps
    for i in range(count):
        dumps({"event": "Product Viewed", "properties": {"time": 1704208953 + i, "distinct_id": "u_1",
                                                          "$insert_id": "w27ujgern2yifp43", "price": 57.94}})
    return count / (time.perf_counter() - started)


def run(quick: bool) -> list[dict[str, Any]]:
    users, days = (2_000, 7) if quick else (20_000, 14)
    workdir = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        started = time.perf_counter()
        result = generate_project(GenerateConfig(out=workdir / "project", users=users, days=days))
        took = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rate = result.records_written / took
    return [{
        "name": f"generate events/s ({result.records_written:,} records, 1 core)",
        "value": rate, "unit": "events/s", "baseline": _baseline(result.records_written),
        "goal": ">= 200k events/s (10M events < 1 min); baseline = bare orjson.dumps of small dicts",
    }]


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
