"""Session 14 review: reading files and the Data Pipelines layout (``extract/files.py``,
``pipelines.py``, ``lines.py``, ``jsonarray.py``, ``concatenated.py``) and how staged
files become windows (``pipeline/windows.py``).

Reference: mixpanel-api.md §6 (JSON pipelines' ``<PROJECT>/mp_master_event/Y/M/D/``
tree, legacy raw pipelines' ``<PREFIX>/<PROJECT>/Y/M/D/<HH|full_day>/*export.json.gz``
with an empty ``complete`` marker per finished slice, and §1.6: pipelines write UTC,
also for projects created before 2023)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pytest

from mp2amp.errors import InputError
from mp2amp.extract.files import SourceFile, expand_paths, iter_file, iter_records
from mp2amp.extract.lines import LineParser
from mp2amp.identity.report import IdentityReport
from mp2amp.identity.table import Table, read_rows
from mp2amp.models import UTC_TIME_MARK
from mp2amp.pipeline.staging import read_staged, stage
from mp2amp.pipeline.windows import staged_path

T0 = 1704164645  # 2024-01-02T03:04:05Z


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def write(path: Path, lines: list[Any], *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join((ln if isinstance(ln, str) else dumps(ln)) + "\n" for ln in lines).encode()
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def row(name: str, t: Any, iid: str, **extra: Any) -> dict[str, Any]:
    """A JSON pipelines ``mp_master_event`` row (reference §6: warehouse columns)."""
    return {"event_name": name, "time": t, "distinct_id": "u1", "device_id": None,
            "user_id": None, "insert_id": iid, "properties": "{}", **extra}


def transform(tmp_path: Path, files: str, *, legacy_time: bool = False,
              name: str = "t") -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """``mp2amp transform`` on ``files``: (events out, --json summary, stdout+stderr)."""
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "America/Los_Angeles"\n'
                   f'legacy_time = {"true" if legacy_time else "false"}\n'
                   f'[source]\nfiles = ["{files}"]\n'
                   f'[run]\nworkdir = "{tmp_path / (name + "-work")}"\n')
    out = tmp_path / f"{name}.out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "transform", "-c", str(cfg), "-o",
                           str(out), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    return events, json.loads(proc.stdout), proc.stdout + proc.stderr


# --- defects ---------------------------------------------------------------------------


def test_legacy_raw_pipeline_events_are_not_shifted_under_legacy_time(tmp_path: Path) -> None:
    day = tmp_path / "prefix" / "123" / "2024" / "01" / "02" / "full_day"
    write(day / "123-export.json.gz", [{"event": "A", "properties": {
        "time": T0, "distinct_id": "u1", "$insert_id": "i1"}}], gz=True)
    (day / "complete").write_bytes(b"")
    # the same event from a JSON pipeline row: correctly left alone
    write(tmp_path / "json" / "123" / "mp_master_event" / "2024" / "01" / "02" / "p.json",
          [row("A", T0, "i2")])
    json_events, _, _ = transform(tmp_path, str(tmp_path / "json"), legacy_time=True,
                                  name="json")
    assert [e["time"] for e in json_events] == [T0 * 1000]
    legacy_events, _, _ = transform(tmp_path, str(tmp_path / "prefix"), legacy_time=True,
                                    name="legacy")
    assert [e["time"] for e in legacy_events] == [T0 * 1000], "shifted by the project offset"


def _pipeline_tree(root: Path) -> None:
    """Two days of a JSON pipeline, part files without an extension (as pipelines.py itself
    allows inside mp_master_event), one with .json."""
    events = root / "123" / "mp_master_event" / "2024" / "01"
    write(events / "02" / "part-00000", [row("P", T0, "p1")])
    write(events / "03" / "part-00000", [row("Q", T0 + 86400, "q1")])
    write(events / "03" / "part-00001.json", [row("R", T0 + 86401, "r1")])


@pytest.mark.parametrize("given", [
    "123/mp_master_event",       # the events folder itself
    "123/mp_master_event/2024",  # a year of it
    "123/mp_master_event/2024/01/03",  # one day
    "123/mp_master_event/2024/01/*",   # a glob of days
])
def test_part_files_without_extension_are_read_when_a_folder_inside_the_tree_is_given(
        tmp_path: Path, given: str) -> None:
    _pipeline_tree(tmp_path)
    want = {"/2024/01/02/part-00000", "/2024/01/03/part-00000", "/2024/01/03/part-00001.json"}
    if given.endswith("/03"):
        want = {w for w in want if "/03/" in w}
    try:
        got = {f.url.split("mp_master_event")[1] for f in expand_paths([str(tmp_path / given)])}
    except InputError as exc:
        pytest.fail(f"refused: {exc}")
    assert got == want


def test_remote_mp_master_event_prefix_reads_extensionless_parts(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    base = f"/review14-{tmp_path.name}/123/mp_master_event/2024/01"
    fs.pipe(f"{base}/02/part-00000", (dumps(row("P", T0, "p1")) + "\n").encode())
    fs.pipe(f"{base}/03/part-00000.json", (dumps(row("Q", T0, "q1")) + "\n").encode())
    try:
        for prefix in (f"memory://review14-{tmp_path.name}/123",
                       f"memory://review14-{tmp_path.name}/123/mp_master_event/"):
            got = [r.record["event"] for r in iter_records([prefix]) if r.record]
            assert got == ["P", "Q"], (prefix, got)
    finally:
        fs.rm(f"/review14-{tmp_path.name}", recursive=True)


def test_identity_mappings_folder_of_extensionless_parts_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "123" / "mp_identity_mappings_data"
    write(folder / "part-00000", [{"distinct_id": "d1", "resolved_distinct_id": "u1"}])
    write(folder / "part-00001.json", [{"distinct_id": "d2", "resolved_distinct_id": "u2"}])
    report = IdentityReport(mode="simplified", retroactive=True, cluster_cap=500)
    try:
        rows = sorted(read_rows(Table(str(folder)), report))
    except InputError as exc:
        pytest.fail(f"refused: {exc}")
    assert rows == [("d1", 0, "u1", 0), ("d2", 0, "u2", 0)]


def test_event_files_beside_a_json_pipeline_tree_are_not_silently_left_out(
        tmp_path: Path) -> None:
    write(tmp_path / "b" / "123" / "mp_master_event" / "2024" / "01" / "02" / "p.json",
          [row("P", T0, "p1")])
    legacy = write(tmp_path / "b" / "legacy" / "123" / "2023" / "12" / "31" / "full_day"
                   / "123-export.json.gz",
                   [{"event": "L", "properties": {"time": T0 - 86400}}], gz=True)
    backfill = write(tmp_path / "b" / "backfill.jsonl",
                     [{"event": "M", "properties": {"time": T0 - 1}}])
    try:
        urls = {f.url for f in expand_paths([str(tmp_path / "b")])}
    except InputError as exc:  # stopping, naming what is left out, is fine too
        assert "backfill.jsonl" in str(exc) and "export.json.gz" in str(exc)
        return
    assert {str(legacy), str(backfill)} <= urls, sorted(urls)


def test_numeric_string_time_in_a_pipeline_row_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", [row("A", str(T0), "a"), row("B", str(T0 * 1000), "b"),
                                        {"event": "C", "properties": {"time": str(T0)}}])
    recs = list(iter_records([str(path)]))
    assert [r.rejection.message for r in recs if r.rejection] == []
    assert [r.record["properties"]["time"] for r in recs if r.record] == [T0, T0, str(T0)]


def test_objects_concatenated_on_one_line_are_named_as_such(tmp_path: Path) -> None:
    """A line of whole objects one after another is one ``concatenated_objects`` rejection
    that says what it is and what to do (the reviewer asked for each object to be read:
    records are known by file and line in the ledger, so two of one line could not be told
    apart on a resume; the dead letter keeps the line), not a misleading malformed_json."""
    a = {"event": "A", "properties": {"time": T0}}
    b = {"event": "B", "properties": {"time": T0 + 1}}
    path = tmp_path / "c.json"
    path.write_text(dumps(a) + dumps(b) + "\n" + dumps(a).replace("A", "C") + " "
                    + dumps(b).replace("B", "D") + "\n" + dumps(a).replace("A", "E"))
    recs = list(iter_records([str(path)]))
    assert [r.record["event"] if r.record else r.rejection.reason  # type: ignore[union-attr]
            for r in recs] == ["concatenated_objects", "concatenated_objects", "E"]
    rej = recs[0].rejection
    assert rej is not None and rej.line == 1 and "holds 2 JSON objects" in rej.message
    assert "own line" in rej.message and rej.record == dumps(a) + dumps(b)


def test_legacy_slice_without_its_complete_marker_is_named(tmp_path: Path) -> None:
    root = tmp_path / "prefix" / "123" / "2024" / "01"
    for day, done in (("02", True), ("03", False)):
        slice_dir = root / day / "full_day"
        write(slice_dir / "123-export.json.gz", [{"event": "A", "properties": {
            "time": T0 + (int(day) - 2) * 86400, "distinct_id": "u1",
            "$insert_id": f"i{day}"}}], gz=True)
        if done:
            (slice_dir / "complete").write_bytes(b"")
    try:
        _, _, said = transform(tmp_path, str(tmp_path / "prefix"))
    except AssertionError as exc:  # stopping with a message naming it is fine too
        said = str(exc)
    assert "03/full_day" in said and "complete" in said, said


# --- what the fixes add ------------------------------------------------------------------


def test_legacy_pipeline_file_is_utc_also_named_alone_and_once_staged(tmp_path: Path) -> None:
    """migrate stages each file by its own URL (not the folder), in worker processes: the
    legacy layout is recognised from the file's path; hourly slices too. Staged, the mark
    stays (the line the record was read from no longer holds it)."""
    ev = {"event": "A", "properties": {"time": T0, "distinct_id": "u1"}}
    hourly = write(tmp_path / "p" / "123" / "2024" / "1" / "2" / "07" / "123-export.json.gz",
                   [ev], gz=True)
    (rec,) = list(iter_file(SourceFile(str(hourly))))
    assert rec.record == {**ev, UTC_TIME_MARK: True} and rec.raw is None
    dest = tmp_path / "staged.jsonl"
    stage(iter_file(SourceFile(str(hourly))), dest, local=("America/Los_Angeles", ()))
    assert [r.record for r in read_staged(dest)] == [{**ev, UTC_TIME_MARK: True}]
    # not the layout (no project id above the date, no slice folder, no real month)
    for rel in ("x/2024/01/02/full_day/e.json", "123/2024/01/02/e.json",
                "123/2024/13/02/full_day/e.json", "123/2024/01/02/24/e.json"):
        path = write(tmp_path / "q" / rel, [ev])
        (rec,) = list(iter_records([str(path)]))
        assert rec.record == ev, rel


def test_identity_table_folder_leaves_out_markers_and_says_when_nothing_is_left(
        tmp_path: Path) -> None:
    folder = tmp_path / "mp_identity_mappings_data"
    write(folder / "part-00000.gz", [{"distinct_id": "d1", "resolved_distinct_id": "u1"}],
          gz=True)
    for marker in ("_SUCCESS", "complete", ".part-00001.crc"):
        (folder / marker).write_bytes(b"")
    report = IdentityReport(mode="simplified", retroactive=True, cluster_cap=500)
    assert list(read_rows(Table(str(folder)), report)) == [("d1", 0, "u1", 0)]
    (folder / "part-00000.gz").unlink()
    with pytest.raises(InputError, match="contains no files"):
        list(read_rows(Table(str(folder)), report))


def test_day_folder_of_only_extensionless_parts_is_read(tmp_path: Path) -> None:
    _pipeline_tree(tmp_path)
    day = tmp_path / "123" / "mp_master_event" / "2024" / "01" / "02"
    assert [r.record["event"] for r in iter_records([str(day)]) if r.record] == ["P"]


@pytest.mark.parametrize(("value", "want"), [
    (" 1704164645 ", T0), ("1704164645.5", T0 + 0.5), ("+1704164645000", T0)])
def test_pipeline_row_time_as_number_text(tmp_path: Path, value: str, want: float) -> None:
    path = write(tmp_path / "p.json", [row("A", value, "a"), row("B", "12abc", "b"),
                                       row("C", "NaN", "c")])
    recs = list(iter_records([str(path)]))
    assert recs[0].record is not None and recs[0].record["properties"]["time"] == want
    assert [r.rejection.reason for r in recs[1:] if r.rejection] == ["bad_pipeline_row"] * 2


def test_concatenated_line_only_when_every_part_is_a_whole_object(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"event":"A"\n'  # garbage pending when the next line splits
                     b'{"event":"B"} {"event":"C"}\r\n'
                     b'{"event":"D"} [1]\n'  # not only objects: one line, one rejection
                     b'{"event":"E"}{"event":"F","p":\xff}\n')  # invalid UTF-8
    got = [(r.line, r.record["event"] if r.record else r.rejection.reason)  # type: ignore[union-attr]
           for r in iter_records([str(path)])]
    assert got == [(1, "malformed_json"), (2, "concatenated_objects"), (3, "malformed_json"),
                   (4, "invalid_utf8")]
    # the Export API stream counts records as the saved file is read: a last line of
    # whole objects is complete, one cut in its second object is not
    parser = LineParser("export:2024-01-02")
    assert parser.completes(b'{"event":"A"}{"event":"B"}')
    assert not parser.completes(b'{"event":"A"}{"event":')


def test_unfinished_slice_is_named_on_the_log_also_remote(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fs = fsspec.filesystem("memory")
    base = f"/review14-slices-{tmp_path.name}/p/123/2024/01/02"
    for hour, done in (("10", True), ("11", False), ("12", True)):
        fs.pipe(f"{base}/{hour}/123-export.json.gz", gzip.compress(b'{"event":"A"}\n'))
        if done:
            fs.pipe(f"{base}/{hour}/complete", b"")
    try:
        with caplog.at_level("WARNING", logger="mp2amp.extract"):
            files = expand_paths([f"memory://review14-slices-{tmp_path.name}/p"])
        assert len(files) == 3  # read as they are, but named
        (said,) = [r.getMessage() for r in caplog.records]
        assert f"review14-slices-{tmp_path.name}/p/123/2024/01/02/11" in said
        assert "memory://" in said  # named as the URL, to leave it out of the inputs
        assert "/10" not in said and "marker" in said
        caplog.clear()
        fs.rm(f"{base}/10/complete")
        fs.rm(f"{base}/12/complete")
        with caplog.at_level("WARNING", logger="mp2amp.extract"):
            expand_paths([f"memory://review14-slices-{tmp_path.name}/p"])
        assert caplog.records == []  # no slice has a marker: copied without them
    finally:
        fs.rm(f"/review14-slices-{tmp_path.name}", recursive=True)


# --- edge cases pinned (passing) -------------------------------------------------------


def test_same_day_in_hourly_and_full_day_slices_is_delivered_once(tmp_path: Path) -> None:
    """A legacy pipeline with hourly and daily slices of the same day: both are read, the
    copies are counted as duplicates and each event comes out once (with or without an
    $insert_id)."""
    for slice_name in ("10", "full_day"):
        evs = [{"event": "A", "properties": {"time": T0 + i, "distinct_id": "u1",
                                             **({"$insert_id": f"i{i}"} if i % 2 else {})}}
               for i in range(4)]
        write(tmp_path / "p" / "123" / "2024" / "01" / "02" / slice_name / "123-export.json.gz",
              evs, gz=True)
        (tmp_path / "p" / "123" / "2024" / "01" / "02" / slice_name / "complete").write_bytes(b"")
    events, result, _ = transform(tmp_path, str(tmp_path / "p"))
    summary = result["summary"]
    assert (summary["records_read"], summary["duplicates"], summary["events_out"]) == (8, 4, 4)
    assert sorted(e["time"] for e in events) == [(T0 + i) * 1000 for i in range(4)]


@pytest.mark.parametrize("value", [
    T0, T0 * 1000, "2024-01-02T03:04:05Z", "2024-01-02 03:04:05 UTC",
    "2024-01-02 03:04:05+00", "2024-01-02T03:04:05.000000000Z", "2024-01-02T03:04:05+00:00",
])
def test_pipeline_row_time_formats_all_name_the_same_second(tmp_path: Path,
                                                            value: Any) -> None:
    path = write(tmp_path / "p.json", [row("A", value, "a")])
    (rec,) = list(iter_records([str(path)]))
    assert rec.record is not None, rec.rejection
    assert rec.record["properties"]["time"] == T0


def test_top_level_columns_fill_in_but_do_not_override_properties(tmp_path: Path) -> None:
    path = write(tmp_path / "p.json", [
        row("A", T0, "col-iid", device_id="dev", user_id="usr",
            properties=dumps({"$insert_id": "prop-iid", "plan": "pro"})),
        row("B", T0, "", properties=None, distinct_id=""),
    ])
    recs = list(iter_records([str(path)]))
    assert recs[0].record == {"event": "A", "properties": {
        "$insert_id": "prop-iid", "plan": "pro", "time": T0, "distinct_id": "u1",
        "$device_id": "dev", "$user_id": "usr"}, "mp2amp_time_is_utc": True}
    assert recs[1].record == {"event": "B", "properties": {"time": T0},
                              "mp2amp_time_is_utc": True}


def test_part_files_of_the_same_name_in_different_days_stay_apart(tmp_path: Path) -> None:
    days = tmp_path / "b" / "123" / "mp_master_event" / "2024" / "01"
    for d in (9, 10, 11):  # not zero-padded: day order, not text order
        write(days / str(d) / "part-00000.json.gz",
              [row("E", T0 + d, f"d{d}-{i}") for i in range(2)], gz=True)
    recs = list(iter_records([str(tmp_path / "b")]))
    assert [(Path(r.source).parent.name, r.line) for r in recs] == [
        ("9", 1), ("9", 2), ("10", 1), ("10", 2), ("11", 1), ("11", 2)]
    sources = {r.source for r in recs}
    assert len({staged_path(tmp_path, s) for s in sources}) == 3


def test_crlf_pretty_objects_and_a_bom_in_the_middle_of_cat_files(tmp_path: Path) -> None:
    pretty = tmp_path / "pretty.json"
    pretty.write_bytes(b'\r\n{\r\n  "event": "A"\r\n}\r\n{\r\n  "event": "B"\r\n}\r\n')
    catted = tmp_path / "cat.jsonl.gz"  # `cat a.jsonl b.jsonl` where b had a BOM
    catted.write_bytes(gzip.compress(b'{"event":"C"}\r\n')
                       + gzip.compress(b'\xef\xbb\xbf{"event":"D"}\r\n'))
    got = [(Path(r.source).name, r.line, r.record) for r in iter_records(
        [str(pretty), str(catted)])]
    assert got == [("pretty.json", 2, {"event": "A"}), ("pretty.json", 5, {"event": "B"}),
                   ("cat.jsonl.gz", 1, {"event": "C"}), ("cat.jsonl.gz", 2, {"event": "D"})]


def test_s3_prefix_with_and_without_slash_and_unusual_names(s3_server: dict[str, Any]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="review14")
    s3.put_object(Bucket="review14", Key="data/day one/ä ü.json", Body=b'{"event":"A"}\n')
    s3.put_object(Bucket="review14", Key="data/x+y=z.jsonl.gz",
                  Body=gzip.compress(b'{"event":"B"}\n'))
    s3.put_object(Bucket="review14", Key="data2/other.json", Body=b'{"event":"C"}\n')
    want = [("s3://review14/data/day one/ä ü.json", {"event": "A"}),
            ("s3://review14/data/x+y=z.jsonl.gz", {"event": "B"})]
    for path in ("s3://review14/data", "s3://review14/data/"):
        assert [(r.source, r.record) for r in iter_records(
            [path], storage_options=s3_server)] == want, path
    # the same object by its name and by a glob: read once
    twice = expand_paths(["s3://review14/data/x+y=z.jsonl.gz", "s3://review14/data/*.gz"],
                         storage_options=s3_server)
    assert [f.url for f in twice] == ["s3://review14/data/x+y=z.jsonl.gz"]
