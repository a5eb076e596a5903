"""Invariants of the identity graph, checked on generated record streams (hypothesis)."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mp2amp.identity import IdentityGraph, is_junk_id
from mp2amp.models import Resolved

IDS = ["u1", "u2", "u3", "acct-7", "$device:d1", "d1", "d2", "undefined", "",
       "0f8fad5b-d9cb-469f-a165-70867728950e", "7c9e6679-7425-40de-944b-e07fc1f90ae7"]
ident = st.sampled_from(IDS)
maybe = st.one_of(st.none(), ident)
times = st.integers(min_value=0, max_value=5)  # few values: many ties


def _props(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


identify = st.builds(lambda u, a, t, js: {"event": "$identify", "properties": _props(
    time=t, **({"distinct_id": u, "$anon_distinct_id": a} if js else
               {"$identified_id": u, "$anon_id": a}))}, ident, ident, times, st.booleans())
alias = st.builds(lambda a, d, t: {"event": "$create_alias", "properties": _props(
    time=t, alias=a, distinct_id=d)}, ident, ident, times)
merge = st.builds(lambda ids, t: {"event": "$merge", "properties": {"time": t, "$distinct_ids": ids}},
                  st.lists(ident, min_size=2, max_size=3), times)
plain = st.builds(lambda d, u, dev, b, t: {"event": "Page", "properties": _props(
    time=t, distinct_id=d, **{"$user_id": u, "$device_id": dev,
                              "$distinct_id_before_identity": b})}, maybe, maybe, maybe, maybe, times)
record = st.one_of(identify, alias, merge, plain)
streams = st.lists(record, max_size=25)
MERGE_ONLY = st.lists(st.one_of(alias, merge), max_size=25)

PROBES = [_props(distinct_id=i) for i in IDS] + [{"$device_id": i} for i in IDS] + [
    {"$user_id": i} for i in IDS]


def _run(mode: str, records: list[dict[str, Any]], **kwargs: Any) -> list[Resolved]:
    with tempfile.TemporaryDirectory() as tmp:
        graph = IdentityGraph(mode, Path(tmp), **kwargs)
        for rec in records:
            graph.observe(rec)
        graph.finish()
        out = [graph.resolve(p) for p in PROBES + [r["properties"] for r in records]]
        graph.close()
    return out


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(streams, st.randoms(use_true_random=False), st.sampled_from(["simplified", "original"]))
def test_file_order_does_not_matter(records: list[dict[str, Any]], rnd: Any, mode: str) -> None:
    shuffled = list(records)
    rnd.shuffle(shuffled)
    forward = _run(mode, records)
    backward = _run(mode, shuffled)
    # resolve outputs are per record; compare probes and each record's own result
    assert forward[: len(PROBES)] == backward[: len(PROBES)]
    by_record = dict(zip(map(id, records), forward[len(PROBES):], strict=True))
    for rec, got in zip(shuffled, backward[len(PROBES):], strict=True):
        assert by_record[id(rec)] == got


@SETTINGS
@given(streams, st.sampled_from(["simplified", "original"]), st.booleans())
def test_spilling_to_sqlite_changes_nothing(records: list[dict[str, Any]], mode: str,
                                            retroactive: bool) -> None:
    assert _run(mode, records, retroactive=retroactive) == _run(
        mode, records, retroactive=retroactive, memory_budget_ids=1)


@SETTINGS
@given(MERGE_ONLY, st.integers(min_value=2, max_value=4))
def test_cluster_cap_is_respected(records: list[dict[str, Any]], cap: int) -> None:
    results = _run("original", records, cluster_cap=cap)
    # one probe per graph node ("$device:d1" and "d1" are the same node)
    nodes = [r for i, r in zip(IDS, results, strict=False) if i != "$device:d1"]
    per_user = Counter(r.user_id for r in nodes if r.user_id is not None)
    assert all(count <= cap for count in per_user.values())


@SETTINGS
@given(streams, st.lists(st.dictionaries(
    st.sampled_from(["distinct_id", "$user_id", "$device_id", "$distinct_id_before_identity",
                     "mp_original_distinct_id", "time"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
              st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2),
                                                                   st.integers(), max_size=2)),
), max_size=10), st.sampled_from(["simplified", "original"]))
def test_resolve_is_total_and_never_returns_junk(
    records: list[dict[str, Any]], odd: list[dict[str, Any]], mode: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        graph = IdentityGraph(mode, Path(tmp))
        for rec in records + [{"event": "odd", "properties": p} for p in odd]:
            graph.observe(rec)
        graph.finish()
        for props in odd + PROBES:
            got = graph.resolve(props)
            for value in (got.user_id, got.device_id):
                assert value is None or (isinstance(value, str) and not is_junk_id(value))
        graph.close()
