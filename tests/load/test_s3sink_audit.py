"""Audit of the S3-import sink against reference/amplitude-api.md §6: Amplitude's 1 MB-5 GB
file rule with its real minimum, tiny exports, the converter JSON against what Amplitude's
converter expects, and `mp2amp migrate` killed (-9) at many moments of the file writing,
then resumed: each event in exactly one importable file, in time order, nothing half-written
that the converter's filterPattern would pick up."""

from __future__ import annotations

import functools
import gzip
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fsspec
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))  # the migrate test kit

from migrate_kit import TIMEZONE, Key, Project, mp2amp, transform_outcome

import mp2amp.pipeline.migrate as migrate_module
from mp2amp.config import load_config
from mp2amp.errors import InputError
from mp2amp.load.s3sink import CONVERTER_NAME, MIN_FILE_BYTES, S3ImportSink
from mp2amp.pipeline.migrate import EXIT_OK, migrate


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("audit-project")
    mp2amp("generate", "--out", str(root / "p"), "--users", "150", "--days", "3",
           "--seed", "5", "--timezone", TIMEZONE)
    events = root / "p" / "events"
    return Project(root / "p", events, *transform_outcome(events, root / "transform"))


def random_events(n: int, seed: int = 1, pad: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"event_type": rng.choice(["view", "buy", "open"]),
             "device_id": f"device-{rng.randrange(1000):05d}",
             "time": 1_700_000_000_000 + rng.randrange(10_000_000),
             "insert_id": f"{rng.getrandbits(96):024x}",
             "event_properties": {"n": rng.random(), "tag": f"{rng.getrandbits(64):x}",
                                  "pad": "x" * pad}}
            for _ in range(n)]


def file_rows(fs: Any, path: str) -> list[dict[str, Any]]:
    with fs.open(path, "rb") as raw:
        return [orjson.loads(line) for line in gzip.decompress(raw.read()).splitlines()]


# --- the file rule with Amplitude's real minimum ----------------------------------------


def test_every_file_meets_the_real_1mb_minimum_and_files_follow_each_other_in_time(
        tmp_path: Path) -> None:
    evs = random_events(60_000, seed=7)  # ~9 MB of JSON, ~4 MB gzipped: several files
    sink = S3ImportSink(str(tmp_path), run_id="real", target_file_bytes=2_000_000,
                        sort_buffer_bytes=1_000_000)
    for e in evs:
        sink.write(e)
    report = sink.close()
    fs = fsspec.filesystem("file")
    assert len(report.files) >= 2 and not report.warnings
    seen: list[str] = []
    last = -1
    for f in report.files:
        assert MIN_FILE_BYTES <= os.path.getsize(f.path) <= 5_000_000_000
        times = [r["time"] for r in file_rows(fs, f.path)]
        assert times == sorted(times) and times[0] >= last
        last = times[-1]
        seen.extend(r["insert_id"] for r in file_rows(fs, f.path))
    assert sorted(seen) == sorted(e["insert_id"] for e in evs)


def test_an_export_over_1mb_of_json_but_under_1mb_gzipped_still_gives_a_1mb_file(
        tmp_path: Path) -> None:
    """Amplitude wants every file over 1 MB and takes uncompressed JSON as well as gzip:
    ~2 MB of JSON that gzips to well under 1 MB can meet the rule (stored, not squeezed),
    instead of going out as one file under the minimum."""
    evs = random_events(2_000, seed=3, pad=900)  # ~2 MB of JSON, highly compressible
    raw = sum(len(orjson.dumps(e)) + 1 for e in evs)
    assert raw > 1_500_000 and len(gzip.compress(b"".join(orjson.dumps(e) for e in evs))) \
        < MIN_FILE_BYTES // 4
    sink = S3ImportSink(str(tmp_path), run_id="tiny")
    for e in evs:
        sink.write(e)
    report = sink.close()
    assert len(report.files) == 1
    size = os.path.getsize(report.files[0].path)
    assert size >= MIN_FILE_BYTES, f"one file of {size} bytes, under Amplitude's 1 MB minimum"
    assert report.files[0].bytes == size and not report.warnings
    rows = file_rows(fsspec.filesystem("file"), report.files[0].path)
    assert [r["insert_id"] for r in rows] == [
        e["insert_id"] for e in sorted(evs, key=lambda e: e["time"])]
    conf = orjson.loads((tmp_path / CONVERTER_NAME).read_bytes())["converterConfig"]
    assert conf["compressionType"] == "gzip"  # still a gzip file, as the config says


