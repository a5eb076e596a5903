"""`mp2amp migrate` with `[amplitude] output_dir`: files for Amplitude's S3 import instead of
the API. Every event the transform emits is in exactly one file, in event-time order within
and across files (also when sources overlap in time), with the converter configuration
beside them; a crashed attempt's files are replaced, never added to, by the resumed one."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import TIMEZONE, Key, Project

import mp2amp.pipeline.migrate as migrate_module
from mp2amp.config import load_config
from mp2amp.load.s3sink import CONVERTER_NAME, S3ImportSink
from mp2amp.pipeline import transform_worker
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.progress import Counters


class Crash(Exception):
    """Stands for a crash while the files are being written."""


class CrashWhileWriting:
    def __init__(self, after_updates: int) -> None:
        self.left = after_updates

    def update(self, counters: Counters) -> None:
        if counters.phase == "write":
            self.left -= 1
            if self.left <= 0:
                raise Crash

    def close(self, counters: Counters) -> None:
        return None


def config(events: Path, work: Path, out: Path) -> Any:
    return load_config(None, {"source.files": [str(events)], "mixpanel.timezone": TIMEZONE,
                              "amplitude.output_dir": str(out), "run.workdir": str(work)},
                       env={})


def written(out: Path) -> tuple[dict[str, list[dict[str, Any]]], Any]:
    files = {}
    for path in sorted(out.glob("*.json.gz")):
        files[path.name] = [orjson.loads(line)
                            for line in gzip.decompress(path.read_bytes()).splitlines()]
    return files, orjson.loads((out / CONVERTER_NAME).read_bytes())


def keys(files: dict[str, list[dict[str, Any]]]) -> list[Key]:
    return [(e.get("device_id") or e.get("user_id"), e["insert_id"])
            for rows in files.values() for e in rows]


def test_every_event_once_in_time_ordered_files(project: Project, tmp_path: Path) -> None:
    result = migrate(config(project.events, tmp_path / "work", tmp_path / "out"))
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    files, converter = written(tmp_path / "out")
    assert files and all(name.startswith("mp2amp-a1-") for name in files)
    for name, rows in files.items():
        times = [e["time"] for e in rows]
        assert times == sorted(times), f"{name} is not in event-time order"
        assert all("session_id" in e for e in rows)
    found = keys(files)
    assert len(found) == len(set(found)) == result.totals["sent"]
    assert set(found) == project.expected
    assert "converterConfig" in converter
    assert result.load["events"] == len(found)
    assert result.totals["balanced"]


class CrashingSink(S3ImportSink):
    """Crashes after ``uploads`` files went out: the sink writes files only when closed."""

    uploads = 2

    def _upload(self, staged: Any) -> None:
        if len(self.report.files) >= self.uploads:
            raise Crash
        super()._upload(staged)


@pytest.mark.parametrize("when", ["writing", "uploading"])
def test_a_crashed_attempt_is_replaced_by_the_resumed_one(project: Project, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         when: str) -> None:
    monkeypatch.setattr(transform_worker, "CHUNK_LINES", 64)  # progress often: crash mid-write
    # small files, so that the crashed attempt has already uploaded some
    small = {"target_file_bytes": 100_000, "min_file_bytes": 5_000}
    monkeypatch.setattr(migrate_module, "S3ImportSink", functools.partial(
        CrashingSink if when == "uploading" else S3ImportSink, **small))
    cfg = config(project.events, tmp_path / "work", tmp_path / "out")
    with pytest.raises(Crash):
        migrate(cfg, reporter=CrashWhileWriting(after_updates=15 if when == "writing" else 10**9))
    crashed = sorted((tmp_path / "out").glob("mp2amp-a1-*.json.gz"))
    # while writing, nothing is in the target yet: files are cut only once all times are known
    assert len(crashed) == (0 if when == "writing" else CrashingSink.uploads)
    monkeypatch.setattr(migrate_module, "S3ImportSink", functools.partial(S3ImportSink, **small))
    result = migrate(cfg, resume=True)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert result.load["files_removed_from_earlier_attempts"] == [str(p) for p in crashed]
    files, _ = written(tmp_path / "out")
    assert len(files) > CrashingSink.uploads and all(name.startswith("mp2amp-a2-")
                                                     for name in files)
    found = keys(files)
    assert len(found) == len(set(found)) and set(found) == project.expected


def test_sources_overlapping_in_time_give_files_in_time_order(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a web and an iOS export of the same days: each file a window, the windows overlap
    split = tmp_path / "split"
    split.mkdir()
    for day in sorted(project.events.iterdir()):
        lines = gzip.decompress(day.read_bytes()).splitlines(keepends=True)
        (split / f"a-web-{day.name}").write_bytes(gzip.compress(b"".join(lines[0::2])))
        (split / f"b-ios-{day.name}").write_bytes(gzip.compress(b"".join(lines[1::2])))
    monkeypatch.setattr(migrate_module, "S3ImportSink", functools.partial(
        S3ImportSink, target_file_bytes=100_000, min_file_bytes=5_000))
    result = migrate(config(split, tmp_path / "work", tmp_path / "out"))
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    files, _ = written(tmp_path / "out")
    assert len(files) >= 3
    rows = [rows for _, rows in sorted(files.items())]
    for name, r in zip(sorted(files), rows, strict=True):
        assert [e["time"] for e in r] == sorted(e["time"] for e in r), name
    for k in range(1, len(rows)):
        assert rows[k][0]["time"] >= rows[k - 1][-1]["time"], \
            f"file {k} starts before file {k - 1} ends"
    found = keys(files)
    assert len(found) == len(set(found)) == result.totals["sent"]
    assert set(found) == project.expected


def test_files_to_s3_through_a_local_moto_server(project: Project, tmp_path: Path,
                                                 s3_server: dict[str, Any]) -> None:
    """The whole migration to ``s3://`` (the final merge and upload run in a worker thread
    while the event loop keeps the display going): every event once, in time order."""
    import boto3
    import fsspec

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="amp-import")
    cfg = load_config(None, {"source.files": [str(project.events)],
                             "mixpanel.timezone": TIMEZONE,
                             "amplitude.output_dir": "s3://amp-import/mp2amp",
                             "run.workdir": str(tmp_path / "work")}, env={})
    result = migrate(cfg, storage_options=s3_server)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    fs = fsspec.filesystem("s3", **s3_server)
    names = sorted(fs.ls("amp-import/mp2amp"))
    assert any(n.endswith(CONVERTER_NAME) for n in names)
    rows = []
    for name in names:
        if name.endswith(".json.gz"):
            with fs.open(name, "rb") as raw:
                rows.extend(orjson.loads(line) for line in gzip.decompress(raw.read()).splitlines())
    assert sorted((e.get("device_id") or e.get("user_id"), e["insert_id"]) for e in rows) == \
        sorted(project.expected)
    times = [e["time"] for e in rows]
    assert times == sorted(times)


def test_a_second_migration_into_the_same_folder_stops_and_leaves_the_firsts_files(
        project: Project, tmp_path: Path) -> None:
    """A second migration would overwrite the first's converter config, and Amplitude's
    import of the one prefix would take both runs' files (names differ per run: the first's
    files are never deleted by the second, see test_s3import_session14_review.py)."""
    out = tmp_path / "out"
    first = migrate(config(project.events, tmp_path / "work1", out))
    assert first.exit_code == EXIT_OK
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(migrate_module.TerminalError) as refused:
        migrate(config(project.events, tmp_path / "work2", out))
    assert str(refused.value).startswith(
        f"the output folder {out} already holds the import files of another migration "
        "(1 import file and 1 converter config, e.g. ")
    assert "give each migration its own folder or prefix" in str(refused.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # the second one goes on once pointed at its own folder (same work folder, --resume)
    other = load_config(None, {"source.files": [str(project.events)],
                               "mixpanel.timezone": TIMEZONE,
                               "amplitude.output_dir": str(out),
                               "run.workdir": str(tmp_path / "work2")}, env={})
    for p in out.iterdir():
        p.rename(tmp_path / p.name)  # "move those files away"
    assert migrate(other, resume=True).exit_code == EXIT_OK
