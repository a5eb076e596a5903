"""An identity table folder holding part files that give no rows: an empty Spark
partition's file (plain or gzipped) or one of only junk-ID rows (skipped).

The conflict warning names each conflicting row's file by its index in reading order;
such a file must not shift the later files' names (it did: IndexError, the run died).
Each layout is loaded in memory and spilled to SQLite (``memory_budget_ids=1``)."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

if TYPE_CHECKING:
    from conftest import Kit

JUNK = [{"distinct_id": "undefined", "resolved_distinct_id": "q"},
        {"distinct_id": "p", "resolved_distinct_id": "null"}]
BUDGETS = {"in memory": 2_000_000, "spilled": 1}
Part = list[dict[str, str]] | str
Example = tuple[str, str, int, str, int, int]


def _rows(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"distinct_id": a, "resolved_distinct_id": b} for a, b in pairs]


def _folder(root: Path, parts: list[Part]) -> Path:
    """``part-<n>`` files in order; a string part is a special file: "gz" an empty gzip."""
    root.mkdir()
    for n, part in enumerate(parts):
        if part == "gz":
            (root / f"part-{n}").write_bytes(gzip.compress(b""))
        else:
            assert isinstance(part, list)
            (root / f"part-{n}").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in part))
    return root


# layouts: (parts, the example(s) the warning gives as (id, old, old part, new, new part,
# new line)); every one maps a -> c last
LAYOUTS: dict[str, tuple[list[Part], list[Example]]] = {
    "empty first": ([[], _rows([("a", "b")]), _rows([("a", "c")])],
                    [("a", "b", 1, "c", 2, 1)]),
    "empty middle": ([_rows([("a", "b")]), [], _rows([("a", "c")])],
                     [("a", "b", 0, "c", 2, 1)]),
    "empty last": ([_rows([("a", "b")]), _rows([("a", "c")]), []],
                   [("a", "b", 0, "c", 1, 1)]),
    "empty gzip first": (["gz", _rows([("a", "b")]), _rows([("a", "c")])],
                         [("a", "b", 1, "c", 2, 1)]),
    "junk only first": ([JUNK, _rows([("a", "b")]), _rows([("a", "c")])],
                        [("a", "b", 1, "c", 2, 1)]),
    "many gaps": ([[], _rows([("a", "b"), ("x", "y")]), JUNK, [], _rows([("a", "c")]), [],
                   _rows([("k", "k"), ("x", "z")]), []],
                  [("a", "b", 1, "c", 4, 1), ("x", "y", 1, "z", 6, 2)]),
}


@pytest.mark.parametrize("where", list(BUDGETS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_part_file_without_rows_does_not_shift_the_conflicts_file_names(
        kit: Kit, tmp_path: Path, caplog: pytest.LogCaptureFixture, layout: str,
        where: str) -> None:
    parts, examples = LAYOUTS[layout]
    table = _folder(tmp_path / "mp_identity_mappings_data", parts)
    with caplog.at_level(logging.WARNING, logger="mp2amp.identity"):
        graph = kit.build("simplified", [], table=table, memory_budget_ids=BUDGETS[where])
    report = graph.report
    # the row read last wins; the resolved IDs are clusters of their own
    users = {i: graph.resolve({"distinct_id": i}).user_id for i in ("a", "b", "c")}
    assert users == {"a": "c", "b": "b", "c": "c"}
    if layout == "many gaps":
        assert graph.resolve({"distinct_id": "x"}).user_id == "z"
    junk = sum(1 for part in parts if part is JUNK) * len(JUNK)
    rows = sum(len(p) for p in parts if isinstance(p, list) and p is not JUNK)
    assert (report.spilled, report.table_conflicts, report.table_rows,
            report.table_rows_skipped) == (where == "spilled", len(examples), rows, junk)
    warnings = [r.getMessage() for r in caplog.records if r.name == "mp2amp.identity"
                and "more than one resolved ID" in r.getMessage()]
    shown = "; ".join(f"{i} -> {old} ({table / f'part-{o}'}), then -> {new} "
                      f"({table / f'part-{n}'}:{line})"
                      for i, old, o, new, n, line in examples)
    assert len(warnings) == 1
    assert f"maps {len(examples)} ID(s) to more than one resolved ID (e.g. {shown}):" \
        in warnings[0]


@pytest.mark.parametrize("where", list(BUDGETS))
def test_a_table_of_only_empty_and_junk_parts_is_no_conflict(
        kit: Kit, tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str) -> None:
    """Guard: no rows at all loads an empty table (the events' graph answers), no warning."""
    table = _folder(tmp_path / "t", [[], JUNK, "gz", []])
    with caplog.at_level(logging.WARNING, logger="mp2amp.identity"):
        graph = kit.build("simplified", [kit.ev("E", {"distinct_id": "u"})], table=table,
                          memory_budget_ids=BUDGETS[where])
    assert graph.resolve({"distinct_id": "u"}).user_id == "u"
    assert (graph.report.table_rows, graph.report.table_rows_skipped,
            graph.report.table_conflicts) == (0, len(JUNK), 0)
    assert "more than one resolved ID" not in caplog.text
