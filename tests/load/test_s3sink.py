"""The S3-import sink: sorted gzipped JSON lines, the 1 MB-5 GB rule, the converter JSON."""

from __future__ import annotations

import gzip
import os
import random
import re
from pathlib import Path
from typing import Any

import fsspec
import orjson
import pytest

from mp2amp.errors import ConfigError, InputError
from mp2amp.load.s3sink import CONVERTER_NAME, S3ImportSink


def events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append({"event_type": rng.choice(["view", "buy", "open"]),
                    "device_id": f"d-{rng.randrange(100):04d}",
                    "time": 1_700_000_000_000 + rng.randrange(10_000_000),  # shuffled times
                    "insert_id": f"{rng.getrandbits(96):024x}",
                    "event_properties": {"n": rng.random(), "tag": f"{rng.getrandbits(64):x}"}})
    return out


def read_lines(fs: Any, path: str) -> list[dict[str, Any]]:
    with fs.open(path, "rb") as raw, gzip.open(raw, "rb") as fh:
        return [orjson.loads(line) for line in fh]


def check(report: Any, fs: Any, evs: list[dict[str, Any]], *, min_bytes: int,
          max_bytes: int) -> None:
    seen: list[str] = []
    names = [p.rsplit("/", 1)[-1] for p in (f.path for f in report.files)]
    assert len(set(names)) == len(names)
    pattern = orjson.loads(fs.cat(report.converter_config))["keyValidatorConfig"][
        "filterPattern"]
    for f in report.files:
        rows = read_lines(fs, f.path)
        times = [r["time"] for r in rows]
        assert times == sorted(times), f"{f.path} not in event-time order"
        assert len(rows) == f.events and fs.size(f.path) == f.bytes
        assert min_bytes <= f.bytes <= max_bytes
        assert (f.first_time, f.last_time) == (times[0], times[-1])
        assert re.search(pattern, f.path.split("/", 1)[-1])
        seen.extend(r["insert_id"] for r in rows)
    assert sorted(seen) == sorted(e["insert_id"] for e in evs)
    assert not re.search(pattern, CONVERTER_NAME)


def test_local_files_are_sorted_sized_and_complete(tmp_path: Path):
    evs = events(6000)
    sink = S3ImportSink(str(tmp_path / "out"), run_id="mig1", target_file_bytes=300_000,
                        min_file_bytes=40_000, sort_buffer_bytes=60_000)
    for e in evs:
        sink.write(e)
    report = sink.close()
    fs = fsspec.filesystem("file")
    assert len(report.files) >= 3 and not report.warnings
    check(report, fs, evs, min_bytes=40_000, max_bytes=300_000 + 40_000)
    conf = orjson.loads((tmp_path / "out" / CONVERTER_NAME).read_bytes())["converterConfig"]
    assert conf["fileType"] == "json" and conf["compressionType"] == "gzip"
    assert conf["convertToAmplitudeFunc"]["insert_id"] == "insert_id"
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith(".part")]


def test_a_small_tail_is_merged_into_the_previous_file_before_upload(tmp_path: Path):
    evs = sorted(events(3000, seed=2), key=lambda e: e["time"])
    sink = S3ImportSink(str(tmp_path), target_file_bytes=200_000, min_file_bytes=30_000)
    written = 0
    for e in evs:  # two files' worth, then ~1.5 KB: alone that would be a file under 30 KB
        sink.write(e)
        written += len(orjson.dumps(e)) + 1
        if written >= 2 * 200_000 + 1_500:
            break
    n = evs.index(e) + 1
    report = sink.close()
    assert len(report.files) == 2  # the tail did not become a file of its own
    last = read_lines(fsspec.filesystem("file"), report.files[1].path)
    assert last[-1]["insert_id"] == evs[n - 1]["insert_id"]
    check(report, fsspec.filesystem("file"), evs[:n], min_bytes=30_000, max_bytes=230_000)


def windows_overlapping_in_time(n_windows: int, per_window: int) -> list[list[dict[str, Any]]]:
    """Like a web and an iOS export of the same days: every window spans the whole range,
    in its own shuffled order, with times coarse enough that some repeat across windows."""
    out = []
    for w in range(n_windows):
        evs = events(per_window, seed=100 + w)
        for e in evs:
            e["time"] -= e["time"] % 1_000
        out.append(evs)
    return out


def test_files_are_in_time_order_across_overlapping_windows(tmp_path: Path):
    windows = windows_overlapping_in_time(4, 1500)
    sink = S3ImportSink(str(tmp_path / "out"), run_id="ovl", target_file_bytes=150_000,
                        min_file_bytes=20_000, sort_buffer_bytes=40_000)
    for i, window in enumerate(windows):
        for e in window:  # as migrate does: most events arrive serialized, with their time
            if i % 2:
                sink.write_encoded(orjson.dumps(e), e["time"])
            else:
                sink.write(e)
    report = sink.close()
    fs = fsspec.filesystem("file")
    assert len(report.files) >= 4 and not report.warnings
    everything = [e for window in windows for e in window]
    check(report, fs, everything, min_bytes=20_000, max_bytes=150_000 + 20_000)
    contents = [read_lines(fs, f.path) for f in report.files]
    for k in range(1, len(contents)):
        assert contents[k][0]["time"] >= contents[k - 1][-1]["time"], (
            f"{report.files[k].path} starts before {report.files[k - 1].path} ends")
    assert report.files_in_time_order
    assert report.events == len(everything)


