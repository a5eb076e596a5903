"""Pass-2 memory stays bounded (memo, look-up cache) and a spilled graph works in a fork."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mp2amp.identity import IdentityGraph, junk, store
from mp2amp.identity.store import CACHE_MAX, CACHE_MIN, cache_entries, page_cache_kib

if TYPE_CHECKING:
    from conftest import Kit


def _people(n: int, kit: Kit) -> list[dict[str, Any]]:
    """Per person: a login linking device and user, then an anonymous event of the device."""
    out = []
    for i in range(n):
        device, user = f"dev-{i:05d}", f"user-{i:05d}"
        out.append(kit.ev("Login", {"distinct_id": user, "$device_id": device,
                                    "$user_id": user}, t=1_000 + i))
        out.append(kit.ev("View", {"distinct_id": f"$device:{device}", "$device_id": device},
                          t=100_000 + i))
    return out


def test_cache_sizes_follow_the_budget_within_bounds() -> None:
    assert cache_entries(1) == CACHE_MIN
    assert cache_entries(10**9) == CACHE_MAX
    assert CACHE_MIN < cache_entries(100_000) < CACHE_MAX
    assert page_cache_kib(1) < page_cache_kib(2_000_000) <= page_cache_kib(10**9)


@pytest.mark.parametrize("budget", [16 * CACHE_MIN, 100])  # in memory, spilled
def test_memo_is_bounded_and_answers_do_not_change(kit: Kit, budget: int) -> None:
    records = _people(3 * CACHE_MIN, kit)
    graph = kit.build("simplified", records, memory_budget_ids=budget)
    assert graph.report.spilled is (budget == 100)
    for _ in range(2):  # the second round reads keys the memo has evicted
        for i, record in enumerate(records):
            user = f"user-{(i // 2):05d}"
            assert kit.ids(graph, record) == (user, f"dev-{(i // 2):05d}")
    memo_entries = len(graph._memo) + len(graph._memo_old)
    assert memo_entries <= 2 * graph.memo_entries < len(records)
    lookup = getattr(graph._mode, "lookup", None)
    if lookup is not None:
        assert len(lookup.cache) <= lookup.capacity < len(records)


def test_usable_id_cache_is_bounded_and_emptied_when_pass_1_ends(kit: Kit) -> None:
    # Small enough that every run fills it early (same memory at 1M as at 5M events), and
    # empty when pass 2 starts, so a forked transform worker does not start with a copy.
    assert junk._GOOD_MAX <= 16_384
    records = _people(junk._GOOD_MAX, kit)  # 3 distinct IDs a person: more than the cap
    graph = IdentityGraph("simplified", kit.workdir / "bounded-good")
    for record in records:
        graph.observe(record)
        assert len(junk._GOOD) <= junk._GOOD_MAX
    assert junk._GOOD
    graph.finish()
    assert not junk._GOOD
    for i, record in enumerate(records[:100]):
        assert kit.ids(graph, record) == (f"user-{(i // 2):05d}", f"dev-{(i // 2):05d}")
    graph.close()


def _resolve_all(graph: IdentityGraph, records: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(r.user_id, r.device_id) for r in (graph.resolve(x["properties"]) for x in records)]


_FORKED: tuple[IdentityGraph, list[dict[str, Any]]] | None = None


def _in_child() -> tuple[list[tuple[Any, Any]], bool]:
    assert _FORKED is not None
    graph = _FORKED[0]
    own = len(store._INHERITED) >= len(graph._dbs) > 0 and all(
        db.conn not in store._INHERITED for db in graph._dbs)
    return _resolve_all(*_FORKED), own


@pytest.mark.parametrize("mode", ["simplified", "original"])
def test_a_forked_process_reads_a_spilled_graph_on_its_own_connection(
    kit: Kit, tmp_path: Path, mode: str
) -> None:
    global _FORKED
    records = _people(200, kit)
    graph = kit.build(mode, records, memory_budget_ids=1)
    assert graph.report.spilled
    _FORKED = (graph, records)
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            child, own_connection = pool.submit(_in_child).result(timeout=60)
    finally:
        _FORKED = None
    assert own_connection  # SQLite: a connection must not be used across fork()
    assert child == _resolve_all(graph, records)  # and the parent's connection still works
    assert child[1] == ("user-00000", "dev-00000")


@pytest.mark.parametrize("mode", ["simplified", "original"])
def test_finishing_a_spilled_graph_streams_its_ids_and_links(kit: Kit, mode: str) -> None:
    # Past the budget, finish() reads IDs and links from SQLite row by row, never a list of
    # every row: a generator expression compiled by mypyc becomes one (the names of a
    # spilled original graph: ~130 bytes more per ID). Peak per ID here, pure Python and
    # compiled alike: simplified ~0, original 131-141 (union-find arrays, cluster choice).
    import tracemalloc

    people = 6_000
    graph = IdentityGraph(mode, kit.workdir / f"streams-{mode}", memory_budget_ids=100)
    kit.graphs.append(graph)
    for i in range(people):  # a user on three devices: 4 IDs and 3 links a person
        user = f"user-{i:05d}"
        for k in range(3):
            graph.observe(kit.ev("Login", {"distinct_id": user, "$user_id": user,
                                           "$device_id": f"dev-{i:05d}-{k}"}, t=1_000 + i))
    tracemalloc.start()
    try:
        graph.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert graph.report.spilled and graph.report.ids >= 4 * people
    limit = 20 if mode == "simplified" else 170
    assert peak / graph.report.ids < limit, f"{peak / graph.report.ids:.0f} bytes per ID"
