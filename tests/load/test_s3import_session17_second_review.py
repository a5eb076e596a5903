"""Second-pass review of be93693 (S3-import sink: the output folder checked before any
input is read, its own files never inputs, a stop that waits for the files thread):
regressions and cases the fix missed, against README's S3-import and Stopping sections."""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path
from typing import Any

import fsspec
import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.pipeline.migrate import EXIT_OK, migrate, migrate_async

BASE = 1_700_000_000  # seconds


def write_events(path: Path, n: int = 120, *, start: int = 0, pad: int = 0) -> Path:
    """A Mixpanel export file (Export API lines) of ``n`` events."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps({"event": "view", "properties": {
        "time": BASE + i, "distinct_id": f"user-{i % 7:05d}", "$insert_id": f"ins-{i:08d}",
        "plan": "pro", "pad": "x" * pad}}) for i in range(start, start + n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def config(files: list[str], work: Path, out: str, **extra: Any) -> Any:
    return load_config(None, {"source.files": files, "mixpanel.timezone": "UTC",
                              "amplitude.output_dir": out, "run.workdir": str(work), **extra},
                       env={})


def rows_of(folder: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for p in sorted(folder.glob("mp2amp-*.json.gz"))
            for line in gzip.decompress(p.read_bytes()).splitlines()]


# --- is_output_file too narrow ---------------------------------------------------------------


def test_a_file_url_output_dir_inside_the_inputs_is_not_named_as_new_inputs(
        tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_events(project / "events.jsonl")
    cfg = config([str(project)], tmp_path / "work",
                 (project / "amplitude-import").as_uri())
    first = migrate(cfg)
    assert first.exit_code == EXIT_OK and first.totals["sent"] == 120
    assert (project / "amplitude-import" / "amplitude-converter-config.json").exists()
    again = migrate(cfg, resume=True)
    assert again.exit_code == EXIT_OK
    assert again.not_in_run == [], again.not_in_run


# --- the stop flag ---------------------------------------------------------------------------


def test_a_stop_is_honoured_during_the_merge_passes(tmp_path: Path) -> None:
    from mp2amp.load.s3sink import S3ImportSink
    from mp2amp.load.s3target import SinkStopped

    class Counting(S3ImportSink):
        closing = False
        merged_runs = 0

        def _new_path(self, kind: str) -> Path:
            if self.closing and kind == "run":
                self.merged_runs += 1
            return super()._new_path(kind)

    sink = Counting(str(tmp_path / "out"), run_id="stop", sort_buffer_bytes=4_000,
                    merge_fan_in=2, staging_dir=tmp_path)
    for i in range(4_000):  # ~40 sorted runs: several merge passes
        sink.write({"event_type": "view", "user_id": f"user-{i % 50:05d}",
                    "time": (BASE + i) * 1000, "insert_id": f"ins-{i:08d}"})
    assert len(sink._runs) > 16
    sink.should_stop = lambda: True  # the run was stopped before the files thread began
    sink.closing = True
    with pytest.raises(SinkStopped):
        sink.close()
    # at most the buffer's last spill; no merge pass over the whole export
    assert sink.merged_runs <= 1, f"{sink.merged_runs} runs merged after the stop"


def test_a_run_stopped_between_two_files_resumes_to_each_event_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped (as Ctrl-C cancels the run) after the files thread wrote its first file:
    --resume deletes attempt 1's files and writes every event once, as attempt 2."""
    import mp2amp.pipeline.migrate as migrate_module
    from mp2amp.ledger import Ledger
    from mp2amp.load.s3sink import S3ImportSink

    state: dict[str, Any] = {}

    class Small(S3ImportSink):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(target_file_bytes=60_000, min_file_bytes=2_000)
            super().__init__(*args, **kwargs)

        def _upload(self, staged: Any) -> None:
            super()._upload(staged)
            if state.get("stop") and len(self.report.files) == 1:
                state["loop"].call_soon_threadsafe(state["task"].cancel)
                deadline = time.monotonic() + 5
                while not self.should_stop() and time.monotonic() < deadline:
                    time.sleep(0.01)  # the next file comes only after the stop

    write_events(tmp_path / "in" / "a.jsonl", 1_500, pad=40)
    write_events(tmp_path / "in" / "b.jsonl", 1_500, start=700, pad=40)  # overlaps a
    out = tmp_path / "out"
    cfg = config([str(tmp_path / "in")], tmp_path / "work", str(out))
    monkeypatch.setattr(migrate_module, "S3ImportSink", Small)

    async def stopped_run() -> None:
        state.update(stop=True, loop=asyncio.get_running_loop())
        state["task"] = asyncio.ensure_future(migrate_async(cfg))
        await state["task"]

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(stopped_run())
    first = sorted(p.name for p in out.iterdir())
    assert [n for n in first if n.startswith("mp2amp-a1-")], first
    assert "amplitude-converter-config.json" not in first
    ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
    try:
        assert all(w.state != "loaded" for w in ledger.windows())
    finally:
        ledger.close()
    state["stop"] = False
    result = migrate(cfg, resume=True)
    assert result.exit_code == EXIT_OK and result.totals["balanced"]
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if "-a1-" in n or n.startswith(".")], names
    ids = [r["insert_id"] for r in rows_of(out)]
    assert len(ids) == len(set(ids)) == result.totals["sent"] == 2_200
    assert len(result.load["files"]) > 1


