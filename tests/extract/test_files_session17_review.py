"""Session-17 adversarial review of reading Mixpanel files (files.py, lines.py, jsonarray.py,
concatenated.py, pipelines.py, remote_glob.py): local paths and globs, JSON / JSONL / .gz,
the Data Pipelines layout, s3:// inputs.

Tests marked ``xfail(strict=True, reason=...)`` show a defect: they pass once it is fixed
(and then the mark must go)."""

from __future__ import annotations

import gzip
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from migrate_kit import FAST, amplitude, make_config, stored_counts

from mp2amp.errors import InputError
from mp2amp.extract.files import expand_paths, iter_records
from mp2amp.pipeline.migrate import EXIT_OK, migrate

T = 1_700_000_000
BOM = b"\xef\xbb\xbf"


def event(i: int, **props: Any) -> dict[str, Any]:
    return {"event": "E", "properties": {"time": T + i, "distinct_id": f"u{i}",
                                         "$insert_id": f"iid-{i}", **props}}


def line(i: int, **props: Any) -> str:
    return json.dumps(event(i, **props), separators=(",", ":"))


def summary(paths: list[str | Path], **kw: Any) -> list[tuple[str, int, str]]:
    """(file name, line, event's distinct_id or the rejection's reason) of every record."""
    out = []
    for r in iter_records([str(p) for p in paths], **kw):
        what = r.rejection.reason if r.rejection else r.record["properties"]["distinct_id"]  # type: ignore[index]
        out.append((r.source.rsplit("/", 1)[-1], r.line, what))
    return out


def run(events: Path | str, tmp: Path, url: str) -> Any:
    return migrate(make_config(events, tmp / "work", url, **{"mixpanel.timezone": "UTC"}),
                   upload_overrides=FAST)


# --- local folders and names -----------------------------------------------------------


def test_symlinked_subfolder_of_an_input_folder_is_read(tmp_path: Path) -> None:
    archive = tmp_path / "archive" / "2024"
    archive.mkdir(parents=True)
    (archive / "b.jsonl").write_text(line(1) + "\n")
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text(line(0) + "\n")
    os.symlink(archive, src / "2024")
    # a '**' glob over the same folder does follow the link
    assert sorted(summary([f"{src}/**/*.jsonl"])) == [("a.jsonl", 1, "u0"), ("b.jsonl", 1, "u1")]
    assert sorted(summary([src])) == [("a.jsonl", 1, "u0"), ("b.jsonl", 1, "u1")]


def test_migrate_of_a_folder_with_a_symlinked_day_folder_delivers_it(tmp_path: Path) -> None:
    mount = tmp_path / "mnt" / "day2"
    mount.mkdir(parents=True)
    (mount / "day2.jsonl").write_text(line(1) + "\n" + line(2) + "\n")
    src = tmp_path / "in"
    src.mkdir()
    (src / "day1.jsonl").write_text(line(0) + "\n")
    os.symlink(mount, src / "day2")
    with amplitude(tmp_path / "amp") as url:
        result = run(src, tmp_path, url)
        got = {who for who, _ in stored_counts(url)}
    assert result.exit_code == EXIT_OK
    assert result.totals["read"] == 3 and got == {"u0", "u1", "u2"}, (result.totals, got)


def test_glob_whose_matches_are_all_left_out_says_why(tmp_path: Path) -> None:
    (tmp_path / "_part-0.json").write_text(line(0) + "\n")
    (tmp_path / "_part-1.json").write_text(line(1) + "\n")
    assert summary([tmp_path / "_part-0.json"]) == [("_part-0.json", 1, "u0")]  # named: read
    # a pattern part starting with '_' names such files, as one starting with '.' names
    # hidden ones (it said "no file matches" while `ls` showed both)
    assert summary([tmp_path / "_part-*.json"]) == [("_part-0.json", 1, "u0"),
                                                     ("_part-1.json", 1, "u1")]
    out = tmp_path / "out"
    (out / "_temporary").mkdir(parents=True)
    (out / "_temporary" / "part-0.json").write_text(line(2) + "\n")
    (out / "_SUCCESS").write_text("")
    said = {}
    for pattern in ("*", "*/part-0.json"):
        with pytest.raises(InputError) as err:
            expand_paths([str(out / pattern)])
        said[pattern] = str(err.value)
    # the message must not deny what `ls` shows: it names what was left out and why
    assert not any("no file matches" in text for text in said.values()), said
    assert all("_temporary" in text and "unfinished" in text for text in said.values()), said
    assert "_SUCCESS (a marker file" in said["*"], said


