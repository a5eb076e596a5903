"""Generator throughput on one core: events written per CPU second, end to end (plan the
people, build records, dirt, splice the JSON, gzip through ISA-L, truth, profiles),
against a baseline of bare ``orjson.dumps`` of the same number of small dicts (the floor
any JSON-writing generator pays). A second row is the same run with ``--no-gzip``; then
each compressor alone on the very bytes the generator wrote: ISA-L level 1 (what the
generator uses: the ceiling gzip output puts on it) and zlib level 1 (what it used before).
One more row runs the same project from the ``.py`` sources in a subprocess
(``tools/pure_python.py``): what the mypyc build (``tools/compile_native.py``) buys.

CPU time (``time.process_time``), not wall time: the machine is shared, and "one core" is
the claim. Goal from the issue: >= 200k events/s (10M events in under a minute).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from isal import isal_zlib

import mp2amp.generate.planner
from mp2amp.generate import GenerateConfig, generate_project

COMPILED = str(mp2amp.generate.planner.__file__).endswith(
    sysconfig.get_config_var("EXT_SUFFIX") or ".so")
TOOLS = Path(__file__).resolve().parent.parent / "tools"
# The same generate_project from the .py sources (tools/pure_python.py), timed inside.
_PURE = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import pure_python
pure_python.install()
from mp2amp.generate import GenerateConfig, generate_project
started = time.process_time()
result = generate_project(GenerateConfig(out=Path(sys.argv[2]), users=int(sys.argv[3]),
                                         days=int(sys.argv[4])))
print(result.records_written / (time.process_time() - started))
"""


def _baseline(count: int) -> float:
    started = time.process_time()
    dumps = orjson.dumps
    for i in range(count):
        dumps({"event": "Product Viewed", "properties": {"time": 1704208953 + i, "distinct_id": "u_1",
                                                          "$insert_id": "w27ujgern2yifp43", "price": 57.94}})
    return count / (time.process_time() - started)


def _compress_only(blobs: list[bytes], records: int, compressobj: Callable[..., Any], deflated: int) -> float:
    started = time.process_time()
    for blob in blobs:
        packer = compressobj(1, deflated, 31)
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
        blobs = [gzip.decompress(p.read_bytes()) for p in sorted((workdir / "project/events").glob("*.gz"))]
        isal_rate = _compress_only(blobs, result.records_written, isal_zlib.compressobj, isal_zlib.DEFLATED)
        zlib_rate = _compress_only(blobs, result.records_written, zlib.compressobj, zlib.DEFLATED)
        del blobs
        started = time.process_time()
        generate_project(GenerateConfig(out=workdir / "plain", users=users, days=days, gzip=False))
        plain_rate = result.records_written / (time.process_time() - started)
        pure = subprocess.run([sys.executable, "-c", _PURE, str(TOOLS), str(workdir / "pure"),
                               str(users), str(days)], capture_output=True, text=True,
                              check=True)
        pure_rate = float(pure.stdout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rate = result.records_written / took
    return [
        {"name": f"generate events/CPU-s ({result.records_written:,} records, "
                 f"{'mypyc-compiled' if COMPILED else 'pure Python: no compiled build'})",
         "value": rate,
         "unit": "events/s", "baseline": _baseline(result.records_written),
         "goal": ">= 200k events/s; baseline = bare orjson.dumps of small dicts"},
        {"name": "generate --no-gzip (same records, plain .jsonl)", "value": plain_rate,
         "unit": "events/s", "baseline": rate, "goal": ">= 200k events/s; baseline = with gzip"},
        {"name": "generate from the .py sources (pure Python), same records", "value": pure_rate,
         "unit": "events/s", "baseline": rate,
         "goal": "what tools/compile_native.py buys; baseline = the first row"},
        {"name": "ISA-L gzip level 1 alone on the same bytes", "value": isal_rate, "unit": "events/s",
         "baseline": rate, "goal": "ceiling for gzip output (generate's compressor); ratio = headroom"},
        {"name": "zlib level 1 alone on the same bytes", "value": zlib_rate, "unit": "events/s",
         "baseline": rate, "goal": "the compressor generate used before ISA-L"},
    ]


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
