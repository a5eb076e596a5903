"""Review of session 13's own fixes (``git diff 371bae1..HEAD -- src``): the offline
transform staged like ``migrate``, privacy at any depth, the Data Pipelines UTC mark, the
Deduper keyed by the source time, staging's 4th rejection field, plan duplicate keys and
exact decimal coercion, ``generate``'s argument checks.

``xfail(strict=True)`` tests pin defects (the reason says what is wrong, what should
happen and where); the others pin edge cases of these fixes that no other test covers.
"""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.errors import ConfigError
from mp2amp.extract.files import expand_paths, iter_file
from mp2amp.generate.project import GenerateConfig, validate
from mp2amp.identity.graph import IdentityGraph
from mp2amp.models import UTC_TIME_MARK, Resolved
from mp2amp.pipeline.staging import read_staged, read_staged_range, stage, staged_record
from mp2amp.pipeline.transform_worker import EVENT, OTHER, transform_lines
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.offline import transform_files
from mp2amp.transform.plan import load_plan, parse_plan
from mp2amp.transform.privacy import PrivacyRules

IDS = Resolved("user-1", "device-1")
TZ = "America/Los_Angeles"
LEGACY = TransformSettings(timezone=TZ, legacy_time=True)


def _local_seconds(*parts: int) -> int:
    """A wall-clock time in TZ written as if it were UTC (a legacy project's ``time``)."""
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


def _offset_ms(seconds: int) -> int:
    wall = datetime.fromtimestamp(seconds, UTC).replace(tzinfo=ZoneInfo(TZ))
    offset = wall.utcoffset()
    assert offset is not None
    return int(offset.total_seconds() * 1000)


def _staged_file(tmp_path: Path, lines: list[bytes], name: str = "in.jsonl") -> Path:
    src = tmp_path / name
    src.write_bytes(b"".join(line + b"\n" for line in lines))
    dest = tmp_path / "staged" / (name + ".staged")
    stage(iter_file(expand_paths([str(src)])[0]), dest)
    return dest


# --- defects ----------------------------------------------------------------------------


def test_a_rejected_pipeline_row_with_a_lone_surrogate_is_staged(tmp_path: Path) -> None:
    lines = [
        b'{"event_name":"x","properties":"not json","note":"\\ud800","distinct_id":"u"}',
        b'{"event_name":"y","properties":{},"time":1700000000,"distinct_id":"u"}',
    ]
    dest = _staged_file(tmp_path, lines)
    back = list(read_staged(dest))
    assert len(back) == 2
    rejected = [r for r in back if r.rejection is not None]
    assert [r.rejection.reason for r in rejected if r.rejection] == ["bad_pipeline_row"]
    kept = rejected[0].rejection
    assert kept is not None and isinstance(kept.record, dict)
    assert kept.record["note"] == "\ud800"  # the record as read, for the dead letter


def test_a_hashed_key_inside_a_stringified_object_the_plan_converts_is_hashed() -> None:
    plan = parse_plan({"version": 1, "properties": {"customer": {"type": "object"}}})
    privacy = PrivacyRules(hash_properties=["email"], salt="pepper")
    out = Transformer(TransformSettings(plan=plan, privacy=privacy)).event(
        {
            "event": "Paid",
            "properties": {
                "time": 1601412131,
                "distinct_id": "u1",
                "customer": '{"email": "a@b.c", "tier": 2}',
                "nested": {"email": "x@y.z"},
            },
        },
        IDS,
    )
    assert isinstance(out, dict), out
    props = out["event_properties"]
    assert props["nested"]["email"] == privacy.hash_value("x@y.z")  # a real object: hashed
    assert "a@b.c" not in orjson.dumps(props).decode()


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nproperties:\n  email: {drop: true, drop: false}\n",
        "version: 1\nproperties: {email: {drop: true}, email: {user_property: true}}\n",
    ],
)
def test_plan_duplicate_keys_on_one_line_are_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    assert "email" in str(err.value) or "drop" in str(err.value)


def test_plan_duplicate_keys_on_two_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "version: 1\nproperties:\n  email: {drop: true}\n  email: {user_property: true}\n"
    )
    with pytest.raises(ConfigError, match="given twice"):
        load_plan(path)


