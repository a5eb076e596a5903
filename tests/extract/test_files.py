"""iter_records over local files: every format, every bad kind, layouts and path errors."""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mp2amp.errors import InputError
from mp2amp.extract import expand_paths, iter_records, jsonarray

WILD = Path("/work/shared/fixtures/wild")


def write_lines(path: Path, lines: list[str], *, gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def event(name: str, i: int, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": 1_700_000_000 + i, "distinct_id": f"u{i}",
                                          "$insert_id": f"id-{name}-{i}", **props}}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def records(*paths: str | Path) -> list[dict]:
    out = []
    for rec in iter_records([str(p) for p in paths]):
        assert rec.record is not None, rec.rejection
        out.append(rec.record)
    return out


def test_jsonl_plain_and_gzip_give_the_same_records(tmp_path: Path) -> None:
    evs = [event("View", i) for i in range(5)]
    plain = write_lines(tmp_path / "a.jsonl", [dumps(e) for e in evs])
    packed = write_lines(tmp_path / "b.jsonl.gz", [dumps(e) for e in evs], gz=True)
    assert records(plain) == evs
    assert records(packed) == evs
    lines = [r.line for r in iter_records([str(packed)])]
    assert lines == [1, 2, 3, 4, 5]


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    # Pipeline blobs named .gz may already be decompressed, and the other way round.
    evs = [event("A", 1)]
    (tmp_path / "x.json.gz").write_text(dumps(evs[0]) + "\n")
    (tmp_path / "y.json").write_bytes(gzip.compress((dumps(evs[0]) + "\n").encode()))
    assert records(tmp_path / "x.json.gz") == evs
    assert records(tmp_path / "y.json") == evs


def test_json_array_streamed_with_start_line_as_line(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonarray, "CHUNK", 7)  # force elements across many reads
    evs = [event("E", i, big=12345678901234) for i in range(30)]
    path = tmp_path / "arr.json.gz"
    text = json.dumps(evs, indent=2)
    path.write_bytes(gzip.compress(text.encode()))
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs] == evs
    # a pretty-printed element's "line" is the line it starts on
    assert [r.line for r in recs] == [n for n, t in enumerate(text.splitlines(), 1)
                                      if t == "  {"]


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_json_array_bad_elements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 chunk: int) -> None:
    # A bad element costs only itself: the brackets and strings around it still show
    # where it ends (even a string holding ',', ']' and '{'), so the rest is read.
    monkeypatch.setattr(jsonarray, "CHUNK", chunk)
    path = tmp_path / "arr.json"
    path.write_text('[{"a":1}, 5, {"b": 2}, {"c": oops, "s": "x,]}{\\"", "l": [1, {}]},'
                    ' {"d": 4}, {"e": tru}]')
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs] == [{"a": 1}, None, {"b": 2}, None, {"d": 4}, None]
    assert [r.line for r in recs] == [1, 2, 3, 4, 5, 6]
    assert recs[1].rejection and recs[1].rejection.reason == "not_an_object"
    bad = recs[3].rejection
    assert bad is not None and bad.reason == "malformed_json"
    assert str(path) in bad.message and "element 4" in bad.message
    assert "next element" in bad.message and bad.record.startswith('{"c": oops')
    assert recs[5].rejection and "element 6" in recs[5].rejection.message


def test_json_array_damaged_beyond_the_element_reports_the_rest_skipped(tmp_path: Path) -> None:
    # An unterminated string hides where the element ends: no guessed records, one
    # rejection that says the rest of the file was not read.
    path = tmp_path / "arr.json"
    path.write_text('[{"a":1}, {"b": "open}, {"c": 3}]')
    recs = list(iter_records([str(path)]))
    assert recs[0].record == {"a": 1} and len(recs) == 2
    assert recs[1].rejection and "skipped" in recs[1].rejection.message


def test_json_array_invalid_utf8_is_rejected_not_replaced(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # JSON lines reject such a record; an array must not quietly turn the bytes into
    # U+FFFD (a changed distinct_id is a different user).
    monkeypatch.setattr(jsonarray, "CHUNK", 5)
    path = tmp_path / "arr.json"
    path.write_bytes(b'[{"a":"ok \xc3\xa9"}, {"b":"bad \xff\xfe", "c": "\\udcff"}, {"c":1}]')
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs] == [{"a": "ok \u00e9"}, None, {"c": 1}]
    rej = recs[1].rejection
    assert rej is not None and rej.reason == "invalid_utf8" and rej.line == 2
    assert str(path) in rej.message and "element 2" in rej.message


def test_json_lines_after_a_json_array_are_read_on(tmp_path: Path) -> None:
    """``cat day1.json day2.jsonl``: the lines were one rejection, the rest lost (session
    26; tests/extract/test_jsonarray_session26_soak.py)."""
    path = tmp_path / "two.json"
    path.write_text('[{"a":1}]\n{"b":2}\nnot json\n')
    recs = list(iter_records([str(path)]))
    assert [(r.line, r.record) for r in recs[:2]] == [(1, {"a": 1}), (2, {"b": 2})]
    assert recs[2].rejection is not None and recs[2].rejection.record == "not json"
    assert len(recs) == 3


