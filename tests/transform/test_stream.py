"""The transform chain: one outcome per record, in order, and a summary that adds up.

The mapping core is stood in by a small transformer with the same contract, so these tests
pin the chain's own behaviour (routing, dedup, sessions, counting); the real core runs in
the CLI tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.errors import InvariantViolation, Rejection
from mp2amp.identity import IdentityGraph
from mp2amp.models import (
    Duplicate,
    Emitted,
    IdentityRecord,
    Outcome,
    Rejected,
    Resolved,
    Skip,
    Skipped,
    SourceRecord,
)
from mp2amp.transform.dedup import Deduper
from mp2amp.transform.sessions import Sessionizer
from mp2amp.transform.stream import TransformSummary, transform_stream

T0 = 1_700_000_000


class StandIn:
    """Rejects events without time, skips "Heartbeat", otherwise a minimal Amplitude event."""

    raw_ms = 0  # the last event's source time, as the real transformer keeps it

    def event(self, record: dict[str, Any], ids: Resolved) -> dict[str, Any] | Rejection | Skip:
        props = record.get("properties")
        if not isinstance(props, dict):
            return Rejection("not_an_event", "no properties object", field="properties")
        if not isinstance(props.get("time"), int):
            return Rejection("missing_time", "the record has no time", field="properties.time")
        if record.get("event") == "Heartbeat":
            return Skip("plan.drop_event")
        if ids.user_id is None and ids.device_id is None:
            return Rejection("missing_id", "no usable ID")
        self.raw_ms = props["time"] * 1000
        return {"event_type": record["event"], "user_id": ids.user_id,
                "device_id": ids.device_id, "time": props["time"] * 1000,
                "insert_id": str(props.get("$insert_id", ""))}


def src(line: int, event: str | None, **props: Any) -> SourceRecord:
    record: dict[str, Any] = {"event": event, "properties": props}
    return SourceRecord("day1.jsonl", line, record)


def run(records: list[SourceRecord], tmp_path: Path) -> tuple[list[Outcome], TransformSummary]:
    summary = TransformSummary()
    with IdentityGraph("simplified", tmp_path) as graph:
        for r in records:
            if r.record is not None:
                graph.observe(r.record)
        graph.finish()
        outcomes = []
        with Sessionizer() as sessions, Deduper() as dedup:
            for outcome in transform_stream(summary.reading(records), graph, StandIn(),
                                            sessions, dedup):
                summary.add(outcome)
                outcomes.append(outcome)
    return outcomes, summary


def test_every_kind_of_outcome(tmp_path: Path) -> None:
    malformed = SourceRecord("day1.jsonl", 2, None,
                             Rejection("malformed_json", "line 2 is not valid JSON",
                                       record="{oops"))
    records = [
        src(1, "Login", distinct_id="$device:d-1", **{"$device_id": "d-1"}, time=T0,
            **{"$insert_id": "i1"}),
        malformed,
        src(3, "$identify", distinct_id="alice", **{"$anon_id": "d-1"}, time=T0),
        src(4, "Heartbeat", distinct_id="alice", time=T0),
        src(5, "Login", distinct_id="alice", **{"$user_id": "alice", "$device_id": "d-1"},
            time=T0 + 60, **{"$insert_id": "i2"}),
        src(6, "Login", distinct_id="alice", **{"$user_id": "alice", "$device_id": "d-1"},
            time=T0 + 60, **{"$insert_id": "i2"}),
        src(7, "Login", distinct_id="alice"),
        SourceRecord("day1.jsonl", 8, {"event": "x", "properties": []}),
    ]
    outcomes, summary = run(records, tmp_path)
    assert [type(o) for o in outcomes] == [Emitted, Rejected, IdentityRecord, Skipped,
                                           Emitted, Duplicate, Rejected, Rejected]
    first, second = outcomes[0], outcomes[4]
    assert isinstance(first, Emitted) and isinstance(second, Emitted)
    # retroactive identity: the anonymous event carries the user it later logged in as
    assert first.event["user_id"] == "alice" and first.event["device_id"] == "d-1"
    assert first.event["session_id"] == second.event["session_id"] == T0 * 1000
    rejected = outcomes[1]
    assert isinstance(rejected, Rejected)
    assert (rejected.rejection.source, rejected.rejection.line) == ("day1.jsonl", 2)
    missing = outcomes[6]
    assert isinstance(missing, Rejected)
    assert missing.rejection.line == 7 and missing.rejection.record == records[6].record
    assert summary.as_dict() == {
        "records_read": 8, "events_out": 2, "identity_records": 1, "duplicates": 1,
        "skipped": {"plan.drop_event": 1},
        "rejected": {"malformed_json": 1, "missing_time": 1, "not_an_event": 1},
        "files": 1, "balanced": True,
    }
    summary.check()


def test_duplicate_of_a_rejected_record_counts_as_rejected(tmp_path: Path) -> None:
    records = [src(1, "Login", distinct_id="alice"), src(2, "Login", distinct_id="alice")]
    _, summary = run(records, tmp_path)
    assert summary.rejected == {"missing_time": 2} and summary.duplicates == 0


def test_unbalanced_summary_raises() -> None:
    summary = TransformSummary(records_read=3, events_out=1)
    summary.skipped["x"] += 1
    assert not summary.balanced
    with pytest.raises(InvariantViolation, match="read 3 records but accounted for 2"):
        summary.check()


def test_reading_counts_records_not_outcomes() -> None:
    summary = TransformSummary()
    records = [src(i, "e") for i in range(5)]
    assert list(summary.reading(records)) == records
    assert summary.records_read == 5 and summary.accounted == 0


record_strategy = st.one_of(
    st.builds(lambda i, e, d, t: src(i, e, distinct_id=d, time=t, **{"$insert_id": f"n{t}"}),
              st.integers(1, 9), st.sampled_from(["Login", "Heartbeat", "$identify", "$merge"]),
              st.sampled_from(["alice", "bob", "$device:d-1", "undefined", ""]),
              st.integers(T0, T0 + 7200) | st.none()),
    st.builds(lambda i: SourceRecord("f", i, None, Rejection("malformed_json", "bad")),
              st.integers(1, 9)),
    st.builds(lambda i, v: SourceRecord("f", i, {"event": "e", "properties": v}),
              st.integers(1, 9), st.none() | st.integers() | st.lists(st.integers())),
)


@given(records=st.lists(record_strategy, max_size=25))
@settings(max_examples=40, deadline=None)
def test_one_outcome_per_record_and_the_sum_holds(records: list[SourceRecord]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        outcomes, summary = run(records, Path(tmp))
    assert len(outcomes) == len(records)
    for record, outcome in zip(records, outcomes, strict=True):
        where = (outcome.rejection.source, outcome.rejection.line) if isinstance(
            outcome, Rejected) else (outcome.source, outcome.line)
        assert where == (record.source, record.line)
    assert summary.balanced and summary.records_read == len(records)


# --- the real mapping core in the chain ----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
real_records = st.builds(
    lambda i, name, who, t, extra: SourceRecord("f", i, {"event": name, "properties": {
        "distinct_id": who, "time": t, "$insert_id": f"i{t}", **extra}}),
    st.integers(1, 50),
    st.sampled_from(["Login", "Purchase", "$identify", "$mp_web_page_view", "", "[Amplitude] Revenue"]),
    st.sampled_from(["alice", "$device:dev-1", "bob", "null", 7, None]),
    st.integers(1_500_000_000, 1_800_000_000) | st.floats(1.5e9, 1.8e9) | st.text(max_size=4),
    st.dictionaries(st.sampled_from(["$os", "$browser", "mp_lib", "price", "x", "$city",
                                     "mp_country_code", "$device_id", "$user_id"]),
                    json_values, max_size=5),
)


@given(records=st.lists(real_records, max_size=20))
@settings(max_examples=40, deadline=None)
def test_real_core_one_outcome_each_and_valid_events(records: list[SourceRecord]) -> None:
    import tempfile

    from mp2amp.emulators.amplitude.validate import validate_events
    from mp2amp.transform import Transformer, TransformSettings

    summary = TransformSummary()
    with tempfile.TemporaryDirectory() as tmp, IdentityGraph("simplified", tmp) as graph, \
            Sessionizer() as sessions, Deduper() as dedup:
        for r in records:
            assert r.record is not None
            graph.observe(r.record)
        graph.finish()
        outcomes = list(transform_stream(summary.reading(records), graph,
                                         Transformer(TransformSettings()), sessions, dedup))
    for outcome in outcomes:
        summary.add(outcome)
    assert len(outcomes) == len(records) and summary.balanced
    events = [o.event for o in outcomes if isinstance(o, Emitted)]
    verdict = validate_events(events, min_id_length=1)
    assert verdict.ok, (verdict, events)
    assert all(isinstance(e["session_id"], int) and e["session_id"] > 0 for e in events)