_HUGE_EXPONENT = """
import sys
from mp2amp.transform.plan import _Mismatch, coerce_value
try:
    value = coerce_value("1e100000000", "integer", convert=True)
except _Mismatch:
    print("refused")
else:
    print("digits", len(str(value)) if value < 10 ** 40 else "many")
"""


def test_a_huge_integer_exponent_is_refused_quickly() -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _HUGE_EXPONENT], capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        pytest.fail("coerce_value('1e100000000', 'integer') ran for more than 10 s")
    assert done.stdout.strip() == "refused", done.stdout + done.stderr


def test_plan_decimal_coercion_edges() -> None:
    from mp2amp.transform.plan import _Mismatch, coerce_value

    assert coerce_value("12345678901234567890.0", "integer", convert=True) == 12345678901234567890
    assert coerce_value("1.5e3", "number", convert=True) == 1500.0
    assert coerce_value(" 0.10 ", "number", convert=True) == 0.1
    for text, kind in (
        ("1.0000000000000001", "number"),
        ("1e400", "number"),
        ("1e-400", "number"),
        ("2.5", "integer"),
        ("1_000", "integer"),
        ("inf", "number"),
        ("NaN", "number"),
    ):
        with pytest.raises(_Mismatch):
            coerce_value(text, kind, convert=True)  # type: ignore[arg-type]
    # a stringified object with an integer past 64 bits: orjson reads other digits
    with pytest.raises(_Mismatch):
        coerce_value('{"id": 123456789012345678901234567890}', "object", convert=True)
    assert coerce_value('{"id": 12, "x": [1.5]}', "object", convert=True) == {"id": 12, "x": [1.5]}


def test_transform_of_a_folder_does_not_read_its_work_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    line = (
        b'{"event":"a","properties":{"time":1700000000,"distinct_id":"user1",'
        b'"$insert_id":"abcdefgh1"}}'
    )
    (tmp_path / "in.jsonl").write_bytes(line + b"\n")
    # what a killed `mp2amp transform` leaves in the default work folder
    leftover = tmp_path / ".mp2amp" / "transform-killed" / "input-000000.jsonl"
    stage(iter_file(expand_paths([str(tmp_path / "in.jsonl")])[0]), leftover)
    config = load_config(None, {"run.workdir": str(tmp_path / ".mp2amp")}, env={})
    out, rejects = io.BytesIO(), io.BytesIO()
    summary = transform_files(config, ["."], out, rejects).summary
    assert summary.rejected == {}, rejects.getvalue()[:300]
    assert (summary.records_read, summary.events_out) == (1, 1)


def test_generate_lists_an_out_under_a_file_with_the_other_problems(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError) as err:
        validate(GenerateConfig(out=afile / "project", users=0))
    text = "\n".join(err.value.problems)
    assert "--users" in text
    assert "--out" in text


# --- edge cases that hold ----------------------------------------------------------------


