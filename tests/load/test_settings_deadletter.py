"""Hosts, limits and validation of the upload settings; the dead-letter file's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from mp2amp.errors import ConfigError
from mp2amp.load import DeadLetterFile, UploadSettings
from mp2amp.load.deadletter import read_dead_letters


@pytest.mark.parametrize(("region", "endpoint", "url"), [
    ("us", "batch", "https://api2.amplitude.com/batch"),
    ("us", "httpapi", "https://api2.amplitude.com/2/httpapi"),
    ("eu", "batch", "https://api.eu.amplitude.com/batch"),
    ("eu", "httpapi", "https://api.eu.amplitude.com/2/httpapi"),
])
def test_documented_hosts(region, endpoint, url):
    assert UploadSettings(api_key="k", region=region, endpoint=endpoint).url == url


def test_api_host_override_and_per_endpoint_defaults():
    s = UploadSettings(api_key="k", api_host="http://127.0.0.1:8040/", endpoint="httpapi")
    assert s.url == "http://127.0.0.1:8040/2/httpapi"
    assert s.limits.max_bytes == 1_000_000 and s.throttle_seconds == 30.0
    b = UploadSettings(api_key="k")
    assert b.limits.max_bytes == 10 * 1024 * 1024 and b.limits.max_events == 2000
    assert b.throttle_seconds == 15.0 and b.min_id_length == 1


def test_settings_report_every_problem_and_hide_the_key():
    with pytest.raises(ConfigError) as info:
        UploadSettings(api_key="", endpoint="rest", region="apac", concurrency=0,  # type: ignore[arg-type]
                       max_events=5000, min_id_length=0)
    assert len(info.value.problems) == 6
    assert "supersecret" not in repr(UploadSettings(api_key="supersecret"))


def test_dead_letter_rows_are_appended_with_origin_and_masked(tmp_path: Path):
    path = tmp_path / "sub" / "dead.jsonl"
    with DeadLetterFile(path, secrets=["k-123", ""]) as dlq:
        dlq.write({"event_type": "a"}, ("f.jsonl", 3), "invalid_field", "echoed k-123 here")
    with DeadLetterFile(path) as dlq:
        dlq.write({"big": 2 ** 70}, ("f.jsonl", 9), "unserializable", "too big")
    rows = read_dead_letters(path)
    assert [(r["source"], r["line"], r["reason"]) for r in rows] == [
        ("f.jsonl", 3, "invalid_field"), ("f.jsonl", 9, "unserializable")]
    assert rows[0]["message"] == "echoed *** here" and rows[0]["event"] == {"event_type": "a"}
    assert rows[1]["event"] == {"big": 2 ** 70}
    assert read_dead_letters(tmp_path / "missing.jsonl") == []
