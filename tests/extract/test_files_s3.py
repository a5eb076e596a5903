"""iter_records against a real local S3 server (moto server mode), through s3fs."""

from __future__ import annotations

import gzip
import json
from typing import Any

import boto3
import pytest

from mp2amp.errors import InputError
from mp2amp.extract import iter_records


def event(name: str, i: int) -> dict[str, Any]:
    return {"event": name, "properties": {"time": 1_700_000_000 + i, "distinct_id": f"u{i}"}}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


@pytest.fixture(scope="module")
def bucket(s3_server: dict[str, Any]) -> str:
    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="mpdata")
    for day in ("01", "02"):
        body = "".join(dumps(event("View", int(day) * 10 + i)) + "\n" for i in range(3))
        s3.put_object(Bucket="mpdata", Key=f"raw/2024-01-{day}.json.gz",
                      Body=gzip.compress(body.encode()))
    s3.put_object(Bucket="mpdata", Key="raw/notes.txt", Body=b"ignored by the glob")
    row = dumps({"event_name": "Play", "time": 1704164645, "distinct_id": "d",
                 "insert_id": "p1", "properties": {"genre": "jazz"}})
    s3.put_object(Bucket="mpdata", Key="pipe/77/mp_master_event/2024/01/02/part-1.json.gz",
                  Body=gzip.compress((row + "\n{broken\n").encode()))
    s3.put_object(Bucket="mpdata", Key="pipe/77/mp_people_data/people.json.gz",
                  Body=gzip.compress(b'{"distinct_id":"d"}\n'))
    return "mpdata"


def test_s3_glob_reads_gzipped_jsonl(s3_server: dict[str, Any], bucket: str) -> None:
    recs = list(iter_records([f"s3://{bucket}/raw/*.json.gz"], storage_options=s3_server))
    assert [r.record["properties"]["distinct_id"] for r in recs if r.record] == [  # type: ignore[index]
        "u10", "u11", "u12", "u20", "u21", "u22"]
    assert recs[0].source == "s3://mpdata/raw/2024-01-01.json.gz" and recs[0].line == 1


def test_s3_pipelines_directory(s3_server: dict[str, Any], bucket: str) -> None:
    recs = list(iter_records([f"s3://{bucket}/pipe/"], storage_options=s3_server))
    assert recs[0].record == {"event": "Play", "properties": {
        "genre": "jazz", "time": 1704164645, "distinct_id": "d", "$insert_id": "p1"},
        "mp2amp_time_is_utc": True}
    assert recs[1].rejection is not None and recs[1].rejection.reason == "malformed_json"
    assert recs[1].source.endswith("part-1.json.gz") and recs[1].line == 2
    assert len(recs) == 2


def test_s3_missing_object_and_bucket(s3_server: dict[str, Any], bucket: str) -> None:
    with pytest.raises(InputError, match=r"s3://mpdata/raw/nope\.json does not exist"):
        list(iter_records([f"s3://{bucket}/raw/nope.json"], storage_options=s3_server))
    with pytest.raises(InputError, match="no object matches"):
        list(iter_records(["s3://mpdata/none/*.json"], storage_options=s3_server))
    with pytest.raises(InputError, match="s3://no-such-bucket"):
        list(iter_records(["s3://no-such-bucket/x.json"], storage_options=s3_server))