def test_named_pipe_inside_an_input_folder_is_refused_not_waited_on(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(line(0) + "\n")
    fifo = tmp_path / "live.jsonl"
    os.mkfifo(fifo)
    outcome: dict[str, Any] = {}

    def listing() -> None:
        try:
            outcome["files"] = expand_paths([str(tmp_path)])
        except InputError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=listing, daemon=True)
    worker.start()
    worker.join(1.5)
    hung = worker.is_alive()
    if hung:  # let the listing go on: a writer that opens and closes the pipe
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
    assert not hung, "expand_paths waited on the named pipe"
    assert "live.jsonl" in outcome.get("error", ""), outcome


# --- formats ----------------------------------------------------------------------------


def test_concatenated_arrays_each_with_a_bom_lose_nothing(tmp_path: Path) -> None:
    one = BOM + b"[\r\n" + line(0).encode() + b",\r\n" + line(1).encode() + b"\r\n]\r\n"
    two = BOM + b"[\r\n" + line(2).encode() + b",\r\n" + line(3).encode() + b"\r\n]\r\n"
    (tmp_path / "cat.json").write_bytes(one + two)
    (tmp_path / "cat.json.gz").write_bytes(gzip.compress(one) + gzip.compress(two))
    for name in ("cat.json", "cat.json.gz"):
        got = summary([tmp_path / name])
        assert [what for _, _, what in got] == ["u0", "u1", "u2", "u3"], got


# --- s3:// and gs:// -------------------------------------------------------------------


def _put_objects(scheme: str, s3_server: dict[str, Any], gcs_server: dict[str, Any],
                 bucket: str, objects: dict[str, bytes]) -> dict[str, Any]:
    """The objects in a new bucket, written with the storage's own client; the storage
    options that reach it."""
    if scheme == "s3":
        import boto3

        s3 = boto3.client("s3", endpoint_url=s3_server["endpoint_url"],
                          region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket=bucket)
        for key, data in objects.items():
            s3.put_object(Bucket=bucket, Key=key, Body=data)
        return s3_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="mp2amp-test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_server["endpoint_url"]})
    blobs = client.create_bucket(bucket)
    for key, data in objects.items():
        blobs.blob(key).upload_from_string(data)
    return gcs_server


