"""Session 16 review of the README's promises (commands, config example and table, status,
transform outputs, migrate inputs), checked by running the CLI (typer's runner) against the
in-process Amplitude emulator over loopback.

Tests marked ``xfail(strict=True)`` show a README sentence the code contradicts; the
others pin a non-obvious claim no other test checks."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.config.sections import (
    AmplitudeConfig,
    MixpanelConfig,
    PrivacyConfig,
    RunConfig,
    SourceConfig,
    TransformConfig,
)
from mp2amp.transform.settings import RevenueSettings
from shared_kit import amplitude_emulator, cli_workspace

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
KEY = "readme16-key"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


def day_lines(n: int, day: str = "2024-03-01") -> str:
    base = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
    rows = [{"event": "Page View",
             "properties": {"time": base + i * 60, "distinct_id": f"user-{i % 7:03d}",
                            "$insert_id": f"{day}-{i}"}} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return cli_workspace(monkeypatch, tmp_path, KEY, day_lines(12))


@pytest.fixture
def amp_url(tmp_path: Path) -> Iterator[str]:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield url


# --- Configuration: the example file ------------------------------------------------------

SECTIONS: dict[str, type[Any]] = {
    "mixpanel": MixpanelConfig, "source": SourceConfig, "amplitude": AmplitudeConfig,
    "transform": TransformConfig, "transform.revenue": RevenueSettings,
    "privacy": PrivacyConfig, "run": RunConfig,
}


def example_keys() -> dict[str, set[str]]:
    """``section`` -> the keys docs/examples/mp2amp.toml shows in it (set or commented out)."""
    keys: dict[str, set[str]] = {}
    current = ""
    for line in (ROOT / "docs" / "examples" / "mp2amp.toml").read_text().splitlines():
        header = re.match(r"^\[([\w.]+)\]", line)
        if header:
            current = header.group(1)
            keys.setdefault(current, set())
            continue
        key = re.match(r"^#?\s?(\w+)\s*=", line)
        if key and current:
            keys[current].add(key.group(1))
    return keys


def test_the_example_config_shows_every_key_the_loader_reads() -> None:
    """README, Configuration: "A complete, commented example with every key and its
    default: docs/examples/mp2amp.toml"."""
    shown = example_keys()
    missing = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if "env" in f.metadata or f.metadata.get("internal"):
                continue
            if dataclasses.is_dataclass(f.type) or f.name == "revenue":
                continue  # a sub-table, shown as its own [section.sub]
            if f.name not in shown.get(name, set()):
                missing.append(f"{name}.{f.name}")
    assert not missing, f"not in the example config: {missing}"


# --- Configuration: "reported whole" ------------------------------------------------------


def test_config_and_tracking_plan_problems_are_reported_in_one_report(env: Path) -> None:
    (env / "plan.yaml").write_text("events:\n  - not a mapping\n")
    (env / "mp2amp.toml").write_text(
        '[source]\nfiles = ["events"]\n[transform]\nplan = "plan.yaml"\n'
        'session_gap_minutes = "soon"\n')
    result = invoke("migrate", "--quiet")
    assert result.exit_code == 2
    message = flat(result.stderr)
    assert "transform.session_gap_minutes: must be an integer" in message
    assert "plan.yaml: events: must be a mapping" in message, message
    assert not (env / ".mp2amp").exists()  # "before reading any input"


# --- status -------------------------------------------------------------------------------


