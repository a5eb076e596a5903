"""Damaged and unusual files at the reader: what is intact is kept, the loss is named."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
import zlib
from pathlib import Path

import pytest

from mp2amp.errors import InputError
from mp2amp.extract.files import SourceFile, expand_paths, iter_file, iter_records


def event(i: int) -> dict[str, object]:
    return {"event": "E", "properties": {"time": 1700000000 + i, "distinct_id": f"u{i}",
                                         "$insert_id": f"i{i}"}}


def lines(n: int, start: int = 0) -> bytes:
    return "".join(json.dumps(event(i)) + "\n" for i in range(start, start + n)).encode()


def test_gzip_without_its_trailer_keeps_every_record(tmp_path: Path) -> None:
    """Only the 8-byte CRC/size trailer is missing: every record decompresses. The reader
    used to lose the last 64 KB read before the damage (291 of these 2000 records)."""
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(lines(2000))[:-8])
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs[:-1]] == [event(i) for i in range(2000)]
    last = recs[-1]
    assert last.rejection is not None and last.rejection.reason == "truncated_file"
    assert last.line == 2001
    assert f"{path} is damaged after record 2000" in last.rejection.message
    assert "restore the file and run again" in last.rejection.message


def test_gzip_cut_in_the_middle_keeps_all_it_can(tmp_path: Path) -> None:
    data = lines(2000)
    packed = gzip.compress(data)
    cut = packed[:len(packed) // 2]
    # what zlib itself gets out of the cut stream, whole lines only
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    whole = readable.count(b"\n")
    path = tmp_path / "half.jsonl.gz"
    path.write_bytes(cut)
    recs = list(iter_records([str(path)]))
    assert len(recs) == whole + 1 and recs[-1].line == whole + 1
    assert all(r.record == event(i) for i, r in enumerate(recs[:-1]))
    assert recs[-1].rejection is not None and recs[-1].rejection.reason == "truncated_file"


def test_small_gzip_cut_short_keeps_its_first_records(tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl.gz"
    path.write_bytes(gzip.compress(lines(10))[:-30])
    recs = list(iter_records([str(path)]))
    assert len(recs) > 1 and recs[0].record == event(0)  # used to be the rejection alone


def test_multi_member_and_zero_padded_gzip(tmp_path: Path) -> None:
    path = tmp_path / "members.jsonl.gz"
    path.write_bytes(gzip.compress(lines(3)) + gzip.compress(lines(2, 3)) + b"\0" * 100)
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs] == [event(i) for i in range(5)]


def test_garbage_after_a_gzip_member_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "tail.jsonl.gz"
    path.write_bytes(gzip.compress(lines(3)) + b"not gzip at all")
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs[:3]] == [event(i) for i in range(3)]
    assert recs[3].rejection is not None and recs[3].rejection.reason == "truncated_file"


def test_large_gzip_reads_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.gz"
    path.write_bytes(gzip.compress(lines(20000)))
    recs = list(iter_records([str(path)]))
    assert len(recs) == 20000 and recs[-1].record == event(19999)


@pytest.mark.parametrize(("data", "what", "todo"), [
    (b"PK\x03\x04" + b"\x14" * 40, "a zip archive", "unpack it"),
    (bz2.compress(lines(3)), "bzip2-compressed", "decompress it (bunzip2)"),
    (lzma.compress(lines(3)), "xz-compressed", "decompress it (unxz)"),
    (b"\x28\xb5\x2f\xfd" + b"\x01" * 40, "zstd-compressed", "decompress it (unzstd)"),
    (b"PAR1" + b"\x01" * 40, "a Parquet file", "export the events as JSON lines"),
    (lines(3).decode().encode("utf-16"), "UTF-16 text", "convert it to UTF-8"),
    (lines(3).decode().encode("utf-16-le"), "binary or UTF-16/32 text (NUL bytes)",
     "convert it"),
])
def test_foreign_formats_stop_before_anything_is_read(tmp_path: Path, data: bytes, what: str,
                                                      todo: str) -> None:
    """They used to be read as JSON lines: thousands of rejected lines of garbage."""
    good = tmp_path / "a.jsonl"
    good.write_bytes(lines(2))
    bad = tmp_path / "b.jsonl"
    bad.write_bytes(data)
    for paths in ([str(good), str(bad)], [str(tmp_path)], [str(tmp_path / "*.jsonl")]):
        with pytest.raises(InputError) as err:
            expand_paths(paths)
        message = str(err.value)
        assert message.startswith(f"{bad} is {what}, not JSON lines or a JSON array")
        assert todo in message and message.endswith("and run again")
    with pytest.raises(InputError, match=re.escape(f"{bad} is {what}")):  # opened directly too
        list(iter_file(SourceFile(str(bad))))


def test_gzip_and_text_with_nul_later_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "nul.jsonl"
    path.write_bytes(lines(1) + b"\0\0\0\n" + lines(1, 1))
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs if r.record] == [event(0), event(1)]
    assert [r.rejection.reason for r in recs if r.rejection] == ["malformed_json"]


DEEP = ('{"event":"D","properties":{"time":1700000000,"distinct_id":"deep-user","n":'
        + "[" * 5000 + "]" * 5000 + "}}")
TOO_DEEP = "nests arrays and objects too deeply to be read (Amplitude keeps 40 levels)"


def test_array_element_nested_too_deep_is_rejected_and_the_rest_read(tmp_path: Path) -> None:
    """It used to raise RecursionError: a traceback, and the whole file lost."""
    path = tmp_path / "deep.json"
    path.write_text("[" + json.dumps(event(1)) + "," + DEEP + "," + json.dumps(event(2)) + "]")
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs] == [event(1), None, event(2)]
    rej = recs[1].rejection
    assert rej is not None and rej.reason == "malformed_json" and rej.line == 2
    assert f"{path}: JSON array element 2 {TOO_DEEP}: flatten it" in rej.message


def test_line_nested_too_deep_is_not_called_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(event(1)) + "\n" + DEEP + "\n" + json.dumps(event(2)) + "\n")
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs] == [event(1), None, event(2)]
    rej = recs[1].rejection
    assert rej is not None and rej.reason == "malformed_json"
    assert rej.message.startswith(f"{path} line 2 {TOO_DEEP}: flatten it: ")
    assert "not valid JSON" not in rej.message


# --- pretty-printed objects one after another (jq . output) -------------------------------


def pretty(*values: object) -> str:
    return "".join(json.dumps(v, indent=2) + "\n" for v in values)


def wide(i: int) -> dict[str, object]:
    """An event of more lines pretty-printed than a split record is joined from (8)."""
    ev = event(i)
    ev["properties"].update({f"p{k}": k for k in range(12)})  # type: ignore[attr-defined]
    return ev


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_pretty_printed_objects_are_read_with_their_first_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Each of their lines used to be rejected as malformed_json: no event out."""
    from mp2amp.extract import concatenated

    monkeypatch.setattr(concatenated, "CHUNK", chunk)
    text = pretty(wide(0), wide(1)) + '{\n  "event": "Broken",\n  "properties": {\n' + \
        pretty([1, 2], wide(2)) + "{\n  \"a\": 1,\n"
    path = tmp_path / "pretty.jsonl"
    path.write_text(text)
    recs = list(iter_records([str(path)]))
    lines_per_event = len(pretty(wide(0)).splitlines())
    assert [(r.line, r.record) for r in recs if r.record] == [
        (1, wide(0)), (1 + lines_per_event, wide(1)), (2 * lines_per_event + 8, wide(2))]
    rejected = [(r.line, r.rejection.reason) for r in recs if r.rejection]
    broken = 2 * lines_per_event + 1
    assert rejected == [(broken, "malformed_json"), (broken + 3, "not_an_object"),
                        (len(text.splitlines()) - 1, "malformed_json")]
    first = next(r.rejection for r in recs if r.rejection)
    assert first.message.startswith(f"{path} line {broken}: the object starting here is "
                                    "not valid JSON: ")


def test_pretty_printed_gzip_and_a_single_object(tmp_path: Path) -> None:
    path = tmp_path / "day.json.gz"
    path.write_bytes(gzip.compress(pretty(*(wide(i) for i in range(500))).encode()))
    assert [r.record for r in iter_records([str(path)])] == [wide(i) for i in range(500)]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(wide(7), indent=4))
    assert [r.record for r in iter_records([str(one)])] == [wide(7)]


def test_pretty_printed_object_with_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(pretty(wide(0)).encode() + b'{\n  "event": "\xff"\n}\n'
                     + pretty(wide(1)).encode())
    recs = list(iter_records([str(path)]))
    assert [r.record for r in recs] == [wide(0), None, wide(1)]
    assert recs[1].rejection is not None and recs[1].rejection.reason == "invalid_utf8"
