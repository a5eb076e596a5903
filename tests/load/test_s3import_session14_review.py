"""Session-14 review of the S3-import sink (load/s3sink.py, pipeline/import_folder.py and the
sink path of pipeline/migrate.py) against reference/amplitude-api.md §6 (file rules, the
converter configuration) and §1.5 (ID rules): what a data engineer migrating through
Amplitude's Amazon S3 Import would expect of the files, the converter JSON and the folder."""

from __future__ import annotations

import contextlib
import gzip
import random
import re
import sys
import zlib
from pathlib import Path
from typing import Any

import fsspec
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))  # the migrate test kit

from migrate_kit import TIMEZONE, mp2amp

from mp2amp.config import load_config
from mp2amp.errors import InputError
from mp2amp.load.s3sink import CONVERTER_NAME, S3ImportSink
from mp2amp.pipeline.import_folder import refuse_another_runs_files, remove_earlier_attempts
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.progress import Counters

MIB = 1 << 20


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s14-project")
    # the default dirt rate gives some identified people user ids shorter than 5 characters
    mp2amp("generate", "--out", str(root / "p"), "--users", "150", "--days", "3",
           "--seed", "5", "--timezone", TIMEZONE)
    return root / "p" / "events"


def config(events: Path, work: Path, out: Path | str) -> Any:
    return load_config(None, {"source.files": [str(events)], "mixpanel.timezone": TIMEZONE,
                              "amplitude.output_dir": str(out), "run.workdir": str(work)},
                       env={})


def rows_of(fs: Any, path: str) -> list[dict[str, Any]]:
    with fs.open(path, "rb") as raw:
        return [orjson.loads(line) for line in gzip.decompress(raw.read()).splitlines()]


def event(i: int, t: int, **extra: Any) -> dict[str, Any]:
    return {"event_type": "view", "device_id": f"device-{i % 7:05d}", "time": t,
            "insert_id": f"ins-{i:08d}", "event_properties": {"i": i}, **extra}


class Crash(Exception):
    """Stands for Ctrl-C / a kill while the import files' runs are being written."""


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


