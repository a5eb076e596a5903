"""Session-17 review of the S3-import sink (load/s3sink.py, pipeline/import_folder.py and
the sink path of pipeline/migrate.py): how `mp2amp migrate` with `[amplitude] output_dir`
treats the output location (its own files, an unusable bucket, missing credentials)
against README's contracts (config problems are reported before any input is read; bad
config/credentials exit 2 with a clear message, never a traceback)."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.errors import ConfigError, Mp2AmpError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, migrate

BASE = 1_700_000_000  # seconds


def write_events(path: Path, n: int = 120, *, start: int = 0) -> Path:
    """A Mixpanel export file (Export API lines) of ``n`` events."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps({"event": "view", "properties": {
        "time": BASE + i, "distinct_id": f"user-{i % 7:05d}", "$insert_id": f"ins-{i:08d}",
        "plan": "pro"}}) for i in range(start, start + n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def config(files: list[str], work: Path, out: str, **extra: Any) -> Any:
    return load_config(None, {"source.files": files, "mixpanel.timezone": "UTC",
                              "amplitude.output_dir": out, "run.workdir": str(work), **extra},
                       env={})


def file_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def staged_windows(work: Path) -> list[tuple[str, str]]:
    """(window, state) of the run in ``work``; [] when no run was recorded."""
    path = work / "ledger.sqlite"
    if not path.exists():
        return []
    ledger = Ledger(path)
    try:
        return [(w.window_id, w.state) for w in ledger.windows()]
    finally:
        ledger.close()


# --- defects --------------------------------------------------------------------------------


def test_the_runs_own_import_files_are_never_named_as_new_inputs(tmp_path: Path) -> None:
    """README's layout `files = ["."]` (the project folder) with the import files in a
    folder of the project: a resume must not tell the user to migrate the Amplitude import
    files (and the converter JSON) as Mixpanel data in a new run."""
    project = tmp_path / "project"
    write_events(project / "events.jsonl")
    cfg = config([str(project)], project / ".mp2amp", str(project / "amplitude-import"))
    first = migrate(cfg)
    assert first.exit_code == EXIT_OK and first.totals["sent"] == 120
    again = migrate(cfg, resume=True)
    assert again.exit_code == EXIT_OK
    assert again.not_in_run == [], again.not_in_run


def test_a_bucket_amplitude_cannot_read_is_refused_before_any_input_is_read(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    """README: a bad config is reported whole and the command exits 2 "before reading any
    input"; the sink's refusal of a dotted bucket is a ConfigError of
    amplitude.output_dir, found from the config alone. With an Export API source (~18 h
    for three years) it must not come at the end."""
    events = write_events(tmp_path / "in" / "day.jsonl")
    work = tmp_path / "work"
    with pytest.raises(ConfigError, match="dot"):
        migrate(config([str(events)], work, "s3://my.company.bucket/amplitude"),
                storage_options=s3_server)
    assert all(state == "pending" for _, state in staged_windows(work)), staged_windows(work)


def test_an_s3_output_without_credentials_is_a_clear_error_not_a_traceback(
        tmp_path: Path, s3_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """`migrate --help`: exit 2 "for bad config/credentials/input"; the CLI prints only
    mp2amp's errors as messages, anything else is a traceback with exit 1 (which the same
    help reserves for a window that does not add up)."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import boto3

    boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket="s17-nocreds")
    events = write_events(tmp_path / "in" / "day.jsonl")
    no_keys = {"endpoint_url": s3_server["endpoint_url"],
               "client_kwargs": {"region_name": "us-east-1"}}
    try:
        migrate(config([str(events)], tmp_path / "work", "s3://s17-nocreds/amp"),
                storage_options=no_keys)
    except Mp2AmpError as exc:
        assert exc.exit_code == 2 and "s17-nocreds" in str(exc)
    else:
        raise AssertionError("the run wrote import files without credentials")


# --- holds ----------------------------------------------------------------------------------


def test_a_run_refused_its_bucket_resumes_into_the_corrected_output_dir(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    """README: a run none of whose attempts started writing files resumes into the folder
    the config names now: a dotted bucket, corrected, costs no new run, and the import
    files then hold each event once, in time order, as attempt 2."""
    import boto3
    import fsspec

    boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket="s17-fixed")
    write_events(tmp_path / "in" / "a.jsonl", 80)
    write_events(tmp_path / "in" / "b.jsonl", 80, start=40)  # overlaps a.jsonl in time
    files = [str(tmp_path / "in")]
    work = tmp_path / "work"
    with pytest.raises(ConfigError):
        migrate(config(files, work, "s3://my.company.bucket/amp"), storage_options=s3_server)
    result = migrate(config(files, work, "s3://s17-fixed/amp"), resume=True,
                     storage_options=s3_server)
    assert result.exit_code == EXIT_OK and result.totals["balanced"]
    fs = fsspec.filesystem("s3", **s3_server)
    fs.invalidate_cache()
    rows = [orjson.loads(line) for f in result.load["files"]
            for line in gzip.decompress(fs.cat(f["path"])).splitlines()]
    ids = [r["insert_id"] for r in rows]
    assert len(ids) == len(set(ids)) == result.totals["sent"] == 120
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)


# --- fixes: the output folder among the inputs ----------------------------------------------


def test_an_output_dir_that_is_the_input_folder_leaves_out_only_the_sinks_files(
        tmp_path: Path) -> None:
    """Only the files the sink writes (import files of any run, the converter config) are
    left out of the inputs: a Mixpanel file added to the same folder since is still named
    as not part of the run."""
    project = tmp_path / "project"
    write_events(project / "events.jsonl")
    cfg = config([str(project)], tmp_path / "work", str(project))
    assert migrate(cfg).totals["sent"] == 120
    late = write_events(project / "late.jsonl", 10, start=500)
    again = migrate(cfg, resume=True)
    assert again.exit_code == EXIT_OK
    assert again.not_in_run == [str(late)], again.not_in_run


def test_sources_that_match_only_import_files_are_refused(tmp_path: Path) -> None:
    """A new run whose sources name only an S3-import folder (Amplitude's events) is told
    so, rather than migrating them as Mixpanel events or running with no window."""
    out = tmp_path / "amplitude-import"
    write_events(tmp_path / "in" / "events.jsonl")
    assert migrate(config([str(tmp_path / "in")], tmp_path / "w1", str(out))).exit_code == 0
    with pytest.raises(Mp2AmpError, match="only the import files") as refused:
        migrate(config([str(out)], tmp_path / "w2", str(out)))
    assert refused.value.exit_code == 2
    assert not (tmp_path / "w2" / "ledger.sqlite").exists()


@pytest.mark.parametrize(("url", "output_dir", "expected"), [
    ("s3://b/amp/mp2amp-a1-0123456789ab-00000.json.gz", "s3://b/amp", True),
    ("s3://b/amp/mp2amp-a2-00003.json.gz", "s3a://b/amp/", True),
    ("gs://b/amp/amplitude-converter-config.json", "gcs://b/amp", True),
    ("s3://b/amp/events.jsonl", "s3://b/amp", False),            # a Mixpanel file there
    ("s3://b/amp/old/mp2amp-a1-00000.json.gz", "s3://b/amp", False),  # not the folder itself
    ("s3://b/amp/mp2amp-a1-00000.json.gz", None, False),         # the API path writes none
    ("amplitude-converter-config.json", "s3://b/amp", False),    # a local file, named alike
])
def test_which_inputs_are_the_sinks_own_files(url: str, output_dir: str | None,
                                              expected: bool) -> None:
    from mp2amp.pipeline.import_folder import is_output_file

    assert is_output_file(url, output_dir) is expected


# --- fixes: the output folder checked before any input is read -------------------------------


def test_a_bucket_that_does_not_exist_is_refused_before_any_input_is_read(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    events = write_events(tmp_path / "in" / "day.jsonl")
    work = tmp_path / "work"
    with pytest.raises(Mp2AmpError, match="does not exist") as refused:
        migrate(config([str(events)], work, "s3://s17-no-such-bucket/amp"),
                storage_options=s3_server)
    assert refused.value.exit_code == 2 and "--resume" in str(refused.value)
    assert staged_windows(work) and all(s == "pending" for _, s in staged_windows(work))


def test_a_local_output_dir_that_cannot_be_made_is_refused_before_any_input_is_read(
        tmp_path: Path) -> None:
    events = write_events(tmp_path / "in" / "day.jsonl")
    (tmp_path / "a-file").write_text("")
    work = tmp_path / "work"
    with pytest.raises(Mp2AmpError, match="cannot create the S3-import target") as refused:
        migrate(config([str(events)], work, str(tmp_path / "a-file" / "out")))
    assert refused.value.exit_code == 2
    assert staged_windows(work) and all(s == "pending" for _, s in staged_windows(work))


def test_the_dotted_bucket_message_says_how_to_go_on(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    events = write_events(tmp_path / "in" / "day.jsonl")
    with pytest.raises(ConfigError) as refused:
        migrate(config([str(events)], tmp_path / "work", "s3://my.company.bucket/amp"),
                storage_options=s3_server)
    assert refused.value.problems == [
        "bucket 'my.company.bucket': Amplitude's S3 import cannot read a bucket whose name "
        "contains a dot; set [amplitude] output_dir to a bucket without one, then run the "
        "same `mp2amp migrate` command with --resume"]


def test_the_probe_leaves_nothing_in_the_output_folder(tmp_path: Path) -> None:
    from mp2amp.load.s3target import probe_output

    probe_output(str(tmp_path / "out"), None)
    assert list((tmp_path / "out").iterdir()) == []


# --- fixes: failures of the output folder while the files are written -------------------------


def test_credentials_that_fail_while_files_are_written_are_a_clear_error_then_resume(
        tmp_path: Path, s3_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials that expire between the check and the files (a session token): exit 2
    naming the folder; --resume then writes the files whole."""
    import boto3
    import fsspec
    from botocore.exceptions import NoCredentialsError

    import mp2amp.pipeline.migrate as migrate_module
    from mp2amp.load.s3sink import S3ImportSink

    boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket="s17-expiring")

    class Expired(S3ImportSink):
        def _upload(self, staged: Any) -> None:
            def refused(*_: Any, **__: Any) -> None:
                raise NoCredentialsError()
            self.fs.put_file = refused
            try:
                super()._upload(staged)
            finally:
                del self.fs.put_file  # fsspec shares the filesystem object

    events = write_events(tmp_path / "in" / "day.jsonl")
    cfg = config([str(events)], tmp_path / "work", "s3://s17-expiring/amp")
    monkeypatch.setattr(migrate_module, "S3ImportSink", Expired)
    with pytest.raises(Mp2AmpError, match="s3://s17-expiring/amp") as failed:
        migrate(cfg, storage_options=s3_server)
    assert failed.value.exit_code == 2 and "--resume" in str(failed.value)
    monkeypatch.setattr(migrate_module, "S3ImportSink", S3ImportSink)
    result = migrate(cfg, resume=True, storage_options=s3_server)
    assert result.exit_code == EXIT_OK and result.totals["sent"] == 120
    fs = fsspec.filesystem("s3", **s3_server)
    fs.invalidate_cache()
    assert [Path(p).name.split("-")[1] for p in fs.ls("s17-expiring/amp")
            if p.endswith(".json.gz")] == ["a2"]


# --- fixes: a run stopped while the files are cut ---------------------------------------------


def _sink_of(tmp_path: Path, events: int) -> Any:
    from mp2amp.load.s3sink import S3ImportSink

    sink = S3ImportSink(str(tmp_path / "out"), run_id="stop", target_file_bytes=200_000,
                        min_file_bytes=10_000, staging_dir=tmp_path)
    for i in range(events):
        sink.write({"event_type": "view", "user_id": f"user-{i % 50:05d}",
                    "time": (BASE + i) * 1000, "insert_id": f"ins-{i:08d}"})
    return sink


def test_a_sink_told_to_stop_writes_no_further_file_and_no_converter(tmp_path: Path) -> None:
    from mp2amp.load.s3target import SinkStopped

    sink = _sink_of(tmp_path, 30_000)
    sink.should_stop = lambda: True
    with pytest.raises(SinkStopped):
        sink.close()
    assert list((tmp_path / "out").iterdir()) == []
    assert not sink._staging.exists()


def test_a_stopped_run_waits_for_the_files_thread_before_it_lets_go(tmp_path: Path) -> None:
    """Ctrl-C in the files phase: the merge thread is told to stop and waited for, so
    nothing writes into the scratch or the output folder once the lock is released."""
    import asyncio
    import threading

    from mp2amp.pipeline.import_folder import close_sink

    sink = _sink_of(tmp_path, 60_000)
    working = threading.Event()

    def progress(n: int) -> None:
        working.set()
        time.sleep(0.05)  # the merge takes a while: the stop comes in the middle

    async def stopped() -> None:
        task = asyncio.ensure_future(close_sink(sink, progress))
        await asyncio.to_thread(working.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stopped())
    assert not sink._staging.exists()  # the thread ended (its cleanup ran) before the stop
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    time.sleep(0.2)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == written
    assert "amplitude-converter-config.json" not in written


def test_the_stop_message_says_what_resume_does_with_import_files() -> None:
    from mp2amp.pipeline.import_folder import resume_note

    assert "insert_ids" in resume_note(None)
    sink = resume_note("s3://bucket/amp")
    assert "insert_ids" not in sink and "s3://bucket/amp" in sink and "once" in sink
