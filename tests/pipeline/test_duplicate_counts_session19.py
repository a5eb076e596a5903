"""Session 19: a duplicate event's value counts (truncations, flattenings,
revenue_not_a_number: ``Transformer.stats()``) are not reported. README: these counts
"cover only events that are sent", and a duplicate is not sent again. The transformer
counts when it returns the event; the Deduper decides later, so each event's counts travel
with it (``Counted``) and a duplicate's are taken back off: in ``transform``
(``transform_stream``) and in ``migrate`` (the Settler), with and without a worker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import mp2amp.pipeline.transform_worker as worker
from mp2amp.cli import app
from mp2amp.config import load_config
from mp2amp.extract.files import expand_paths, iter_file
from mp2amp.identity import IdentityGraph
from mp2amp.models import Duplicate
from mp2amp.pipeline.staging import read_staged, stage
from mp2amp.transform.dedup import Deduper
from mp2amp.transform.events import Transformer
from mp2amp.transform.sessions import Sessionizer
from mp2amp.transform.stream import TransformSummary, transform_stream
from shared_kit import amplitude_emulator, cli_workspace, stored_by_source_id

KEY = "session19-duplicate-counts-key"
T0 = 1704164645  # 2024-01-02T03:04:05Z
REVENUE = '[transform.revenue]\nprice = "price"\n'
# what the run sends: Buy (price not a number, bio cut), Deep (tree flattened), Bio (cut)
SENT_VALUES = {"flattened": {"tree": 1}, "other": {"revenue_not_a_number": 1},
               "truncated": {"bio": 2}}


def deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


def event(name: str, iid: str, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0, "distinct_id": "u1", "$insert_id": iid,
                                          **props}}


def mixed_input(folder: Path) -> Path:
    """Each of a cut+unpriced event, a flattened one and a rejected one (no distinct_id,
    with a cut bio) twice; one more cut event and a plain one once."""
    rejected = {"event": "NoId", "properties": {"time": T0, "$insert_id": "insert-000003",
                                                "bio": "y" * 1500}}
    lines = ([event("Buy", "insert-000001", price="$19.99", bio="x" * 1500)] * 2
             + [event("Deep", "insert-000002", tree=deep(41))] * 2
             + [rejected] * 2
             + [event("Bio", "insert-000004", bio="z" * 1500),
                event("Plain", "insert-000005", plan="pro")])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "day.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def amp_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    cli_workspace(monkeypatch, tmp_path, KEY)
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield url


def test_transform_and_migrate_with_and_without_a_worker_report_the_same_values(
        tmp_path: Path, amp_url: str) -> None:
    data = mixed_input(tmp_path / "events")
    cfg = tmp_path / "transform.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "UTC"\n{REVENUE}'
                   f'[run]\nworkdir = "{tmp_path / "twork"}"\n')
    done = CliRunner().invoke(app, ["transform", "-c", str(cfg), "-o", str(tmp_path / "o.jsonl"),
                                    "--json", str(data)])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    got = {"transform": (result["summary"]["events_out"], result["summary"]["duplicates"],
                         sum(result["summary"]["rejected"].values()), result["values"])}
    for workers in (0, 1):
        mcfg = tmp_path / f"migrate{workers}.toml"
        mcfg.write_text(f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["{data}"]\n{REVENUE}'
                        f'[amplitude]\napi_host = "{amp_url}"\n'
                        f'[run]\nworkdir = "{tmp_path / f"mwork{workers}"}"\n'
                        f"transform_workers = {workers}\n")
        migrated = CliRunner().invoke(app, ["migrate", "-c", str(mcfg), "--json"])
        assert migrated.exit_code == 0, migrated.output
        out = json.loads(migrated.stdout)
        got[f"migrate, {workers} workers"] = (out["totals"]["sent"], out["totals"]["duplicate"],
                                              out["totals"]["rejected"], out["values"])
    # each migration sent 4 events (Amplitude keeps one copy of an insert_id)
    assert stored_by_source_id(amp_url) == {"insert-000001": 1, "insert-000002": 1,
                                            "insert-000004": 1, "insert-000005": 1}
    same = (4, 2, 2, SENT_VALUES)
    assert got == {"transform": same, "migrate, 0 workers": same, "migrate, 1 workers": same}


def _staged(tmp_path: Path) -> Path:
    path = tmp_path / "staged.jsonl"
    for f in expand_paths([str(mixed_input(tmp_path / "events"))]):
        stage(iter_file(f), path)
    return path


def _state(staged: Path, tmp: Path) -> tuple[IdentityGraph, Transformer]:
    graph = IdentityGraph("simplified", tmp)
    for src in read_staged(staged):
        if src.record is not None:
            graph.observe(src.record)
    graph.finish()
    toml = tmp.parent / "mp2amp.toml"
    toml.write_text(f'[mixpanel]\ntimezone = "UTC"\n{REVENUE}')
    return graph, Transformer(load_config(toml, {}, env={}).transform_settings())


@pytest.mark.parametrize("workers", [0, 1])
def test_settled_chunks_count_each_sent_event_once_and_what_came_before(
        tmp_path: Path, workers: int) -> None:
    """Chunks of about one line (a duplicate in the next chunk); the transformer already
    counted something before (the in-process path takes it from there): it stays, once."""
    staged = _staged(tmp_path)
    graph, transformer = _state(staged, tmp_path / "g")
    transformer.counts["counted_before"] += 1
    summary = TransformSummary()
    kinds: list[str] = []

    async def run() -> dict[str, dict[str, int]]:
        with worker.ChunkTransformer(graph, transformer, workers=workers, chunk_lines=1,
                                     ahead=2) as chunks, Sessionizer() as sessions, \
                Deduper() as dedup:
            settle = worker.Settler(dedup, sessions, summary)
            async for items in chunks.window(staged):
                for item in items:
                    if item[0] == worker.EVENT:
                        kinds.append("event" if settle.event(item) is not None
                                     else "duplicate")
                    else:
                        summary.read(item[1])
                        summary.add(item[2])
                        kinds.append("other")
            return chunks.stats()

    stats = asyncio.run(run())
    summary.check()
    assert (summary.events_out, summary.duplicates, sorted(kinds)) == (
        4, 2, ["duplicate", "duplicate", "event", "event", "event", "event", "other", "other"])
    assert stats == {"flattened": {"tree": 1},
                     "other": {"counted_before": 1, "revenue_not_a_number": 1},
                     "truncated": {"bio": 2}}


def test_an_unserializable_duplicates_counts_are_taken_back(tmp_path: Path) -> None:
    """An event orjson cannot serialize (a bug) is settled from its Emitted alone: its
    counts travel on it, and a duplicate's are taken back, down to nothing (keys go)."""
    graph, transformer = _state(_staged(tmp_path), tmp_path / "g")
    own = {"truncated": {"bio": 1}, "other": {"revenue_not_a_number": 1}}
    out = {"event_type": "Buy", "device_id": "d", "time": T0 * 1000, "insert_id": "i-1",
           "event_properties": {"odd": {1, 2}}}
    tally = worker.Tally()
    items = [(worker.UNSERIALIZABLE, "f.jsonl",
              worker.CountedEmitted(dict(out), "f.jsonl", n, tally, own), T0 * 1000)
             for n in (1, 2)]
    with worker.ChunkTransformer(graph, transformer, workers=0) as chunks, \
            Sessionizer() as sessions, Deduper() as dedup:
        used = chunks._used((items, {"truncated": {"bio": 2},
                                     "other": {"revenue_not_a_number": 2}}, tally))
        settle = worker.Settler(dedup, sessions, TransformSummary())
        settled = [settle.emitted(item[2], item[3]) for item in used]
        assert [s is not None for s in settled] == [True, False]
        assert chunks.stats() == {"flattened": {}, "other": {"revenue_not_a_number": 1},
                                  "truncated": {"bio": 1}}
        settle.emitted(used[0][2], used[0][3])  # once more: its counts go, to nothing
        assert chunks.stats() == {"flattened": {}, "other": {}, "truncated": {}}