def test_many_runs_are_merged_a_few_at_a_time_keeping_write_order_on_ties(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import heapq
    from types import SimpleNamespace

    import mp2amp.load.s3sink as s3sink

    widths: list[int] = []

    def merge(*iterables: Any, **kw: Any) -> Any:
        widths.append(len(iterables))
        return heapq.merge(*iterables, **kw)

    monkeypatch.setattr(s3sink, "heapq", SimpleNamespace(merge=merge))
    evs = [e for window in windows_overlapping_in_time(3, 1000) for e in window]
    for seq, e in enumerate(evs):
        e["time"] = 1_700_000_000_000 + (e["time"] // 1_000) % 7 * 1_000  # 7 distinct times
        e["event_properties"]["seq"] = seq
    sink = S3ImportSink(str(tmp_path), run_id="fan", target_file_bytes=100_000,
                        min_file_bytes=10_000, sort_buffer_bytes=10_000, merge_fan_in=3)
    for e in evs:
        sink.write(e)
    report = sink.close()
    assert max(widths) <= 3 and len(widths) > 10  # dozens of runs, never more than 3 open
    fs = fsspec.filesystem("file")
    check(report, fs, evs, min_bytes=10_000, max_bytes=110_000)
    order = [(r["time"], r["event_properties"]["seq"])
             for f in report.files for r in read_lines(fs, f.path)]
    assert order == sorted(order)  # by time, then in the order the events were written


def test_the_converter_config_has_the_documented_shape(tmp_path: Path):
    # the converter reference's example: {"config_name": ..., "converterConfig": {"fileType",
    # "compressionType", "convertToAmplitudeFunc"}, "keyValidatorConfig": {"filterPattern"}}
    sink = S3ImportSink(str(tmp_path), run_id="shape")
    sink.write(events(1)[0])
    doc = orjson.loads(Path(sink.close().converter_config).read_bytes())
    assert set(doc) == {"converterConfig", "keyValidatorConfig"}
    assert set(doc["converterConfig"]) == {"fileType", "compressionType",
                                           "convertToAmplitudeFunc"}
    assert doc["keyValidatorConfig"] == {"filterPattern": sink.pattern}
    assert doc["converterConfig"]["convertToAmplitudeFunc"]["$skip_user_properties_sync"] == [
        "value", False]  # user_properties on events applied, as the API does


def test_an_export_under_the_minimum_gives_one_file_and_a_warning(tmp_path: Path):
    evs = events(20)
    sink = S3ImportSink(str(tmp_path))
    for e in evs:
        sink.write(e)
    report = sink.close()
    assert len(report.files) == 1 and "1 MB minimum" in report.warnings[0]
    assert sorted(r["insert_id"] for r in read_lines(fsspec.filesystem("file"),
                                                      report.files[0].path)) == \
        sorted(e["insert_id"] for e in evs)


def test_an_event_json_cannot_carry_is_dead_lettered_not_written(tmp_path: Path):
    from mp2amp.load import DeadLetterFile
    from mp2amp.load.deadletter import read_dead_letters

    evs = events(5)
    evs[2]["event_properties"]["n"] = 2 ** 70
    with DeadLetterFile(tmp_path / "dead.jsonl") as dlq:
        sink = S3ImportSink(str(tmp_path / "out"), dead_letters=dlq)
        written = [sink.write(e, ("day.jsonl", i + 1)) for i, e in enumerate(evs)]
        report = sink.close()
    assert written == [True, True, False, True, True]
    assert report.events == 4 and report.dead_lettered == 1
    assert [(r["line"], r["reason"]) for r in read_dead_letters(tmp_path / "dead.jsonl")] == [
        (3, "unserializable")]


def test_existing_files_are_never_overwritten(tmp_path: Path):
    for _ in range(2):
        sink = S3ImportSink(str(tmp_path), run_id="same")
        sink.write(events(1)[0])
        if _ == 0:
            sink.close()
    with pytest.raises(InputError, match="already exists"):
        sink.close()


def test_bad_settings_are_reported_together(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        S3ImportSink(str(tmp_path), run_id="a/b", target_file_bytes=6_000_000_000)
    assert len(info.value.problems) == 2


def test_s3_target_through_a_local_moto_server(s3_server: dict[str, Any]):
    import boto3
    import s3fs

    boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket="import-bucket")
    fs = s3fs.S3FileSystem(**s3_server)
    evs = events(4000, seed=3)
    sink = S3ImportSink("s3://import-bucket/amplitude/", run_id="s3run",
                        target_file_bytes=250_000, min_file_bytes=30_000,
                        storage_options=s3_server)
    for e in evs:
        sink.write(e)
    report = sink.close()
    fs.invalidate_cache()
    listed = sorted(fs.ls("import-bucket/amplitude"))
    assert sorted([*(f.path for f in report.files), report.converter_config]) == listed
    check(report, fs, evs, min_bytes=30_000, max_bytes=280_000)


def test_close_reports_its_progress_up_to_every_event(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import mp2amp.load.s3sink as s3sink

    monkeypatch.setattr(s3sink, "PROGRESS_EVERY", 100)
    evs = events(1_050)
    sink = S3ImportSink(str(tmp_path), run_id="prog", target_file_bytes=100_000,
                        min_file_bytes=20_000, sort_buffer_bytes=50_000)
    for e in evs:
        sink.write(e)
    calls: list[int] = []
    report = sink.close(calls.append)
    assert calls == [*range(100, 1_001, 100), 1_050]
    assert sum(f.events for f in report.files) == 1_050
