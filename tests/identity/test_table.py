from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from mp2amp.errors import InputError
from mp2amp.identity import IdentityGraph

if TYPE_CHECKING:
    from conftest import Kit

ROWS = [
    {"distinct_id": "$device:d1", "resolved_distinct_id": "alice"},
    {"distinct_id": "alice", "resolved_distinct_id": "alice"},
    {"distinct_id": "$device:d2", "resolved_distinct_id": "$device:d2"},  # never identified
    {"distinct_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "resolved_distinct_id": "bob"},
    {"distinct_id": "bob-old", "resolved_distinct_id": "bob"},
    {"distinct_id": "undefined", "resolved_distinct_id": "bob"},  # junk: skipped, counted
]


def _write(path: Path, rows: list[dict[str, object]], gz: bool) -> Path:
    data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize(("gz", "budget"), [(False, 2_000_000), (True, 1)])
def test_table_is_authoritative(kit: Kit, tmp_path: Path, gz: bool, budget: int) -> None:
    table = _write(tmp_path / ("map.jsonl.gz" if gz else "map.jsonl"), ROWS, gz)
    # The events alone would link d1 to mallory; the table says alice.
    events = [kit.ev("Login", {"$device_id": "d1", "$user_id": "mallory"}, t=1)]
    graph = kit.build("simplified", events, table=table, memory_budget_ids=budget)
    assert graph.resolve({"distinct_id": "$device:d1"}).user_id == "alice"
    assert graph.resolve({"$device_id": "d2"}).user_id is None
    uuid = graph.resolve({"distinct_id": "0f8fad5b-d9cb-469f-a165-70867728950e"})
    # Simplified ID Merge: a non-$device: distinct_id is a user ID whatever it looks like
    # (as without the table), so it is no device: bob's, with no device_id
    assert (uuid.user_id, uuid.device_id) == ("bob", None)
    assert graph.resolve({"distinct_id": "bob-old"}).user_id == "bob"
    # IDs missing from the table fall back to the event graph
    assert graph.resolve({"distinct_id": "carol"}).user_id == "carol"
    assert graph.report.table_rows == 5
    assert graph.report.table_rows_skipped == 1


def test_table_cluster_without_an_acceptable_resolved_id_picks_a_member(
    kit: Kit, tmp_path: Path
) -> None:
    rows = [{"distinct_id": "zoe", "resolved_distinct_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"},
            {"distinct_id": "$device:d9", "resolved_distinct_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}]
    graph = kit.build("original", [], table=_write(tmp_path / "t.jsonl", rows, False))
    assert graph.resolve({"distinct_id": "$device:d9"}).user_id == "zoe"


def test_malformed_table_is_reported_whole(kit: Kit, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"distinct_id": "a", "resolved_distinct_id": "b"}\n{oops\n[1]\n'
                     b'{"distinct_id": "c"}\n')
    graph = IdentityGraph("original", tmp_path / "w", table=path)
    with pytest.raises(InputError) as caught:
        graph.finish()
    message = str(caught.value)
    assert "3 malformed row(s)" in message
    assert f"{path}:2: not valid JSON" in message
    assert f"{path}:3: expected a JSON object" in message
    assert f"{path}:4: field resolved_distinct_id missing" in message
    graph.close()


def test_missing_table_file_is_a_clear_error(tmp_path: Path) -> None:
    graph = IdentityGraph("original", tmp_path / "w", table=tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="cannot read the identity mapping table"):
        graph.finish()
    graph.close()