def test_an_export_under_1mb_even_as_json_gives_one_file_and_says_so(tmp_path: Path) -> None:
    evs = random_events(50)
    sink = S3ImportSink(str(tmp_path), run_id="tiny")
    for e in evs:
        sink.write(e)
    report = sink.close()
    assert len(report.files) == 1 and len(report.warnings) == 1
    assert "1 MB minimum" in report.warnings[0]
    assert len(file_rows(fsspec.filesystem("file"), report.files[0].path)) == 50


def test_no_events_gives_no_file_and_a_converter(tmp_path: Path) -> None:
    sink = S3ImportSink(str(tmp_path), run_id="none")
    report = sink.close()
    assert report.files == [] and report.events == 0
    assert sorted(os.listdir(tmp_path)) == [CONVERTER_NAME]


# --- the converter configuration ----------------------------------------------------------


def test_the_converter_applies_user_properties_as_the_api_does(tmp_path: Path) -> None:
    """§6: for storage imports `$skip_user_properties_sync` defaults to true, so the event's
    user_properties are dropped "If you want to include user properties with your events,
    you must set it to false". mp2amp puts user_properties on events only when the
    tracking plan moves properties there, and the API path applies them (§1.4): the files
    must not lose them."""
    sink = S3ImportSink(str(tmp_path), run_id="props")
    event = random_events(1)[0]
    event["user_properties"] = {"tier": "gold"}
    sink.write(event)
    doc = orjson.loads(Path(sink.close().converter_config).read_bytes())
    func = doc["converterConfig"]["convertToAmplitudeFunc"]
    assert func["user_properties"] == "user_properties"
    assert func["$skip_user_properties_sync"] == ["value", False]


def test_the_filter_pattern_takes_the_files_and_nothing_else(tmp_path: Path) -> None:
    sink = S3ImportSink(str(tmp_path), run_id="mp2amp-a3")
    pattern = re.compile(sink.pattern)
    for key in ("mp2amp-a3-00000.json.gz", "amp/x/mp2amp-a3-01234.json.gz"):
        assert pattern.search(key), key
    for key in (".mp2amp-a3-00000.json.gz.part", "mp2amp-a2-00000.json.gz",
                "amp/mp2amp-a31-00000.json.gz", CONVERTER_NAME, "xmp2amp-a3-00000.json.gz"):
        assert not pattern.search(key), key
    sink.close()


def test_a_bucket_amplitude_cannot_read_is_refused_at_once() -> None:
    """§6: "Bucket names can't contain dots" for Amplitude's import."""
    from mp2amp.errors import ConfigError

    with pytest.raises(ConfigError, match="dot"):
        S3ImportSink("s3://my.import.bucket/amplitude", run_id="x")


# --- migrate with output_dir --------------------------------------------------------------


def config(events: Path, work: Path, out: Path | str, **extra: Any) -> Any:
    overrides = {"source.files": [str(events)], "mixpanel.timezone": TIMEZONE,
                 "amplitude.output_dir": str(out), "run.workdir": str(work)}
    overrides.update(extra)
    return load_config(None, overrides, env={})


def local_files(out: Path) -> dict[str, list[dict[str, Any]]]:
    fs = fsspec.filesystem("file")
    return {p.name: file_rows(fs, str(p)) for p in sorted(out.glob("*.json.gz"))}