def test_a_chunks_events_carry_their_own_counts_and_the_transformer_keeps_the_sum(
        tmp_path: Path) -> None:
    """A worker's chunk: the events that counted carry their own counts (the others
    nothing extra: a 10-field item), the chunk's stats are all of them, and the
    transformer is left with none (its counts go back with the chunk)."""
    staged = _staged(tmp_path)
    graph, transformer = _state(staged, tmp_path / "g")
    items, stats, tally = worker.transform_chunk(str(staged), 0, staged.stat().st_size,
                                                 (graph, transformer))
    buy = {"truncated": {"bio": 1}, "other": {"revenue_not_a_number": 1}}
    deep = {"flattened": {"tree": 1}}
    bio = {"truncated": {"bio": 1}}
    own = sorted((orjson.loads(i[3])["event_type"], len(i), i[-1] if len(i) > 10 else None)
                 for i in items if i[0] == worker.EVENT)
    assert own == [("Bio", 12, bio), ("Buy", 12, buy), ("Buy", 12, buy), ("Deep", 12, deep),
                   ("Deep", 12, deep), ("Plain", 10, None)]
    assert tally is not None and all(i[10] is tally for i in items if len(i) > 10)
    assert stats == {"truncated": {"bio": 3}, "flattened": {"tree": 2},
                     "other": {"revenue_not_a_number": 2}}
    assert transformer.stats() == {"truncated": {}, "flattened": {}, "other": {}}


