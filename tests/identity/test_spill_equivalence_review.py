"""Review: every stage spilling (identity, staging runs, dedup, sessions) gives the answers
of a run held in memory, and the edges of the identity table, staging and dedup.

README: past its share of ``[run] memory_budget`` each stage spills to disk "and gives the
same answers". The whole chain is compared here (``mp2amp transform`` and ``migrate``
with a crash and a resume) with every stage's share at its smallest (``stage_budgets``
patched, staging runs of one record) against one that never spills.
``test_identity_review.py`` and ``test_sessions_dedup_review.py`` (unit level) are not
repeated. ``xfail(strict=True)`` tests pin defects; their reason says what is wrong.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import math
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mp2amp.config import load_config
from mp2amp.extract import iter_records
from mp2amp.generate import GenerateConfig, generate_project
from mp2amp.identity import IdentityGraph
from mp2amp.identity.ids import identity_view
from mp2amp.pipeline import staging
from mp2amp.pipeline.budgets import StageBudgets
from mp2amp.pipeline.staging import read_staged, read_staged_identity, sort_key, stage
from mp2amp.transform import offline

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))  # migrate_kit

from migrate_kit import FAST, Crash, amplitude, arrival_order, crash_at_batch, make_config

SPILL_ALL = StageBudgets(identity_ids=1, session_devices=2, dedup_digests=1)
T0 = 1_700_000_000
HYP = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def _lines(path: Path, docs: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs))
    return path


def _transform(
    files: list[str], work: Path, *, spill: bool, **over: Any
) -> tuple[bytes, bytes, dict[str, Any]]:
    """``mp2amp transform`` as a library call; ``spill``: every stage at its smallest share
    and staging in sorted runs of one record (an external merge of every record)."""
    overrides = {"mixpanel.timezone": "UTC", "run.workdir": str(work), **over}
    cfg = load_config(None, overrides, env={})
    out, rejects = io.BytesIO(), io.BytesIO()
    with pytest.MonkeyPatch.context() as mp:
        if spill:
            mp.setattr(offline, "stage_budgets", lambda _budget: SPILL_ALL)
            mp.setattr(offline, "stage", functools.partial(staging.stage, chunk=1))
        result = offline.transform_files(cfg, files, out, rejects).as_dict()
    assert result["identity"].pop("spilled") is spill or not result["identity"]["links"]
    result["identity"].pop("ids_spilled")
    return out.getvalue(), rejects.getvalue(), result


# --- the whole chain: hypothesis-generated inputs -----------------------------------------

# "1" and 1 and 1.0, case and whitespace variants, $device: forms, a UUID, junk, big ints
_ID = st.sampled_from(
    [
        "u1",
        "U1",
        " u1",
        "1",
        1,
        1.0,
        12345,
        "12345",
        "$device:d1",
        "d1",
        "d2",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "undefined",
        "",
        "alice@example.com",
        2**70,
        -7,
        None,
    ]
)
# equal times, seconds and ms, out of order, missing, unparsable, negative, huge, bool
_TIME = st.one_of(
    st.integers(0, 7200).map(lambda s: T0 + s),
    st.integers(0, 7200).map(lambda s: (T0 + s) * 1000 + 123),
    st.sampled_from([T0, T0, str(T0), None, "soon", -5, 10**30, True, 1.5e9]),
)


def _props(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


_EVENT = st.builds(
    lambda name, d, u, dev, t, iid: {
        "event": name,
        "properties": _props(
            time=t, distinct_id=d, **{"$user_id": u, "$device_id": dev, "$insert_id": iid}
        ),
    },
    st.sampled_from(["Play", "Buy"]),
    _ID,
    _ID,
    _ID,
    _TIME,
    st.sampled_from([None, "insert-0001", "insert-0002", "insert-0003"]),
)
_IDENTITY = st.one_of(
    st.builds(
        lambda u, a, t: {
            "event": "$identify",
            "properties": _props(time=t, **{"$identified_id": u, "$anon_id": a}),
        },
        _ID,
        _ID,
        _TIME,
    ),
    st.builds(
        lambda a, d, t: {
            "event": "$create_alias",
            "properties": _props(time=t, alias=a, distinct_id=d),
        },
        _ID,
        _ID,
        _TIME,
    ),
    st.builds(
        lambda ids, t: {"event": "$merge", "properties": _props(time=t, **{"$distinct_ids": ids})},
        st.lists(_ID, min_size=2, max_size=2),
        _TIME,
    ),
)
_BAD = st.sampled_from(
    ["{not json", "[]", '"text"', '{"event":"Play","properties":{"time":NaN,"distinct_id":"u1"}}']
)
_LINE = st.one_of(_EVENT, _EVENT, _IDENTITY, _BAD)


@HYP
@given(
    files=st.lists(st.lists(_LINE, max_size=14), min_size=1, max_size=3),
    table=st.one_of(st.none(), st.lists(st.tuples(_ID, _ID), max_size=6)),
    mode=st.sampled_from(["simplified", "original"]),
)
def test_transform_gives_the_same_bytes_and_report_with_every_stage_spilling(
    files: list[list[Any]], table: list[tuple[Any, Any]] | None, mode: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = [str(_lines(root / f"f{i}.jsonl", lines)) for i, lines in enumerate(files)]
        over: dict[str, Any] = {"mixpanel.id_merge": mode}
        if table is not None:
            over["source.identity_table"] = str(
                _lines(
                    root / "map.jsonl",
                    [{"distinct_id": a, "resolved_distinct_id": b} for a, b in table],
                )
            )
        memory = _transform(paths, root / "w1", spill=False, **over)
        spilled = _transform(paths, root / "w2", spill=True, **over)
    assert spilled[2] == memory[2]  # summary, identity report
    assert spilled[1] == memory[1]  # rejects
    assert spilled[0] == memory[0]  # events: resolved ids, dedup, session ids, order


@pytest.mark.parametrize("mode", ["simplified", "original"])
def test_a_generated_project_with_its_identity_table_transforms_the_same_spilled(
    tmp_path: Path, mode: str
) -> None:
    project = tmp_path / "p"
    generate_project(
        GenerateConfig(
            out=project,
            users=40,
            days=3,
            dirty=0.05,
            id_merge=mode,
            legacy_time=mode == "original",
            seed=3,
        )
    )
    spec = json.loads((project / "project.json").read_text())
    files = sorted(str(p) for p in (project / "events").iterdir())
    over = {
        "mixpanel.timezone": spec["timezone"],
        "mixpanel.legacy_time": spec["legacy_time"],
        "mixpanel.id_merge": mode,
        "transform.groups": spec["group_keys"],
        "source.identity_table": str(project / "identity" / "mappings.jsonl.gz"),
    }
    memory = _transform(files, tmp_path / "w1", spill=False, **over)
    spilled = _transform(files, tmp_path / "w2", spill=True, **over)
    assert memory[2]["summary"]["events_out"] > 500
    assert memory[2]["summary"]["duplicates"] > 0
    assert spilled == memory


def test_migrate_spilling_everywhere_with_a_crash_and_resume_stores_the_clean_runs_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resume rebuilds dedup and session state by replaying the loaded windows, here
    through a spilled Deduper and Sessionizer and a spilled identity graph read by the
    forked transform worker."""
    from mp2amp.pipeline import migrate as migrate_module

    generate_project(
        GenerateConfig(
            out=tmp_path / "p", users=40, days=3, dirty=0.05, id_merge="original", seed=11
        )
    )
    events = tmp_path / "p" / "events"
    over = {
        "mixpanel.id_merge": "original",
        "source.identity_table": str(tmp_path / "p" / "identity" / "mappings.jsonl.gz"),
    }
    upload = {**FAST, "concurrency": 1, "max_events": 50}

    def stored(data: Path) -> dict[str, tuple[Any, ...]]:
        got: dict[str, tuple[Any, ...]] = {}
        for e in arrival_order(data):
            got.setdefault(
                e["insert_id"],
                (e.get("user_id"), e.get("device_id"), e.get("session_id"), e["time"]),
            )
        return got

    with amplitude(tmp_path / "clean") as url:
        clean = migrate_module.migrate(
            make_config(events, tmp_path / "w1", url, **over), upload_overrides=upload
        )
    assert clean.exit_code == 0 and not clean.identity["spilled"]
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "w2", url, **over)
        monkeypatch.setattr(migrate_module, "stage_budgets", lambda _budget: SPILL_ALL)
        crash_at_batch(monkeypatch, 8)  # in the second of three windows
        with pytest.raises(Crash):
            migrate_module.migrate(cfg, upload_overrides=upload)
        monkeypatch.undo()
        monkeypatch.setattr(migrate_module, "stage_budgets", lambda _budget: SPILL_ALL)
        resumed = migrate_module.migrate(cfg, resume=True, upload_overrides=upload)
    assert resumed.exit_code == 0 and resumed.identity["spilled"]
    assert resumed.totals == clean.totals
    want, got = stored(tmp_path / "clean"), stored(tmp_path / "amp")
    assert len(want) == clean.totals["sent"] > 500
    assert got == want


