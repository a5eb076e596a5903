"""Run every benchmark under bench/ and print one table.

Each ``bench/bench_*.py`` module defines ``run(quick: bool) -> list[Row]`` where a row is a
dict with ``name``, ``value``, ``unit`` and optionally ``baseline`` (same unit, measured in
the same run) and ``goal`` (text). Ratios are computed here, so every claim in the table is
a comparison made on this machine in this run, never a number remembered from elsewhere.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = pathlib.Path(__file__).parent


def _load(path: pathlib.Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="substring filter on benchmark file names")
    parser.add_argument("--quick", action="store_true", help="smaller inputs (smoke run)")
    args = parser.parse_args()
    table = Table(title="mp2amp benchmarks (this machine, this run)")
    for col in ("benchmark", "measured", "baseline", "ratio", "goal", "seconds"):
        table.add_column(col)
    for path in sorted(HERE.glob("bench_*.py")):
        if args.only and not any(s in path.name for s in args.only):
            continue
        started = time.perf_counter()
        rows = _load(path).run(args.quick)
        took = time.perf_counter() - started
        for row in rows:
            base = row.get("baseline")
            ratio = f"{row['value'] / base:.2f}x" if base else ""
            table.add_row(
                row["name"],
                f"{row['value']:,.0f} {row['unit']}",
                f"{base:,.0f} {row['unit']}" if base else "",
                ratio,
                row.get("goal", ""),
                f"{took:.1f}",
            )
    Console(width=max(160, Console().width)).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
