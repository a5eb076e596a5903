"""Session 27 soak: a .gz whose checksum fails kept none of a small file's records (the
trailer was fed with the last 8 KB, and the error took that call's output with it) while
a big file kept all but its last piece; and the message said "the rest of the file could
not be read" of a file read to its end."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.extract.files import SourceFile, iter_file
from mp2amp.extract.gzstream import GzipStream


def lines(n: int, first: int = 0) -> bytes:
    return "".join(json.dumps({"event": "E", "properties": {
        "time": 1700000000 + i, "distinct_id": f"u{i}"}}) + "\n"
        for i in range(first, first + n)).encode()


def read(path: Path) -> tuple[int, list[tuple[int, str]]]:
    got = list(iter_file(SourceFile(str(path))))
    return (sum(1 for r in got if r.record is not None),
            [(r.line, r.rejection.message) for r in got if r.rejection is not None])


def test_a_small_file_failing_its_checksum_keeps_every_record(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(lines(50)))
    data[-8] ^= 0xFF  # the CRC
    path = tmp_path / "day.jsonl.gz"
    path.write_bytes(bytes(data))
    kept, rejections = read(path)
    assert kept == 50
    ((line, message),) = rejections
    assert line == 51
    assert message.startswith(f"{path} fails its gzip checksum after record 50 (")
    assert "read to its end" in message and message.endswith("restore the file and run again")


def test_a_big_file_failing_its_checksum_keeps_every_record(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(lines(20000)))
    data[-1] ^= 0xFF  # the length
    path = tmp_path / "day.jsonl.gz"
    path.write_bytes(bytes(data))
    kept, ((line, message),) = read(path)
    assert (kept, line) == (20000, 20001) and "fails its gzip checksum" in message


def test_a_cut_file_still_says_the_rest_could_not_be_read(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl.gz"
    path.write_bytes(gzip.compress(lines(50))[:-8])
    kept, ((line, message),) = read(path)
    assert (kept, line) == (50, 51)
    assert "is damaged after record 50" in message and "could not be read" in message


class Trickle(io.BytesIO):
    """A backend that hands over at most ``step`` bytes a read."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self.step if size is None or size < 0 else min(size, self.step))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=3), st.integers(1, 20000),
       st.integers(0, 30))
def test_members_and_padding_decompress_whole_at_any_read_size(
        sizes: list[int], step: int, padding: int) -> None:
    whole, data, first = b"", b"", 0
    for n in sizes:
        whole += lines(n, first)
        data += gzip.compress(lines(n, first))
        first += n
    stream = GzipStream(Trickle(data + b"\0" * padding, step))  # type: ignore[arg-type]
    out = b""
    while chunk := stream.read():
        out += chunk
    assert out == whole
