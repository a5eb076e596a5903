"""The second sink: files for Amplitude's Amazon S3 / GCS import instead of API calls.

Amplitude's rules (reference/amplitude-api.md §6): one event per line; files uploaded in
the events' chronological order; unique names; each file between 1 MB and 5 GB; every row
with an immutable ``insert_id``; processed exactly once (never edit a file after upload).

Windows arrive one after another but their time ranges may overlap (two sources covering
the same days), so no file can be cut before every event is known: events are buffered,
sorted and spilled as runs to a local staging folder (memory stays flat), and ``close()``
k-way merges all runs by ``time`` (write order on equal times) and cuts the one merged
stream into files. Every file thus starts at or after the previous file's last event.
A file is cut once it holds ``target_file_bytes`` of JSON and 1 MB gzipped; each is held
back until the next is cut, so a last piece under 1 MB is merged into the previous file
*before* that file is uploaded and no uploaded file is ever rewritten. A whole export under
1 MB gzipped is one file, stored in its gzip without compression when that makes it 1 MB
(gzip still, as the converter says); only one under 1 MB even as plain JSON goes out
small, with a warning. A converter configuration JSON is written next to the files; it
lets the events' ``user_properties`` through (``$skip_user_properties_sync`` false), as
the API path does, and its filterPattern takes this run's files in the output folder only.
User and device IDs under Amplitude's minimum length are counted and warned about (S3
import cannot lower the minimum as the API's ``min_id_length`` does). An object store's
bucket must exist: it is never created.
"""

from __future__ import annotations

import gzip
import heapq
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import pairwise
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from mp2amp.errors import ConfigError, InputError
from mp2amp.load.deadletter import DeadLetterFile
from mp2amp.load.s3target import (
    SinkStopped,
    bucket_of,
    bucket_problems,
    make_local_folder,
    no_bucket,
    output_trouble,
    protocols,
)
from mp2amp.remote_fs import url_to_fs

MIN_FILE_BYTES = 1 << 20             # "Each file between 1 MB and 5 GB": 1 MiB meets either reading
MAX_FILE_BYTES = 5_000_000_000       # and 5 GB (decimal, under 5 GiB) meets both too
TARGET_FILE_BYTES = 1 << 30          # uncompressed JSON per file (~100-200 MB gzipped)
SORT_BUFFER_BYTES = 64 << 20
MERGE_FAN_IN = 64                    # runs open at once in one merge pass
# Runs hold the whole export until close(): gzip them (cheaply) to keep the staging disk small.
RUN_COMPRESSLEVEL = 1
WRITE_CHUNK_BYTES = 256 << 10        # lines joined per write: fewer calls into zlib
PROGRESS_EVERY = 10_000              # events between two close() progress calls
CONVERTER_NAME = "amplitude-converter-config.json"
# S3 import has no options.min_id_length: Amplitude's default minimum applies (§1.5)
MIN_ID_LENGTH = 5

# Fields of an HTTP V2 / Batch event that the converter maps one to one (§1.3).
EVENT_FIELDS = (
    "user_id", "device_id", "event_type", "time", "event_properties", "user_properties",
    "groups", "group_properties", "app_version", "platform", "os_name", "os_version",
    "device_brand", "device_manufacturer", "device_model", "carrier", "country", "region",
    "city", "dma", "language", "price", "quantity", "revenue", "productId", "revenueType",
    "location_lat", "location_lng", "ip", "idfa", "idfv", "adid", "android_id",
    "android_app_set_id", "event_id", "session_id", "insert_id", "library", "plan",
    "currency", "ingestion_metadata", "partner_id", "version_name", "user_agent",
)