def test_a_marked_pipelines_row_keeps_utc_in_a_legacy_project() -> None:
    seconds = _local_seconds(2024, 7, 1, 12, 0, 0)
    props = {"time": seconds, "distinct_id": "u1", "$insert_id": "abcdefgh-1"}
    marked = {"event": "E", "properties": dict(props), UTC_TIME_MARK: True}
    local = {"event": "E", "properties": dict(props)}
    t = Transformer(LEGACY)
    out_marked = t.event(marked, IDS)
    assert isinstance(out_marked, dict)
    # its ids hash the local wall time the project stored (session 14: the same event
    # from an export and from a pipelines file gets one insert_id)
    wall_ms = seconds * 1000 + _offset_ms(seconds)  # July: the offset is the same hour
    assert t.raw_ms == wall_ms
    out_local = t.event(local, IDS)
    assert isinstance(out_local, dict)
    assert out_marked["time"] == seconds * 1000  # UTC already: not shifted
    assert out_local["time"] == seconds * 1000 - _offset_ms(seconds)
    # the mark is never sent; the export's record of the same instant gets the same id
    assert UTC_TIME_MARK not in orjson.dumps(out_marked).decode()
    same = t.event({"event": "E", "properties": dict(props, time=wall_ms // 1000)}, IDS)
    assert isinstance(same, dict) and same["time"] == out_marked["time"]
    assert out_marked["insert_id"] == same["insert_id"] != out_local["insert_id"]
    # the general path (no $insert_id, a string time) agrees
    slow = {
        "event": "E",
        "properties": {"time": str(seconds), "distinct_id": "u1"},
        UTC_TIME_MARK: True,
    }
    out_slow = t.event(slow, IDS)
    assert isinstance(out_slow, dict) and out_slow["time"] == seconds * 1000
    assert t.raw_ms == wall_ms


def test_pipelines_rows_are_sorted_by_utc_in_a_legacy_project(tmp_path: Path) -> None:
    # a Raw Export record at 10:00 local (17:00 UTC) and a pipelines row at 12:00 UTC:
    # staged by UTC, the pipelines row comes first though its number is larger
    seconds_local = _local_seconds(2024, 7, 1, 10, 0, 0)
    pipelines = {
        "event_name": "P",
        "time": _local_seconds(2024, 7, 1, 12, 0, 0),
        "distinct_id": "u",
        "properties": {},
    }
    export = {"event": "X", "properties": {"time": seconds_local, "distinct_id": "u"}}
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(orjson.dumps(export) + b"\n" + orjson.dumps(pipelines) + b"\n")
    dest = tmp_path / "staged.jsonl"
    stage(iter_file(expand_paths([str(src)])[0]), dest, local=(TZ, ()))
    names = [r.record["event"] for r in read_staged(dest) if r.record]
    assert names == ["P", "X"]


def test_each_event_item_carries_its_own_source_time(tmp_path: Path) -> None:
    # emitted, rejected (no id, after its time was read), skipped identity, emitted:
    # raw_ms of each EVENT item is that event's source time, not a neighbour's
    t1, t2, t3 = (_local_seconds(2024, 11, 3, 1, 30, s) for s in (0, 10, 20))
    lines = [
        orjson.dumps({"event": "A", "properties": {"time": t1, "distinct_id": "u1"}}),
        orjson.dumps({"event": "B", "properties": {"time": t2}}),  # missing_id
        orjson.dumps(
            {
                "event": "$identify",
                "properties": {"time": t2, "distinct_id": "u1", "$anon_distinct_id": "d1"},
            }
        ),
        orjson.dumps({"event": "C", "properties": {"time": str(t3), "distinct_id": "u1"}}),
    ]
    staged = _staged_file(tmp_path, lines)
    with IdentityGraph("simplified", tmp_path / "id") as graph:
        for src in read_staged(staged):
            if src.record is not None:
                graph.observe(src.record)
        graph.finish()
        rows = read_staged_range(staged, 0, staged.stat().st_size)
        items = transform_lines(rows, (graph, Transformer(LEGACY)))
    events = [i for i in items if i[0] == EVENT]
    assert [i[9] for i in events] == [t1 * 1000, t3 * 1000]
    assert [i[6] for i in events] != [i[9] for i in events]  # converted: time is UTC
    assert sum(1 for i in items if i[0] == OTHER) == 2


def test_staged_rejections_keep_the_raw_line_and_read_three_field_rows(tmp_path: Path) -> None:
    staged = _staged_file(tmp_path, [b'{"event": "a", broken', b"[1, 2]"])
    back = list(read_staged(staged))
    texts = [r.rejection.record for r in back if r.rejection is not None]
    assert '{"event": "a", broken' in texts
    # an older staged file: [reason, message, field] only
    old = staged_record("f.jsonl", 3, None, ["malformed_json", "bad", None])
    assert old.rejection is not None and old.rejection.record is None
    assert (old.rejection.source, old.rejection.line) == ("f.jsonl", 3)


def test_privacy_scrubs_lists_of_lists_and_leaves_plain_events_alone() -> None:
    rules = PrivacyRules(drop_properties=["ssn"], hash_properties=["email"], salt="s")
    plain = {"time": 1, "distinct_id": "u", "plan": "pro"}
    assert rules.apply("E", plain, IDS, 1) is plain  # nothing to change: no copy
    props: dict[str, Any] = {
        "time": 1,
        "distinct_id": "u",
        "people": [[{"email": "a@b.c", "ssn": "1"}], {"inner": [{"ssn": "2", "k": None}]}, "email"],
        "email": None,
    }
    out = rules.apply("E", props, IDS, 1)
    assert isinstance(out, dict)
    assert out["people"] == [
        [{"email": rules.hash_value("a@b.c")}],
        {"inner": [{"k": None}]},
        "email",
    ]
    assert out["email"] is None  # a null is not hashed
    assert props["people"][0][0]["ssn"] == "1"  # the source record is not changed