def test_json_arrays_one_after_another_are_all_read(tmp_path: Path) -> None:
    """``cat day1.json day2.json``: the second array used to be one rejection."""
    path = tmp_path / "two.json"
    path.write_text('[{"a":1}]\n[{"b":2},{"c":3}]\n')
    recs = list(iter_records([str(path)]))
    assert [(r.line, r.record) for r in recs] == [(1, {"a": 1}), (2, {"b": 2}), (3, {"c": 3})]


def test_empty_array_and_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text(" [ ] ")
    (tmp_path / "z.jsonl").write_text("")
    assert records(tmp_path / "e.json", tmp_path / "z.jsonl") == []


def test_jsonl_file_whose_lines_are_arrays_stays_line_based(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", ['[{"a":1}]', '{"b":2}'])
    recs = list(iter_records([str(path)]))
    assert recs[0].rejection and recs[0].rejection.reason == "not_an_object"
    assert recs[1].record == {"b": 2}


def test_malformed_lines_do_not_stop_the_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "m.jsonl.gz", [
        dumps(event("A", 1)), "{not json", "[]", '{"event":"B","prop', 'erties":{}}',
        "]", dumps(event("C", 3))], gz=True)
    recs = list(iter_records([str(path)]))
    summary = [(r.line, r.rejection.reason if r.rejection else r.record["event"]) for r in recs]  # type: ignore[index]
    assert summary == [(1, "A"), (2, "malformed_json"), (3, "not_an_object"), (4, "B"),
                       (6, "malformed_json"), (7, "C")]
    assert str(path) in recs[1].rejection.message and "line 2" in recs[1].rejection.message  # type: ignore[union-attr]


def test_utf8_bom_at_file_start_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + dumps(event("A", 1)).encode() + b"\n")
    assert records(tmp_path / "bom.jsonl") == [event("A", 1)]


