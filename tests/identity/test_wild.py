"""Every real record in shared/fixtures/wild goes through both passes of both modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.identity import IdentityGraph, is_junk_id

WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"
FILES = ["mixpanel-export-events.jsonl", "mixpanel-ingestion-payloads.jsonl",
         "mixpanel-engage-profiles.jsonl", "amplitude-export-events.jsonl",
         "amplitude-httpv2-requests.jsonl"]

pytestmark = pytest.mark.skipif(not WILD.is_dir(), reason="shared/fixtures/wild not present")


def _records() -> list[Any]:
    out: list[Any] = []
    for name in FILES:
        for line in (WILD / name).read_bytes().splitlines():
            if line.strip():
                parsed = orjson.loads(line)
                out.extend(parsed if isinstance(parsed, list) else [parsed])
    return out


def _graph(mode: str, tmp_path: Path, budget: int) -> tuple[IdentityGraph, dict[str, Any]]:
    graph = IdentityGraph(mode, tmp_path / mode, memory_budget_ids=budget)
    records = _records()
    identity = [r for r in records if graph.observe(r)]
    graph.finish()
    by_insert: dict[str, Any] = {}
    for rec in records:
        props = rec.get("properties") if isinstance(rec, dict) else None
        got = graph.resolve(props if isinstance(props, dict) else (rec if isinstance(rec, dict) else {}))
        for value in (got.user_id, got.device_id):
            assert value is None or not is_junk_id(value)
        if isinstance(props, dict) and isinstance(props.get("$insert_id"), str):
            by_insert.setdefault(props["$insert_id"] + "|" + str(rec.get("event")),
                                 (got.user_id, got.device_id))
    assert [r["event"] for r in identity] == ["$identify", "$create_alias", "$create_alias",
                                              "$merge", "$merge", "$create_alias", "$merge"]
    return graph, by_insert


@pytest.mark.parametrize("budget", [2_000_000, 1])
@pytest.mark.parametrize("mode", ["simplified", "original"])
def test_wild_records(tmp_path: Path, mode: str, budget: int) -> None:
    graph, got = _graph(mode, tmp_path, budget)
    report = graph.report
    assert report.records_observed == 38  # event records; profiles and Amplitude lines ignored
    # iOS (swift): distinct_id == $device_id, never identified -> anonymous device
    assert got["f9c260a69955289f|Accept user agreement"] == (
        None, "849DBA18-C0AB-4A49-9A23-B5434834A238")
    # react-native: $user_id with a device
    assert got["9cc62d387de6241f|Install"] == ("77473", "cb95b742-e130-4eab-80a3-081051291893")
    # Segment Actions: Mongo ObjectId user
    assert got["75ddda7c-ba47-41e0-9578-7d3afaf05284|FETCH_RELEASE_NOTES"] == (
        "609ce8fb4092701c69df9846", None)
    # mixpanel-js 2.47 anonymous page view: cookie-style device id from $device:
    device = "18b4e0ca3e2427-0b87eda4203b97-17525634-1fa400-18b4e0ca3e2427"
    assert got["ppa4er6r6l4r8ek5|page enter"] == (None, device)
    # docs records without any distinct_id: no usable ID (the transform rejects them)
    assert got["ABCDE|Signed up"] == (None, None)
    # e-mail distinct_id
    assert got["36a92782-cd7d-41a0-93af-8c23ec6c4191|Signed up"] == ("hotshard@mixpanel.com", None)
    if mode == "simplified":
        # Segment's UUID distinct_id without $device_id: a user ID by the backward-compat rule
        assert got["c5eed127-c747-59c8-a5ed-d766f48e39a4|Viewed E-commerce Page"] == (
            "1d694fd9-31a5-4b99-9eef-ae63112063ed", None)
        assert report.links == 4
    else:
        # original: an unlinked UUID distinct_id is an anonymous device
        assert got["c5eed127-c747-59c8-a5ed-d766f48e39a4|Viewed E-commerce Page"] == (
            None, "1d694fd9-31a5-4b99-9eef-ae63112063ed")
        # $merge ["test_user_id", "5094f5704b9cf2b3"]: the Android ID is not the user
        assert graph.resolve({"distinct_id": "5094f5704b9cf2b3"}).user_id == "test_user_id"
        # $create_alias {distinct_id: <uuid>, alias: "1234abc"}: the alias is the user
        uuid = "e6ab2c5e-2cda-44a9-a962-e2f67df78bca"
        assert (graph.resolve({"distinct_id": uuid}).user_id,
                graph.resolve({"distinct_id": uuid}).device_id) == ("1234abc", uuid)
        # documented $identify payload
        assert graph.resolve({"distinct_id": "ORIGINAL_ANON_ID"}).user_id == "YOUR_CHOSEN_USER_ID"
        assert graph.resolve({"distinct_id": "d2"}).user_id == "d1"  # $merge of two plain IDs
    # simplified-doc pair: "Sign Up" links device anonymous111 to charlie
    assert graph.resolve({"distinct_id": "$device:anonymous111"}).user_id == "charlie"
    assert report.spilled is (budget == 1)
    graph.close()