# --- the output folder's check ---------------------------------------------------------------


def test_a_local_output_dir_that_is_a_file_says_to_resume(tmp_path: Path) -> None:
    from mp2amp.errors import Mp2AmpError

    events = write_events(tmp_path / "in" / "day.jsonl")
    (tmp_path / "amplitude-import").write_text("not a folder")
    work = tmp_path / "work"
    with pytest.raises(Mp2AmpError) as refused:
        migrate(config([str(events)], work, str(tmp_path / "amplitude-import")))
    assert refused.value.exit_code == 2
    assert (work / "ledger.sqlite").exists()  # the run is recorded: only --resume goes on
    assert "--resume" in str(refused.value), str(refused.value)


def test_s3a_output_with_a_slash_among_s3_inputs_leaves_no_probe_and_no_new_inputs(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    """Inputs and output in one prefix, the output named as s3a://.../ : the probe leaves
    no object, and a resume names neither the import files nor the converter as inputs."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="s17-second")
    events = write_events(tmp_path / "events.jsonl")
    s3.put_object(Bucket="s17-second", Key="proj/events.jsonl", Body=events.read_bytes())
    cfg = config(["s3://s17-second/proj"], tmp_path / "work", "s3a://s17-second/proj/amp/")
    first = migrate(cfg, storage_options=s3_server)
    assert first.exit_code == EXIT_OK and first.totals["sent"] == 120
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="s17-second")["Contents"])
    assert [k for k in keys if "probe" in k] == [], keys
    assert "proj/amp/amplitude-converter-config.json" in keys
    again = migrate(cfg, resume=True, storage_options=s3_server)
    assert again.exit_code == EXIT_OK and again.not_in_run == [], again.not_in_run


# --- tests of the fixes ------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "output_dir"), [
    ("file://{d}/out/mp2amp-a1-0123456789ab-00000.json.gz", "{d}/out"),
    ("{d}/out/amplitude-converter-config.json", "file://{d}/out/"),
    ("{d}/out/.mp2amp-a2-0123456789ab-00001.json.gz.part", "local://{d}/out"),
    ("s3a://bucket/p/out/mp2amp-a1-00000.json.gz", "s3://bucket/p/out/"),
])
def test_one_folder_named_two_ways_is_the_output_folder(
        tmp_path: Path, url: str, output_dir: str) -> None:
    from mp2amp.pipeline.import_folder import is_output_file

    (tmp_path / "out").mkdir()
    assert is_output_file(url.format(d=tmp_path), output_dir.format(d=tmp_path))
    assert not is_output_file(url.format(d=tmp_path).replace("/out/", "/other/"),
                              output_dir.format(d=tmp_path))


def test_an_earlier_runs_import_folder_in_the_inputs_is_not_read_as_mixpanel_data(
        tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_events(project / "events.jsonl")
    earlier = config([str(project / "events.jsonl")], tmp_path / "w1",
                     str(project / "old-import"))
    assert migrate(earlier).totals["sent"] == 120
    assert (project / "old-import" / "amplitude-converter-config.json").exists()
    # a new migration of the whole project, written elsewhere
    cfg = config([str(project)], tmp_path / "w2", str(tmp_path / "new-import"))
    result = migrate(cfg)
    assert result.exit_code == EXIT_OK and result.totals["sent"] == 120, result.totals
    assert not result.totals.get("rejected"), result.totals
    assert migrate(cfg, resume=True).not_in_run == []


def test_a_gzip_named_like_an_import_file_without_a_converter_stays_an_input(
        tmp_path: Path) -> None:
    from mp2amp.pipeline.import_folder import is_output_file

    name = tmp_path / "mp2amp-a1-00000.json.gz"
    name.write_bytes(b"")
    assert not is_output_file(str(name), str(tmp_path / "elsewhere"))
    (tmp_path / "amplitude-converter-config.json").write_text("{}")
    assert is_output_file(str(name), None)
    assert is_output_file(str(tmp_path / "amplitude-converter-config.json"), None)


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
def test_a_full_output_disk_is_said_as_such_even_without_a_file_name(code: str) -> None:
    import errno

    from mp2amp.errors import TerminalError
    from mp2amp.load.s3target import output_trouble

    with pytest.raises(TerminalError) as full, output_trouble("/mnt/out"):
        raise OSError(getattr(errno, code), "No space left on device")
    assert str(full.value).startswith("the disk is full (writing /mnt/out: ")
    assert "free some space there" in str(full.value) and "--resume" in str(full.value)


def test_a_file_in_the_way_of_the_output_folder_is_named(tmp_path: Path) -> None:
    from mp2amp.errors import InputError
    from mp2amp.load.s3target import make_local_folder

    (tmp_path / "a-file").write_text("")
    fs = fsspec.filesystem("file")
    for root in (tmp_path / "a-file", tmp_path / "a-file" / "out"):
        with pytest.raises(InputError) as refused:
            make_local_folder(fs, str(root), str(root))
        said = str(refused.value)
        assert f"{tmp_path / 'a-file'} is a file, not a folder" in said, said
        assert "Errno" not in said and said.endswith("command with --resume")


def test_a_stop_during_one_merge_group_ends_it_within_a_chunk() -> None:
    import io

    from mp2amp.load.s3sink import WRITE_CHUNK_BYTES, _write_chunked
    from mp2amp.load.s3target import SinkStopped

    def stop() -> None:
        raise SinkStopped("stopped")

    out = io.BytesIO()
    line = b"x" * 1023 + b"\n"
    with pytest.raises(SinkStopped):
        _write_chunked(out, (line for _ in range(100 * WRITE_CHUNK_BYTES // 1024)), stop)
    assert len(out.getvalue()) < 2 * WRITE_CHUNK_BYTES


def _sink_config_and_ledger(tmp_path: Path) -> tuple[Any, Any]:
    from mp2amp.ledger import Ledger

    cfg = config([str(tmp_path / "in")], tmp_path / "work", str(tmp_path / "out"))
    (tmp_path / "work").mkdir()
    return cfg, Ledger(tmp_path / "work" / "ledger.sqlite")


def test_an_output_folder_that_does_not_answer_is_named_after_the_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mp2amp.pipeline.preflight as preflight
    from mp2amp.errors import InputError

    monkeypatch.setattr(preflight, "probe_output", lambda *_: time.sleep(5))
    cfg, ledger = _sink_config_and_ledger(tmp_path)
    started = time.monotonic()
    try:
        with pytest.raises(InputError, match="did not answer within 0 seconds") as refused:
            asyncio.run(preflight.check_output_folder_async(cfg, ledger, None, timeout=0.2))
    finally:
        ledger.close()
    assert time.monotonic() - started < 2  # the hanging thread does not hold the run
    assert str(tmp_path / "out") in str(refused.value) and "--resume" in str(refused.value)


def test_a_stop_during_the_output_folder_check_is_honoured_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mp2amp.pipeline.preflight as preflight

    monkeypatch.setattr(preflight, "probe_output", lambda *_: time.sleep(5))
    cfg, ledger = _sink_config_and_ledger(tmp_path)

    async def stopped() -> None:
        check = asyncio.ensure_future(preflight.check_output_folder_async(cfg, ledger, None))
        await asyncio.sleep(0.1)
        check.cancel()
        await check

    started = time.monotonic()
    try:
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(stopped())
    finally:
        ledger.close()
    assert time.monotonic() - started < 2


def test_the_output_folder_check_in_a_thread_still_refuses(tmp_path: Path) -> None:
    from mp2amp.errors import InputError
    from mp2amp.pipeline.preflight import check_output_folder_async

    (tmp_path / "out").write_text("a file")
    cfg, ledger = _sink_config_and_ledger(tmp_path)
    try:
        with pytest.raises(InputError, match="is a file, not a folder"):
            asyncio.run(check_output_folder_async(cfg, ledger, None))
    finally:
        ledger.close()
