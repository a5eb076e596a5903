"""The second sink: files for Amplitude's Amazon S3 / GCS import instead of API calls.

Amplitude's rules (reference/amplitude-api.md §6): one event per line; files uploaded in
the events' chronological order; unique names; each file between 1 MB and 5 GB; every row
with an immutable ``insert_id``; processed exactly once (never edit a file after upload).

So: events are buffered per file, sorted by ``time`` through sorted runs spilled to a local
staging folder (memory stays flat), merged and gzipped when the file reaches its target
size. A finished file is held back locally until the next one is known to be big enough:
a tail under 1 MB is merged into the previous file *before* that file is uploaded, so no
uploaded file is ever rewritten. Only when the whole export is under 1 MB does one small
file go out, with a warning. A converter configuration JSON is written next to the files.
"""

from __future__ import annotations

import gzip
import heapq
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import fsspec
import orjson

from mp2amp.errors import ConfigError, InputError
from mp2amp.load.deadletter import DeadLetterFile

MIN_FILE_BYTES = 1_000_000           # "Each file between 1 MB and 5 GB"
MAX_FILE_BYTES = 5_000_000_000
TARGET_FILE_BYTES = 1 << 30          # uncompressed JSON per file (~100-200 MB gzipped)
SORT_BUFFER_BYTES = 64 << 20
CONVERTER_NAME = "amplitude-converter-config.json"

# Fields of an HTTP V2 / Batch event that the converter maps one to one (§1.3).
EVENT_FIELDS = (
    "user_id", "device_id", "event_type", "time", "event_properties", "user_properties",
    "groups", "group_properties", "app_version", "platform", "os_name", "os_version",
    "device_brand", "device_manufacturer", "device_model", "carrier", "country", "region",
    "city", "dma", "language", "price", "quantity", "revenue", "productId", "revenueType",
    "location_lat", "location_lng", "ip", "idfa", "idfv", "adid", "android_id", "event_id",
    "session_id", "insert_id", "library", "plan",
)


@dataclass(frozen=True, slots=True)
class ImportFile:
    path: str
    events: int
    bytes: int          # gzipped size as uploaded
    first_time: int
    last_time: int


@dataclass(slots=True)
class SinkReport:
    files: list[ImportFile] = field(default_factory=list)
    events: int = 0
    converter_config: str = ""
    warnings: list[str] = field(default_factory=list)
    dead_lettered: int = 0   # events JSON cannot carry (reason ``unserializable``)

    @property
    def files_in_time_order(self) -> bool:
        return all(a.last_time <= b.first_time for a, b in pairwise(self.files))


@dataclass(slots=True)
class _Staged:
    path: Path
    events: int
    first_time: int
    last_time: int

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def converter_config(filter_pattern: str, *, skip_user_properties_sync: bool = True
                     ) -> dict[str, Any]:
    """Converter configuration for files of Amplitude-shaped events (§6, D-CONV).

    Each field maps to the same-named field of the line. ``$skip_user_properties_sync``
    defaults to true for storage imports; we state it explicitly either way."""
    mapping: dict[str, Any] = {f: f for f in EVENT_FIELDS}
    mapping["$skip_user_properties_sync"] = ["value", skip_user_properties_sync]
    # keyValidatorConfig is a sibling of converterConfig, as in the converter reference's
    # example, not a key inside it
    return {
        "converterConfig": {
            "fileType": "json",
            "compressionType": "gzip",
            "convertToAmplitudeFunc": mapping,
        },
        "keyValidatorConfig": {"filterPattern": filter_pattern},
    }


