"""Session 27 soak (helper-317): `output_dir = "s3:/amp/x"` (one slash) wrote the import
files to a local folder named "s3:" and exited 0, nothing sent to S3; `S3://amp/u` and
`s4://amp/u` were said as a credentials problem after the run was recorded, and an input
`S3://b/k` was read as bucket "S3:"."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from config_kit import problems, run
from mp2amp.config import load_config
from mp2amp.extract.files import iter_records
from mp2amp.load.s3target import bucket_problems


def test_a_url_missing_a_slash_is_refused_naming_the_key(tmp_path: Path) -> None:
    assert problems(tmp_path, '[amplitude]\noutput_dir = "s3:/amp/x"\n') == [
        "amplitude.output_dir: 's3:/amp/x' is a URL missing a slash: write s3://amp/x (or "
        "./s3:/amp/x for a local folder of that name)"]
    assert problems(tmp_path, '[source]\nfiles = ["a.jsonl", "GS:/b/e.json"]\n') == [
        "source.files[1]: 'GS:/b/e.json' is a URL missing a slash: write GS://b/e.json (or "
        "./GS:/b/e.json for a local folder of that name)"]


def test_a_local_folder_named_like_a_scheme_can_still_be_given(tmp_path: Path) -> None:
    path = tmp_path / "mp2amp.toml"
    path.write_text('[amplitude]\noutput_dir = "./s3:/amp"\n')
    assert load_config(path, env={}).amplitude.output_dir == str(tmp_path / "s3:" / "amp")


def test_an_uppercase_scheme_is_read_as_its_lowercase(tmp_path: Path) -> None:
    path = tmp_path / "mp2amp.toml"
    path.write_text('[amplitude]\noutput_dir = "S3://amp/U"\n[source]\nfiles = ["GS://b/K"]\n')
    config = load_config(path, env={})
    assert (config.amplitude.output_dir, config.source.files) == ("s3://amp/U", ("gs://b/K",))


def test_an_uppercase_scheme_reads_the_inputs() -> None:
    with fsspec.open("memory://upper27/e.jsonl", "w") as out:
        out.write(json.dumps({"event": "A", "properties": {"time": 1}}) + "\n")
    got = [(r.source, r.record) for r in iter_records(["MEMORY://upper27/e.jsonl"])]
    assert got == [("memory:///upper27/e.jsonl", {"event": "A", "properties": {"time": 1}})]


@pytest.mark.parametrize("url", ["s4://amp/u", "nosuch://amp/u"])
def test_an_unknown_scheme_is_a_problem_of_the_key(url: str) -> None:
    scheme = url.split(":")[0]
    assert bucket_problems(url) == [
        f"{url}: {scheme}:// is not a storage protocol; set [amplitude] output_dir to a "
        "folder or s3://BUCKET/PREFIX"]
    assert bucket_problems("s3://amp/u") == bucket_problems("gs://amp/u") == []


def one_event_run(folder: Path, output_dir: str) -> None:
    """One event to migrate from ``folder`` into ``output_dir``, configured there."""
    (folder / "e.jsonl").write_text(json.dumps({"event": "v", "properties": {
        "time": 1704100000, "distinct_id": "u", "$insert_id": "i1"}}) + "\n")
    (folder / "mp2amp.toml").write_text(
        '[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["e.jsonl"]\n'
        f'[amplitude]\noutput_dir = "{output_dir}"\n[run]\nworkdir = "work"\n')


def test_migrate_refuses_a_url_missing_a_slash_and_writes_nothing(tmp_path: Path) -> None:
    one_event_run(tmp_path, "s3:/amp/x")
    done = run(["migrate", "-q"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "amplitude.output_dir: 's3:/amp/x' is a URL missing a slash" in done.stderr
    assert not (tmp_path / "s3:").exists()


def test_migrate_refuses_an_unknown_scheme_as_config(tmp_path: Path) -> None:
    one_event_run(tmp_path, "s4://amp/u")
    done = run(["migrate", "-q", "--json"], tmp_path)
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert (error["type"], error["source"]) == ("ConfigError", "amplitude.output_dir")
    assert error["problems"][0].startswith("s4://amp/u: s4:// is not a storage protocol")
    assert "credentials" not in error["message"]