def pipeline_row(i: int) -> bytes:
    return json.dumps({"event_name": "E", "time": 1_704_164_645 + i, "distinct_id": f"d{i}",
                       "insert_id": f"p-{i}", "properties": {}}).encode() + b"\n"


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_remote_pipeline_tree_with_console_made_folders_migrates(
        s3_server: dict[str, Any], gcs_server: dict[str, Any], tmp_path: Path,
        scheme: str) -> None:
    bucket = f"r17-tree-{scheme}"
    tree = "77/mp_master_event/2024/01/02/"
    folders = {"77/": b"", "77/mp_master_event/": b"", "77/mp_master_event/2024/": b"",
               "77/mp_master_event/2024/01/": b"", tree: b""}
    options = _put_objects(scheme, s3_server, gcs_server, bucket, {
        **folders, tree + "part-0": pipeline_row(0) + pipeline_row(1)})
    url = f"{scheme}://{bucket}/77/"
    with amplitude(tmp_path / "amp") as api:
        cfg = make_config(url, tmp_path / "work", api, **{
            "mixpanel.timezone": "UTC", "source.storage_options": options})
        # today: InputError "s3://.../77/mp_master_event/2024/ does not exist (and 2 more
        # such file(s)), but it has been part of this run since it started ..."
        result = migrate(cfg, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert {who for who, _ in stored_counts(api)} == {"d0", "d1"}
    assert [f.url for f in expand_paths([url], storage_options=options)] == [
        f"{scheme}://{bucket}/{tree}part-0"]


# --- the fixes' edges -------------------------------------------------------------------


def test_symlink_back_up_an_input_folder_ends_and_reads_each_file_once(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "day2").mkdir(parents=True)
    (src / "a.jsonl").write_text(line(0) + "\n")
    (src / "day2" / "b.jsonl").write_text(line(1) + "\n")
    os.symlink("..", src / "day2" / "back")  # a loop: in/day2/back/day2/back/...
    os.symlink(src / "day2", src / "again")  # the same folder under a second name
    assert sorted(what for _, _, what in summary([src])) == ["u0", "u1"]


def test_pipe_a_folder_does_not_read_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(line(0) + "\n")
    os.mkfifo(tmp_path / "notes.txt")  # not an event file: never opened, never refused
    assert [f.url.rsplit("/", 1)[-1] for f in expand_paths([str(tmp_path)])] == ["a.jsonl"]


def test_folder_without_event_files_lists_every_extension_read(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x\n")
    with pytest.raises(InputError) as err:
        expand_paths([str(tmp_path)])
    assert all(ext in str(err.value) for ext in (".json", ".jsonl", ".ndjson", ".gz"))


def test_concatenated_json_lines_files_each_with_a_bom_lose_nothing(tmp_path: Path) -> None:
    one = BOM + (line(0) + "\r\n" + line(1) + "\r\n").encode()
    two = BOM + (line(2) + "\n").encode()
    (tmp_path / "cat.jsonl").write_bytes(one + two)
    (tmp_path / "cat.jsonl.gz").write_bytes(gzip.compress(one) + gzip.compress(two))
    for name in ("cat.jsonl", "cat.jsonl.gz"):
        assert [what for _, _, what in summary([tmp_path / name])] == ["u0", "u1", "u2"]


def test_concatenated_pretty_objects_each_with_a_bom_lose_nothing(tmp_path: Path) -> None:
    def pretty(i: int) -> bytes:
        return json.dumps(event(i), indent=2).encode() + b"\n"
    (tmp_path / "cat.json").write_bytes(BOM + pretty(0) + pretty(1) + BOM + pretty(2))
    assert [what for _, _, what in summary([tmp_path / "cat.json"])] == ["u0", "u1", "u2"]


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_remote_globs_skip_console_folders_and_say_what_they_leave_out(
        s3_server: dict[str, Any], gcs_server: dict[str, Any], scheme: str) -> None:
    bucket = f"r17-globs-{scheme}"
    tree = "77/mp_master_event/2024/01/02/"
    options = _put_objects(scheme, s3_server, gcs_server, bucket, {
        "77/": b"", "77/mp_master_event/": b"", "77/mp_master_event/2024/": b"", tree: b"",
        tree + "part-0": pipeline_row(0), "x/_part-0.json": pipeline_row(1),
        "out/_SUCCESS": b"", "out/_temporary/part-0.json": pipeline_row(2)})
    base = f"{scheme}://{bucket}"

    def urls(pattern: str) -> list[str]:
        return [f.url for f in expand_paths([f"{base}/{pattern}"], storage_options=options)]

    assert urls("77/**") == [f"{base}/{tree}part-0"]
    assert urls("x/_part-*.json") == [f"{base}/x/_part-0.json"]
    with pytest.raises(InputError) as err:
        urls("out/*")
    said = str(err.value)
    assert "no object matches" not in said and f"{base}/out/_temporary" in said, said
    assert "_SUCCESS (a marker file" in said, said
