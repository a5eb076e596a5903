"""iter_records against a real local GCS server (gcp-storage-emulator), through gcsfs."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from mp2amp.errors import InputError
from mp2amp.extract import expand_paths, iter_records
from mp2amp.models import SourceRecord


def event(name: str, i: int) -> dict[str, Any]:
    return {"event": name, "properties": {"time": 1_700_000_000 + i, "distinct_id": f"u{i}"}}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def where(recs: list[SourceRecord]) -> list[tuple[str, int]]:
    return [(r.source, r.line) for r in recs]


@pytest.fixture(scope="module")
def bucket(gcs_server: dict[str, Any]) -> str:
    """Objects written through Google's own client, not through the code under test."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="mp2amp-test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_server["endpoint_url"]})
    b = client.create_bucket("mpdata")
    for day in ("01", "02"):
        body = "".join(dumps(event("View", int(day) * 10 + i)) + "\n" for i in range(3))
        b.blob(f"raw/2024-01-{day}.json.gz").upload_from_string(gzip.compress(body.encode()))
    b.blob("raw/notes.txt").upload_from_string(b"ignored by the glob")
    row = dumps({"event_name": "Play", "time": 1704164645, "distinct_id": "d",
                 "insert_id": "p1", "properties": {"genre": "jazz"}})
    b.blob("pipe/77/mp_master_event/2024/01/02/part-1.json.gz").upload_from_string(
        gzip.compress((row + "\n{broken\n").encode()))
    b.blob("pipe/77/mp_people_data/people.json.gz").upload_from_string(
        gzip.compress(b'{"distinct_id":"d"}\n'))
    array = json.dumps([event("Buy", 1), event("Buy", 2)], indent=2)  # elements span lines
    b.blob("arrays/a.json").upload_from_string(array.encode())
    b.blob("arrays/b.json.gz").upload_from_string(
        gzip.compress(dumps([event("Buy", 3)]).encode()))
    return "mpdata"


def test_gs_glob_reads_gzipped_jsonl(gcs_server: dict[str, Any], bucket: str) -> None:
    recs = list(iter_records([f"gs://{bucket}/raw/*.json.gz"], storage_options=gcs_server))
    assert [r.record for r in recs] == [event("View", d * 10 + i) for d in (1, 2)
                                        for i in range(3)]
    assert where(recs) == [(f"gs://mpdata/raw/2024-01-0{d}.json.gz", line)
                           for d in (1, 2) for line in (1, 2, 3)]
    assert all(r.rejection is None for r in recs)


def test_gs_pipelines_directory(gcs_server: dict[str, Any], bucket: str) -> None:
    recs = list(iter_records([f"gs://{bucket}/pipe/"], storage_options=gcs_server))
    assert recs[0].record == {"event": "Play", "properties": {
        "genre": "jazz", "time": 1704164645, "distinct_id": "d", "$insert_id": "p1"},
        "mp2amp_time_is_utc": True}
    assert recs[1].rejection is not None and recs[1].rejection.reason == "malformed_json"
    part = "gs://mpdata/pipe/77/mp_master_event/2024/01/02/part-1.json.gz"
    assert where(recs) == [(part, 1), (part, 2)]  # the people file is not read as events


def test_gs_json_array_files(gcs_server: dict[str, Any], bucket: str) -> None:
    recs = list(iter_records([f"gs://{bucket}/arrays/"], storage_options=gcs_server))
    assert [r.record for r in recs] == [event("Buy", 1), event("Buy", 2), event("Buy", 3)]
    # an array's "line" is the line its element starts on
    assert where(recs) == [("gs://mpdata/arrays/a.json", 2),
                           ("gs://mpdata/arrays/a.json", 9),
                           ("gs://mpdata/arrays/b.json.gz", 1)]


def test_gcs_scheme_names_the_same_objects(gcs_server: dict[str, Any], bucket: str) -> None:
    recs = list(iter_records([f"gcs://{bucket}/raw/2024-01-02.json.gz"],
                             storage_options=gcs_server))
    assert [r.record for r in recs] == [event("View", 20 + i) for i in range(3)]
    assert {r.source for r in recs} == {"gs://mpdata/raw/2024-01-02.json.gz"}


def test_gs_missing_object_and_bucket(gcs_server: dict[str, Any], bucket: str) -> None:
    with pytest.raises(InputError, match=r"gs://mpdata/raw/nope\.json does not exist"):
        list(iter_records([f"gs://{bucket}/raw/nope.json"], storage_options=gcs_server))
    with pytest.raises(InputError, match=r"gs://mpdata/nodir/ does not exist"):
        list(iter_records([f"gs://{bucket}/nodir/"], storage_options=gcs_server))
    with pytest.raises(InputError, match=r"no object matches gs://mpdata/none/\*\.json"):
        list(iter_records(["gs://mpdata/none/*.json"], storage_options=gcs_server))
    with pytest.raises(InputError, match=r"gs://no-such-bucket/x\.json does not exist"):
        list(iter_records(["gs://no-such-bucket/x.json"], storage_options=gcs_server))
    # gcsfs raises FileNotFoundError listing a missing bucket (s3fs lists nothing)
    with pytest.raises(InputError, match=r"no object matches gs://no-such-bucket/\*\.json"):
        list(iter_records(["gs://no-such-bucket/*.json"], storage_options=gcs_server))
    # nothing is read before every path is checked
    with pytest.raises(InputError, match=r"gs://mpdata/raw/nope\.json does not exist"):
        expand_paths([f"gs://{bucket}/raw/*.json.gz", f"gs://{bucket}/raw/nope.json"],
                     storage_options=gcs_server)


def test_emulator_is_read_through_the_json_api_filesystem(
        gcs_server: dict[str, Any], bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # gcsfs's default class would first ask a gRPC API, which emulators lack, for each
    # bucket's layout (60 s of retries per file); the plain one is used for emulators,
    # named by endpoint_url or by STORAGE_EMULATOR_HOST (host:port, as gcsfs takes it)
    from gcsfs.core import GCSFileSystem

    files = expand_paths([f"gs://{bucket}/raw/*.json.gz"], storage_options=gcs_server)
    assert {type(f.fs) for f in files} == {GCSFileSystem}
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server["endpoint_url"].removeprefix("http://"))
    files = expand_paths([f"gs://{bucket}/raw/*.json.gz"], storage_options={"token": "anon"})
    assert {type(f.fs) for f in files} == {GCSFileSystem}
    recs = list(iter_records([f.url for f in files], storage_options={"token": "anon"}))
    assert [r.record for r in recs] == [event("View", d * 10 + i) for d in (1, 2)
                                        for i in range(3)]
