"""A generated project (both ID-merge modes, dirty) against its truth/event_person.tsv.gz."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from mp2amp.extract.files import iter_records
from mp2amp.generate.project import GenerateConfig, generate_project
from mp2amp.identity import IdentityGraph


def _truth(root: Path) -> dict[str, tuple[str | None, str | None]]:
    out: dict[str, tuple[str | None, str | None]] = {}
    with gzip.open(root / "truth" / "event_person.tsv.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            key, user, device = line.rstrip("\n").split("\t")
            out[key] = (user or None, device or None)
    return out


def _key(root: Path, source: str, line: int, props: dict[str, Any],
         truth: dict[str, Any]) -> str:
    """The truth's key of a record: its line's for an event without an ``$insert_id`` or
    one that reuses an earlier distinct event's (the generator's dirt), else the id."""
    at = f"@{Path(source).relative_to(root).as_posix()}:{line}"
    iid = props.get("$insert_id")
    if at in truth or not (isinstance(iid, str) and iid):
        return at
    return iid


CASES = [  # (mode, memory budget, use the project's Data Pipelines identity table)
    ("simplified", 2_000_000, False), ("simplified", 50, False), ("simplified", 2_000_000, True),
    ("original", 2_000_000, False), ("original", 50, False), ("original", 50, True),
]


@pytest.mark.parametrize(("mode", "budget", "table"), CASES)
def test_every_generated_event_goes_to_the_right_person(
    tmp_path: Path, mode: str, budget: int, table: bool
) -> None:
    root = tmp_path / "project"
    # the spilled runs also use project-local (legacy) export times
    generate_project(GenerateConfig(out=root, users=250, days=6, seed=7, id_merge=mode,
                                    dirty=0.02, legacy_time=budget == 50))
    files = sorted(str(p) for p in (root / "events").glob("*.jsonl.gz"))
    records = [r for r in iter_records(files) if isinstance(r.record, dict)]
    mappings = root / "identity" / "mappings.jsonl.gz" if table else None
    graph = IdentityGraph(mode, tmp_path / "work", memory_budget_ids=budget, table=mappings)
    identity = sum(graph.observe(r.record) for r in records)
    report = graph.finish()
    truth = _truth(root)
    checked: set[str] = set()
    wrong: list[str] = []
    for rec in records:
        assert rec.record is not None
        props = rec.record["properties"]
        key = _key(root, rec.source, rec.line, props, truth)
        if key not in truth:
            continue  # identity events are not in the truth
        got = graph.resolve(props)
        checked.add(key)
        if (got.user_id, got.device_id) != truth[key]:
            wrong.append(f"{key}: got {got.user_id!r}/{got.device_id!r}, truth {truth[key]}")
    graph.close()
    assert wrong == []
    assert checked == set(truth)  # every truth line was read and checked
    assert identity == sum(report.identity_records.values())
    if table:
        assert report.table_rows > 0
    if mode == "simplified":
        assert identity == 0  # the generator writes no identity events in simplified projects
    else:
        assert report.identity_records.get("$identify", 0) > 0
    assert report.spilled is (budget == 50)
