"""Session 16 second-pass review (S3): the fixes to legacy time (the DST fold read with a
clock a little ahead, ``to_local_ms`` around timezone changes), the identity pass ordered
by staging's UTC time, and the privacy rules' ``owner`` (``retroactive = false``).

``xfail(strict=True)`` tests pin defects: each asserts the correct behaviour and fails on
the current code for the reason given. The others pin non-obvious behaviour that holds.
They run ``mp2amp transform`` (offline: staging, identity pass, transform) on small
hand-written inputs and read the events it writes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from shared_kit import clean_env

LA = "America/Los_Angeles"
# A UUID user ID (apps that key users by UUID: the README's "UUID user IDs too")
USER = "3f1e2d4c-5b6a-4789-8abc-def012345678"
DEVICE = "9a8b7c6d-1111-4222-8333-444455556666"


def wall(*parts: int) -> int:
    """Epoch seconds of a wall-clock time written as if it were UTC (what a legacy
    project's export holds), or of a UTC time."""
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


def lines(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def transform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inputs: dict[str, str],
              config: str, extra: dict[str, str] | None = None,
              run: str = "") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``mp2amp transform`` of ``inputs`` (file name -> text, in ``in/``) with ``config``
    (``extra``: more files beside it; ``run``: more ``[run]`` keys); the events it wrote,
    in time order, and its JSON summary."""
    work = tmp_path / "project"
    (work / "in").mkdir(parents=True)
    clean_env(monkeypatch)
    monkeypatch.chdir(work)
    for name, text in inputs.items():
        (work / "in" / name).write_text(text)
    for name, text in (extra or {}).items():
        (work / name).write_text(text)
    (work / "mp2amp.toml").write_text(f'{config}\n[run]\nworkdir = "work"\n{run}')
    run = CliRunner().invoke(app, ["transform", "-c", "mp2amp.toml", "-o", "out.jsonl",
                                   "--json", "in"], catch_exceptions=False)
    assert run.exit_code == 0, run.stderr + run.stdout
    events = [orjson.loads(x) for x in (work / "out.jsonl").read_bytes().splitlines()]
    return sorted(events, key=lambda e: (e["time"], e["event_type"])), orjson.loads(run.stdout)


# --- retroactive = false: a user's own event is not an anonymous one ---------------------------

_TABLE = lines([{"distinct_id": f"$device:{DEVICE}", "resolved_distinct_id": USER},
                {"distinct_id": USER, "resolved_distinct_id": USER}])


@pytest.mark.parametrize("mode", ["original", "simplified-with-identity-table"])
def test_retroactive_off_keeps_a_uuid_users_own_server_side_event_his(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
) -> None:
    # The user logs in on his phone (the SDK sets $user_id and $device_id); the backend
    # then tracks a renewal under his distinct_id (server-side libraries set neither).
    # ``retroactive = false`` is about anonymous events: this one is the user's own.
    t = wall(2024, 3, 1, 12, 0)
    records = [
        {"event": "Login", "properties": {
            "time": t, "distinct_id": USER, "$user_id": USER, "$device_id": DEVICE,
            "$insert_id": "login-000000001"}},
        {"event": "Subscription Renewed", "properties": {
            "time": t + 600, "distinct_id": USER, "$insert_id": "renew-000000001"}},
    ]
    if mode == "original":
        records.insert(0, {"event": "$identify", "properties": {
            "time": t, "distinct_id": USER, "$anon_distinct_id": f"$device:{DEVICE}",
            "$insert_id": "identify-0000001"}})
        config, extra = '[mixpanel]\nid_merge = "original"\n', None
    else:
        config = '[source]\nidentity_table = "table.jsonl"\n'
        extra = {"table.jsonl": _TABLE}
    config += "[transform]\nretroactive = false\n"
    stored, _ = transform(tmp_path, monkeypatch, {"events.jsonl": lines(records)}, config,
                          extra)
    assert [e["event_type"] for e in stored] == ["Login", "Subscription Renewed"]
    renewal = stored[1]
    assert renewal.get("user_id") == USER
    assert renewal.get("device_id") != USER  # never a device named after the user


# --- pins: the identity pass of ``mp2amp transform`` orders by UTC in a legacy project -------


@pytest.mark.parametrize("mode", ["simplified", "original"])
def test_transform_gives_a_shared_device_to_its_first_user_by_utc_when_spilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
) -> None:
    """A legacy Los Angeles project whose identity graph spills to SQLite (600 other
    logins, past the smallest budget's 500 links): bob logs in at 15:00Z (a Data Pipelines
    row: UTC), alice at 10:00 local = 18:00Z (an export row). Bob was first by three hours
    (alice's raw ``time`` is the smaller); the device's later anonymous event is his."""
    start = wall(2024, 3, 1, 9, 0)
    others = [{"event": "Login", "properties": {
        "time": start + n, "distinct_id": f"user-{n:05d}", "$user_id": f"user-{n:05d}",
        "$device_id": f"device-{n:05d}", "$insert_id": f"other-{n:010d}"}} for n in range(600)]
    export = lines([*others,
        {"event": "Login", "properties": {
            "time": wall(2024, 3, 1, 10, 0), "distinct_id": "alice-1", "$user_id": "alice-1",
            "$device_id": "shared-device", "$insert_id": "aaaaaaaaaaaaaaaa"}},
        {"event": "Opened", "properties": {
            "time": wall(2024, 3, 1, 12, 0), "distinct_id": "$device:shared-device",
            "$device_id": "shared-device", "$insert_id": "cccccccccccccccc"}},
    ])
    pipeline = lines([{"event_name": "Login", "time": wall(2024, 3, 1, 15, 0),
                       "distinct_id": "bob-12", "user_id": "bob-12",
                       "device_id": "shared-device", "insert_id": "bbbbbbbbbbbbbbbb",
                       "properties": {}}])
    stored, summary = transform(
        tmp_path, monkeypatch, {"export.jsonl": export, "pipeline.jsonl": pipeline},
        f'[mixpanel]\ntimezone = "{LA}"\nlegacy_time = true\nid_merge = "{mode}"\n',
        run="memory_budget = 1000\n")
    assert summary["identity"]["spilled"] is True
    mine = [(e["event_type"], e.get("user_id")) for e in stored
            if e.get("device_id") == "shared-device"]
    assert mine == [("Login", "bob-12"), ("Login", "alice-1"), ("Opened", "bob-12")]


# --- timezone changes: the zone an event was stored in is the one in force at ingestion -------


def test_a_late_event_ingested_after_a_timezone_change_is_read_in_the_new_zone() -> None:
    # reference/mixpanel-api.md: pre-2023 projects store event times "in the project
    # timezone as it was at ingestion time"; "each event keeps the offset that applied
    # when it was ingested". The project moved from Los Angeles to New York on
    # 2021-06-01. A phone offline for a day records an event at 2021-06-01T03:00Z
    # (05-31 20:00 in Los Angeles) and uploads it at 2021-06-02T12:00Z, a day and a half
    # after the change: Mixpanel stored it in New York time, 05-31 23:00.
    from mp2amp.models import Resolved
    from mp2amp.transform import Transformer, TransformSettings

    transformer = Transformer(TransformSettings(
        timezone=LA, legacy_time=True, timezone_changes=(("2021-06-01", "America/New_York"),)))
    out = transformer.event({"event": "Tap", "properties": {
        "time": wall(2021, 5, 31, 23, 0), "distinct_id": "u-12345",
        "$insert_id": "abcdefghijklmnop",
        "mp_processing_time_ms": wall(2021, 6, 2, 12, 0) * 1000}}, Resolved("u-12345", None))
    assert isinstance(out, dict)
    assert out["time"] == wall(2021, 6, 1, 3, 0) * 1000