def keys(files: dict[str, list[dict[str, Any]]]) -> list[Key]:
    return [(e.get("device_id") or e.get("user_id"), e["insert_id"])
            for rows in files.values() for e in rows]


def test_migrate_accounts_for_every_record_and_a_finished_resume_still_adds_up(
        project: Project, tmp_path: Path) -> None:
    cfg = config(project.events, tmp_path / "work", tmp_path / "out")
    result = migrate(cfg)
    assert result.exit_code == EXIT_OK and result.totals["balanced"]
    t = result.totals
    assert t["read"] == (t["sent"] + t["identity"] + t["duplicate"] + t["skipped"]
                         + t["rejected"] + t["dead_lettered"] + t["parked"])
    assert t["rejected"] == sum(project.rejects.values())
    files = local_files(tmp_path / "out")
    found = keys(files)
    assert len(found) == len(set(found)) == t["sent"] and set(found) == project.expected
    dead = [orjson.loads(r) for r in (tmp_path / "work" / "dead-letters.jsonl")
            .read_bytes().splitlines()]
    assert len(dead) == t["rejected"]
    again = migrate(cfg, resume=True)
    assert again.exit_code == EXIT_OK and again.totals == result.totals
    assert local_files(tmp_path / "out") == files


def test_tracking_plan_user_properties_reach_amplitude_through_the_files(
        project: Project, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("properties:\n  $browser:\n    user_property: true\n"
                    "  $os:\n    user_property: true\n")
    result = migrate(config(project.events, tmp_path / "work", tmp_path / "out",
                            **{"transform.plan": str(plan)}))
    assert result.exit_code == EXIT_OK
    rows = [e for rows in local_files(tmp_path / "out").values() for e in rows]
    assert any(e.get("user_properties") for e in rows)
    func = orjson.loads((tmp_path / "out" / CONVERTER_NAME).read_bytes())[
        "converterConfig"]["convertToAmplitudeFunc"]
    assert func["$skip_user_properties_sync"] == ["value", False], \
        "the files carry user_properties that the converter tells Amplitude to ignore"


def test_identity_records_are_counted_not_written(tmp_path: Path) -> None:
    """Original ID merge: $identify / $create_alias / $merge records build the graph; none
    is an event in a file, and each is counted as identity."""
    mp2amp("generate", "--out", str(tmp_path / "p"), "--users", "60", "--days", "2",
           "--seed", "9", "--timezone", TIMEZONE, "--id-merge", "original")
    result = migrate(config(tmp_path / "p" / "events", tmp_path / "work", tmp_path / "out",
                            **{"mixpanel.id_merge": "original"}))
    assert result.exit_code == EXIT_OK and result.totals["balanced"]
    assert result.totals["identity"] > 0
    rows = [e for rows in local_files(tmp_path / "out").values() for e in rows]
    assert len(rows) == result.totals["sent"] == result.load["events"]
    assert not {"$identify", "$create_alias", "$merge"} & {e["event_type"] for e in rows}


class Crash(Exception):
    pass


def test_a_crash_between_upload_and_rename_leaves_no_part_file(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = {"target_file_bytes": 100_000, "min_file_bytes": 5_000}

    class CrashBeforeRename(S3ImportSink):
        def _upload(self, staged: Any) -> None:
            if len(self.report.files) != 1:
                return super()._upload(staged)
            self.fs.mv = _raise  # the .part is written, the rename never happens
            try:
                super()._upload(staged)
            finally:
                del self.fs.mv  # fsspec shares the filesystem object: undo at once

    def _raise(*_: Any, **__: Any) -> None:
        raise Crash

    monkeypatch.setattr(migrate_module, "S3ImportSink",
                        functools.partial(CrashBeforeRename, **small))
    cfg = config(project.events, tmp_path / "work", tmp_path / "out")
    # a failure of the output folder is said as such (exit 2), naming the folder
    with pytest.raises(InputError, match="cannot use the output folder") as failed:
        migrate(cfg)
    assert isinstance(failed.value.__cause__, Crash)
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir() if p.name.endswith(".part")]
    monkeypatch.setattr(migrate_module, "S3ImportSink", functools.partial(S3ImportSink, **small))
    assert migrate(cfg, resume=True).exit_code == EXIT_OK
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("mp2amp-a2-")) == [
        CONVERTER_NAME]
    found = keys(local_files(out))
    assert len(found) == len(set(found)) and set(found) == project.expected


