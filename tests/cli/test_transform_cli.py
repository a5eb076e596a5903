"""``mp2amp transform`` end to end: exact events, rejects, summary and exit codes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app

SESSION = 1_700_000_000_000
EMAIL_HASH = hashlib.sha256(b"peppera@example.com").hexdigest()
LIB = "mp2amp/"

EXPECTED_EVENTS: list[dict[str, Any]] = [
    {"event_type": "Signed Up", "user_id": "alice-01", "device_id": "d-1111",
     "time": 1_700_000_000_000, "insert_id": "ins-0001-7102e25aa8b2643c", "platform": "Web",
     "os_name": "Chrome", "device_model": "Mac OS", "country": "Germany", "region": None,
     "city": None, "dma": None,
     "event_properties": {"os": "Mac OS X", "browser": "Chrome", "mp_lib": "web",
                          "plan": "pro", "price": 9.5, "$email": EMAIL_HASH},
     "session_id": SESSION},
    {"event_type": "Page View", "user_id": "alice-01", "device_id": "d-1111",
     "time": 1_700_000_200_000, "insert_id": "ins-0002-34db84f002239f63", "platform": "Web",
     "event_properties": {"mp_lib": "web"}, "session_id": SESSION},
    {"event_type": "Page View", "user_id": "alice-01", "device_id": "d-1111",
     "time": 1_700_001_100_000, "platform": "Web", "event_properties": {"mp_lib": "web"},
     "session_id": SESSION},
]

EXPECTED_SUMMARY = {
    "records_read": 9, "events_out": 3, "identity_records": 1, "duplicates": 1,
    "skipped": {"plan.drop_event": 1, "privacy.excluded_user": 1},
    "rejected": {"malformed_json": 1, "missing_id": 1},
    "files": 2, "balanced": True,
}


def events_of(data: bytes) -> list[dict[str, Any]]:
    events = [orjson.loads(line) for line in data.splitlines()]
    for event in events:
        assert event.pop("library").startswith(LIB)
    return events


def check_events(data: bytes) -> None:
    events = events_of(data)
    # the third event's insert_id is derived from its $insert_id, like the others
    assert events[2].pop("insert_id").startswith("ins-0005-")
    assert events == EXPECTED_EVENTS


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["transform", *args], catch_exceptions=False)


def test_files_out_json_summary(project: Path) -> None:
    result = invoke("day1.jsonl", "day2.jsonl.gz", "--out", "out.jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    check_events((project / "out.jsonl").read_bytes())
    doc = orjson.loads(result.stdout)
    assert doc["summary"] == EXPECTED_SUMMARY
    assert doc["out"] == "out.jsonl" and doc["rejects"] == "out.jsonl.rejects.jsonl"
    assert doc["identity"]["identity_records"] == {"$identify": 1}
    rejects = [orjson.loads(line)
               for line in (project / "out.jsonl.rejects.jsonl").read_bytes().splitlines()]
    assert rejects == [
        {"source": "day1.jsonl", "line": 7, "reason": "malformed_json",
         "message": "day1.jsonl line 7 is not valid JSON (and does not join with the next "
                    "line into a record): 'not json'",
         "field": None, "record": "not json"},
        {"source": "day1.jsonl", "line": 8, "reason": "missing_id",
         "message": "day1.jsonl line 8: no usable user_id or device_id for this event "
                    "(absent, junk or blocklisted IDs)",
         "field": "properties.distinct_id",
         "record": {"event": "Page View", "properties": {
             "time": 1700000400, "distinct_id": "undefined", "$insert_id": "ins-0004"}}},
    ]
    assert not list(project.glob(".*.partial"))
    assert not (project / "work").exists()  # scratch state removed, and the folder made for it


def test_stdout_events_and_table_on_stderr_are_deterministic(project: Path) -> None:
    first = invoke("day1.jsonl", "day2.jsonl.gz", "--rejects", "r.jsonl")
    again = invoke("day1.jsonl", "day2.jsonl.gz", "--rejects", "r2.jsonl")
    assert first.exit_code == again.exit_code == 0
    check_events(first.stdout.encode())
    assert first.stdout == again.stdout
    assert (project / "r.jsonl").read_bytes() == (project / "r2.jsonl").read_bytes()
    assert first.stderr == (
        "mp2amp transform                 \n"
        "┌─────────────────────────┬─────┐\n"
        "│ records read            │   9 │\n"
        "│ events out              │   3 │\n"
        "│ identity records        │   1 │\n"
        "│ duplicates              │   1 │\n"
        "│ skipped                 │   2 │\n"
        "│   plan.drop_event       │   1 │\n"
        "│   privacy.excluded_user │   1 │\n"
        "│ rejected                │   2 │\n"
        "│   malformed_json        │   1 │\n"
        "│   missing_id            │   1 │\n"
        "│ counts add up           │ yes │\n"
        "│ identity clusters       │   1 │\n"
        "└─────────────────────────┴─────┘\n"
        "events: -   rejects: r.jsonl\n"
    )


def test_bad_config_reported_whole_and_nothing_written(project: Path) -> None:
    (project / "bad.toml").write_text(
        '[transform]\nsession_gap_minutes = "soon"\nplan = "nope.yaml"\n'
        '[privacy]\nip = "maybe"\n[amplitude]\napi_key = "k"\n', encoding="utf-8")
    result = invoke("--config", "bad.toml", "day1.jsonl", "--out", "out.jsonl")
    assert result.exit_code == 2
    assert result.stdout == ""
    text = " ".join(result.stderr.split())
    assert "invalid configuration in bad.toml (4 problem(s))" in text
    for problem in ("transform.session_gap_minutes: must be an integer, got a string 'soon'",
                    f"transform.plan: the tracking plan {project / 'nope.yaml'} does not exist",
                    "privacy.ip: 'maybe' is not one of keep, drop",
                    "amplitude.api_key: secrets are read only from the environment"):
        assert problem in text
    assert not (project / "out.jsonl").exists()
    assert "Traceback" not in result.stderr


def test_bad_plan_reported_with_its_file(project: Path) -> None:
    (project / "plan.yaml").write_text("unplanned_events: nah\nevents: {A: {drop: 1}}\n")
    result = invoke("day1.jsonl", "-o", "out.jsonl")
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "unplanned_events: 'nah' is not one of keep, drop, flag" in text
    assert "events.A.drop: must be true or false, got 1" in text
    assert "plan.yaml" in text


def test_plan_flag_overrides_the_config(project: Path) -> None:
    (project / "other.yaml").write_text("unplanned_events: drop\nevents: {Heartbeat: {}}\n")
    result = invoke("day1.jsonl", "--plan", "other.yaml", "-o", "out.jsonl", "--json")
    assert result.exit_code == 0
    summary = orjson.loads(result.stdout)["summary"]
    assert summary["skipped"] == {"plan.not_in_plan": 4, "privacy.excluded_user": 1}
    assert summary["events_out"] == 1  # Heartbeat, now planned


def test_missing_input_and_no_input(project: Path) -> None:
    result = invoke("missing.jsonl", "-o", "out.jsonl")
    assert result.exit_code == 2 and "missing.jsonl" in result.stderr
    result = invoke("-o", "out.jsonl")
    assert result.exit_code == 2 and "no input files" in result.stderr


def test_counts_that_do_not_add_up_exit_non_zero(project: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage that loses a record (simulated) must fail the run, not pass silently."""
    import mp2amp.transform.offline as offline

    real = offline.transform_stream

    def lossy(*args: Any) -> Any:
        for i, outcome in enumerate(real(*args)):
            if i != 2:
                yield outcome

    monkeypatch.setattr(offline, "transform_stream", lossy)
    result = invoke("day1.jsonl", "-o", "out.jsonl", "--json")
    assert result.exit_code == 2
    assert orjson.loads(result.stdout)["summary"]["balanced"] is False
    assert "counts do not add up: read 8 records but accounted for 7" in " ".join(
        result.stderr.split())


