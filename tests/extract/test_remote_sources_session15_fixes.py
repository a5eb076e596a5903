"""Session 15 fixes to remote sources beyond the pinned review tests: what the fixes
changed that those do not show (hidden objects a pattern names, the user's own gcsfs
session options, versions of rewritten objects, staging by name)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any

import pytest
from tests.extract import test_sources_session15_review as review
from tests.pipeline.migrate_kit import FAST, amplitude, make_config, stored_counts

from mp2amp.errors import InputError
from mp2amp.extract import files as files_mod
from mp2amp.extract.files import Filesystems, expand_paths, remote_objects
from mp2amp.pipeline import stage_worker
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.windows import remote_inputs_changed

body, gcs_bucket, run, s3_client = review.body, review.gcs_bucket, review.run, review.s3_client
forbidding_server = review.forbidding_server  # the fixture, shared


def test_a_remote_pattern_naming_hidden_objects_takes_them(s3_server: dict[str, Any]) -> None:
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="fx15-dot")
    for key in ("out/.a.json", "out/b.json", "out/.hidden/c.json", "out/sub/d.json"):
        s3.put_object(Bucket="fx15-dot", Key=key, Body=body(0))
    named = [f.url for f in expand_paths(["s3://fx15-dot/out/.*.json"],
                                         storage_options=s3_server)]
    assert named == ["s3://fx15-dot/out/.a.json"]
    # as glob.glob: '**' does not go into hidden folders either
    deep = [f.url for f in expand_paths(["s3://fx15-dot/out/**/*.json"],
                                        storage_options=s3_server)]
    assert deep == ["s3://fx15-dot/out/b.json", "s3://fx15-dot/out/sub/d.json"]


def test_gcs_reads_raw_bytes_and_keeps_the_users_session_options() -> None:
    raw = files_mod._raw_gcs_reads
    assert raw({"token": "anon"}) == {"token": "anon",
                                      "session_kwargs": {"auto_decompress": False}}
    mine = {"session_kwargs": {"trust_env": True, "auto_decompress": True}}
    assert raw(mine) == mine
    assert raw({"session_kwargs": {"trust_env": True}})["session_kwargs"] == {
        "trust_env": True, "auto_decompress": False}


def test_one_filesystem_per_protocol_within_a_call(s3_server: dict[str, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="fx15-one")
    for i in range(4):
        s3.put_object(Bucket="fx15-one", Key=f"d/{i}.json", Body=body(i))
    built: list[str] = []
    real = files_mod._filesystem
    monkeypatch.setattr(files_mod, "_filesystem",
                        lambda protocol, options: built.append(protocol) or real(protocol, options))
    urls = [f"s3://fx15-one/d/{i}.json" for i in range(4)]
    assert [f.url for f in expand_paths(urls, storage_options=s3_server)] == urls
    assert built == ["s3"]
    found = remote_objects([*urls, "s3://fx15-one/d/gone.json"], Filesystems(s3_server))
    assert built == ["s3", "s3"]
    assert [getattr(found[u], "size", None) for u in urls] == [len(body(i)) for i in range(4)]
    assert isinstance(found["s3://fx15-one/d/gone.json"], FileNotFoundError)


def test_a_staging_process_reuses_the_filesystem_of_a_run(s3_server: dict[str, Any],
                                                          tmp_path: Path) -> None:
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="fx15-worker")
    for i in range(2):
        s3.put_object(Bucket="fx15-worker", Key=f"{i}.json", Body=body(i))
    (first, second) = expand_paths(["s3://fx15-worker/*"], storage_options=s3_server)
    stage_worker.WORKER_FILESYSTEMS.clear()
    for source in (first, second):  # each arrives pickled, as in a staging process
        args = stage_worker.worker_args(source, str(tmp_path / f"{source.url[-6:]}.jsonl"), None)
        args = pickle.loads(pickle.dumps(args))
        assert stage_worker.stage_in_worker(*args) == 1
    assert len(stage_worker.WORKER_FILESYSTEMS) == 1


def test_a_remote_object_rewritten_with_the_same_size_is_named(
        s3_server: dict[str, Any], tmp_path: Path) -> None:
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="fx15-same")
    s3.put_object(Bucket="fx15-same", Key="ev/0.jsonl", Body=body(1))
    s3.put_object(Bucket="fx15-same", Key="ev/1.jsonl", Body=body(2))
    with amplitude(tmp_path / "amp") as url:
        result = run("s3://fx15-same/ev/", tmp_path, url, storage_options=s3_server)
        assert result.exit_code == EXIT_OK
        cfg = make_config("s3://fx15-same/ev/", tmp_path / "work", url)
    from mp2amp.ledger import Ledger

    ledger = Ledger(Path(cfg.run.workdir) / "ledger.sqlite")
    try:
        assert remote_inputs_changed(ledger, s3_server) == []
        s3.put_object(Bucket="fx15-same", Key="ev/1.jsonl", Body=body(3))  # same length
        assert remote_inputs_changed(ledger, s3_server) == ["s3://fx15-same/ev/1.jsonl"]
        s3.delete_object(Bucket="fx15-same", Key="ev/0.jsonl")  # gone: staging's to say
        assert remote_inputs_changed(ledger, s3_server) == ["s3://fx15-same/ev/1.jsonl"]
    finally:
        ledger.close()


def test_gcs_double_slash_key_is_migrated(gcs_server: dict[str, Any], tmp_path: Path) -> None:
    bucket = gcs_bucket(gcs_server, "fx15-dbl-run")
    bucket.blob("pipe/a.json").upload_from_string(body(0))
    bucket.blob("pipe/2024//b.json").upload_from_string(body(1))
    with amplitude(tmp_path / "amp") as url:
        result = run("gs://fx15-dbl-run/pipe/", tmp_path, url, storage_options=gcs_server)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert len(stored_counts(url)) == 2


def test_a_remote_object_unreadable_at_resume_says_so(
        s3_server: dict[str, Any], forbidding_server: str, tmp_path: Path) -> None:
    """Not 'does not exist' (as a gone one is): the credentials may not read it now."""
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="fx15-deny")
    s3.put_object(Bucket="fx15-deny", Key="ev/0.jsonl", Body=body(0))
    s3.put_object(Bucket="fx15-deny", Key="ev/1.jsonl", Body=gzip.compress(gzip.compress(
        body(1))))
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config("s3://fx15-deny/ev/*", tmp_path / "work", url,
                          **{"mixpanel.timezone": "UTC"})
        with pytest.raises(InputError, match="gzip inside gzip"):  # 1.jsonl stays pending
            migrate(cfg, upload_overrides=FAST, storage_options=s3_server)
        denied = {**s3_server, "endpoint_url": forbidding_server}
        with pytest.raises(InputError, match=r"cannot read s3://fx15-deny/ev/1\.jsonl: .*"
                           r"check the credentials.*--resume"):
            migrate(cfg, resume=True, upload_overrides=FAST, storage_options=denied)