def s3_client(s3_server: dict[str, Any]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


# --- defects --------------------------------------------------------------------------------


def test_a_resume_never_deletes_another_migrations_files_written_meanwhile(
        events_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg_a = config(events_dir, tmp_path / "work-a", out)
    with pytest.raises(Crash):
        migrate(cfg_a, reporter=CrashWhileWriting(after_updates=2))
    assert not list(out.glob("*.json.gz"))  # A left nothing in the folder
    b = migrate(config(events_dir, tmp_path / "work-b", out))
    assert b.exit_code == EXIT_OK
    b_files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert any(n.endswith(".json.gz") for n in b_files)
    with contextlib.suppress(Exception):  # refusing is right; losing B's files is not
        migrate(cfg_a, resume=True)
    left = {p.name: p.read_bytes() for p in out.iterdir() if p.name in b_files}
    assert left == b_files, "A's resume deleted or rewrote migration B's import files"


def test_a_missing_bucket_is_an_error_in_any_region_not_a_new_bucket(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    eu = {**s3_server, "client_kwargs": {"region_name": "eu-west-1"}}
    fs = fsspec.filesystem("s3", **s3_server)
    try:
        with pytest.raises(InputError, match="typo-bucket-eu"):
            S3ImportSink("s3://typo-bucket-eu/amplitude/", run_id="x", storage_options=eu,
                         staging_dir=tmp_path)
    finally:
        fs.invalidate_cache()
        created = "typo-bucket-eu" in [b.rstrip("/") for b in fs.ls("")]
        if created:
            s3_client(s3_server).delete_bucket(Bucket="typo-bucket-eu")
    assert not created


def test_ids_shorter_than_amplitudes_minimum_are_named_in_the_warnings(
        events_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = migrate(config(events_dir, tmp_path / "work", out))
    assert result.exit_code == EXIT_OK
    fs = fsspec.filesystem("file")
    short = [e for f in result.load["files"] for e in rows_of(fs, f["path"])
             if 0 < len(e.get("user_id") or "xxxxx") < 5]
    assert short, "the generated project has short user ids"
    warnings = " ".join(result.load["warnings"])
    assert re.search(r"min_id_length|shorter than 5|5 characters", warnings), warnings


def test_the_filter_pattern_takes_only_the_output_folders_own_files(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    s3_client(s3_server).create_bucket(Bucket="s14-pattern")
    sink = S3ImportSink("s3://s14-pattern/imports+v2(1)/", run_id="mp2amp-a1",
                        storage_options=s3_server, staging_dir=tmp_path)
    sink.write(event(1, 1_700_000_000_000))
    report = sink.close()
    fs = fsspec.filesystem("s3", **s3_server)
    pattern = orjson.loads(fs.cat(report.converter_config))["keyValidatorConfig"][
        "filterPattern"]
    key = report.files[0].path.split("/", 1)[1]  # the object key, without the bucket
    assert key == "imports+v2(1)/mp2amp-a1-00000.json.gz"
    assert re.search(pattern, key)
    for other in ("imports+v2(1)/project2/mp2amp-a1-00000.json.gz",
                  "imports+v2(1)/old/mp2amp-a1-00001.json.gz"):
        assert not re.search(pattern, other), other


def test_s3_paths_in_the_result_keep_their_scheme(events_dir: Path, tmp_path: Path,
                                                  s3_server: dict[str, Any]) -> None:
    s3_client(s3_server).create_bucket(Bucket="s14-scheme")
    result = migrate(config(events_dir, tmp_path / "work", "s3://s14-scheme/amp"),
                     storage_options=s3_server)
    assert result.exit_code == EXIT_OK
    paths = [f["path"] for f in result.load["files"]] + [result.load["converter_config"]]
    assert all(p.startswith("s3://s14-scheme/amp/") for p in paths), paths


# --- edge cases that hold ------------------------------------------------------------------


def test_times_before_1970_and_far_future_keep_their_order_across_files(tmp_path: Path) -> None:
    """Negative epochs and times past 2^53 survive the runs' text keys and the merge."""
    times = [-2_208_988_800_000, -1, 0, 1, 1_700_000_000_000, 253_402_300_799_999,
             2**62, 2**63 - 1]
    sink = S3ImportSink(str(tmp_path / "out"), run_id="t", target_file_bytes=2_000,
                        min_file_bytes=200, sort_buffer_bytes=1_000)
    rng = random.Random(14)
    evs = [event(i, times[(i * 5) % len(times)],
                 event_properties={"i": i, "pad": f"{rng.getrandbits(800):x}"})
           for i in range(200)]
    for e in evs:
        sink.write(e)
    report = sink.close()
    assert len(report.files) >= 2 and report.files_in_time_order
    fs = fsspec.filesystem("file")
    got = [r for f in report.files for r in rows_of(fs, f.path)]
    assert [r["time"] for r in got] == sorted(e["time"] for e in evs)
    assert sorted(r["insert_id"] for r in got) == sorted(e["insert_id"] for e in evs)
    assert [(f.first_time, f.last_time) for f in report.files] == [
        (rows_of(fs, f.path)[0]["time"], rows_of(fs, f.path)[-1]["time"])
        for f in report.files]


def test_unicode_and_line_separators_stay_one_event_per_line(tmp_path: Path) -> None:
    """U+2028/U+2029, NUL, tabs, newlines and emoji inside values: each event stays one line
    (the runs' tab-separated keys and the newline-split merge do not cut it)."""
    odd = "a\u2028b\u2029c\x00d\te\nf\r\U0001F600 \u00e9\u4e2d"
    sink = S3ImportSink(str(tmp_path / "out"), run_id="u", sort_buffer_bytes=500)
    evs = [event(i, 1_000 - i, event_properties={"s": odd, "k\tey\n": i}) for i in range(50)]
    for e in evs:
        sink.write(e)
    report = sink.close()
    raw = gzip.decompress(Path(report.files[0].path).read_bytes())
    assert raw.count(b"\n") == 50 and raw.endswith(b"\n")
    back = [orjson.loads(line) for line in raw.split(b"\n")[:-1]]
    assert [b["event_properties"] for b in back] == [e["event_properties"] for e in evs[::-1]]


def test_an_event_larger_than_the_target_file_size_is_written_whole_in_order(
        tmp_path: Path) -> None:
    big = "".join(f"{i:x}" for i in range(60_000))  # ~250 KB, poorly compressible for gzip
    sink = S3ImportSink(str(tmp_path / "out"), run_id="big", target_file_bytes=100_000,
                        min_file_bytes=20_000)
    evs = [event(i, 10 + i, event_properties={"blob": big if i == 5 else "x"})
           for i in range(12)]
    for e in evs:
        sink.write(e)
    report = sink.close()
    fs = fsspec.filesystem("file")
    rows = [r for f in report.files for r in rows_of(fs, f.path)]
    assert [r["insert_id"] for r in rows] == [e["insert_id"] for e in evs]
    assert rows[5]["event_properties"]["blob"] == big
    assert all(f.bytes >= 20_000 for f in report.files)


def test_each_file_is_one_valid_gzip_member_and_no_scratch_is_left(tmp_path: Path) -> None:
    """Joined and stored files are rewritten into one gzip stream with a valid CRC (Java's
    GZIPInputStream reads members, but a single one leaves no doubt); scratch is removed."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sink = S3ImportSink(str(tmp_path / "out"), run_id="gz", target_file_bytes=60_000,
                        min_file_bytes=15_000, sort_buffer_bytes=5_000, staging_dir=scratch)
    rng = random.Random(7)
    for i in range(3_000):
        sink.write(event(i, (i * 7919) % 100_000,
                         event_properties={"pad": f"{rng.getrandbits(256):x}"}))
    report = sink.close()
    assert len(report.files) >= 2
    for f in report.files:
        data = Path(f.path).read_bytes()
        d = zlib.decompressobj(wbits=31)
        body = d.decompress(data)
        assert d.eof and d.unused_data == b"", f"{f.path}: more than one gzip member"
        assert body.count(b"\n") == f.events
    assert list(scratch.iterdir()) == []


def test_a_bucket_root_output_dir_writes_keys_the_pattern_and_resume_handle(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    """``s3://bucket`` with no prefix: files at the bucket's root, the converter beside them,
    filterPattern matching the keys, the folder checks of migrate working at the root."""
    s3_client(s3_server).create_bucket(Bucket="s14-root")
    target = "s3://s14-root"
    sink = S3ImportSink(target, run_id="mp2amp-a1", storage_options=s3_server,
                        staging_dir=tmp_path)
    for i in range(10):
        sink.write(event(i, 100 + i))
    report = sink.close()
    fs = fsspec.filesystem("s3", **s3_server)
    fs.invalidate_cache()
    assert sorted(fs.ls("s14-root")) == ["s14-root/" + CONVERTER_NAME,
                                          "s14-root/mp2amp-a1-00000.json.gz"]
    pattern = orjson.loads(fs.cat(report.converter_config))["keyValidatorConfig"][
        "filterPattern"]
    assert re.search(pattern, "mp2amp-a1-00000.json.gz")
    assert not re.search(pattern, CONVERTER_NAME)
    with pytest.raises(Exception, match="already holds the import files"):
        refuse_another_runs_files(target, s3_server)
    assert remove_earlier_attempts(target, 2, s3_server) == ["s14-root/mp2amp-a1-00000.json.gz"]
    fs.invalidate_cache()
    assert fs.ls("s14-root") == ["s14-root/" + CONVERTER_NAME]


def test_the_converter_maps_every_field_the_files_carry(events_dir: Path,
                                                        tmp_path: Path) -> None:
    """§6: columns the converter does not map are ignored by Amplitude. Every top-level key
    of every written event must be mapped, one to one, and user_properties kept."""
    out = tmp_path / "out"
    result = migrate(config(events_dir, tmp_path / "work", out))
    assert result.exit_code == EXIT_OK
    doc = orjson.loads((out / CONVERTER_NAME).read_bytes())
    func = doc["converterConfig"]["convertToAmplitudeFunc"]
    assert doc["converterConfig"]["fileType"] == "json"
    assert doc["converterConfig"]["compressionType"] == "gzip"
    fs = fsspec.filesystem("file")
    keys = {k for f in result.load["files"] for e in rows_of(fs, f["path"]) for k in e}
    assert {"insert_id", "time", "session_id", "event_properties"} <= keys
    assert {k: func.get(k) for k in keys} == {k: k for k in keys}
    assert func["$skip_user_properties_sync"] == ["value", False]


# --- what the fixes add ----------------------------------------------------------------------


def test_file_names_hold_a_run_id_and_a_resume_removes_only_its_own_runs_files(
        events_dir: Path, tmp_path: Path) -> None:
    """Names are mp2amp-a<N>-<run>-NNNNN.json.gz: A's resume (after B was pointed at its
    own folder and another run's file was left beside A's) removes A's attempt-1 files only."""
    out = tmp_path / "out"
    cfg = config(events_dir, tmp_path / "work", out)

    class CrashInClose(S3ImportSink):
        def _write_converter(self) -> None:
            raise Crash

    import mp2amp.pipeline.migrate as migrate_module

    real = migrate_module.S3ImportSink
    migrate_module.S3ImportSink = CrashInClose  # type: ignore[misc]
    try:
        with pytest.raises(Crash):
            migrate(cfg)
    finally:
        migrate_module.S3ImportSink = real  # type: ignore[misc]
    first = sorted(p.name for p in out.glob("*.json.gz"))
    assert first and all(re.fullmatch(r"mp2amp-a1-[0-9a-f]{12}-\d{5}\.json\.gz", n)
                         for n in first), first
    run = first[0].split("-")[2]
    result = migrate(cfg, resume=True)
    assert result.exit_code == EXIT_OK
    assert result.load["files_removed_from_earlier_attempts"] == [str(out / n) for n in first]
    names = sorted(p.name for p in out.glob("*.json.gz"))
    assert names and all(n.startswith(f"mp2amp-a2-{run}-") for n in names), names
    pattern = orjson.loads((out / CONVERTER_NAME).read_bytes())["keyValidatorConfig"][
        "filterPattern"]
    assert [n for n in names if re.search(pattern, n)] == names
    assert not re.search(pattern, first[0])


def test_a_later_attempt_is_refused_another_runs_files_and_may_then_change_folder(
        events_dir: Path, tmp_path: Path) -> None:
    out, own = tmp_path / "out", tmp_path / "own"
    cfg_a = config(events_dir, tmp_path / "work-a", out)
    with pytest.raises(Crash):
        migrate(cfg_a, reporter=CrashWhileWriting(after_updates=2))
    assert migrate(config(events_dir, tmp_path / "work-b", out)).exit_code == EXIT_OK
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(Exception, match="this run did not write") as refused:
        migrate(cfg_a, resume=True)
    assert "nothing was removed" in str(refused.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # A wrote no file yet: it may go on into a folder of its own, as the message says
    result = migrate(config(events_dir, tmp_path / "work-a", own), resume=True)
    assert result.exit_code == EXIT_OK and result.load["attempt"] == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_run_started_by_the_previous_version_resumes_with_its_names(
        events_dir: Path, tmp_path: Path) -> None:
    """A ledger without a run id (sink_attempt set at the start of each attempt, names
    mp2amp-a<N>-NNNNN): the resume keeps those names and removes its earlier attempt's."""
    import sqlite3

    out, work = tmp_path / "out", tmp_path / "work"
    cfg = config(events_dir, work, out)
    with pytest.raises(Crash):
        migrate(cfg, reporter=CrashWhileWriting(after_updates=2))
    with contextlib.closing(sqlite3.connect(work / "ledger.sqlite")) as db, db:
        db.execute("DELETE FROM meta WHERE key IN ('sink_run', 'sink_attempts')")
        db.execute("INSERT INTO meta(key, value) VALUES('sink_attempt', '1')")
    (out / "mp2amp-a1-00000.json.gz").write_bytes(gzip.compress(b"{}\n"))  # its old file
    result = migrate(cfg, resume=True)
    assert result.exit_code == EXIT_OK and result.load["attempt"] == 2
    assert result.load["files_removed_from_earlier_attempts"] == [
        str(out / "mp2amp-a1-00000.json.gz")]
    names = sorted(p.name for p in out.glob("*.json.gz"))
    assert names and all(re.fullmatch(r"mp2amp-a2-\d{5}\.json\.gz", n) for n in names), names


def test_the_sink_does_not_overwrite_another_runs_converter(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    s3_client(s3_server).create_bucket(Bucket="s14-converter")
    fs = fsspec.filesystem("s3", **s3_server)
    theirs = b'{"keyValidatorConfig": {"filterPattern": "^mp2amp\\\\-a1\\\\-0123456789ab"}}'
    fs.pipe_file(f"s14-converter/amp/{CONVERTER_NAME}", theirs)
    sink = S3ImportSink("s3://s14-converter/amp", run_id="mp2amp-a1-fedcba987654",
                        storage_options=s3_server, staging_dir=tmp_path,
                        converter_owner="fedcba987654")
    sink.write(event(1, 5))
    with pytest.raises(InputError, match=r"s3://s14-converter/amp/amplitude-converter-config"
                                         r"\.json is another migration's converter config"):
        sink.close()
    assert fs.cat_file(f"s14-converter/amp/{CONVERTER_NAME}") == theirs
    # its own earlier attempt's converter is replaced
    sink = S3ImportSink("s3://s14-converter/own", run_id="mp2amp-a1-fedcba987654",
                        storage_options=s3_server, staging_dir=tmp_path,
                        converter_owner="fedcba987654")
    sink.write(event(1, 5))
    sink.close()
    sink = S3ImportSink("s3://s14-converter/own", run_id="mp2amp-a2-fedcba987654",
                        storage_options=s3_server, staging_dir=tmp_path,
                        converter_owner="fedcba987654")
    sink.write(event(1, 5))
    sink.close()
    doc = orjson.loads(fs.cat_file(f"s14-converter/own/{CONVERTER_NAME}"))
    assert "a2" in doc["keyValidatorConfig"]["filterPattern"]


def test_short_ids_are_counted_by_kind_and_long_ones_give_no_warning(tmp_path: Path) -> None:
    sink = S3ImportSink(str(tmp_path / "ok"), run_id="ok")
    sink.write(event(1, 5, user_id="user-1"))
    assert [w for w in sink.close().warnings if "1 MB" not in w] == []
    sink = S3ImportSink(str(tmp_path / "short"), run_id="short")
    sink.write(event(1, 5, user_id="29"))                     # user_id removed, device kept
    sink.write(event(2, 6, user_id="7", device_id="d1"))      # both removed: rejected
    sink.write(event(3, 7, user_id="abcdef"))
    warnings = [w for w in sink.close().warnings if "ID" in w]
    assert warnings == [
        "2 of 3 events have an ID shorter than 5 characters (2 user_id, 1 device_id; e.g. "
        "'29'): S3 import has no min_id_length option, so Amplitude removes such an ID from "
        "the event when it imports the files; 1 of them keep no ID at all, and Amplitude "
        "rejects those. To keep those IDs, migrate through the API instead (without "
        "output_dir: mp2amp sends min_id_length)"]