def test_transform_stream_drops_a_duplicates_counts_and_keeps_earlier_ones(
        tmp_path: Path) -> None:
    staged = _staged(tmp_path)
    graph, transformer = _state(staged, tmp_path / "g")
    transformer.values.truncated["counted_before"] += 1
    with Sessionizer() as sessions, Deduper() as dedup:
        outcomes = list(transform_stream(read_staged(staged), graph, transformer, sessions,
                                         dedup))
    assert sum(isinstance(o, Duplicate) for o in outcomes) == 2
    assert transformer.stats() == {"flattened": {"tree": 1},
                                   "other": {"revenue_not_a_number": 1},
                                   "truncated": {"bio": 2, "counted_before": 1}}


def test_an_event_json_cannot_carry_keeps_its_counts_through_a_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UNSERIALIZABLE path end to end: Buy (and its duplicate) made unserializable in
    the worker's transform; the copy sent keeps its counts, the duplicate's go."""
    staged = _staged(tmp_path)
    graph, transformer = _state(staged, tmp_path / "g")

    def dumps(value: Any, *args: Any) -> bytes:
        if value.get("event_type") == "Buy":
            raise TypeError("Type is not JSON serializable: set")
        return orjson.dumps(value, *args)

    monkeypatch.setattr(worker, "orjson", SimpleNamespace(
        loads=orjson.loads, dumps=dumps, JSONDecodeError=orjson.JSONDecodeError))
    with worker.ChunkTransformer(graph, transformer, workers=0) as chunks, \
            Sessionizer() as sessions, Deduper() as dedup:
        items = chunks._used(worker.transform_chunk(str(staged), 0, staged.stat().st_size,
                                                    (graph, transformer)))
        settle = worker.Settler(dedup, sessions, TransformSummary())
        odd = [i for i in items if i[0] == worker.UNSERIALIZABLE]
        assert [type(i[2]).__name__ for i in odd] == ["CountedEmitted"] * 2
        assert [settle.emitted(i[2], i[3]) is not None for i in odd] == [True, False]
        for item in items:
            if item[0] == worker.EVENT:
                settle.event(item)
        assert chunks.stats() == SENT_VALUES
