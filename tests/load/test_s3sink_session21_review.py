"""Session 21 review of the S3-import sink (``[amplitude] output_dir``): how an output
folder URL that names no bucket is refused. README: "a bucket that does not exist (mp2amp
never creates one) or a folder that cannot be listed, written and deleted in ... exit 2
with a message naming the folder"; a URL without a bucket name is neither, and the
messages it gets today send the user to the wrong fix (create a bucket named '', or check
the credentials)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

BASE = 1_700_000_000  # seconds


def write_events(path: Path, n: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps({"event": "view", "properties": {
        "time": BASE + i, "distinct_id": f"user-{i % 7:05d}", "$insert_id": f"ins-{i:08d}"}})
        for i in range(n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def run_cli(tmp_path: Path, output_dir: str, options: dict[str, Any]
            ) -> subprocess.CompletedProcess[str]:
    write_events(tmp_path / "in" / "events.jsonl")
    opts = ", ".join(f'{k} = "{v}"' for k, v in options.items() if isinstance(v, str))
    (tmp_path / "c.toml").write_text(
        "[source]\nfiles = [\"in/events.jsonl\"]\n"
        f"storage_options = {{{opts}}}\n"
        "[mixpanel]\ntimezone = \"UTC\"\n"
        f"[amplitude]\noutput_dir = \"{output_dir}\"\n"
        "[run]\nworkdir = \"work\"\n")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "--config",
                           str(tmp_path / "c.toml")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("output_dir", ["s3:///events", "s3://"])
def test_an_output_dir_without_a_bucket_name_says_so(
        tmp_path: Path, s3_server: dict[str, Any], output_dir: str) -> None:
    done = run_cli(tmp_path, output_dir, s3_server)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    err = done.stderr
    assert "Traceback" not in err
    # the real problem, said as such: the URL names no bucket
    assert "bucket" in err and ("no bucket" in err or "bucket name" in err), err[-2000:]
    # and not the wrong fixes
    assert "bucket ''" not in err and "check the credentials" not in err, err[-2000:]


def test_a_bucket_that_does_not_exist_is_named_exit_2(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    """Guard: a real missing bucket is named, exit 2, no traceback."""
    done = run_cli(tmp_path, "s3://no-such-bucket-21/events", s3_server)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "no-such-bucket-21" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def _gcs_bucket(gcs_server: dict[str, Any], bucket: str) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    anon = AnonymousCredentials()  # type: ignore[no-untyped-call]
    client = storage.Client(project="mp2amp-test", credentials=anon,
                            client_options={"api_endpoint": gcs_server["endpoint_url"]})
    client.create_bucket(bucket)


def test_a_gs_output_dir_on_an_emulator_is_written_without_grpc_waits(
        tmp_path: Path, gcs_server: dict[str, Any]) -> None:
    """README: storage_options such as {endpoint_url = "http://127.0.0.1:4443", token =
    "anon"} reach a local GCS emulator through gcsfs's JSON-API filesystem (its default one
    first asks a gRPC API that emulators lack, 60 s per file) -- so inputs are read; the
    S3/GCS-import target (`gs://` output_dir) is opened with the default class instead."""
    _gcs_bucket(gcs_server, "imp21")
    write_events(tmp_path / "in" / "events.jsonl")
    (tmp_path / "c.toml").write_text(
        "[source]\nfiles = [\"in/events.jsonl\"]\n"
        f"storage_options = {{endpoint_url = \"{gcs_server['endpoint_url']}\", "
        "token = \"anon\"}\n"
        "[mixpanel]\ntimezone = \"UTC\"\n"
        "[amplitude]\noutput_dir = \"gs://imp21/events\"\n"
        "[run]\nworkdir = \"work\"\n")
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    try:
        done = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "--config",
                               str(tmp_path / "c.toml")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=25)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"a 50-event migration into gs:// did not end within 25 s: "
                    f"{(exc.stderr or b'')[-1500:]!r}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote 50 events in 1 file(s)" in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize("output_dir", ["s3a://", "gs://", "gcs:///events", "s3:///a/b"])
def test_every_object_store_url_without_a_bucket_is_a_config_problem(output_dir: str) -> None:
    from mp2amp.load.s3target import bucket_problems

    scheme = output_dir.split("://")[0]
    assert bucket_problems(output_dir) == [
        f"{output_dir} names no bucket; set [amplitude] output_dir to "
        f"{scheme}://BUCKET/PREFIX"]
    assert bucket_problems(f"{scheme}://b/events") == []  # guard: a bucket named is fine


RUN21 = "0123456789ab"  # a run id as the ledger keeps it


def _within(seconds: float, work: Any) -> Any:
    """``work()``'s result, or a failure once ``seconds`` pass (the thread is left behind:
    gcsfs's gRPC wait cannot be interrupted)."""
    import threading

    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{work} did not end within {seconds} s (a gRPC wait?)")
    return out[0] if out else None


def test_every_output_folder_step_on_a_gcs_emulator_skips_grpc(
        tmp_path: Path, gcs_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe, the sink, the check for another run's files and the removal of earlier
    attempts' files each open the folder's filesystem: each must take the JSON-API class,
    as an endpoint_url or STORAGE_EMULATOR_HOST naming an emulator asks."""
    from gcsfs.core import GCSFileSystem

    from mp2amp.load.s3sink import S3ImportSink
    from mp2amp.load.s3target import probe_output
    from mp2amp.pipeline.import_folder import refuse_another_runs_files, remove_earlier_attempts
    from mp2amp.remote_fs import url_to_fs

    _gcs_bucket(gcs_server, "steps21")
    target, opts = "gs://steps21/events", dict(gcs_server)
    fs, root = url_to_fs(target, opts)
    fs.pipe_file(f"{root}/mp2amp-a1-{RUN21}-00000.json.gz", b"x")
    _within(15, lambda: probe_output(target, opts))
    sink = _within(15, lambda: S3ImportSink(target, storage_options=opts,
                                            run_id=f"mp2amp-a2-{RUN21}", staging_dir=tmp_path))
    assert type(sink.fs) is GCSFileSystem
    _within(15, lambda: refuse_another_runs_files(target, opts, run=RUN21, attempt=2))
    removed = _within(15, lambda: remove_earlier_attempts(target, 2, opts, run=RUN21))
    assert removed == [f"{root}/mp2amp-a1-{RUN21}-00000.json.gz"]
    # gcsfs's own emulator variable, no endpoint_url: the same class
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server["endpoint_url"])
    assert type(url_to_fs("gcs://steps21/events", {"token": "anon"})[0]) is GCSFileSystem
    # guard: Google's own (https) endpoint keeps gcsfs's default class
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    https = {"endpoint_url": "https://storage.googleapis.com", "token": "anon"}
    assert type(url_to_fs(target, https)[0]) is not GCSFileSystem