# --- staging ------------------------------------------------------------------------------

_ODD_TIME = st.one_of(
    st.integers(0, 3).map(lambda s: T0 + s),
    st.integers(0, 3).map(lambda s: (T0 + s) * 1000),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            str(10**400),
            "-5",
            "-1e30",
            "1.5e9",
            '"1700000001"',
            '"nan"',
            '" 1700000002 "',
            "true",
            "null",
            "[1]",
            '{"t":1}',
            str(2**70),
            "0",
            "-0.0",
            "1e-300",
        ]
    ).map(lambda text: _Raw(text)),
)


class _Raw(str):
    """A JSON value written into the line as is (NaN and friends: the stdlib parser's)."""


def _line(i: int, t: Any) -> str:
    if t is _MALFORMED:
        return '{"event": "Play", "properties": {"time": '
    value = t if isinstance(t, _Raw) else json.dumps(t)
    return (
        f'{{"event": "Play", "properties": {{"time": {value}, "distinct_id": "u{i % 3}", '
        f'"$device_id": "d{i % 2}"}}}}'
    )


_MALFORMED = object()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(_ODD_TIME, st.just(_MALFORMED)), max_size=30))
def test_staging_in_runs_of_one_gives_the_same_file_in_time_then_arrival_order(
    times: list[Any],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(_line(i, t) + "\n" for i, t in enumerate(times)))
        one = Path(tmp) / "one.jsonl"
        whole = Path(tmp) / "whole.jsonl"
        assert stage(iter_records([str(src)]), one, chunk=1) == len(times)
        assert stage(iter_records([str(src)]), whole) == len(times)
        assert one.read_bytes() == whole.read_bytes()
        staged = list(read_staged(whole))
        views = list(read_staged_identity(whole))
        read = list(iter_records([str(src)]))
    keys = [sort_key(r.record) for r in staged]
    assert all(not math.isnan(k) for k in keys)
    order = [(k, r.line) for k, r in zip(keys, staged, strict=True)]
    assert order == sorted(order)  # by time, equal times (and unknown ones) in arrival order
    assert sorted(r.line for r in staged) == [r.line for r in read]  # nothing lost
    by_line = {r.line: r for r in read}
    for r, view in zip(staged, views, strict=True):
        assert (r.rejection is None) == (by_line[r.line].rejection is None)
        assert repr(r.record) == repr(by_line[r.line].record)  # NaN, big ints kept
        assert repr(view) == repr(identity_view(r.record))