class S3ImportSink:
    """``write(event)`` many times, then ``close()`` -> ``SinkReport``.

    ``target`` is a local folder or an fsspec URL (``s3://bucket/prefix``); ``storage_options``
    go to fsspec (endpoint_url, key, secret ...). ``target_file_bytes`` is the uncompressed
    size at which a file is cut (gzip makes it several times smaller)."""

    def __init__(
        self,
        target: str,
        *,
        run_id: str = "mp2amp",
        target_file_bytes: int = TARGET_FILE_BYTES,
        min_file_bytes: int = MIN_FILE_BYTES,
        sort_buffer_bytes: int = SORT_BUFFER_BYTES,
        storage_options: dict[str, Any] | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
        skip_user_properties_sync: bool = True,
        dead_letters: DeadLetterFile | None = None,
    ) -> None:
        problems = []
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
            problems.append(f"run_id {run_id!r} may only hold letters, digits, '_', '.', '-'")
        if not 1 <= min_file_bytes < target_file_bytes <= MAX_FILE_BYTES - min_file_bytes:
            problems.append(
                f"need 1 <= min_file_bytes ({min_file_bytes}) < target_file_bytes "
                f"({target_file_bytes}) <= {MAX_FILE_BYTES - min_file_bytes} so that a file "
                "with a merged tail stays under Amplitude's 5 GB limit")
        if problems:
            raise ConfigError(problems, source="amplitude.output_dir")
        self.fs, self.root = fsspec.core.url_to_fs(target, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.run_id = run_id
        self.target_file_bytes = target_file_bytes
        self.min_file_bytes = min_file_bytes
        self.sort_buffer_bytes = sort_buffer_bytes
        self.skip_user_properties_sync = skip_user_properties_sync
        self.dead_letters = dead_letters
        self._staging = Path(tempfile.mkdtemp(prefix="mp2amp-s3sink-", dir=staging_dir))
        self._buf: list[tuple[int, int, bytes]] = []
        self._buf_bytes = 0
        self._runs: list[Path] = []
        self._file_bytes = 0
        self._seq = 0
        self._n_staged = 0
        self._carry: _Staged | None = None   # under min size: grows into the next file
        self._held: _Staged | None = None    # big enough, uploaded once the next is known
        self.report = SinkReport()
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the S3-import target {target}: {exc}") from exc

    @property
    def pattern(self) -> str:
        return rf"^(.*/)?{re.escape(self.run_id)}-\d{{5}}\.json\.gz$"

    def write(self, event: dict[str, Any], origin: tuple[str, int] | None = None) -> bool:
        """Add one event; False when it cannot be serialized (then it is dead-lettered,
        with ``origin``, if the sink has a dead-letter file, and always counted)."""
        try:
            # right-sized copy: orjson's result holds an 8 KB allocation whatever its length
            data = memoryview(orjson.dumps(event)).tobytes()
        except TypeError as exc:
            self.report.dead_lettered += 1
            if self.dead_letters is not None:
                self.dead_letters.write(event, origin, "unserializable",
                                        f"event is not JSON-serializable: {exc}")
            return False
        t = event.get("time")
        self.write_encoded(data, t if isinstance(t, int) and not isinstance(t, bool) else 0)
        return True

    def write_encoded(self, data: bytes, time_ms: int) -> None:
        """``write`` of an event already serialized (``orjson.dumps(event)``, its ``time``)."""
        t = time_ms
        self._buf.append((t, self._seq, data))
        self._seq += 1
        self._buf_bytes += len(data) + 1
        self._file_bytes += len(data) + 1
        self.report.events += 1
        if self._buf_bytes >= self.sort_buffer_bytes:
            self._spill()
        if self._file_bytes >= self.target_file_bytes:
            self._roll()

    def close(self) -> SinkReport:
        try:
            if self._buf or self._runs:
                self._roll()
            if self._carry is not None:
                if self._held is not None:
                    merged = self._stage([_read_staged(self._held.path),
                                          _read_staged(self._carry.path)])
                    self._held.path.unlink()
                    self._carry.path.unlink()
                    self._held, self._carry = merged, None
                else:
                    self.report.warnings.append(
                        f"all {self._carry.events} events fit in {self._carry.size} bytes, under "
                        "Amplitude's 1 MB minimum file size; the one file was written anyway")
                    self._held, self._carry = self._carry, None
            if self._held is not None:
                self._upload(self._held)
                self._held = None
            self._write_converter()
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
        return self.report

    # --- internals ---------------------------------------------------------------------

    def _spill(self) -> None:
        if not self._buf:
            return
        self._buf.sort()
        path = self._staging / f"run-{len(self._runs):05d}-{self._n_staged}.tsv"
        with open(path, "wb") as fh:
            for t, _, data in self._buf:
                fh.write(b"%d\t%b\n" % (t, data))
        self._runs.append(path)
        self._buf, self._buf_bytes = [], 0

    def _roll(self) -> None:
        self._spill()
        sources: list[Iterator[tuple[int, bytes]]] = []
        if self._carry is not None:  # older events first on equal times: it goes first
            sources.append(_read_staged(self._carry.path))
        sources.extend(_read_run(p) for p in self._runs)
        staged = self._stage(sources)
        for p in self._runs:
            p.unlink()
        if self._carry is not None:
            self._carry.path.unlink()
        self._runs, self._file_bytes, self._carry = [], 0, None
        if staged.size < self.min_file_bytes:
            self._carry = staged
            return
        if self._held is not None:
            self._upload(self._held)
        self._held = staged

    def _stage(self, sources: Iterable[Iterator[tuple[int, bytes]]]) -> _Staged:
        path = self._staging / f"staged-{self._n_staged:05d}.json.gz"
        self._n_staged += 1
        n, first, last = 0, 0, 0
        with gzip.open(path, "wb", compresslevel=6) as out:
            for t, data in heapq.merge(*sources, key=lambda r: r[0]):
                if n == 0:
                    first = t
                last = t
                n += 1
                out.write(data + b"\n")
        return _Staged(path, n, first, last)

    def _upload(self, staged: _Staged) -> None:
        name = f"{self.run_id}-{len(self.report.files):05d}.json.gz"
        remote = f"{self.root}/{name}"
        part = f"{self.root}/.{name}.part"
        size = staged.size
        if self.fs.exists(remote):
            raise InputError(f"{remote} already exists; Amplitude processes each file once, so "
                             "mp2amp never overwrites one: choose another run_id or folder")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if "file" in protocols:
            self.fs.put_file(str(staged.path), part)   # invisible to a scanner until renamed
            self.fs.mv(part, remote)
        else:
            self.fs.put_file(str(staged.path), remote)  # an object appears whole on S3
        staged.path.unlink()
        self.report.files.append(ImportFile(remote, staged.events, size, staged.first_time,
                                            staged.last_time))

    def _write_converter(self) -> None:
        path = f"{self.root}/{CONVERTER_NAME}"
        doc = converter_config(self.pattern,
                               skip_user_properties_sync=self.skip_user_properties_sync)
        with self.fs.open(path, "wb") as fh:
            fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        self.report.converter_config = path


def _read_run(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as fh:
        for line in fh:
            t, _, data = line.rstrip(b"\n").partition(b"\t")
            yield int(t), data


def _read_staged(path: Path) -> Iterator[tuple[int, bytes]]:
    with gzip.open(path, "rb") as fh:
        for line in fh:
            data = line.rstrip(b"\n")
            t = orjson.loads(data).get("time")
            yield (t if isinstance(t, int) and not isinstance(t, bool) else 0), data
