"""Generator throughput on one core: events written per CPU second, end to end (plan the
people, build records, dirt, orjson, gzip level 1, truth), against a baseline of bare
``orjson.dumps`` of the same number of small dicts (the floor any JSON-writing generator
pays). A second row is the same run with ``--no-gzip``; a third times zlib level 1 alone on the very bytes the generator wrote: the
ceiling that gzip output puts on any generator of records this size.

CPU time (``time.process_time``), not wall time: the machine is shared, and "one core" is
the claim. Goal from the issue: >= 200k events/s (10M events in under a minute).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import orjson

from mp2amp.generate import GenerateConfig, generate_project


def _baseline(count: int) -> float:
    started = time.process_time()
    dumps = orjson.dumps
    for i in range(count):
        dumps({"event": "Product Viewed", "properties": {"time": 1704208953 + i, "distinct_id": "u_1",
                                                          "$insert_id": "w27ujgern2yifp43", "price": 57.94}})
    return count / (time.process_time() - started)


def _gzip_only(root: Path, records: int) -> float:
    blobs = [gzip.decompress(p.read_bytes()) for p in sorted((root / "events").glob("*.gz"))]
    started = time.process_time()
    for blob in blobs:
        packer = zlib.compressobj(1, zlib.DEFLATED, 31)
        packer.compress(blob)
        packer.flush()
    return records / (time.process_time() - started)


def run(quick: bool) -> list[dict[str, Any]]:
    users, days = (2_000, 7) if quick else (20_000, 14)
    workdir = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        started = time.process_time()
        result = generate_project(GenerateConfig(out=workdir / "project", users=users, days=days))
        took = time.process_time() - started
        gzip_rate = _gzip_only(workdir / "project", result.records_written)
        started = time.process_time()
        generate_project(GenerateConfig(out=workdir / "plain", users=users, days=days, gzip=False))
        plain_rate = result.records_written / (time.process_time() - started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rate = result.records_written / took
    return [
        {"name": f"generate events/CPU-s ({result.records_written:,} records)", "value": rate,
         "unit": "events/s", "baseline": _baseline(result.records_written),
         "goal": ">= 200k events/s; baseline = bare orjson.dumps of small dicts"},
        {"name": "generate --no-gzip (same records, plain .jsonl)", "value": plain_rate,
         "unit": "events/s", "baseline": rate, "goal": ">= 200k events/s; baseline = with gzip"},
        {"name": "zlib level 1 alone on the same bytes", "value": gzip_rate, "unit": "events/s",
         "baseline": rate, "goal": "ceiling for gzip output; ratio = headroom over generate"},
    ]


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