# --- identity: Data Pipelines table spilled, ID types, the cap ------------------------------

TABLE_IDS: list[Any] = [
    "anon-1",
    "$device:anon-1",
    "anon-2",
    "alice",
    "bob",
    1,
    "1",
    "1.0",
    1.0,
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "$device:0f8fad5b-d9cb-469f-a165-70867728950e",
    "null",
    " ",
    "Alice",
    "carol",
]
_TABLE_ID = st.sampled_from(TABLE_IDS)


@HYP
@given(rows=st.lists(st.tuples(_TABLE_ID, _TABLE_ID), max_size=12), retroactive=st.booleans())
def test_identity_table_spilled_resolves_and_reports_as_in_memory(
    rows: list[tuple[Any, Any]], retroactive: bool
) -> None:
    probes = [_props(distinct_id=a) for a in TABLE_IDS] + [
        {"$device_id": "anon-1"},
        {"$user_id": "1", "$device_id": "anon-2"},
        {"distinct_id": "alice", "$distinct_id_before_identity": "$device:anon-1"},
    ]

    def run(budget: int, tmp: Path) -> tuple[list[Any], dict[str, Any]]:
        table = _lines(
            tmp / "map.jsonl", [{"distinct_id": a, "resolved_distinct_id": b} for a, b in rows]
        )
        with IdentityGraph(
            "original", tmp / "g", memory_budget_ids=budget, table=table, retroactive=retroactive
        ) as graph:
            report = graph.finish().as_dict()
            answers = [graph.resolve(p) for p in probes]
        report.pop("spilled")
        return answers, report

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        assert run(1, Path(a)) == run(2_000_000, Path(b))