def test_status_reads_the_ledger_whatever_the_mixpanel_credentials_in_the_environment(
        env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README, status: "Reads only workdir/ledger.sqlite"; "A config whose other sections
    have problems ... still lets status read its [run] workdir"; without a config file the
    work folder is in the current folder. A shell that exported a service account in
    another form (only the secret, say) must not hide the migration's state."""
    from mp2amp.ledger import Ledger

    ledger = Ledger(env / ".mp2amp" / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    ledger.close()
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT", "only-the-secret")
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["ledger"] == str(env / ".mp2amp" / "ledger.sqlite")


def test_status_without_a_config_file_reads_the_current_folders_work_folder(env: Path) -> None:
    """The same without the environment problem: the default work folder of the current
    folder is read (pins the behaviour the test above expects)."""
    from mp2amp.ledger import Ledger

    ledger = Ledger(env / ".mp2amp" / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    ledger.close()
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.stderr
    doc = orjson.loads(result.stdout)
    assert doc["complete"] is False and doc["states"] == {"pending": 1}


# --- transform: an output that would replace an input -----------------------------------


def test_an_out_file_that_a_glob_names_as_an_input_is_refused_and_kept(env: Path) -> None:
    """README, transform: "An --out or --rejects that is a folder, the two naming one file,
    or either naming an input file (it would be replaced) is refused before anything is
    read or written"."""
    first = env / "events" / "2024-03-01.jsonl"
    original = first.read_bytes()
    (env / "events" / "2024-03-02.jsonl").write_text(day_lines(4, "2024-03-02"))
    result = invoke("transform", "events/*.jsonl", "--out", "events/2024-03-01.jsonl")
    kept = first.read_bytes()
    assert kept == original, f"the input was replaced by: {kept[:120]!r}"
    assert result.exit_code == 2


def test_a_previous_output_inside_the_input_folder_is_still_not_read_back(env: Path) -> None:
    """The exclusion that the glob case above must keep: a second run over a folder holding
    the first run's outputs reads only the Mixpanel files."""
    for _ in range(2):
        result = invoke("transform", "events", "--out", "events/out.jsonl", "--json")
        assert result.exit_code == 0, result.stderr
        assert orjson.loads(result.stdout)["summary"]["records_read"] == 12


# --- migrate: an input that cannot be read at the start ---------------------------------


def test_a_dangling_link_in_a_new_runs_inputs_is_named_and_leaves_no_stuck_run(
        env: Path, amp_url: str) -> None:
    """README (inputs as migrate reads them): "a dangling link, a link loop, a folder that
    cannot be listed ... stop the run naming them"; a new run's problem with its inputs is
    not one of a run that lost a file since it started."""
    os.symlink("nowhere.jsonl", env / "events" / "2024-03-02.jsonl")
    (env / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{amp_url}"\n')
    first = invoke("migrate", "--quiet")
    assert first.exit_code == 2
    message = flat(first.stderr)
    assert "2024-03-02.jsonl" in message
    assert "since it started" not in message, message
    (env / "events" / "2024-03-02.jsonl").unlink()  # the link fixed: the same command again
    again = invoke("migrate", "--quiet", "--json")
    assert again.exit_code == 0, again.stderr
    assert orjson.loads(again.stdout)["totals"]["sent"] == 12


@pytest.mark.parametrize("command", ["migrate", "transform"])
def test_a_link_loop_in_an_input_folder_stops_the_run_naming_it(
        env: Path, amp_url: str, command: str) -> None:
    """README (inputs as migrate reads them, both commands): "a dangling link, a link loop,
    a folder that cannot be listed and a file name that is not UTF-8 stop the run naming
    them"."""
    os.symlink("loop-b", env / "events" / "loop-a.jsonl")
    os.symlink("loop-a.jsonl", env / "events" / "loop-b")
    (env / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{amp_url}"\n')
    args = ["migrate", "--quiet"] if command == "migrate" else [
        "transform", "events", "--out", "out.jsonl"]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    assert result.exit_code == 2
    assert "loop-a.jsonl" in flat(result.stderr)


# --- the fixes of this review's findings, beyond the pinned tests ------------------------


def test_an_out_file_inside_an_input_folder_that_holds_mixpanel_data_is_refused(
        env: Path) -> None:
    """The folder form of the glob case: the file is kept, and nothing is written beside it."""
    first = env / "events" / "2024-03-01.jsonl"
    original = first.read_bytes()
    result = invoke("transform", "events", "--rejects", "events/2024-03-01.jsonl",
                    "--out", "out.jsonl")
    assert result.exit_code == 2
    assert first.read_bytes() == original
    assert "2024-03-01.jsonl is also an output file" in flat(result.stderr)
    assert not (env / "out.jsonl").exists()
    assert sorted(p.name for p in (env / "events").iterdir()) == ["2024-03-01.jsonl"]


def test_an_empty_file_named_as_out_inside_an_input_folder_is_replaced(env: Path) -> None:
    """Nothing is lost by replacing an empty file (a first run that wrote no events)."""
    (env / "events" / "out.jsonl").write_bytes(b"")
    result = invoke("transform", "events", "--out", "events/out.jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["summary"]["records_read"] == 12
    assert len((env / "events" / "out.jsonl").read_bytes().splitlines()) == 12


def test_the_excluded_users_files_problem_joins_the_config_files_report(env: Path) -> None:
    (env / "excluded.txt").write_bytes(b"user-\xff\n")
    (env / "mp2amp.toml").write_text(
        '[source]\nfiles = ["events"]\n[privacy]\nexclude_users = "excluded.txt"\n'
        'ip = "maybe"\n')
    result = invoke("migrate", "--quiet")
    assert result.exit_code == 2
    message = flat(result.stderr)
    assert "privacy.ip: 'maybe' is not one of keep, drop" in message
    assert "excluded.txt is not UTF-8 text" in message, message
    assert "(2 problem(s))" in message


def test_a_missing_plan_is_named_once_in_a_failing_config_report(env: Path) -> None:
    """The file's own check names a plan that is not a file; it is not read as well."""
    (env / "mp2amp.toml").write_text(
        '[source]\nfiles = ["events"]\n[transform]\nplan = "nowhere.yaml"\n'
        'session_gap_minutes = "soon"\n')
    result = invoke("migrate", "--quiet")
    assert result.exit_code == 2
    assert "(2 problem(s))" in flat(result.stderr), result.stderr


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_array_elements_are_numbered_by_the_line_they_start_on_and_stay_unique(
        monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Pretty-printed: each element's first line. Elements sharing a line (an array on one
    line) are numbered on from it: records are keyed by file and line in the ledger."""
    import io

    from mp2amp.extract import jsonarray

    monkeypatch.setattr(jsonarray, "CHUNK", chunk)
    elements = [{"event": "E", "properties": {"n": i, "s": "a\nb" * (i % 2)}} for i in range(9)]
    pretty = json.dumps(elements, indent=2)
    starts = [n for n, text in enumerate(pretty.splitlines(), 1) if text == "  {"]
    read = list(jsonarray.iter_array("p.json", io.BytesIO(pretty.encode())))
    assert [(r.line, r.record) for r in read] == list(zip(starts, elements, strict=True))
    compact = list(jsonarray.iter_array("c.json", io.BytesIO(json.dumps(elements).encode())))
    assert [r.line for r in compact] == list(range(1, 10))
    mixed = b'[{"a":1},{"a":2},\n{"a":3},\n\n5, {"a":6}]'
    lines = [(r.line, r.rejection is None) for r in
             jsonarray.iter_array("m.json", io.BytesIO(mixed))]
    assert lines == [(1, True), (2, True), (3, True), (4, False), (5, True)]


def test_a_broken_array_element_names_its_line_in_the_message() -> None:
    import io

    from mp2amp.extract.jsonarray import iter_array

    text = b'[\n  {"a": 1},\n  {"a": oops},\n  {"a": 3}\n]\n'
    bad = next(r for r in iter_array("b.json", io.BytesIO(text)) if r.rejection)
    assert bad.line == 3 and bad.rejection is not None
    assert "JSON array element 2 is not valid JSON" in bad.rejection.message
    assert "(line 3)" in bad.rejection.message


def test_a_403_on_a_later_day_does_not_claim_nothing_was_sent() -> None:
    from mp2amp.extract.api import forbidden_message

    said = forbidden_message("Mixpanel export of 2024-01-02", "forbidden", "service account")
    assert "nothing was sent" not in said
    assert "--resume" in said and "not sent again" in said


def test_storage_errors_of_an_export_window_reach_migrates_handler_naming_the_file(
        tmp_path: Path) -> None:
    import errno

    from mp2amp.errors import TerminalError
    from mp2amp.extract.export import _raise_disk_error
    from mp2amp.pipeline.diskspace import stop_on_storage_errors

    part = tmp_path / "work" / "export" / "2024-01-01.jsonl.part"
    for code, said in ((errno.ENOSPC, "the disk is full (writing"),
                       (errno.EDQUOT, "the disk is full (writing"),
                       (errno.EACCES, "cannot write")):
        with pytest.raises(OSError) as raised:
            _raise_disk_error(part, OSError(code, os.strerror(code)))
        assert raised.value.errno == code and raised.value.filename == str(part)
        with pytest.raises(TerminalError) as stopped, stop_on_storage_errors(tmp_path / "work"):
            raise raised.value
        message = str(stopped.value)
        assert message.startswith(said) and str(part) in message and "--resume" in message
        assert os.strerror(code) in message
    with pytest.raises(TerminalError, match="--resume"):
        _raise_disk_error(part, OSError(errno.EIO, "Input/output error"))
