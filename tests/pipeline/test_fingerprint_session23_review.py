"""A remote identity table rewritten between a run and its resume (a soak at scale).

The fingerprint held an ``s3://`` or ``gs://`` table (and a local glob) by its location
only: a resume took a rewritten table on silently, resolved the rest of the events to
other users, and an in-flight batch's user-only events were stored twice (Amplitude keys
them by a hash of the user_id). Now such a table counts by its listing (names, sizes,
ETags or generations), a local glob by its files' contents.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from migrate_kit import Project, amplitude, assert_exactly_once, make_config

from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.fingerprint import events_fingerprint
from mp2amp.pipeline.migrate import migrate

BUCKET = "mp-identity-23"


@pytest.fixture
def table(project: Project, s3_server: dict[str, Any], tmp_path: Path) -> list[bytes]:
    """The project's identity mappings, in two part files under s3://BUCKET/ids/."""
    rows = gzip.decompress((project.root / "identity" / "mappings.jsonl.gz").read_bytes())
    lines = rows.splitlines(keepends=True)
    client = _client(s3_server)
    client.create_bucket(Bucket=BUCKET)
    for key in [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]:
        client.delete_object(Bucket=BUCKET, Key=key)
    client.put_object(Bucket=BUCKET, Key="ids/part-0", Body=b"".join(lines[::2]))
    client.put_object(Bucket=BUCKET, Key="ids/part-1", Body=b"".join(lines[1::2]))
    return lines


def _client(s3: dict[str, Any]) -> Any:
    return boto3.client("s3", endpoint_url=s3["endpoint_url"], aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


def _config(project: Project, tmp_path: Path, url: str, s3: dict[str, Any]) -> Any:
    return make_config(project.events, tmp_path / "work", url, **{
        "source.identity_table": f"s3://{BUCKET}/ids/", "source.storage_options": s3})


def test_a_rewritten_remote_identity_table_stops_the_resume(
        project: Project, table: list[bytes], s3_server: dict[str, Any],
        tmp_path: Path) -> None:
    with amplitude(tmp_path / "amp") as url:
        config = _config(project, tmp_path, url, s3_server)
        assert migrate(config).exit_code == 0
        assert migrate(config, resume=True).exit_code == 0  # untouched: it resumes
        # the same bytes' length, another user: only the object's ETag tells
        first = orjson.loads(table[0])
        renamed = orjson.dumps({**first, "resolved_distinct_id":
                                first["resolved_distinct_id"][::-1]}) + b"\n"
        assert len(renamed) == len(table[0])
        _client(s3_server).put_object(Bucket=BUCKET, Key="ids/part-0",
                                      Body=b"".join([renamed, *table[2::2]]))
        with pytest.raises(TerminalError) as refused:
            migrate(config, resume=True)
        assert "differs from the one the run started with in what decides its batches" \
            in str(refused.value)
        _client(s3_server).put_object(Bucket=BUCKET, Key="ids/part-0", Body=b"".join(table[::2]))
        again = migrate(config, resume=True)  # put back (a new ETag, the same listing)
        assert again.exit_code == 0
        assert_exactly_once(url, project.expected)


def test_a_run_that_recorded_its_remote_table_by_location_resumes_and_records_the_listing(
        project: Project, table: list[bytes], s3_server: dict[str, Any],
        tmp_path: Path) -> None:
    with amplitude(tmp_path / "amp") as url:
        config = _config(project, tmp_path, url, s3_server)
        assert migrate(config).exit_code == 0
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        stored = orjson.loads(str(ledger.get_meta("fingerprint")))
        listed = stored["events"]
        stored["events"] = events_fingerprint(config, listed=False)  # as before 2026-12-01
        assert stored["events"] != listed
        ledger.set_meta("fingerprint", orjson.dumps(stored, option=orjson.OPT_SORT_KEYS).decode())
        ledger.close()
        assert migrate(config, resume=True).exit_code == 0
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        assert orjson.loads(str(ledger.get_meta("fingerprint")))["events"] == listed
        ledger.close()


def test_a_remote_table_that_cannot_be_listed_says_so_rather_than_changed(
        project: Project, table: list[bytes], s3_server: dict[str, Any],
        tmp_path: Path) -> None:
    config = _config(project, tmp_path, "http://127.0.0.1:9", {
        **s3_server, "endpoint_url": "http://127.0.0.1:9", "config_kwargs": {
            "retries": {"max_attempts": 1}, "connect_timeout": 1}})
    with pytest.raises(InputError, match=r"the identity mapping table \(\[source\] "
                       r"identity_table\) cannot be listed"):
        events_fingerprint(config)


def test_a_local_glob_table_counts_by_its_files_contents(project: Project,
                                                        tmp_path: Path) -> None:
    folder = tmp_path / "ids"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"distinct_id":"d1","resolved_distinct_id":"u1"}\n')
    config = make_config(project.events, tmp_path / "work", "http://127.0.0.1:9", **{
        "source.identity_table": str(folder / "*.jsonl")})
    before = events_fingerprint(config)
    assert events_fingerprint(config) == before
    (folder / "a.jsonl").write_text('{"distinct_id":"d1","resolved_distinct_id":"u2"}\n')
    assert events_fingerprint(config) != before
