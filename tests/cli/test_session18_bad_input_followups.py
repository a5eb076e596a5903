"""Session 18 bad-input fixes beyond the pinned tests: a JSON array cut short, the plan's
field names, the deep-property cap, a closed stdout, the example config's region, and
numbers used as IDs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.config.sections import AmplitudeConfig
from mp2amp.errors import Rejection
from mp2amp.extract.jsonarray import iter_array
from mp2amp.models import Resolved
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.plan import parse_plan
from mp2amp.transform.values import MAX_TEXT_DEPTH, ValueStats, sanitize_props
from shared_kit import amplitude_emulator, cli_workspace, stored_by_source_id

KEY = "session18-followups-key"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def amp_url(tmp_path: Path) -> Iterator[str]:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield url


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_workspace(monkeypatch, tmp_path, KEY)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def ev(n: int, **props: Any) -> dict[str, Any]:
    return {"event": "Page View", "properties": {
        "time": 1700000000 + n, "distinct_id": f"user-{n:04d}", "$insert_id": f"ins-{n:06d}",
        **props}}


def read_array(text: str) -> list[tuple[int, str | None, Any]]:
    """(line, rejection reason, record or rejection message) of each element read."""
    out = []
    for rec in iter_array("a.json", io.BytesIO(text.encode())):
        rej = rec.rejection
        out.append((rec.line, None if rej is None else rej.reason,
                    rec.record if rej is None else rej.message))
    return out


# --- a JSON array cut short ---------------------------------------------------------------


def test_a_one_line_array_without_its_end_is_cut_short_after_its_last_element() -> None:
    got = read_array(json.dumps([ev(1), ev(2)])[:-1])
    assert [(line, reason) for line, reason, _ in got] == [
        (1, None), (2, None), (3, "truncated_file")]
    # the message names the line the file ends on, not a third element
    message = got[2][2]
    assert "a.json ends after element 2 (line 1) without the ']'" in message, message
    assert "element 3" not in message


@pytest.mark.parametrize("text, where", [
    ('[{"event": "a"},', "after element 1 and a ','"),
    ('[\n', "after its '['"),
    ('[{"event": "a"}, {"event": "b", "prop', "inside element 2"),
    ('[{"event": "a"}, {"event": "b", "properties": {"x": [1, 2', "inside element 2"),
    ('[{"event": "a"}, {"event": "b", "s": "esc\\', "inside element 2"),
])
def test_an_array_the_file_ends_inside_of_is_one_truncated_file_rejection(
        text: str, where: str) -> None:
    got = read_array(text)
    assert got[-1][1] == "truncated_file", got
    assert where in got[-1][2], got[-1][2]
    assert all(reason is None for _, reason, _ in got[:-1]), got


def test_a_broken_element_in_a_closed_array_is_still_malformed_json() -> None:
    text = '[{"event": "a"},\n {"event": bad},\n {"event": "c"}]'
    assert [(line, reason) for line, reason, _ in read_array(text)] == [
        (1, None), (2, "malformed_json"), (3, None)]


def cut_array(path: Path) -> None:
    text = json.dumps([ev(n) for n in range(1, 6)], indent=2)
    path.write_text(text[:text.index('"ins-000004"') + 5])


def test_damaged_files_keep_migrates_a_cut_array_up_to_the_cut(
        env: None, tmp_path: Path, amp_url: str) -> None:
    cut = tmp_path / "export.json"
    cut_array(cut)
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(f'[source]\nfiles = ["{cut}"]\ndamaged_files = "keep"\n'
                   f'[amplitude]\napi_host = "{amp_url}"\n'
                   f'[run]\nworkdir = "{tmp_path / "work"}"\n', encoding="utf-8")
    result = invoke("migrate", "-c", str(cfg), "--json")
    assert result.exit_code == 0, result.stderr
    totals = orjson.loads(result.stdout)["totals"]
    assert (totals["read"], totals["sent"], totals["rejected"]) == (4, 3, 1), totals
    assert stored_by_source_id(amp_url) == {f"ins-{n:06d}": 1 for n in (1, 2, 3)}


# --- the tracking plan names the field as its place in the record -------------------------


def test_a_plan_rename_clash_names_the_field_as_its_place_in_the_record() -> None:
    plan = parse_plan({"properties": {"plan_name": {"rename": "plan"}}})
    out = plan.apply("Open", {"plan_name": "pro", "plan": "free"})
    assert isinstance(out, Rejection) and out.reason == "plan_rename_clash", out
    assert out.field == "properties.plan_name"


# --- deep properties: one fixed cap, whatever the stack ------------------------------------


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def sanitized(levels: int) -> Any:
    try:
        return sanitize_props({"d": nested(levels)}, "event_properties", ValueStats())["d"]
    except Exception as exc:  # the outcome is compared
        return exc


def test_a_property_is_kept_as_text_up_to_the_cap_and_rejected_past_it() -> None:
    inner: Any = sanitized(MAX_TEXT_DEPTH)
    levels = 0
    while isinstance(inner, list):
        inner, levels = inner[0], levels + 1
    # event_properties is Amplitude's layer 1: 39 levels stay lists, the rest is text
    text = "[" * (MAX_TEXT_DEPTH - 39) + "]" * (MAX_TEXT_DEPTH - 39)
    assert (levels, inner) == (39, text[:1024])
    refused = sanitized(MAX_TEXT_DEPTH + 1)
    assert getattr(refused, "reason", None) == "too_deep", refused
    assert str(MAX_TEXT_DEPTH) in str(refused)


def test_the_cap_does_not_depend_on_the_stack_left() -> None:
    """A worker thread's small stack, or a deep caller, used to lower it."""
    results: list[Any] = []

    def deep_caller(n: int) -> None:
        if n:
            deep_caller(n - 1)
        else:
            results.append(sanitized(MAX_TEXT_DEPTH))

    # room for the 40 levels kept as lists, not for a thousand more
    worker = threading.Thread(target=deep_caller, args=(sys.getrecursionlimit() - 150,))
    worker.start()
    worker.join()
    assert results == [sanitized(MAX_TEXT_DEPTH)]