# --- kill -9 of the real command, then --resume --------------------------------------------

RUNNER = """
import functools, sys, time
import mp2amp.pipeline.migrate as m
from mp2amp.load.s3sink import S3ImportSink

class Slow(S3ImportSink):
    def _upload(self, staged):
        time.sleep(0.05)   # so that kills land between and during uploads
        super()._upload(staged)

m.S3ImportSink = functools.partial(Slow, target_file_bytes=60_000, min_file_bytes=4_000,
                                   sort_buffer_bytes=200_000)
sys.argv = ["mp2amp", "migrate", "-c", sys.argv[1], "--quiet", "--json"] + sys.argv[2:]
from mp2amp.cli import main
main()
"""


def _start(runner: Path, cfg: Path, resume: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(runner), str(cfg)]
                            + (["--resume"] if resume else []),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={k: v for k, v in os.environ.items()
                                 if k != "AMPLITUDE_API_KEY"})


def _kill_when(proc: subprocess.Popen[bytes], out: Path, rng: random.Random) -> bool:
    """kill -9 once the target holds a random number of files (mid-upload), or after a
    random time (extract, identity, write or the merge)."""
    by_files = rng.random() < 0.6
    want = rng.randint(1, 8)
    deadline = time.monotonic() + (60 if by_files else rng.uniform(0.3, 3.0))
    while proc.poll() is None and time.monotonic() < deadline:
        if by_files and out.exists() and len(list(out.glob("mp2amp-a*.json.gz*"))) >= want:
            time.sleep(rng.uniform(0, 0.06))
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.parametrize("seed", [1, 2])
def test_kill9_at_random_moments_then_resume_leaves_each_event_once(
        project: Project, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    out, work = tmp_path / "out", tmp_path / "work"
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{project.events}"]'
                   f'\n[amplitude]\noutput_dir = "{out}"\n[run]\nworkdir = "{work}"\n')
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    kills = 0
    resume = False
    for _ in range(12):
        proc = _start(runner, cfg, resume)
        if kills < 4 and _kill_when(proc, out, rng):
            kills += 1
            resume = (work / "ledger.sqlite").exists()
            continue
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        result = orjson.loads(stdout)
        assert result["totals"]["balanced"]
        break
    else:
        raise AssertionError("migrate never finished")
    assert kills == 4
    converter = orjson.loads((out / CONVERTER_NAME).read_bytes())
    pattern = re.compile(converter["keyValidatorConfig"]["filterPattern"])
    importable = sorted(p for p in out.iterdir() if pattern.search(p.name))
    # nothing else in the folder: no file of a killed attempt, no half-written .part
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CONVERTER_NAME, *(p.name for p in importable)])
    fs = fsspec.filesystem("file")
    rows = [e for p in importable for e in file_rows(fs, str(p))]
    found = [(e.get("device_id") or e.get("user_id"), e["insert_id"]) for e in rows]
    assert len(found) == len(set(found)) and set(found) == project.expected
    times = [e["time"] for e in rows]
    assert times == sorted(times)
    assert all(os.path.getsize(p) >= 4_000 for p in importable)


# --- s3:// through the moto server ---------------------------------------------------------