@pytest.mark.parametrize("budget", [2_000_000, 1])
@pytest.mark.parametrize("mode", ["simplified", "original"])
def test_an_integer_a_float_and_a_text_id_are_one_person(
    tmp_path: Path, mode: str, budget: int
) -> None:
    records = [
        {
            "event": "Login",
            "properties": {
                "time": T0,
                "$user_id": 12345,
                "distinct_id": 12345,
                "$device_id": "dev-00001",
            },
        },
        {
            "event": "$identify",
            "properties": {"time": T0, "$identified_id": 12345.0, "$anon_id": "dev-00002"},
        },
    ]
    with IdentityGraph(mode, tmp_path, memory_budget_ids=budget) as graph:
        for record in records:
            graph.observe(record)
        graph.finish()
        got = {
            (graph.resolve(p).user_id, graph.resolve(p).device_id)
            for p in (
                {"distinct_id": "12345"},
                {"distinct_id": 12345},
                {"distinct_id": 12345.0},
                {"$user_id": "12345"},
            )
        }
        anon = graph.resolve({"distinct_id": "$device:dev-00001", "$device_id": "dev-00001"})
    assert got == {("12345", None)}
    assert (anon.user_id, anon.device_id) == ("12345", "dev-00001")


@pytest.mark.parametrize("budget", [2_000_000, 1])
def test_a_merge_past_the_cap_is_refused_reported_and_keeps_two_people(
    tmp_path: Path, budget: int
) -> None:
    merge = [
        {"event": "$merge", "properties": {"time": T0 + i, "$distinct_ids": pair}}
        for i, pair in enumerate(
            [["alice", "alice-old"], ["alice", "alice-2014"], ["bob", "bob-old"]]
        )
    ]
    merge.append(
        {"event": "$merge", "properties": {"time": T0 + 9, "$distinct_ids": ["alice", "bob"]}}
    )
    with IdentityGraph("original", tmp_path, memory_budget_ids=budget, cluster_cap=3) as graph:
        for record in merge:
            graph.observe(record)
        report = graph.finish()
        users = [
            graph.resolve({"distinct_id": d}).user_id
            for d in ("alice-old", "alice-2014", "bob-old", "bob")
        ]
    assert report.cap_hits == 1
    assert report.cap_examples == ["alice <-> bob ($merge)"]
    assert users[0] == users[1] != users[2] == users[3]
    assert report.clusters == 2


# --- defects --------------------------------------------------------------------------------


