"""Session 18, second review: what the fixes changed beyond the pinned tests. Numbers as
group names and hashes (JavaScript's spelling for floats, every digit for integers), the
text of deep properties, the content hash's text of what orjson cannot write, JSON arrays
(deep elements, a bracket left open), the hot-shard order, and transform's work folder."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.extract.jsonarray import iter_array
from mp2amp.identity.junk import clean_id
from mp2amp.models import Resolved, Skip
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.groups import group_name
from mp2amp.transform.insert_id import insert_id_for, repr_text
from mp2amp.transform.privacy import PrivacyRules
from mp2amp.transform.values import ValueStats, sanitize_props
from shared_kit import cli_workspace

KEY = "session18-second-review-followups-key"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_workspace(monkeypatch, tmp_path, KEY)


def ev(n: int, **props: Any) -> dict[str, Any]:
    return {"event": "Page View", "properties": {
        "time": 1700000000 + n, "distinct_id": f"user-{n:04d}", "$insert_id": f"ins-{n:06d}",
        **props}}


# --- numbers as IDs, group names and hashes -------------------------------------------------


def test_integer_ids_keep_every_digit_and_float_ids_are_written_as_javascript_does() -> None:
    assert clean_id(2**60) == "1152921504606846976"
    assert clean_id(2**60 + 1) == "1152921504606846977"
    assert clean_id(-(2**70)) == str(-(2**70))
    assert (clean_id(1e21), clean_id(5.0), clean_id(0), clean_id(-1)) == ("1e+21", "5", None,
                                                                           None)


def test_a_float_group_name_is_written_as_javascript_does() -> None:
    assert group_name(1e21) == group_name("1e+21") == "1e+21"
    assert group_name(42.0) == group_name(42) == group_name(" 42 ") == "42"
    assert group_name(2**60) == "1152921504606846976"  # an integer: every digit
    assert group_name(4.5) is None  # still: only integral numbers name a group


def test_a_hashed_number_hashes_as_the_group_name_it_makes() -> None:
    rules = PrivacyRules(hash_properties=["company"], salt="pepper")
    assert rules.hash_value(1e21) == rules.hash_value("1e+21")
    assert rules.hash_value(42.0) == rules.hash_value(42) == rules.hash_value(" 42")
    assert rules.hash_value(4.5) == rules.hash_value("4.5")
    assert rules.hash_value(1e-6) == rules.hash_value("0.000001")
    assert rules.hash_value(2**60) == rules.hash_value("1152921504606846976")


# --- deep properties as text ----------------------------------------------------------------


def as_text(levels: int, leaf: Any) -> str:
    """The text a property ``levels`` list levels deep around ``leaf`` is kept as."""
    value: Any = leaf
    for _ in range(levels):
        value = [value]
    kept: Any = sanitize_props({"d": value}, "event_properties", ValueStats())["d"]
    while isinstance(kept, list):
        kept = kept[0]
    assert isinstance(kept, str)
    return kept


def test_deep_properties_spell_numbers_alike_above_and_below_orjsons_depth() -> None:
    leaf = [1.5e-7, 1e-6, 1e16, 1e21, -0.0, 2**63, 0.1]
    shallow, deep = as_text(60, leaf), as_text(400, leaf)
    assert shallow.strip("[]") == deep.strip("[]") == orjson.dumps(leaf).decode().strip("[]")


# --- the content hash of what orjson cannot write -------------------------------------------


@pytest.mark.parametrize("value", [
    2**70, "\ud800", {"b": [1, (2,)], "a": {}}, [[], (), (1,), {"x": None}], 1e21, True,
    {"q": "it's \"quoted\"", 3: "non-string key"},
])
def test_repr_text_is_repr(value: Any) -> None:
    assert repr_text(value) == repr(value)


def test_an_id_made_with_repr_before_stays_the_same() -> None:
    """An event without $insert_id holding what orjson cannot write (a huge integer) keeps
    the id the recursive repr() gave it."""
    from hashlib import blake2b

    props = {"n": 2**70, "b": "x"}
    key = b"E\x1fuser-1\x1f1700000000000\x1f" + repr(sorted(props.items())).encode()
    assert insert_id_for("E", "user-1", 1700000000000, None, props) == \
        "mp-" + blake2b(key, digest_size=16).hexdigest()


# --- JSON arrays ----------------------------------------------------------------------------


def read_array(data: bytes) -> list[tuple[int, str | None]]:
    return [(rec.line, None if rec.rejection is None else rec.rejection.reason)
            for rec in iter_array("a.json", io.BytesIO(data))]


def test_a_deep_element_of_a_pretty_printed_array_is_kept_and_staged_on_one_line() -> None:
    """Past the stdlib decoder's recursion, within orjson's 1,024 levels (the record and
    its properties are two)."""
    levels = 1015
    pretty = ('[\r\n {\n  "event": "E",\n  "properties": {"time": 1700000001,\n  "d": '
              + "[\n" * levels + "]\n" * levels + "}},\n " + json.dumps(ev(2)) + "\n]\n")
    records = list(iter_array("a.json", io.BytesIO(pretty.encode())))
    assert [r.rejection for r in records] == [None, None]
    first = records[0]
    assert first.record is not None and first.record["properties"]["time"] == 1700000001
    inner, depth = first.record["properties"]["d"], 1  # (== on it would recurse too deep)
    while inner:
        inner, depth = inner[0], depth + 1
    assert depth == levels
    element = pretty[pretty.index("{"):pretty.index("}},") + 2]
    # staged as it is (a JSON line's raw text), on one line: JSON holds no raw newline
    # inside a string, so the newlines were whitespace
    assert first.raw == element.replace("\n", " ").encode()
    assert records[1].record == ev(2)


def test_an_element_past_orjsons_depth_is_too_deep_and_the_next_is_read() -> None:
    nested = "[" * 1100 + "]" * 1100
    data = f'[{{"event":"E","properties":{{"d":{nested}}}}},\n{json.dumps(ev(2))}]'.encode()
    got = list(iter_array("a.json", io.BytesIO(data)))
    assert got[0].rejection is not None and "too deeply" in got[0].rejection.message
    assert got[1].record == ev(2)


def test_a_deep_element_with_invalid_utf8_is_invalid_utf8() -> None:
    nested = "[" * 1000 + "]" * 1000
    data = b'[{"event":"E\xff","properties":{"d":' + nested.encode() + b"}}]"
    assert read_array(data) == [(1, "invalid_utf8")]


def test_a_bracket_left_open_in_a_closed_array_is_malformed_not_cut_short() -> None:
    text = '[{"event": "E", "properties": {"a": [1, 2}},\n{"event": "F"}]'
    assert read_array(text.encode())[-1][1] == "malformed_json"


def test_a_file_cut_after_an_inner_lists_end_is_cut_short() -> None:
    text = json.dumps([ev(1), ev(2, groups=[[1, 2]])])
    cut = text[:text.index("]]") + 2]
    assert read_array(cut.encode()) == [(1, None), (2, "truncated_file")]


# --- a hot shard's rewrite of an excluded user ----------------------------------------------


def test_an_excluded_users_broken_hot_shard_record_is_skipped_not_rejected() -> None:
    rules = PrivacyRules(excluded_users=["user-0002"])
    t = Transformer(TransformSettings(privacy=rules))
    broken = {"event": "$hotshard_events", "properties": {
        "time": 1700000000, "distinct_id": "user-0002", "mp_original_distinct_id": "user-0002"}}
    out = t.event(broken, Resolved("user-0002", None))
    assert isinstance(out, Skip) and out.rule == "privacy.excluded_user", out


# --- transform's work folder ----------------------------------------------------------------


def test_transform_leaves_no_empty_work_folder(tmp_path: Path) -> None:
    data = tmp_path / "day.jsonl"
    data.write_text(json.dumps(ev(1)) + "\n")
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "transform", str(data), "-o",
                           "out.jsonl"], cwd=tmp_path, capture_output=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "day.jsonl", "out.jsonl", "out.jsonl.rejects.jsonl"]


def test_transform_keeps_a_work_folder_that_was_there(env: None, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "mp2amp.toml").write_text(f'[run]\nworkdir = "{tmp_path / "work"}"\n')
    data = tmp_path / "day.jsonl"
    data.write_text(json.dumps(ev(1)) + "\n")
    result = CliRunner().invoke(app, ["transform", str(data), "-o", str(tmp_path / "o.jsonl")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "work").is_dir() and list((tmp_path / "work").iterdir()) == []


# --- a closed stdout ------------------------------------------------------------------------


def test_a_closed_stdout_after_the_output_files_ends_quietly_and_keeps_them(
        tmp_path: Path) -> None:
    data = tmp_path / "day.jsonl"
    data.write_text(json.dumps(ev(1)) + "\nnot json\n")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "mp2amp", "transform", str(data), "-o",
                               "out.jsonl"], stdout=write_end, stderr=subprocess.PIPE,
                              cwd=tmp_path, timeout=60, check=False)
    finally:
        os.close(write_end)
    # the run's own code (session 19): only the summary is lost, the outputs are whole
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 1
    assert len((tmp_path / "out.jsonl.rejects.jsonl").read_bytes().splitlines()) == 1