@dataclass(frozen=True, slots=True)
class ImportFile:
    path: str           # as the sink's fs names it (bucket/key); shown_path() gives a URL
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
    raw_bytes: int   # the JSON lines, uncompressed

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def converter_config(filter_pattern: str, *, skip_user_properties_sync: bool = False
                     ) -> dict[str, Any]:
    """Converter configuration for files of Amplitude-shaped events (§6, D-CONV).

    Each field maps to the same-named field of the line. ``$skip_user_properties_sync``
    defaults to true for storage imports, which would drop the ``user_properties`` the
    tracking plan puts on events (the API applies them, §1.4): we set it false unless
    told otherwise, and state it explicitly either way."""
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
    size at which a file is cut (gzip makes it several times smaller), once it also holds
    ``min_file_bytes`` gzipped. Files are written and uploaded only by ``close()``, when
    every event's time is known; until then the events wait, sorted, in ``staging_dir``."""

    def __init__(
        self,
        target: str,
        *,
        run_id: str = "mp2amp",
        target_file_bytes: int = TARGET_FILE_BYTES,
        min_file_bytes: int = MIN_FILE_BYTES,
        sort_buffer_bytes: int = SORT_BUFFER_BYTES,
        merge_fan_in: int = MERGE_FAN_IN,
        storage_options: dict[str, Any] | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
        skip_user_properties_sync: bool = False,
        dead_letters: DeadLetterFile | None = None,
        converter_owner: str | None = None,
    ) -> None:
        problems = []
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
            problems.append(f"run_id {run_id!r} may only hold letters, digits, '_', '.', '-'")
        if not 1 <= min_file_bytes < target_file_bytes <= MAX_FILE_BYTES - min_file_bytes:
            problems.append(
                f"need 1 <= min_file_bytes ({min_file_bytes}) < target_file_bytes "
                f"({target_file_bytes}) <= {MAX_FILE_BYTES - min_file_bytes} so that a file "
                "with a merged tail stays under Amplitude's 5 GB limit")
        problems.extend(bucket_problems(target))
        if merge_fan_in < 2:
            problems.append(f"merge_fan_in ({merge_fan_in}) must be at least 2")
        if problems:
            raise ConfigError(problems, source="amplitude.output_dir")
        self.fs, self.root = url_to_fs(target, storage_options)
        self.root = self.root.rstrip("/")
        self.run_id = run_id
        self.target_file_bytes = target_file_bytes
        self.min_file_bytes = min_file_bytes
        self.sort_buffer_bytes = sort_buffer_bytes
        self.merge_fan_in = merge_fan_in
        self.skip_user_properties_sync = skip_user_properties_sync
        self.dead_letters = dead_letters
        self._buf: list[tuple[int, int, bytes]] = []
        self._buf_bytes = 0
        self._runs: list[Path] = []   # sorted runs, in write order (ties keep that order)
        self._seq = 0
        self._n_files = 0             # staging file names
        self.converter_owner = converter_owner
        self._short_ids = _ShortIds()
        self.should_stop: Callable[[], bool] = _never  # polled by close() between files
        self.report = SinkReport()
        with output_trouble(target):
            self._check_target(target)
        # made once the target is known to be usable: a refused sink leaves nothing behind
        self._staging = Path(tempfile.mkdtemp(prefix="mp2amp-s3sink-", dir=staging_dir))

    @property
    def pattern(self) -> str:
        """filterPattern: this run's files in the output folder, not in folders below it.
        §6 calls it "a regex on object keys" without saying whether the key is taken whole
        or after the source's prefix: the folder's key is optional, so either works. A local
        folder's files go to a bucket under a prefix not known here: any folder then."""
        if self._bucket is None:
            folder = "(.*/)?"
        else:
            key = self.root.partition("/")[2]
            folder = f"({re.escape(key)}/)?" if key else ""
        return rf"^{folder}{re.escape(self.run_id)}-\d{{5}}\.json\.gz$"

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
        self.check_ids(event.get("user_id"), event.get("device_id"))
        self.write_encoded(data, t if isinstance(t, int) and not isinstance(t, bool) else 0)
        return True

    def write_encoded(self, data: bytes, time_ms: int) -> None:
        """``write`` of an event already serialized (``orjson.dumps(event)``, its ``time``);
        give its IDs to ``check_ids`` too."""
        self._buf.append((time_ms, self._seq, data))
        self._seq += 1
        self._buf_bytes += len(data) + 1
        self.report.events += 1
        if self._buf_bytes >= self.sort_buffer_bytes:
            self._spill()

    def check_ids(self, user_id: Any, device_id: Any) -> None:
        """Count an event's IDs shorter than Amplitude's minimum: ``close()`` warns of them."""
        self._short_ids.count(user_id, device_id)

    def close(self, progress: Callable[[int], None] | None = None) -> SinkReport:
        """Merge everything written into the import files. ``progress(n)``: ``n`` events
        are in files so far (called every ``PROGRESS_EVERY`` and at the end; the merge of a
        big export takes a while, and may run in a thread while a display follows it).
        Once ``should_stop()`` is true (a run stopping while this runs in a thread):
        ``SinkStopped`` between two files, and no converter config."""
        try:
            self._stop_if_asked()  # stopped before this began: not even the last spill
            self._spill()
            runs = self._merge_down(self._runs)
            self._runs = []
            with ExitStack() as stack:
                streams = [_read_run(stack.enter_context(gzip.open(p, "rb"))) for p in runs]
                self._cut(heapq.merge(*streams, key=itemgetter(0)), progress)
            self._stop_if_asked()
            self._write_converter()
            self.report.warnings.extend(self._short_ids.warnings(self.report.events))
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
        return self.report

    # --- internals ---------------------------------------------------------------------

    def _check_target(self, target: str) -> None:
        """A local folder is created; an object store's bucket must exist already."""
        self._local = "file" in protocols(self.fs)
        self._bucket = bucket_of(self.fs, self.root)
        if self._bucket is None:
            make_local_folder(self.fs, self.root, target)
            return
        try:
            found = bool(self._bucket) and self.fs.exists(self._bucket)
        except OSError as exc:
            raise InputError(f"cannot reach the bucket {self._bucket!r} of the S3-import "
                             f"target {target}: {exc}") from exc
        if not found:
            raise no_bucket(self._bucket, target)

    def _stop_if_asked(self) -> None:
        if self.should_stop():
            raise SinkStopped(f"stopped while writing the import files into {self.root}")

    def _shown(self, path: str) -> str:
        return path if self._local else shown_path(self.fs, path)

    def _new_path(self, kind: str) -> Path:
        self._n_files += 1
        return self._staging / f"{kind}-{self._n_files:06d}.gz"

    def _spill(self) -> None:
        if not self._buf:
            return
        self._buf.sort()   # (time, seq): write order on equal times
        path = self._new_path("run")
        with gzip.open(path, "wb", compresslevel=RUN_COMPRESSLEVEL) as fh:
            _write_chunked(fh, (b"%d\t%b\n" % (t, data) for t, _, data in self._buf))
        self._runs.append(path)
        self._buf, self._buf_bytes = [], 0

    def _merge_down(self, runs: list[Path]) -> list[Path]:
        """Merge consecutive groups of runs until at most ``merge_fan_in`` are left, so the
        final merge never holds more files open than that (order on equal times kept).
        A pass rewrites the whole export: a stop is honoured between groups and within one."""
        while len(runs) > self.merge_fan_in:
            merged: list[Path] = []
            for i in range(0, len(runs), self.merge_fan_in):
                self._stop_if_asked()
                group = runs[i:i + self.merge_fan_in]
                if len(group) == 1:
                    merged.append(group[0])
                    continue
                path = self._new_path("run")
                with ExitStack() as stack:
                    streams = [_read_run(stack.enter_context(gzip.open(p, "rb")))
                               for p in group]
                    out = stack.enter_context(
                        gzip.open(path, "wb", compresslevel=RUN_COMPRESSLEVEL))
                    _write_chunked(out, (b"%d\t%b" % (t, rest) for t, rest in
                                         heapq.merge(*streams, key=itemgetter(0))),
                                   between_chunks=self._stop_if_asked)
                for p in group:
                    p.unlink()
                merged.append(path)
            runs = merged
        return runs

    def _cut(self, merged: Iterable[tuple[int, bytes]],
             progress: Callable[[int], None] | None = None) -> None:
        """Cut the time-ordered stream into files. A file is finished once it holds the
        target size and at least the minimum gzipped; it is uploaded only when the next one
        is finished too (or at the end), so a short last piece can still join it."""
        held: _Staged | None = None
        out: _StagedWriter | None = None
        n = 0
        for t, line in merged:
            if out is None:
                out = _StagedWriter(self._new_path("file"))
            out.write(t, line)
            n += 1
            if not n % PROGRESS_EVERY:
                self._stop_if_asked()
                if progress is not None:
                    progress(n)
            if out.raw_bytes >= self.target_file_bytes and out.gz_bytes() >= self.min_file_bytes:
                if held is not None:
                    self._upload(held)
                held, out = out.finish(), None
        tail = out.finish() if out is not None else None
        if tail is not None and tail.size < self.min_file_bytes:
            if held is not None:
                held, tail = self._join(held, tail), None
            elif tail.raw_bytes >= self.min_file_bytes:
                # the whole export, under the minimum only because gzip shrinks it: stored
                # blocks keep it a gzip file (as the converter says) at its JSON size
                tail = self._stored(tail)
            else:
                self.report.warnings.append(
                    f"all {tail.events} events fit in {tail.raw_bytes} bytes of JSON, under "
                    "Amplitude's 1 MB minimum file size; the one file was written anyway")
        if held is not None:
            self._upload(held)
        if tail is not None:
            self._upload(tail)
        if progress is not None:
            progress(n)

    def _join(self, first: _Staged, second: _Staged) -> _Staged:
        """``second`` appended to ``first``: the stream is sorted, so the result is too."""
        out = _StagedWriter(self._new_path("file"))
        for part in (first, second):
            out.append(part)
            part.path.unlink()
        return out.finish()

    def _stored(self, staged: _Staged) -> _Staged:
        """``staged`` again, gzipped without compression (level 0): as big as its JSON."""
        out = _StagedWriter(self._new_path("file"), compresslevel=0)
        out.append(staged)
        staged.path.unlink()
        return out.finish()

    def _upload(self, staged: _Staged) -> None:
        self._stop_if_asked()  # a stopped run ends between files: none is left half made
        name = f"{self.run_id}-{len(self.report.files):05d}.json.gz"
        remote = f"{self.root}/{name}"
        part = f"{self.root}/.{name}.part"
        size = staged.size
        with output_trouble(self._shown(self.root)):
            if self.fs.exists(remote):
                raise InputError(f"{self._shown(remote)} already exists; Amplitude processes "
                                 "each file once, so mp2amp never overwrites one: choose "
                                 "another run_id or folder")
            if self._local:
                self.fs.put_file(str(staged.path), part)   # invisible to a scanner until renamed
                self.fs.mv(part, remote)
            else:
                self.fs.put_file(str(staged.path), remote)  # an object appears whole on S3
        staged.path.unlink()
        self.report.files.append(ImportFile(remote, staged.events, size, staged.first_time,
                                            staged.last_time))

    def _write_converter(self) -> None:
        with output_trouble(self._shown(self.root)):
            self._write_converter_file()

    def _write_converter_file(self) -> None:
        path = f"{self.root}/{CONVERTER_NAME}"
        if self.converter_owner is not None and self.fs.exists(path):
            try:
                was = orjson.loads(self.fs.cat_file(path))["keyValidatorConfig"][
                    "filterPattern"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                was = None  # half written by a killed run: no finished migration's
            if was is not None and self.converter_owner not in str(was):
                raise InputError(
                    f"{self._shown(path)} is another migration's converter config (its "
                    f"filterPattern is {was!r}); it was left as it is and this run's "
                    f"{len(self.report.files)} files are in the folder without one. Give each "
                    "migration its own folder or prefix: move the other migration's files "
                    "and converter config to one, then run the same command with --resume")
        doc = converter_config(self.pattern,
                               skip_user_properties_sync=self.skip_user_properties_sync)
        with self.fs.open(path, "wb") as fh:
            fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        self.report.converter_config = path


class _StagedWriter:
    """One output file being written in staging: gzipped lines, counted as they go."""

    def __init__(self, path: Path, compresslevel: int = 6) -> None:
        self.path = path
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by finish()
        self.gz = gzip.GzipFile(fileobj=self.fh, mode="wb", compresslevel=compresslevel)
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.raw_bytes = 0
        self.events = 0
        self.first_time = 0
        self.last_time = 0

    def write(self, t: int, line: bytes) -> None:
        if self.events == 0:
            self.first_time = t
        self.last_time = t
        self.events += 1
        self.pending.append(line)
        self.pending_bytes += len(line)
        self.raw_bytes += len(line)
        if self.pending_bytes >= WRITE_CHUNK_BYTES:
            self._flush()

    def append(self, staged: _Staged) -> None:
        """Every line of an earlier staged file, which must not start before this one ends."""
        self._flush()
        with gzip.open(staged.path, "rb") as fh:
            shutil.copyfileobj(fh, self.gz, WRITE_CHUNK_BYTES)
        if self.events == 0:
            self.first_time = staged.first_time
        self.last_time = staged.last_time
        self.events += staged.events
        self.raw_bytes += staged.raw_bytes

    def gz_bytes(self) -> int:
        """Gzipped bytes so far: a lower bound of the finished file's size."""
        self._flush()
        return self.fh.tell()

    def finish(self) -> _Staged:
        self._flush()
        self.gz.close()
        self.fh.close()
        return _Staged(self.path, self.events, self.first_time, self.last_time, self.raw_bytes)

    def _flush(self) -> None:
        if self.pending:
            self.gz.write(b"".join(self.pending))
            self.pending, self.pending_bytes = [], 0


class _ShortIds:
    """Events whose user_id or device_id is shorter than ``MIN_ID_LENGTH`` (§1.5)."""

    def __init__(self) -> None:
        self.events = self.user = self.device = self.neither = 0
        self.example: str | None = None

    def count(self, user_id: Any, device_id: Any) -> None:
        short_user = isinstance(user_id, str) and 0 < len(user_id) < MIN_ID_LENGTH
        short_device = isinstance(device_id, str) and 0 < len(device_id) < MIN_ID_LENGTH
        if not (short_user or short_device):
            return
        self.events += 1
        self.user += short_user
        self.device += short_device
        if self.example is None:
            self.example = user_id if short_user else device_id
        # the event keeps no ID once the short ones are removed
        self.neither += (short_user or not user_id) and (short_device or not device_id)

    def warnings(self, events: int) -> list[str]:
        if not self.events:
            return []
        rejected = (f"; {self.neither} of them keep no ID at all, and Amplitude rejects "
                    "those" if self.neither else "")
        return [f"{self.events} of {events} events have an ID shorter than {MIN_ID_LENGTH} "
                f"characters ({self.user} user_id, {self.device} device_id; e.g. "
                f"{self.example!r}): S3 import has no min_id_length option, so Amplitude "
                f"removes such an ID from the event when it imports the files{rejected}. To "
                "keep those IDs, migrate through the API instead (without output_dir: mp2amp "
                "sends min_id_length)"]


def _never() -> bool:
    return False


def shown_path(fs: Any, path: str) -> str:
    """``path`` as a person gives it: ``s3://bucket/key``, not the bare ``bucket/key``
    fsspec uses (which reads as a local relative path); a local path as it is."""
    return path if "file" in protocols(fs) else str(fs.unstrip_protocol(path))


def _write_chunked(fh: Any, lines: Iterable[bytes],
                   between_chunks: Callable[[], object] = _never) -> None:
    """``lines`` written in chunks of ``WRITE_CHUNK_BYTES``; ``between_chunks`` is called
    after each (a stop check: it may raise)."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line)
        if size >= WRITE_CHUNK_BYTES:
            fh.write(b"".join(chunk))
            chunk, size = [], 0
            between_chunks()
    if chunk:
        fh.write(b"".join(chunk))


def _read_run(fh: Any) -> Iterator[tuple[int, bytes]]:
    """A run's ``(time, line)`` pairs; the line keeps its newline, ready to be written."""
    for line in fh:
        t, _, rest = line.partition(b"\t")
        yield int(t), rest