def test_a_crash_mid_upload_to_s3_then_resume_leaves_each_event_once(
        project: Project, tmp_path: Path, s3_server: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket="audit-import")
    small = {"target_file_bytes": 100_000, "min_file_bytes": 5_000}

    class CrashOnThirdUpload(S3ImportSink):
        def _upload(self, staged: Any) -> None:
            if len(self.report.files) == 2:
                raise Crash
            super()._upload(staged)

    monkeypatch.setattr(migrate_module, "S3ImportSink",
                        functools.partial(CrashOnThirdUpload, **small))
    cfg = config(project.events, tmp_path / "work", "s3://audit-import/amp")
    with pytest.raises(Crash):
        migrate(cfg, storage_options=s3_server)
    fs = fsspec.filesystem("s3", **s3_server)
    fs.invalidate_cache()
    assert len(fs.ls("audit-import/amp")) == 2
    monkeypatch.setattr(migrate_module, "S3ImportSink", functools.partial(S3ImportSink, **small))
    result = migrate(cfg, resume=True, storage_options=s3_server)
    assert result.exit_code == EXIT_OK and result.totals["balanced"]
    fs.invalidate_cache()
    names = sorted(fs.ls("audit-import/amp"))
    assert names == sorted([*(f["path"].split("://")[-1] for f in result.load["files"]),
                            f"audit-import/amp/{CONVERTER_NAME}"])
    assert all("mp2amp-a2-" in n for n in names if n.endswith(".json.gz"))
    rows = [e for n in names if n.endswith(".json.gz") for e in file_rows(fs, n)]
    found = [(e.get("device_id") or e.get("user_id"), e["insert_id"]) for e in rows]
    assert len(found) == len(set(found)) and set(found) == project.expected
    assert [e["time"] for e in rows] == sorted(e["time"] for e in rows)


def test_a_missing_bucket_is_a_clear_error_not_a_new_bucket(
        tmp_path: Path, s3_server: dict[str, Any]) -> None:
    from mp2amp.errors import InputError

    fs = fsspec.filesystem("s3", **s3_server)
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(InputError, match="no-such-bucket"):
        S3ImportSink("s3://no-such-bucket/amp", run_id="x", storage_options=s3_server,
                     staging_dir=staging)
    assert list(staging.iterdir()) == []  # the refused sink left no scratch folder
    fs.invalidate_cache()
    assert "no-such-bucket" not in [b.rstrip("/") for b in fs.ls("")]


def test_an_event_json_cannot_carry_is_dead_lettered_not_counted_as_written(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The transform's safety net (an event orjson cannot serialize, a transform bug): with
    the API it is dead-lettered with reason `unserializable`; with output_dir it must be
    too, not counted as written while it is in no file."""
    from mp2amp.models import Emitted
    from mp2amp.pipeline import transform_worker as tw

    real = tw.transform_lines
    spoiled: list[int] = []

    def spoil_one(lines: Any, state: Any = None, tally: Any = None) -> list[Any]:
        items = real(lines, state, tally)
        for i, item in enumerate(items):
            if item[0] == tw.EVENT and not spoiled:
                event = orjson.loads(item[3])
                event["event_properties"]["bad"] = {1, 2}  # a set: not JSON
                items[i] = (tw.UNSERIALIZABLE, item[1], Emitted(event, item[1], item[2]))
                spoiled.append(1)
        return items

    monkeypatch.setattr(tw, "transform_lines", spoil_one)
    result = migrate(config(project.events, tmp_path / "work", tmp_path / "out",
                            **{"run.transform_workers": 1}))
    rows = [e for rows in local_files(tmp_path / "out").values() for e in rows]
    assert result.totals["sent"] == len(rows) == result.load["events"]
    assert result.totals["dead_lettered"] == 1 and result.totals["balanced"]
    dead = [orjson.loads(r) for r in (tmp_path / "work" / "dead-letters.jsonl")
            .read_bytes().splitlines()]
    assert [d["reason"] for d in dead].count("unserializable") == 1