def _wall_ms(*args: int) -> int:
    """A legacy project's stored time: the local wall clock written as if it were UTC."""
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_a_reimported_duplicate_in_a_dst_fold_is_dropped_whatever_the_memory_budget(
    tmp_path: Path,
) -> None:
    def play(local: int, processed: int, iid: str, who: str) -> dict[str, Any]:
        return {
            "event": "Play",
            "properties": {
                "time": local,
                "distinct_id": who,
                "$insert_id": iid,
                "mp_processing_time_ms": processed,
            },
        }

    live = play(
        _wall_ms(2023, 11, 5, 1, 50),
        _wall_ms(2023, 11, 5, 8, 50, 5),
        "insert-abc-0001",
        "user-0001",
    )  # 08:50Z (PDT)
    # 1,001 other events between 09:00Z and 09:20Z: past the Deduper's smallest share
    # (memory_budget 4,000 -> 1,000 digests), so the first copy is spilled before the second
    others = [
        play(
            _wall_ms(2023, 11, 5, 1, 0) + i * 1000,
            _wall_ms(2023, 11, 5, 9, 30),
            f"insert-other-{i:05d}",
            f"user-{i % 50:04d}",
        )
        for i in range(1_001)
    ]
    again = play(
        _wall_ms(2023, 11, 5, 1, 50), _wall_ms(2023, 11, 20, 12, 0), "insert-abc-0001", "user-0001"
    )  # re-imported two weeks later: 09:50Z (PST)
    src = str(_lines(tmp_path / "day.jsonl", [live, *others, again]))
    over = {"mixpanel.timezone": "America/Los_Angeles", "mixpanel.legacy_time": True}
    results = []
    for n, budget in enumerate((1_000_000, 4_000)):
        cfg = load_config(
            None,
            {**over, "run.workdir": str(tmp_path / f"w{n}"), "run.memory_budget": budget},
            env={},
        )
        out = io.BytesIO()
        summary = offline.transform_files(cfg, [src], out, io.BytesIO()).summary
        ids = [orjson.loads(line)["insert_id"] for line in out.getvalue().splitlines()]
        results.append((summary.duplicates, len(ids), len(set(ids))))
    assert results[0] == (1, 1_002, 1_002)  # in memory: the re-imported copy is a duplicate
    assert results[1] == results[0]


def test_an_identity_table_row_with_an_id_cut_in_half_is_read_like_the_events(
    tmp_path: Path,
) -> None:
    cut = "anon-\ud83d"
    table = _lines(
        tmp_path / "map.jsonl", [json.dumps({"distinct_id": cut, "resolved_distinct_id": "alice"})]
    )
    with IdentityGraph("original", tmp_path / "g", table=table) as graph:
        graph.finish()
        assert graph.resolve({"distinct_id": cut}).user_id == "alice"


def test_an_identity_table_folder_as_the_example_config_names_it_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines" / "identity-mappings"
    folder.mkdir(parents=True)
    for n, (anon, user) in enumerate([("anon-1", "alice"), ("anon-2", "bob")]):
        row = orjson.dumps({"distinct_id": anon, "resolved_distinct_id": user}) + b"\n"
        (folder / f"part-{n:05d}.json.gz").write_bytes(gzip.compress(row))
    with IdentityGraph("original", tmp_path / "g", table=f"{folder}/") as graph:
        graph.finish()
        assert [graph.resolve({"distinct_id": a}).user_id for a in ("anon-1", "anon-2")] == [
            "alice",
            "bob",
        ]


def test_an_identity_table_on_s3_is_read_with_the_storage_options(
    tmp_path: Path, s3_server: dict[str, Any]
) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="pipes-review")
    key = "77/mp_identity_mappings_data/part-0.json.gz"
    s3.put_object(
        Bucket="pipes-review",
        Key=key,
        Body=gzip.compress(b'{"distinct_id":"anon-1","resolved_distinct_id":"alice"}\n'),
    )
    src = str(
        _lines(
            tmp_path / "e.jsonl",
            [
                {
                    "event": "Play",
                    "properties": {
                        "time": T0,
                        "distinct_id": "anon-1",
                        "$insert_id": "abcdefgh-0001",
                    },
                }
            ],
        )
    )
    out, _, _ = _transform(
        [src],
        tmp_path / "w",
        spill=False,
        **{
            "mixpanel.id_merge": "original",
            "source.identity_table": f"s3://pipes-review/{key}",
            "source.storage_options": s3_server,
        },
    )
    assert orjson.loads(out)["user_id"] == "alice"
