"""A small Mixpanel export, tracking plan and config on disk for the transform CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

DAY1 = """\
{"event":"Sign Up","properties":{"time":1700000000,"distinct_id":"$device:d-1111","$device_id":"d-1111","$insert_id":"ins-0001","$os":"Mac OS X","$browser":"Chrome","mp_lib":"web","Plan Name":"pro","price":"9.50","$email":"a@example.com","mp_country_code":"DE"}}
{"event":"$identify","properties":{"time":1700000100,"distinct_id":"alice-01","$identified_id":"alice-01","$anon_id":"d-1111"}}
{"event":"Page View","properties":{"time":1700000200,"distinct_id":"alice-01","$user_id":"alice-01","$device_id":"d-1111","$insert_id":"ins-0002","mp_lib":"web"}}
{"event":"Page View","properties":{"time":1700000200,"distinct_id":"alice-01","$user_id":"alice-01","$device_id":"d-1111","$insert_id":"ins-0002","mp_lib":"web"}}
{"event":"Heartbeat","properties":{"time":1700000300,"distinct_id":"alice-01"}}
{"event":"Page View","properties":{"time":1700009999,"distinct_id":"gone-user","$insert_id":"ins-0003"}}
not json
{"event":"Page View","properties":{"time":1700000400,"distinct_id":"undefined","$insert_id":"ins-0004"}}
"""

# The next day's file: the session of d-1111 goes on across files (15 minutes later).
DAY2 = """\
{"event":"Page View","properties":{"time":1700001100,"distinct_id":"alice-01","$user_id":"alice-01","$device_id":"d-1111","$insert_id":"ins-0005","mp_lib":"web"}}
"""

PLAN = """\
unplanned_events: flag
events:
  Sign Up:
    rename: Signed Up
    properties:
      Plan Name: {rename: plan}
      price: {type: number}
  Heartbeat: {drop: true}
  Page View: {}
"""

CONFIG = """\
[transform]
plan = "plan.yaml"
[privacy]
ip = "drop"
hash_properties = ["$email"]
hash_salt = "pepper"
exclude_users = "excluded.txt"
[run]
workdir = "work"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with day1.jsonl, day2.jsonl.gz, plan.yaml, excluded.txt and mp2amp.toml;
    the working directory for the test."""
    import gzip

    (tmp_path / "day1.jsonl").write_text(DAY1, encoding="utf-8")
    (tmp_path / "day2.jsonl.gz").write_bytes(gzip.compress(DAY2.encode(), mtime=0))
    (tmp_path / "plan.yaml").write_text(PLAN, encoding="utf-8")
    (tmp_path / "excluded.txt").write_text("gone-user\n", encoding="utf-8")
    (tmp_path / "mp2amp.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for var in ("MP2AMP_HASH_SALT", "AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY",
                "MIXPANEL_SERVICE_ACCOUNT", "MIXPANEL_SECRET"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path
