"""``mp2amp transform`` as a library function: Mixpanel files in, Amplitude JSON lines out.

Each input is first staged as ``migrate`` stages it (``pipeline/staging.py``): sorted by
event time (UTC), inputs that overlap in time merged, oldest first; so sessions and the
copy of a duplicate that is kept are decided on the same order, and the output is what
``migrate`` sends for the same input. Then two passes over the staged files: the first
builds the identity graph (a device's anonymous events can only get their user once the
whole input has been seen), the second transforms. Events are written as the Batch API would receive them (one JSON object a
line), rejections as one JSON object a line with where the record came from, why, and the
original record (or the raw line when it did not parse). Scratch state (identity spill,
sessions, dedup) lives in a temporary folder under the run's workdir, removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import orjson

from mp2amp.config import Config
from mp2amp.errors import InputError, Rejection
from mp2amp.extract.files import SourceFile, expand_paths, iter_file
from mp2amp.identity import IdentityGraph
from mp2amp.identity.pattern import user_id_matcher
from mp2amp.ledger.store import WindowRow
from mp2amp.models import Emitted, Rejected, SourceRecord
from mp2amp.pipeline.budgets import stage_budgets
from mp2amp.pipeline.dead_letters import payload_json
from mp2amp.pipeline.overlaps import load_order, overlapping_groups
from mp2amp.pipeline.staged_identity import read_staged_identity_timed
from mp2amp.pipeline.staged_merge import merge_staged
from mp2amp.pipeline.staging import (
    LocalZone,
    read_staged,
    stage,
)
from mp2amp.pipeline.stopping import signals_deferred
from mp2amp.pipeline.windows import local_zone
from mp2amp.pipeline.worklock import WorkLock, running_pid
from mp2amp.transform.dedup import Deduper
from mp2amp.transform.events import Transformer
from mp2amp.transform.sessions import Sessionizer
from mp2amp.transform.stream import TransformSummary, transform_stream
from mp2amp.transform.values import json_safe


@dataclass(slots=True)
class TransformResult:
    summary: TransformSummary
    identity: dict[str, Any]
    values: dict[str, dict[str, int]]  # per-property value fixes (truncations ...)

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary.as_dict(), "identity": self.identity,
                "values": self.values}


def rejection_line(rej: Rejection) -> bytes:
    """One line of the rejects file; the record is kept whole so it can be fixed and re-run."""
    record = rej.record
    if record is not None and not json_safe(record):
        # NaN, Infinity...: orjson would write null (the very value it was rejected for);
        # shown as migrate's dead letters show it, the standard library's text of it
        shown = payload_json(record)
        record = None if shown is None else orjson.loads(shown)
    doc = {"source": rej.source, "line": rej.line, "reason": rej.reason,
           "message": rej.message, "field": rej.field, "record": record}
    try:
        return orjson.dumps(doc) + b"\n"
    except TypeError:  # integers past 64 bits, kept by the stdlib parser: keep them exact
        pass
    import json

    try:  # ensure_ascii: a lone surrogate is written as its escape, not refused
        return json.dumps(doc, ensure_ascii=True, default=repr).encode() + b"\n"
    except (RecursionError, ValueError):  # nested past the stdlib's depth too
        doc["record"] = (f"(the record is nested too deeply to write here: see {rej.source} "
                         f"line {rej.line})")
        return orjson.dumps(doc) + b"\n"


def user_id_predicate(pattern: str | None) -> Callable[[str], bool] | None:
    if pattern is None:
        return None
    return user_id_matcher(pattern)


def transform_files(
    config: Config,
    inputs: Sequence[str],
    out: IO[bytes],
    rejects: IO[bytes],
    *,
    exclude: Sequence[str | Path] = (),
) -> TransformResult:
    """Transform ``inputs`` with ``config``; events to ``out``, rejections to ``rejects``.

    Raises ConfigError (config, plan or excluded users wrong), InputError (an input is
    missing); the caller checks ``result.summary`` (``check()``) before trusting ``out``.
    ``exclude``: files never read as input (the final names of the outputs, so that a
    re-run over a folder does not read the previous run's output).
    Ctrl-C raises ``KeyboardInterrupt`` and SIGTERM (``docker stop``) ``Terminated``
    between records, never inside compiled code (``pipeline/stopping.signals_deferred``):
    the caller removes its partial outputs, where SIGTERM's default would kill the
    process silently and leave them.
    """
    with signals_deferred(sigterm=True) as stop:
        return _transform_files(config, inputs, out, rejects, exclude, stop.check)


def _transform_files(config: Config, inputs: Sequence[str], out: IO[bytes],
                     rejects: IO[bytes], exclude: Sequence[str | Path],
                     check: Callable[[], None]) -> TransformResult:
    """``transform_files``; ``check()`` between records raises when the run is stopped."""
    if not inputs:
        raise InputError("no input files: name them on the command line or in [source] files")
    settings = config.transform_settings()  # every config problem before any input is read
    workdir_real = config.run.workdir.resolve()
    files = [f for f in _input_files(inputs, [*exclude, *_names(out, rejects)],
                                     config.source.storage_options)
             # the work folder (a killed run's staged copies) is never input, as for migrate
             if f.fs is not None or not _resolved(f.url).is_relative_to(workdir_real)]
    transformer = Transformer(settings)
    workdir = config.run.workdir
    budgets = stage_budgets(config.run.memory_budget)  # shared as migrate shares it
    with _work_folder(workdir), \
            tempfile.TemporaryDirectory(prefix="transform-", dir=workdir) as scratch, \
            _held(Path(scratch)), \
            IdentityGraph(
                config.mixpanel.id_merge, Path(scratch), memory_budget_ids=budgets.identity_ids,
                retroactive=config.transform.retroactive,
                user_id_predicate=user_id_predicate(config.transform.user_id_pattern),
                table=config.source.identity_table,
                table_options=config.source.storage_options,
            ) as graph:
        staged = _staged_inputs(files, Path(scratch), local_zone(config), check)
        for path in staged:  # pass 1: identity, from each staged line's identity view
            for view, seconds in read_staged_identity_timed(path):  # as migrate's pass reads
                check()
                if view is not None:
                    graph.observe(view, seconds)
        report = graph.finish()
        transformer.exclude_merged_users(graph.resolve, graph.shared_device)  # an excluded alias's whole user
        summary = TransformSummary()
        with Sessionizer(config.transform.session_gap_minutes * 60_000,
                         memory_budget=budgets.session_devices, spill_dir=scratch) as sessions, \
                Deduper(memory_budget=budgets.dedup_digests, spill_dir=scratch) as dedup:
            stream = transform_stream(summary.reading(_records(staged)), graph,
                                      transformer, sessions, dedup)
            write_out, write_rejects, dumps = out.write, rejects.write, orjson.dumps
            newline = orjson.OPT_APPEND_NEWLINE
            for outcome in stream:
                check()
                if isinstance(outcome, Emitted):
                    try:
                        data = dumps(outcome.event, option=newline)
                    except TypeError as exc:  # a transform bug: named, the rest goes on
                        outcome = Rejected(Rejection(
                            "unserializable", f"the event is not JSON-serializable: {exc}",
                            source=outcome.source, line=outcome.line,
                            record=repr(outcome.event)))
                    else:
                        summary.add(outcome)
                        write_out(data)
                        continue
                summary.add(outcome)
                if isinstance(outcome, Rejected):
                    write_rejects(rejection_line(outcome.rejection))
    return TransformResult(summary, report.as_dict(), transformer.stats())


@contextmanager
def _work_folder(workdir: Path) -> Iterator[None]:
    """``workdir`` made for the run's scratch folder; the folders made for it are removed
    at the end when nothing else is in them (a transform leaves no empty .mp2amp/)."""
    made = [p for p in (workdir, *workdir.parents) if not p.exists()]
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the workdir {workdir}: {exc.strerror or exc}; "
                         "set [run] workdir to a writable folder") from None
    remove_stale_scratch(workdir)
    try:
        yield
    finally:
        for folder in made:  # innermost first
            try:
                folder.rmdir()
            except OSError:  # not empty (another run's, or something of the user's)
                break


# A scratch folder this young may be another run's that has not locked it yet.
_STALE_AFTER_S = 60.0


def remove_stale_scratch(workdir: Path) -> list[Path]:
    """Remove the scratch folders (``transform-*``: staged copies of the inputs, spills)
    that killed runs left in ``workdir``: those no running transform holds the lock of."""
    removed: list[Path] = []
    now = time.time()
    for folder in workdir.glob("transform-*"):
        try:
            old = folder.is_dir() and now - folder.stat().st_mtime > _STALE_AFTER_S
        except OSError:
            continue
        if old and running_pid(folder) is None:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextmanager
def _held(scratch: Path) -> Iterator[None]:
    """This run's lock on its scratch folder, so another run never removes it."""
    lock = WorkLock(scratch)
    try:
        yield
    finally:
        lock.release()


def _names(*sinks: IO[bytes]) -> list[str]:
    return [name for sink in sinks if isinstance(name := getattr(sink, "name", None), str)]


def _input_files(inputs: Sequence[str], exclude: Sequence[str | Path],
                 storage_options: dict[str, str]) -> list[SourceFile]:
    """The input files, expanded once so that both passes read the same ones, without the
    files being written (an output inside an input folder or glob is not read back).
    ``storage_options``: ``[source] storage_options`` (an s3:// or gs:// endpoint,
    credentials), as ``migrate`` uses them."""
    written = {os.path.realpath(path) for path in exclude}
    files = expand_paths(inputs, storage_options=storage_options or None)
    for f in files:
        if f.fs is None and os.path.realpath(f.url) in written and not _earlier_output(f.url):
            raise InputError(f"the input {f.url} is also an output file of this run: it would "
                             "be replaced by the output; write the output elsewhere or leave "
                             "the file out of the inputs (nothing was written)")
    return [f for f in files if f.fs is not None or os.path.realpath(f.url) not in written]


# The first bytes of what transform writes: an event (orjson keeps out_template's key
# order) or a rejects line; a Mixpanel export starts with neither.
_EVENTS_HEAD = b'{"event_type":'
_REJECTS_HEAD = b'{"source":'
_HEAD_BYTES = 65_536


def _earlier_output(path: str) -> bool:
    """An output file an earlier transform wrote (or an empty one): not read back as
    input, and replaced without loss; anything else in it is someone's data."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError:
        return False
    line = head.partition(b"\n")[0]
    return not head or line.startswith(_EVENTS_HEAD) or (
        line.startswith(_REJECTS_HEAD) and b'"reason":' in line)


def _resolved(url: str) -> Path:
    """A local input's real path; a link loop is named (Path.resolve raised RuntimeError
    on Python 3.11, a traceback)."""
    try:
        return Path(url).resolve()
    except (RuntimeError, OSError):
        raise InputError(f"{url} is a symbolic link loop (or a link that cannot be "
                         "followed); fix the link or leave it out of the inputs, and run "
                         "again") from None


def _staged_inputs(files: Sequence[SourceFile], scratch: Path,
                   local: LocalZone | None, check: Callable[[], None]) -> list[Path]:
    """The inputs staged as ``migrate`` stages its windows: each sorted by event time,
    those overlapping in time merged into one (``pipeline/overlaps.py``), oldest first.
    ``check``: called before each record is staged (raises when the run is stopped)."""
    rows: list[WindowRow] = []
    for i, file in enumerate(files):
        dest = scratch / f"input-{i:06d}.jsonl"
        count: int = stage(_checked(iter_file(file), check), dest, local=local)
        rows.append(WindowRow(file.url, i, "file", {}, "extracted", str(dest), count, {}))
    gone: set[int] = set()
    for group in overlapping_groups(rows):
        paths = [Path(str(w.staged_path)) for w in group]
        merged = paths[0].with_name(paths[0].stem + ".merged.jsonl")
        count = merge_staged(paths, merged)
        rows[group[0].seq] = replace(group[0], staged_path=str(merged), records=count)
        gone.update(w.seq for w in group[1:])
        for path in paths:
            path.unlink()
    return [Path(str(w.staged_path)) for w in load_order([w for w in rows if w.seq not in gone])]


def _checked(records: Iterator[SourceRecord],
             check: Callable[[], None]) -> Iterator[SourceRecord]:
    for rec in records:
        check()
        yield rec


def _records(staged: Sequence[Path]) -> Iterator[SourceRecord]:
    for path in staged:
        yield from read_staged(path)
