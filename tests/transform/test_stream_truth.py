"""The quality bar on generated dirty data: every record accounted for, the right person
behind every event, the right day for every event, same bytes on a re-run.

``mp2amp generate --dirty`` writes its ground truth (docs/contracts.md §1): the summary of
what it wrote (duplicates, malformed lines, junk IDs ...), the person behind every
generated event (truth/event_person.tsv.gz, keyed by ``$insert_id``, or ``@file:line`` for
events written without a usable one) and the daily counts per event a correct migration
sends. The whole chain (extract, identity, the mapping core, dedup, sessions) runs here.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.config import Config, load_config
from mp2amp.emulators.amplitude.validate import validate_events
from mp2amp.extract.files import iter_records
from mp2amp.generate import GenerateConfig, generate_project
from mp2amp.identity import IdentityGraph
from mp2amp.models import Emitted, Outcome
from mp2amp.transform.dedup import Deduper
from mp2amp.transform.events import Transformer
from mp2amp.transform.insert_id import mixpanel_insert_id
from mp2amp.transform.offline import transform_files
from mp2amp.transform.sessions import Sessionizer
from mp2amp.transform.stream import TransformSummary, transform_stream

CASES = [("simplified", False), ("original", True)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-legacy{int(c[1])}")
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    mode, legacy = request.param
    out = tmp_path_factory.mktemp("gen") / "project"
    generate_project(GenerateConfig(out=out, users=80, days=3, dirty=0.05, id_merge=mode,
                                    legacy_time=legacy, seed=7))
    return out


def config_for(project: Path) -> Config:
    spec = json.loads((project / "project.json").read_text())
    return load_config(None, {
        "mixpanel.timezone": spec["timezone"], "mixpanel.legacy_time": spec["legacy_time"],
        "mixpanel.id_merge": spec["id_merge"], "transform.groups": spec["group_keys"],
        "run.workdir": project.parent / "work",
    }, env={})


def run_chain(project: Path) -> tuple[list[Outcome], TransformSummary]:
    config = config_for(project)
    files = sorted(str(p) for p in (project / "events").iterdir())
    summary = TransformSummary()
    with IdentityGraph(config.mixpanel.id_merge, project.parent / "idwork") as graph, \
            Sessionizer() as sessions, Deduper() as dedup:
        for src in iter_records(files):
            if src.record is not None:
                graph.observe(src.record)
        graph.finish()
        outcomes = []
        for outcome in transform_stream(summary.reading(iter_records(files)), graph,
                                        Transformer(config.transform_settings()),
                                        sessions, dedup):
            summary.add(outcome)
            outcomes.append(outcome)
    return outcomes, summary


def test_summary_adds_up_and_matches_what_was_written(project: Path) -> None:
    outcomes, summary = run_chain(project)
    truth = json.loads((project / "truth" / "summary.json").read_text())
    kinds, dirt = truth["events_by_kind"], truth["dirt"]
    assert summary.balanced and len(outcomes) == summary.records_read
    assert summary.records_read == truth["records_written"]
    assert summary.events_out == kinds["counted"]
    assert summary.duplicates == dirt["duplicates"] == kinds["duplicate_copies"]
    assert summary.identity_records == truth["identity_events"]
    assert summary.rejected == {"malformed_json": dirt["malformed_lines"],
                                "missing_id": kinds["unusable"]}
    assert not summary.skipped


def test_the_right_person_behind_every_event(project: Path) -> None:
    person: dict[str, set[tuple[str | None, str | None]]] = defaultdict(set)
    with gzip.open(project / "truth" / "event_person.tsv.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            key, user, device = line.rstrip("\n").split("\t")
            person[key].add((user or None, device or None))
    outcomes, _ = run_chain(project)
    emitted = [o for o in outcomes if isinstance(o, Emitted)]
    wrong = []
    for o in emitted:
        mp_id = mixpanel_insert_id(o.event["insert_id"])
        key = mp_id if mp_id is not None else (
            f"@{Path(o.source).relative_to(project)}:{o.line}")
        got = (o.event.get("user_id"), o.event.get("device_id"))
        if got not in person.get(key, ()):
            wrong.append((key, got, person.get(key)))
    assert wrong == []
    assert len(emitted) > 500  # the check ran on real volume
    assert any(o.event.get("user_id") and o.event.get("device_id") for o in emitted)


def test_daily_counts_match_the_truth(project: Path) -> None:
    outcomes, _ = run_chain(project)
    daily: dict[str, Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        if isinstance(o, Emitted):
            day = datetime.fromtimestamp(o.event["time"] / 1000, UTC).date().isoformat()
            daily[o.event["event_type"]][day] += 1
    expected = json.loads((project / "truth" / "daily_counts.json").read_text())
    assert {name: dict(days) for name, days in daily.items()} == expected


def test_output_is_deterministic_valid_and_sessionized(project: Path) -> None:
    config = config_for(project)
    runs = []
    for _ in range(2):
        out, rejects = io.BytesIO(), io.BytesIO()
        result = transform_files(config, [str(project / "events")], out, rejects)
        result.summary.check()
        runs.append((out.getvalue(), rejects.getvalue()))
    assert runs[0] == runs[1]
    events: list[dict[str, Any]] = [orjson.loads(line) for line in runs[0][0].splitlines()]
    gap = config.transform.session_gap_minutes * 60_000
    assert all(0 < e["session_id"] <= e["time"] + gap for e in events)
    assert len({e["insert_id"] for e in events}) == len(events)
    # what the Batch API would receive passes Amplitude's validation (short IDs are kept:
    # the loader sends min_id_length)
    verdict = validate_events(events, min_id_length=1)
    assert verdict.ok, verdict


def test_an_event_that_cannot_be_written_is_a_rejection_and_the_rest_goes_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mp2amp transform`` wrote each event with orjson unguarded: one it could not write
    (lone surrogates in an ID did, before the identity stage repaired them) ended the run
    with a traceback. Such an event (a transform bug) is now a named rejection."""
    source = tmp_path / "e.jsonl"
    source.write_text("".join(
        json.dumps({"event": name, "properties": {"time": 1704067200 + n, "distinct_id": "u-1",
                                                  "$insert_id": f"iid-{n:08d}"}}) + "\n"
        for n, name in enumerate(["Ok", "Broken", "Ok too"])))
    event = Transformer.event

    def broken(self: Transformer, record: Any, ids: Any) -> Any:
        out = event(self, record, ids)
        if record["event"] == "Broken":
            out["event_properties"]["odd"] = {1, 2}  # a set: orjson cannot write it
        return out

    monkeypatch.setattr(Transformer, "event", broken)
    out, rejects = io.BytesIO(), io.BytesIO()
    result = transform_files(load_config(None, {}, env={}), [str(source)], out, rejects)
    assert [orjson.loads(line)["event_type"] for line in out.getvalue().splitlines()] == [
        "Ok", "Ok too"]
    (reject,) = [orjson.loads(line) for line in rejects.getvalue().splitlines()]
    assert reject["reason"] == "unserializable" and reject["line"] == 2
    assert result.summary.balanced and result.summary.rejected == {"unserializable": 1}