def test_truncated_gzip_keeps_what_was_read_and_reports_the_loss(tmp_path: Path) -> None:
    data = gzip.compress("".join(dumps(event("A", i)) + "\n" for i in range(2000)).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    recs = list(iter_records([str(path)]))
    good = [r for r in recs if r.record is not None]
    assert 0 < len(good) < 2000
    last = recs[-1]
    assert last.rejection is not None and last.rejection.reason == "truncated_file"
    assert str(path) in last.rejection.message


def test_globs_sorted_and_each_file_read_once(tmp_path: Path) -> None:
    for day in (3, 1, 2):
        write_lines(tmp_path / f"2024-01-0{day}.jsonl", [dumps(event("D", day))])
    recs = list(iter_records([str(tmp_path / "*.jsonl"), str(tmp_path / "2024-01-01.jsonl")]))
    assert [r.record["properties"]["distinct_id"] for r in recs] == ["u1", "u2", "u3"]  # type: ignore[index]
    assert recs[0].source == str(tmp_path / "2024-01-01.jsonl")


def test_missing_paths_raise_input_error_naming_them(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.jsonl does not exist"):
        list(iter_records([str(tmp_path / "nope.jsonl")]))
    with pytest.raises(InputError, match=r"no file matches .*\*\.json"):
        list(iter_records([str(tmp_path / "*.json")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="contains no event files"):
        list(iter_records([str(tmp_path / "empty")]))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_raises_input_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "secret.jsonl", ["{}"])
    path.chmod(0)
    with pytest.raises(InputError, match=r"secret\.jsonl"):
        list(iter_records([str(path)]))


def test_gs_without_gcsfs_or_unknown_protocol_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    registry = importlib.import_module("fsspec.registry")  # the module, not fsspec.registry
    # gcsfs as if not installed (the dev extra installs it): imports of it fail, and
    # fsspec forgets the class it may have loaded already
    for module in ("gcsfs", "gcsfs.core"):
        monkeypatch.setitem(sys.modules, module, None)
    for protocol in ("gs", "gcs"):
        monkeypatch.delitem(registry._registry, protocol, raising=False)
    hint = r"reading gs:// paths needs the gcsfs package: pip install 'mp2amp\[gcs\]'"
    with pytest.raises(InputError, match=hint):
        list(iter_records(["gs://bucket/events/*.json.gz"]))
    with pytest.raises(InputError, match=hint):  # an emulator's endpoint, read another way
        list(iter_records(["gs://bucket/x.json"],
                          storage_options={"endpoint_url": "http://127.0.0.1:9"}))
    with pytest.raises(InputError, match="not a supported storage protocol"):
        list(iter_records(["nosuchproto://bucket/x.json"]))


def test_json_pipelines_tree_reads_only_events_in_day_order(tmp_path: Path) -> None:
    root = tmp_path / "bucket" / "123"
    row = {"event_name": "Play", "time": "2024-01-02T03:04:05Z", "distinct_id": "d1",
           "device_id": "dev", "user_id": None, "insert_id": "ins1",
           "properties": json.dumps({"genre": "jazz"})}
    for day in (10, 9):
        write_lines(root / "mp_master_event" / "2024" / "01" / str(day) / "part-0.json.gz",
                    [dumps({**row, "insert_id": f"i{day}"})], gz=True)
    write_lines(root / "mp_people_data" / "p.json.gz", ['{"distinct_id":"d1"}'], gz=True)
    write_lines(root / "mp_identity_mappings_data" / "m.json.gz", ['{"distinct_id":"x"}'], gz=True)
    (root / "mp_master_event" / "2024" / "01" / "9" / "complete").write_text("")
    got = records(tmp_path / "bucket")
    assert [r["properties"]["$insert_id"] for r in got] == ["i9", "i10"]
    assert got[0] == {"event": "Play", "properties": {
        "genre": "jazz", "time": 1704164645, "distinct_id": "d1", "$insert_id": "i9",
        "$device_id": "dev"}, "mp2amp_time_is_utc": True}  # pipelines write UTC


def test_legacy_raw_pipeline_tree(tmp_path: Path) -> None:
    root = tmp_path / "prefix" / "123" / "2024" / "01" / "02"
    write_lines(root / "full_day" / "123-export.json.gz", [dumps(event("A", 1))], gz=True)
    (root / "full_day" / "complete").write_text("")
    write_lines(tmp_path / "prefix" / "123" / "schema" / "events.json", ['{"A":"a"}'])
    # legacy pipelines write UTC too (reference §1.6): marked, so legacy_time leaves it
    assert records(tmp_path / "prefix") == [{**event("A", 1), "mp2amp_time_is_utc": True}]


def test_bad_pipeline_row_is_rejected_with_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.json", [dumps({"event_name": "X", "time": "soon"}),
                                              dumps({"event_name": "X", "properties": "{"})])
    recs = list(iter_records([str(path)]))
    assert [r.rejection.field for r in recs if r.rejection] == ["time", "properties"]
    assert all(r.rejection and r.rejection.reason == "bad_pipeline_row" for r in recs)


@pytest.mark.parametrize("path", sorted(WILD.glob("*.jsonl")), ids=lambda p: p.name)
def test_wild_fixture_files_read_line_for_line(path: Path) -> None:
    lines = [ln for ln in path.read_text().split("\n") if ln.strip()]
    recs = list(iter_records([str(path)]))
    assert len(recs) == len(lines)
    for rec, line in zip(recs, lines, strict=True):
        value = json.loads(line)
        if isinstance(value, dict) and not ("event_name" in value and "event" not in value):
            assert rec.record == value
        elif not isinstance(value, dict):
            assert rec.rejection is not None and rec.rejection.reason == "not_an_object"


def test_expand_paths_lists_files_for_a_ledger(tmp_path: Path) -> None:
    write_lines(tmp_path / "d" / "b.jsonl", ["{}"])
    write_lines(tmp_path / "d" / "a.jsonl", ["{}"])
    assert [f.url for f in expand_paths([str(tmp_path / "d")])] == [
        str(tmp_path / "d" / "a.jsonl"), str(tmp_path / "d" / "b.jsonl")]


def test_any_fsspec_backend_goes_through_the_remote_path() -> None:
    # fsspec's in-memory filesystem: the same glob/directory code as s3:// and gs://.
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/mpx/7/mp_master_event/2024/01/02/p.json",
            (dumps({"event_name": "A", "time": 5, "insert_id": "i"}) + "\n").encode())
    fs.pipe("/mpx/7/mp_people_data/p.json", b'{"distinct_id": "d"}\n')
    fs.pipe("/mpx/flat/a.jsonl.gz", gzip.compress(b'{"event":"B"}\n'))
    got = [(r.source, r.record) for r in iter_records(["memory:///mpx/7", "memory:///mpx/flat/*.gz"])]
    assert got == [
        ("memory:///mpx/7/mp_master_event/2024/01/02/p.json",
         {"event": "A", "properties": {"time": 5, "$insert_id": "i"}, "mp2amp_time_is_utc": True}),
        ("memory:///mpx/flat/a.jsonl.gz", {"event": "B"})]
    with pytest.raises(InputError, match="does not exist"):
        list(iter_records(["memory:///mpx/none.json"]))


def test_backend_failure_mid_read_is_an_input_error_naming_the_file() -> None:
    import io

    from mp2amp.extract import SourceFile, iter_file

    class FlakyObject(io.BytesIO):
        def __init__(self) -> None:
            super().__init__(b'{"event":"A"}\n{"event":"B"}\n')
            self.reads = 0

        def read1(self, size: int = -1, /) -> bytes:
            self.reads += 1
            if self.reads > 1:
                raise RuntimeError("connection reset by the object store")
            return super().read1(size)

    class FlakyFs:
        def open(self, path: str, mode: str) -> FlakyObject:
            return FlakyObject()

    got = []
    with pytest.raises(InputError, match=r"reading s3://b/k\.json failed after record 2.*reset"):
        for rec in iter_file(SourceFile("s3://b/k.json", FlakyFs())):
            got.append(rec.record)
    assert got == [{"event": "A"}, {"event": "B"}]
