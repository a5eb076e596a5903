"""IDs longer than Amplitude takes (1024 characters) are held as ID keys (``junk.id_key``):
the identity stage's memory does not grow with their length, linking through them still
works, in memory and spilled alike, and an event resolved to one still drops it as over
the limit (session 21 review: distinct 100 KB distinct_ids grew migrate to 315 MB)."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.identity import IdentityGraph, clean_id, junk
from mp2amp.identity.ids import identity_view, strip_device
from mp2amp.identity.junk import KEPT_ID, id_key
from shared_kit import clean_env

BUDGETS = [2_000_000, 1]  # in memory; spilled to SQLite from the first link
T0 = 1_700_000_000
LONG = "x" * 100_000


def _long(i: int) -> str:
    return f"{i:06d}{LONG}"


def _ev(event: str, i: int, **props: Any) -> dict[str, Any]:
    return {"event": event, "properties": {"time": T0 + i, **props}}


def _graph(tmp: Path, mode: str, records: list[dict[str, Any]], budget: int) -> IdentityGraph:
    graph = IdentityGraph(mode, tmp / f"{mode}-{budget}", memory_budget_ids=budget)
    for record in records:
        graph.observe(record)
    graph.finish()
    return graph


# --- the key ---------------------------------------------------------------------------------


def test_an_overlong_id_is_held_as_a_fixed_size_key_still_over_the_limit() -> None:
    first, second = clean_id(_long(1)), clean_id(_long(1) + "y")
    assert first is not None and second is not None
    assert len(first) == len(second) == KEPT_ID > 1024  # never usable, as the ID itself
    assert first.startswith(_long(1)[:1024]) and first != second  # same start, two IDs
    assert clean_id(_long(1)) == first  # deterministic
    assert clean_id(first) == first  # a key is its own key
    # an ID up to the key's length is kept whole, as before
    assert clean_id("u" * KEPT_ID) == "u" * KEPT_ID
    assert clean_id("u" * (KEPT_ID + 1)) != "u" * (KEPT_ID + 1)
    # junk however long stays junk
    assert clean_id(" " * 5000) is None and clean_id("{{" + "a" * 5000 + "}}") is None


def test_a_device_prefixed_overlong_id_keys_to_the_same_device() -> None:
    raw = _long(7)
    keyed = clean_id("$device:" + raw)
    assert keyed is not None and keyed.startswith("$device:")
    assert strip_device(keyed) == clean_id(raw) == id_key(raw)
    assert clean_id(keyed) == keyed


def test_overlong_ids_do_not_fill_the_usable_id_cache() -> None:
    junk.forget_usable_ids()
    for i in range(50):
        clean_id(_long(i))
    assert not junk._GOOD  # its bound counts entries: 100 KB ones would be 1.6 GB full
    assert clean_id("user-1") == "user-1" and "user-1" in junk._GOOD


def _outcome(work: Path, mode: str, observed: list[Any], records: list[dict[str, Any]],
             budget: int) -> tuple[dict[str, Any], list[tuple[str | None, str | None]]]:
    graph = IdentityGraph(mode, work, memory_budget_ids=budget)
    for record in observed:
        graph.observe(record)
    report = graph.finish().as_dict()
    got = [graph.resolve(r["properties"]) for r in records]
    graph.close()
    return report, [(r.user_id, r.device_id) for r in got]


def test_a_staged_view_holds_keys_and_builds_the_same_graph(tmp_path: Path) -> None:
    records = [
        _ev("$identify", 1, **{"$identified_id": _long(1), "$anon_id": "$device:" + _long(2)}),
        _ev("A", 2, distinct_id="$device:" + _long(2)),
        _ev("$merge", 3, **{"$distinct_ids": [_long(1), "legacy-1", 5, None]}),
        _ev("A", 4, distinct_id="legacy-1", **{"$user_id": " " * 5000}),  # junk: counted
        _ev("A", 5, distinct_id=_long(6), **{"$device_id": "dev-6", "$user_id": _long(7)}),
        _ev("A", 6, distinct_id="dev-6", time="0" * 5000 + "1700000000"),  # not an ID: kept
    ]
    views = [orjson.loads(orjson.dumps(identity_view(r))) for r in records]  # as staged
    assert max(len(orjson.dumps(v)) for v in views[:5]) < 3 * KEPT_ID
    assert views[3]["properties"]["$user_id"] == ""
    assert views[5]["properties"]["time"] == records[5]["properties"]["time"]
    for mode in ("simplified", "original"):
        for budget in BUDGETS:
            want = _outcome(tmp_path / f"{mode}{budget}r", mode, records, records, budget)
            got = _outcome(tmp_path / f"{mode}{budget}v", mode, views, records, budget)
            assert got == want
            assert want[0]["junk_ids"] == {"$user_id": 1}


# --- linking through an overlong ID, in memory and spilled -------------------------------


@pytest.mark.parametrize("budget", BUDGETS)
def test_original_links_through_an_overlong_id(tmp_path: Path, budget: int) -> None:
    blob = _long(3)
    records = [
        _ev("$identify", 1, **{"$identified_id": blob, "$anon_id": "dev-a"}),
        _ev("$identify", 2, **{"$identified_id": blob, "$anon_id": "dev-b"}),
        _ev("A", 3, distinct_id="dev-a", **{"$device_id": "dev-a"}),
        _ev("A", 4, distinct_id="dev-b", **{"$device_id": "dev-b"}),
        _ev("A", 5, distinct_id=blob),
    ]
    graph = _graph(tmp_path, "original", records, budget)
    got = [graph.resolve(r["properties"]) for r in records[2:]]
    # one cluster: its user is the blob's key (dropped as over the limit by the transform)
    assert {r.user_id for r in got} == {id_key(blob)}
    assert [r.device_id for r in got] == ["dev-a", "dev-b", None]
    assert graph.report.ids == 3 and graph.report.clusters == 1
    assert graph.report.spilled is (budget == 1)


@pytest.mark.parametrize("budget", BUDGETS)
def test_simplified_links_a_device_to_an_overlong_user_id(tmp_path: Path,
                                                           budget: int) -> None:
    blob = _long(4)
    records = [
        _ev("A", 1, distinct_id=blob, **{"$user_id": blob, "$device_id": "dev-a"}),
        _ev("A", 2, distinct_id="$device:dev-a", **{"$device_id": "dev-a"}),
        _ev("A", 3, distinct_id=_long(5), **{"$device_id": "dev-b"}),
    ]
    graph = _graph(tmp_path, "simplified", records, budget)
    got = [(r.user_id, r.device_id) for r in (graph.resolve(e["properties"]) for e in records)]
    assert got == [(id_key(blob), "dev-a"), (id_key(blob), "dev-a"), (id_key(_long(5)), "dev-b")]
    assert graph.report.spilled is (budget == 1)


# --- memory ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["simplified", "original"])
def test_distinct_overlong_ids_do_not_grow_the_identity_stage(tmp_path: Path,
                                                              mode: str) -> None:
    n = 200  # each with a 100 KB distinct_id and $user_id: 20 MB held whole before
    graph = IdentityGraph(mode, tmp_path)

    def record(i: int) -> dict[str, Any]:  # built per use: the input is not held here
        blob = _long(i)
        return _ev("A", i, distinct_id=blob, **{"$user_id": blob, "$device_id": f"d-{i}"})

    gc.collect()
    tracemalloc.start()
    try:
        for i in range(n):
            graph.observe(record(i))
        graph.finish()
        for i in range(n):
            resolved = graph.resolve(record(i)["properties"])
            assert resolved.user_id == id_key(_long(i))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        graph.close()
    assert held < 2_000_000, f"{held} bytes held for {n} distinct 100 KB IDs"


# --- an event resolved to a key: the ID dropped as over the limit, as before ----------------


@pytest.mark.parametrize("id_merge", ["simplified", "original"])
def test_transform_drops_an_overlong_id_and_sends_the_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, id_merge: str) -> None:
    clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    blob = _long(9)
    records = [
        _ev("$identify", 1, **{"$identified_id": blob, "$anon_id": "dev-a"}),
        _ev("A", 2, distinct_id="dev-a", **{"$device_id": "dev-a", "$insert_id": "i2"}),
        _ev("A", 3, distinct_id=blob, **{"$device_id": "dev-b", "$insert_id": "i3"}),
        _ev("A", 4, distinct_id=blob, **{"$insert_id": "i4"}),  # no usable ID left
    ]
    (tmp_path / "mp2amp.toml").write_text(f'[mixpanel]\nid_merge = "{id_merge}"\n'
                                          'timezone = "UTC"\n')
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    result = CliRunner().invoke(app, ["transform", "in.jsonl", "--out", "out.jsonl", "--json"])
    assert result.exit_code == 0, result.output
    events = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [(e.get("user_id"), e["device_id"]) for e in events] == [(None, "dev-a"),
                                                                    (None, "dev-b")]
    rejects = (tmp_path / "out.jsonl.rejects.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x)["reason"] for x in rejects] == ["invalid_id"]
    summary = orjson.loads(result.stdout)
    # Original ID Merge: dev-a's event resolves to its cluster's user, the blob, dropped too
    over = {"simplified": 1, "original": 2}[id_merge]
    assert summary["values"]["other"] == {"user_id_over_limit": over}


@pytest.mark.parametrize("budget", BUDGETS)
def test_an_overlong_shared_device_is_known_as_shared(tmp_path: Path, budget: int) -> None:
    device = _long(11)
    records = [_ev("A", 1, **{"$user_id": "alice", "$device_id": device}),
               _ev("A", 2, **{"$user_id": "bob", "$device_id": device})]
    graph = _graph(tmp_path, "simplified", records, budget)
    assert graph.shared_device(device)  # as the privacy rules ask it: the listed text
    assert not graph.shared_device(_long(12))
    assert graph.report.shared_device_examples == [id_key(device)]


@pytest.mark.parametrize("id_merge", ["simplified", "original"])
def test_an_excluded_overlong_id_excludes_its_cluster(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, id_merge: str) -> None:
    clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    blob = _long(13)
    records = [
        _ev("A", 1, distinct_id=blob, **{"$user_id": blob, "$device_id": "dev-a",
                                         "$insert_id": "i1"}),
        _ev("A", 2, distinct_id="$device:dev-a", **{"$device_id": "dev-a", "$insert_id": "i2"}),
        _ev("A", 3, distinct_id="carol", **{"$insert_id": "i3"}),
    ]
    (tmp_path / "excluded.txt").write_text(blob + "\n")
    (tmp_path / "mp2amp.toml").write_text(
        f'[mixpanel]\nid_merge = "{id_merge}"\ntimezone = "UTC"\n'
        '[privacy]\nexclude_users = "excluded.txt"\n')
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    result = CliRunner().invoke(app, ["transform", "in.jsonl", "--out", "out.jsonl", "--json"])
    assert result.exit_code == 0, result.output
    events = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [e["user_id"] for e in events] == ["carol"]  # the device's event excluded too
