"""Session 18, third review of cbe03ff (deep JSON array elements read as JSON lines are,
a file closed only by its array's own ']', number spellings, transform's work folder).

Each xfail pins a defect the review confirmed; the reason says what is wrong."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.extract.jsonarray import iter_array
from shared_kit import cli_workspace

KEY = "session18-third-review-key"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_workspace(monkeypatch, tmp_path, KEY)


def ev(n: int, **props: Any) -> dict[str, Any]:
    return {"event": "Page View", "properties": {
        "time": 1700000000 + n, "distinct_id": f"user-{n:04d}", "$insert_id": f"ins-{n:06d}",
        **props}}


def deep_record(n: int, levels: int) -> str:
    """A record whose property ``d`` is ``levels`` lists deep: the record is level 1, its
    properties level 2, so the whole line is ``levels + 2`` levels deep."""
    nested = "[" * levels + "]" * levels
    return (f'{{"event":"E","properties":{{"time":{1700000000 + n},"distinct_id":"user-{n}",'
            f'"$insert_id":"ins-{n:06d}","d":{nested}}}}}')


def read_array(data: bytes) -> list[tuple[int, str | None]]:
    return [(rec.line, None if rec.rejection is None else rec.rejection.reason)
            for rec in iter_array("a.json", io.BytesIO(data))]


def transform(tmp_path: Path, data: Path) -> tuple[Any, list[dict[str, Any]],
                                                   list[dict[str, Any]]]:
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["transform", str(data), "-o", str(out), "--json"])
    rejects = tmp_path / "out.jsonl.rejects.jsonl"
    events = [json.loads(x) for x in out.read_bytes().splitlines()] if out.exists() else []
    rejected = ([json.loads(x) for x in rejects.read_bytes().splitlines()]
                if rejects.exists() else [])
    return result, events, rejected


# --- a record exactly as deep as orjson reads (1,024 levels) --------------------------------


def test_an_array_element_nested_1024_levels_is_rejected_not_a_traceback(
        env: None, tmp_path: Path) -> None:
    data = tmp_path / "day.json"
    data.write_text("[" + deep_record(1, 1022) + ",\n" + json.dumps(ev(2)) + "]\n")
    result, events, rejected = transform(tmp_path, data)
    # README: a property past 1,000 levels is rejected (too_deep); the 1,024 levels a
    # JSON line may have are read; the other events go out
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 0, result.output
    assert [e["insert_id"].split("-")[0] for e in events] == ["ins"]
    assert [r["reason"] for r in rejected] == ["too_deep"]


def test_a_json_line_nested_1024_levels_is_rejected_not_a_traceback(
        env: None, tmp_path: Path) -> None:
    data = tmp_path / "day.jsonl"
    data.write_text(deep_record(1, 1022) + "\n" + json.dumps(ev(2)) + "\n")
    result, events, rejected = transform(tmp_path, data)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 0, result.output
    assert len(events) == 1 and [r["reason"] for r in rejected] == ["too_deep"]


def test_an_array_element_nested_1023_levels_is_read_as_a_json_line_is(
        env: None, tmp_path: Path) -> None:
    """The level below: the deep path works (a regression guard for the fix of the above)."""
    data = tmp_path / "day.json"
    data.write_text("[" + deep_record(1, 1021) + ",\n" + json.dumps(ev(2)) + "]\n")
    result, events, rejected = transform(tmp_path, data)
    assert result.exit_code == 0, result.output
    assert len(events) == 1 and [r["reason"] for r in rejected] == ["too_deep"]


# --- a deep element, then a missing ',' -----------------------------------------------------


def test_a_missing_comma_after_a_deep_element_loses_nothing() -> None:
    shallow = json.dumps(ev(2))
    # the same file with a shallow first element: both read (the documented behaviour)
    assert read_array(("[" + json.dumps(ev(1)) + "\n" + shallow + "]").encode()) == [
        (1, None), (2, None)]
    data = ("[" + deep_record(1, 1000) + "\n" + shallow + "]").encode()
    assert read_array(data) == [(1, None), (2, None)]


# --- a cut inside a string whose text ends with ']' -----------------------------------------


def test_a_file_cut_inside_a_string_ending_with_a_bracket_is_cut_short() -> None:
    text = json.dumps([ev(1), ev(2, note="[object Object] and more")], indent=2)
    cut = text[:text.index("[object Object]") + len("[object Object]")]
    assert cut.endswith("]")
    # one character earlier the same cut is truncated_file, as documented
    assert read_array(cut[:-1].encode()) == [(2, None), (10, "truncated_file")]
    assert read_array(cut.encode()) == [(2, None), (10, "truncated_file")]


def test_migrate_rejects_an_array_element_nested_1024_levels_and_sends_the_rest(
        env: None, tmp_path: Path) -> None:
    from shared_kit import amplitude_emulator, stored_by_source_id

    data = tmp_path / "day.json"
    data.write_text("[" + deep_record(1, 1022) + ",\n" + json.dumps(ev(2)) + "]\n")
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        config = tmp_path / "mp2amp.toml"
        config.write_text(f'[source]\nfiles = ["{data}"]\n[amplitude]\napi_host = "{url}"\n'
                          f'[run]\nworkdir = "{tmp_path / "work"}"\n', encoding="utf-8")
        result = CliRunner().invoke(app, ["migrate", "-c", str(config), "--json"])
        stored = stored_by_source_id(url)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 0, result.output  # every window adds up: a dead letter
    assert len(stored) == 1, stored
