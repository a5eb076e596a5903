"""Session 15 review: remote and file sources end to end (``extract/files.py`` and how
``pipeline/windows.py`` turns them into windows), against moto's S3 server and the GCS
emulator over real loopback sockets.

Tests marked ``xfail(strict=True, reason=...)`` show a defect: they pass once it is fixed
(and then the mark must go)."""

from __future__ import annotations

import gzip
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from migrate_kit import FAST, amplitude, make_config, stored_counts

from mp2amp.errors import InputError
from mp2amp.extract import files as files_mod
from mp2amp.extract.files import expand_paths, iter_records
from mp2amp.pipeline.migrate import EXIT_OK, migrate

T = 1_700_000_000


def line(i: int) -> str:
    return json.dumps({"event": "E", "properties": {"time": T + i, "distinct_id": f"u{i}",
                                                    "$insert_id": f"iid-{i}"}},
                      separators=(",", ":"))


def body(*ids: int) -> bytes:
    return "".join(line(i) + "\n" for i in ids).encode()


def users(recs: Any) -> list[str]:
    return [r.record["properties"]["distinct_id"] if r.record else r.rejection.reason
            for r in recs]


def s3_client(s3_server: dict[str, Any]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def gcs_bucket(gcs_server: dict[str, Any], name: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="mp2amp-test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_server["endpoint_url"]})
    return client.create_bucket(name)


def run(files: str, tmp: Path, url: str, **kw: Any) -> Any:
    cfg = make_config(files, tmp / "work", url, **{"mixpanel.timezone": "UTC"})
    return migrate(cfg, upload_overrides=FAST, **kw)


# --- GCS ------------------------------------------------------------------------------


@pytest.fixture
def gcs_transcoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GCS emulator serves objects stored with ``Content-Encoding: gzip`` as Cloud
    Storage does (cloud.google.com/storage/docs/transcoding): to a request with
    ``Accept-Encoding: gzip`` as stored, a Range applying to the stored bytes, with a
    ``Content-Encoding: gzip`` header; to any other, decompressed whole."""
    from gcp_storage_emulator.handlers import objects
    from gcp_storage_emulator.server import HANDLERS

    plain = objects.download

    def download(request: Any, response: Any, storage: Any, *a: Any, **kw: Any) -> None:
        bucket, name = request.params["bucket_name"], request.params["object_id"]
        obj = storage.get_file_obj(bucket, name)
        if obj.get("contentEncoding") != "gzip":
            plain(request, response, storage, *a, **kw)
        elif "gzip" in (request.get_header("accept-encoding", "") or ""):
            plain(request, response, storage, *a, **kw)
            response["Content-Encoding"] = "gzip"
        else:
            response.write_file(gzip.decompress(storage.get_file(bucket, name)),
                                content_type=obj.get("contentType"))

    for _, handlers in HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is plain:
                monkeypatch.setitem(handlers, method, download)

    async def no_wait(_seconds: float) -> None:
        return None

    # gcsfs's retries of a failed read wait 1+2+4+8+16 s: not here
    import gcsfs.retry

    monkeypatch.setattr(gcsfs.retry, "asyncio", SimpleNamespace(sleep=no_wait))


@pytest.mark.parametrize("name", ["day.json.gz", "day.json"])
def test_gcs_object_stored_with_content_encoding_gzip_is_read_whole(
        gcs_server: dict[str, Any], gcs_transcoding: None, name: str) -> None:
    bucket = gcs_bucket(gcs_server, f"rev15-ce-{name.replace('.', '-')}")
    blob = bucket.blob(f"ev/{name}")
    blob.content_encoding = "gzip"
    blob.upload_from_string(gzip.compress(body(*range(2000))), content_type="application/json")
    recs = list(iter_records([f"gs://{bucket.name}/ev/{name}"], storage_options=gcs_server))
    assert users(recs) == [f"u{i}" for i in range(2000)]


def test_gcs_folder_with_a_double_slash_key_reads_every_object(
        gcs_server: dict[str, Any]) -> None:
    bucket = gcs_bucket(gcs_server, "rev15-dbl")
    bucket.blob("pipe/a.json").upload_from_string(body(0))
    bucket.blob("pipe/2024//b.json").upload_from_string(body(1))  # a prefix given with "/"
    recs = list(iter_records(["gs://rev15-dbl/pipe/"], storage_options=gcs_server))
    assert sorted(users(recs)) == ["u0", "u1"]


@pytest.fixture
def forbidding_server() -> Iterator[str]:
    """Answers every request as GCS does a service account without storage.objects.*."""
    class Forbid(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps({"error": {"code": 403, "message": (
                "reader@proj.iam.gserviceaccount.com does not have storage.objects.get "
                "access to the Google Cloud Storage object."),
                "errors": [{"reason": "forbidden"}]}}).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forbid)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path", ["gs://mpdata/ev/day.json", "gs://mpdata/ev/"])
def test_gcs_permission_denied_is_not_reported_as_a_missing_object(
        forbidding_server: str, path: str) -> None:
    with pytest.raises(InputError) as caught:
        expand_paths([path], storage_options={"endpoint_url": forbidding_server,
                                              "token": "anon"})
    message = str(caught.value)
    assert "does not exist" not in message
    assert "storage.objects.get" in message or "403" in message or "Forbidden" in message


# --- S3 -------------------------------------------------------------------------------


def test_remote_glob_leaves_out_hidden_objects_as_a_local_glob_does(
        s3_server: dict[str, Any], tmp_path: Path) -> None:
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="rev15-hidden")
    objects = {"out/.DS_Store": b"\0\0\0\x01Bud1" + b"\0" * 64,
               "out/.part-0.json.crc": b"crc\0\x01\x02\x03\x04",
               "out/_SUCCESS": b"", "out/part-0.json": body(0),
               "out/sub/part-1.json": body(1)}
    for key, data in objects.items():
        s3.put_object(Bucket="rev15-hidden", Key=key, Body=data)
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
    local = [f.url.split("/out/", 1)[1] for f in expand_paths([f"{tmp_path}/out/*"])]
    assert local == ["part-0.json", "sub/part-1.json"]  # markers are never data either
    remote = [f.url.split("/out/", 1)[1] for f in expand_paths(
        ["s3://rev15-hidden/out/*"], storage_options=s3_server)]
    assert remote == local


def test_staging_many_remote_objects_does_not_build_a_client_per_object(
        s3_server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="rev15-many")
    n = 6
    for i in range(n):
        s3.put_object(Bucket="rev15-many", Key=f"day/part-{i:03d}.jsonl", Body=body(i))
    built = []
    real = files_mod._filesystem

    def counting(protocol: str, options: Any) -> Any:
        built.append(protocol)
        return real(protocol, options)

    monkeypatch.setattr(files_mod, "_filesystem", counting)
    with amplitude(tmp_path / "amp") as url:
        result = run("s3://rev15-many/day/", tmp_path, url, storage_options=s3_server)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert len(stored_counts(url)) == n
    assert len(built) <= 3, f"{len(built)} filesystems built for {n} objects"


def _three_objects(s3: Any, bucket: str, middle: bytes) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="ev/0.jsonl", Body=body(*range(5)))
    s3.put_object(Bucket=bucket, Key="ev/1.jsonl", Body=middle)
    s3.put_object(Bucket=bucket, Key="ev/2.jsonl", Body=body(300))


def test_remote_foreign_object_advice_can_be_followed(s3_server: dict[str, Any],
                                                      tmp_path: Path) -> None:
    s3 = s3_client(s3_server)
    _three_objects(s3, "rev15-zip", b"PK\x03\x04 a zip archive")
    with amplitude(tmp_path / "amp") as url:
        with pytest.raises(InputError, match="leave it out of the inputs, and run again"):
            run("s3://rev15-zip/ev/*", tmp_path, url, storage_options=s3_server)
        # as advised: the same command without that object
        result = run("s3://rev15-zip/ev/[02].jsonl", tmp_path, url, storage_options=s3_server)
        assert result.exit_code == EXIT_OK
        assert len(stored_counts(url)) == 6


def test_remote_object_gone_before_resume_is_named_as_part_of_the_run(
        s3_server: dict[str, Any], tmp_path: Path) -> None:
    s3 = s3_client(s3_server)
    _three_objects(s3, "rev15-gone", gzip.compress(gzip.compress(body(100))))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config("s3://rev15-gone/ev/*", tmp_path / "work", url,
                          **{"mixpanel.timezone": "UTC"})
        # staging stops at 1.jsonl: 2.jsonl stays pending
        with pytest.raises(InputError, match="gzip inside gzip"):
            migrate(cfg, upload_overrides=FAST, storage_options=s3_server)
        s3.put_object(Bucket="rev15-gone", Key="ev/1.jsonl", Body=body(100))
        s3.delete_object(Bucket="rev15-gone", Key="ev/2.jsonl")
        with pytest.raises(InputError) as caught:
            migrate(cfg, resume=True, upload_overrides=FAST, storage_options=s3_server)
    message = str(caught.value)
    assert "s3://rev15-gone/ev/2.jsonl" in message
    assert "part of this run" in message or "new work folder" in message


def test_remote_object_rewritten_after_staging_is_named(s3_server: dict[str, Any],
                                                        tmp_path: Path) -> None:
    s3 = s3_client(s3_server)
    whole = gzip.compress(body(*range(100, 200)))
    _three_objects(s3, "rev15-rewrite", b"")
    s3.put_object(Bucket="rev15-rewrite", Key="ev/1.jsonl", Body=whole[: len(whole) // 2])
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config("s3://rev15-rewrite/ev/*", tmp_path / "work", url,
                          **{"mixpanel.timezone": "UTC"})
        with pytest.raises(InputError, match="is damaged"):  # every window staged, none sent
            migrate(cfg, upload_overrides=FAST, storage_options=s3_server)
        s3.put_object(Bucket="rev15-rewrite", Key="ev/1.jsonl", Body=whole)
        # a Data Pipelines day re-exported with late events, before the resume
        s3.put_object(Bucket="rev15-rewrite", Key="ev/0.jsonl", Body=body(*range(10)))
        result = migrate(cfg, resume=True, upload_overrides=FAST, storage_options=s3_server)
    assert result.exit_code == EXIT_OK
    # today the 5 late records of 0.jsonl are left out without a word (106 sent)
    assert result.changed_inputs == ["s3://rev15-rewrite/ev/0.jsonl"]
