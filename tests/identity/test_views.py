"""The identity pass reads identity views (``identity_view``), not whole records: the
graph they build must be the graph the records build, in every mode."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.extract.files import iter_records
from mp2amp.generate.project import GenerateConfig, generate_project
from mp2amp.identity import IdentityGraph
from mp2amp.identity.ids import IDENTITY_PROPERTIES, identity_view

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "mp2amp" / "identity"
WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"


def _roundtrip(view: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if view is None else orjson.loads(orjson.dumps(view))  # as staging stores it


def _outcome(mode: str, records: list[Any], observed: list[Any], work: Path,
             budget: int) -> tuple[list[bool | None], dict[str, Any], list[tuple[Any, Any]]]:
    graph = IdentityGraph(mode, work, memory_budget_ids=budget)
    flags = [None if r is None else graph.observe(r) for r in observed]
    report = graph.finish().as_dict()
    resolved = []
    for rec in records:
        props = rec.get("properties") if isinstance(rec, dict) else None
        if isinstance(props, dict):
            got = graph.resolve(props)
            resolved.append((got.user_id, got.device_id))
    graph.close()
    return flags, report, resolved


def _check(records: list[Any], tmp_path: Path) -> None:
    views = [_roundtrip(identity_view(r)) for r in records]
    for mode in ("simplified", "original"):
        for budget in (2_000_000, 20):
            want = _outcome(mode, records, records, tmp_path / f"{mode}{budget}a", budget)
            got = _outcome(mode, records, views, tmp_path / f"{mode}{budget}b", budget)
            # a record without a view changes nothing: observe() ignores it (False)
            assert not any(f for f, v in zip(want[0], views, strict=True) if v is None)
            assert got[0] == [None if v is None else f
                              for f, v in zip(want[0], views, strict=True)]
            assert got[1] == want[1]
            assert got[2] == want[2]


def test_views_build_the_same_graph_on_a_dirty_generated_project(tmp_path: Path) -> None:
    for mode in ("simplified", "original"):
        root = tmp_path / f"project-{mode}"
        generate_project(GenerateConfig(out=root, users=120, days=4, seed=11, id_merge=mode,
                                        dirty=0.05))
        files = sorted(str(p) for p in (root / "events").glob("*.jsonl.gz"))
        records = [r.record for r in iter_records(files)]
        assert sum(r is not None for r in records) > 1000
        _check(records, tmp_path / mode)


@pytest.mark.skipif(not WILD.is_dir(), reason="shared/fixtures/wild not present")
def test_views_build_the_same_graph_on_every_wild_record(tmp_path: Path) -> None:
    records: list[Any] = []
    for path in sorted(WILD.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                parsed = orjson.loads(line)
                records.extend(parsed if isinstance(parsed, list) else [parsed])
    assert len(records) > 40
    _check(records, tmp_path)


def test_odd_records_have_no_view_and_views_keep_only_identity_fields() -> None:
    assert identity_view(None) is None
    assert identity_view([1, 2]) is None
    assert identity_view({"event": "x", "properties": "no"}) is None
    assert identity_view({"properties": {"distinct_id": "a", "other": 1}}) == {
        "event": None, "properties": {"distinct_id": "a"}}


def test_no_identity_module_reads_a_property_the_view_leaves_out() -> None:
    """A guard for whoever teaches a mode a new field: it must be in IDENTITY_PROPERTIES,
    or the identity pass would not see it (staged files carry views, not records)."""
    read: set[str] = set()
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        read.update(re.findall(r'props\.get\("([^"]+)"\)', text))
        read.update(re.findall(r'props\["([^"]+)"\]', text))
        read.update(re.findall(r'"([^"]+)" in props', text))
    read -= {"resolved_distinct_id"}  # the mapping table's rows, not event properties
    assert read, "the scan found nothing: the pattern is stale"
    assert read <= set(IDENTITY_PROPERTIES), sorted(read - set(IDENTITY_PROPERTIES))