def test_real_entry_point(project: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mp2amp", "transform", "day1.jsonl", "day2.jsonl.gz",
         "--out", "o.jsonl", "--json"],
        capture_output=True, check=False, cwd=project)
    assert proc.returncode == 0, proc.stderr.decode()
    assert orjson.loads(proc.stdout)["summary"] == EXPECTED_SUMMARY
    check_events((project / "o.jsonl").read_bytes())


def test_output_inside_the_input_folder_is_not_read_back(project: Path) -> None:
    data = project / "data"
    data.mkdir()
    (project / "day1.jsonl").rename(data / "day1.jsonl")
    for _ in range(2):  # the second run finds the first run's outputs in the folder
        result = invoke("data", "--out", "data/out.jsonl", "--rejects", "data/rejects.jsonl",
                        "--json")
        assert result.exit_code == 0, result.stderr
        assert orjson.loads(result.stdout)["summary"]["records_read"] == 8


def test_json_summary_goes_to_stderr_when_events_go_to_stdout(project: Path) -> None:
    result = invoke("day1.jsonl", "day2.jsonl.gz", "--json")
    assert result.exit_code == 0
    check_events(result.stdout.encode())
    doc = orjson.loads(result.stderr)
    assert doc["summary"] == EXPECTED_SUMMARY
    assert doc["out"] == "-" and doc["rejects"] == "rejects.jsonl"
    assert len((project / "rejects.jsonl").read_bytes().splitlines()) == 2


WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"


@pytest.mark.skipif(not WILD.is_dir(), reason="shared/fixtures/wild not present")
def test_real_export_records(project: Path) -> None:
    """Real Raw Export lines from public sources: all accounted for, all valid for Amplitude."""
    from mp2amp.emulators.amplitude.validate import validate_events

    source = str(WILD / "mixpanel-export-events.jsonl")
    result = invoke(source, "-o", "wild.jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["summary"] == {
        "records_read": 21, "events_out": 17, "identity_records": 0, "duplicates": 0,
        "skipped": {"hotshard_record": 1},
        # the docs' export samples carry no distinct_id at all
        "rejected": {"missing_id": 3},
        "files": 1, "balanced": True,
    }
    events = [orjson.loads(line) for line in (project / "wild.jsonl").read_bytes().splitlines()]
    assert validate_events(events, min_id_length=1).ok
    rejects = [orjson.loads(line)
               for line in (project / "wild.jsonl.rejects.jsonl").read_bytes().splitlines()]
    # in event-time order, as the events are (the inputs are staged as migrate stages them)
    assert sorted((r["line"], r["reason"]) for r in rejects) == [
        (16, "missing_id"), (17, "missing_id"), (18, "missing_id")]
    assert all("distinct_id" not in r["record"]["properties"] for r in rejects)