def test_text_of_a_deep_value_is_what_orjson_writes() -> None:
    """As orjson writes the text of a value up to 255 levels: one spelling at any depth
    (1.5e-7, not json.dumps' 1.5e-07)."""
    leaf = {"k": ["é", 1.5e-7, 1e16, 1e-6, -0.0, 2**63, True, None, "\u2028\"\\\n", {}, []]}
    value: Any = leaf
    for _ in range(400):
        value = [value, {"x": 1}]
    t = Transformer(TransformSettings())
    out = t.event({"event": "e", "properties": {"time": 1700000000, "deep": value}},
                  Resolved("user-1", None))
    assert isinstance(out, dict), out
    text: Any = out["event_properties"]["deep"]
    for _ in range(39):  # event_properties is layer 1: 39 levels stay lists
        text, value = text[0], value[0]
    assert isinstance(text, str)
    wrappers = 400 - 39
    whole = "[" * wrappers + orjson.dumps(leaf).decode() + ',{"x":1}]' * wrappers
    assert text == whole[:1024]
    assert "1.5e-7" in text and "1e-6" in text


# --- a closed stdout ----------------------------------------------------------------------


def test_transform_into_a_closed_pipe_ends_quietly_with_141(tmp_path: Path) -> None:
    data = tmp_path / "day.jsonl"
    data.write_text("".join(json.dumps(ev(n)) + "\n" for n in range(20000)))
    proc = subprocess.Popen([sys.executable, "-m", "mp2amp", "transform", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, stderr
    assert json.loads(first)["event_type"] == "Page View"
    assert stderr == b""
    assert not (tmp_path / "rejects.jsonl").exists()  # a stop: the partial outputs go


# --- the example config -------------------------------------------------------------------


def test_the_example_config_says_an_unset_amplitude_region_follows_api_host() -> None:
    assert AmplitudeConfig().region is None
    text = (ROOT / "docs" / "examples" / "mp2amp.toml").read_text()
    section = text[text.index("[amplitude]"):]
    region = section[section.index("region"):section.index("\nendpoint")]
    assert '(default "us")' not in region and "api_host" in region, region


# --- numbers used as IDs ------------------------------------------------------------------


def test_numbers_used_as_ids_are_written_as_mixpanel_shows_them(env: None,
                                                                 tmp_path: Path) -> None:
    data = tmp_path / "day.jsonl"
    records = [
        {"event": "A", "properties": {"time": 1700000001, "distinct_id": 1e21,
                                      "$insert_id": "a"}},
        {"event": "B", "properties": {"time": 1700000002, "distinct_id": "1e+21",
                                      "$insert_id": "b"}},
        {"event": "C", "properties": {"time": 1700000003, "distinct_id": "x",
                                      "$user_id": 1.5e-7, "$insert_id": "c"}},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    result = invoke("transform", str(data), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    users = {e["event_type"]: e.get("user_id") for e in map(json.loads, out.read_text()
                                                           .splitlines())}
    # one Mixpanel user, however the number was written: the graph and the transform agree
    assert users == {"A": "1e+21", "B": "1e+21", "C": "1.5e-7"}, users
