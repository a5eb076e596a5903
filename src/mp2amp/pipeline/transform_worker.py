"""The load pass's pure transform in a worker process, beside the uploader.

Why: on the load pass one core parsed, resolved and mapped every staged record and also
ran the uploader. The transform is pure (its inputs are the staged line, the finished
identity graph and the settings), so a worker process runs it on chunks of staged lines
while this process keeps everything stateful, in record order: deduplication, sessions,
batches, requests and the ledger. Results come back in order, one item per record, with
each event already serialized, so this process never parses an event again.

Fork, not spawn: the child starts with the finished identity graph and the transformer
as they are (copy-on-write) instead of rebuilding them, and only reads them. It opens its
own connections to the graph's SQLite spill files. It dies with this process (kill -9).

With more cores, more workers take chunks in turn (their results are used in order).
Without a second core the same chunks are transformed in this process: the same items,
so a run gives the same batches either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import multiprocessing
import os
import signal
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import orjson

from mp2amp.errors import TerminalError
from mp2amp.identity import IdentityGraph
from mp2amp.identity.ids import IDENTITY_EVENTS
from mp2amp.models import Emitted, Rejected
from mp2amp.pipeline.memory import release_free_memory
from mp2amp.pipeline.stage_worker import die_with_parent
from mp2amp.pipeline.staged_ranges import damaged_staged
from mp2amp.pipeline.staging import (
    load_staged,
    read_staged_range,
    staged_ranges,
    staged_record,
)
from mp2amp.pipeline.windows import usable_cores
from mp2amp.transform.dedup import Deduper, insert_id_digest
from mp2amp.transform.sessions import Sessionizer
from mp2amp.transform.stream import (
    EventTransformer,
    Stats,
    TransformSummary,
    add_stats,
    counters_of,
    event_outcome,
    give_back,
    sub_stats,
    take_counts,
    take_stats,
    transform_record,
)

CHUNK_LINES = 512  # staged lines per task: big enough to amortize the pipe, small for latency
AHEAD = 4          # chunks in flight. 16 ran a 1M-event migration 4% faster (35.4 s vs 36.8)
                   # but held ~10 MB more at 5M (tree PSS 194 vs 177 MB), past the 10% bar
MAX_WORKERS = 4
RESULT_PIPE_BYTES = 1 << 20  # Linux's default pipe-max-size for unprivileged users

# One item per staged record:
#   (EVENT, source, line, data, device_id, user_id, time, digest, needs_session, raw_ms
#    [, tally, counts])
#       ``data`` = orjson.dumps(event); device/user/time as the event has them;
#       ``digest`` = insert_id_digest(insert_id), what the Deduper keeps; the chunk's
#       ``Tally`` and the event's own counts (``Stats``) only if the transformer counted
#       something for it (ChunkTransformer's items)
#   (OTHER, source, outcome)        Rejected | Skipped | IdentityRecord
#   (UNSERIALIZABLE, source, Emitted, raw_ms)  an event orjson cannot serialize (a bug):
#       the uploader dead-letters it with the reason (a CountedEmitted if it counted)
EVENT, OTHER, UNSERIALIZABLE = 0, 1, 2
Item = tuple[Any, ...]


class Tally:
    """Where a chunk's counts were added up (``total``, set by the ChunkTransformer that
    used the chunk): a duplicate's own counts are taken back off it (README: the values
    counts cover only events that are sent). One per chunk, shared by its items: the
    chunk's pickle holds it once, and using a chunk touches none of its items."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total: Stats | None = None

    def take_back(self, counts: Stats) -> None:
        if self.total is not None:
            sub_stats(self.total, counts)


@dataclass(slots=True)
class CountedEmitted(Emitted):
    """An UNSERIALIZABLE item's event with its counts (``Settler.emitted`` sees no item)."""

    tally: Tally | None = None
    counts: Stats | None = None


# A chunk's items, everything the transformer counted for them, their Tally (None: no item
# counted anything)
Chunk = tuple[list[Item], Stats | None, Tally | None]

_STATE: tuple[IdentityGraph, EventTransformer] | None = None  # the worker's, set before fork
_CHUNKS = 0  # chunks this worker transformed
TRIM_EVERY_CHUNKS = 50


def transform_lines(lines: Sequence[bytes],
                    state: tuple[IdentityGraph, EventTransformer] | None = None,
                    tally: Tally | None = None) -> list[Item]:
    """The items of these staged rows (``read_staged_range``'s; in the worker: with the state
    it was forked with). The transformer counts as ever; with a ``tally``, each event it
    counted something for also carries its own counts (see ``Item``)."""
    if state is None:
        graph, transformer = _worker_state()
        global _CHUNKS
        _CHUNKS += 1
        if _CHUNKS % TRIM_EVERY_CHUNKS == 0:
            release_free_memory()  # the worker's heap would creep up as the parent's did
    else:
        graph, transformer = state
    items: list[Item] = []
    append = items.append
    loads, dumps, resolve, event_of = orjson.loads, orjson.dumps, graph.resolve, transformer.event
    decode_error = orjson.JSONDecodeError
    sources: dict[str, str] = {}
    # Each item's counts are taken off the transformer (what it held before aside) as the
    # next line starts, and put back at the end: a few truth tests per item that counted
    # nothing, the common case.
    held: Stats = {}
    truncated: Any = ()  # the transformer's counters, with a tally
    flattened: Any = ()
    counts: Any = ()
    sections = counters_of(transformer) if tally is not None else ()
    if sections:
        held = take_stats(transformer) or {}
        truncated, flattened, counts = (c for _, c in sections)
    for raw in lines:
        if truncated or flattened or counts:  # the last item counted (one item a line)
            _carry(items, sections, tally, held)
        try:
            row = loads(raw)
        except decode_error:  # a row staging wrote with the standard library (NaN and such)
            row = _load_row(raw)
        if row.__class__ is not list or len(row) != 5:  # a line cut at its view's tab
            raise _UnreadableRow(f"a {type(row).__name__} where a staged row of 5 fields "
                                 "was due")
        _, source, line, record, rej = row
        # one object per file name: the chunk's pickle then holds each name once
        source = sources.setdefault(source, source)
        if rej is None and record.__class__ is dict \
                and (props := record.get("properties")).__class__ is dict \
                and (name := record.get("event")).__class__ is str \
                and name not in IDENTITY_EVENTS:
            # The common case inlined: an event record, as transform_record would take it,
            # without building its SourceRecord (it costs more than a mapping step).
            out = event_of(record, resolve(props))
            if out.__class__ is not dict:
                append((OTHER, source, event_outcome(out, record, source, line)))
                continue
        else:  # everything else, by the general path; the transformer sees it once either way
            outcome = transform_record(staged_record(source, line, record, rej), graph,
                                       transformer)
            if outcome.__class__ is not Emitted:
                append((OTHER, source, outcome))
                continue
            assert isinstance(outcome, Emitted)
            out = outcome.event
        try:
            data = dumps(out)
        except TypeError:
            append((UNSERIALIZABLE, source, Emitted(out, source, line), transformer.raw_ms))
            continue
        append((EVENT, source, line, data, out.get("device_id"), out.get("user_id"),
                out["time"], insert_id_digest(out["insert_id"]), "session_id" not in out,
                transformer.raw_ms))
    if truncated or flattened or counts:
        _carry(items, sections, tally, held)
    if held:
        give_back(transformer, held)
    return items


def _carry(items: list[Item], sections: tuple[tuple[str, Counter[str]], ...],
           tally: Tally | None, held: Stats) -> None:
    """The transformer's counters (``sections``: the last item's counts) taken off it
    into ``held`` and, for an event, onto it (only the sections it counted in)."""
    counts = take_counts(sections)
    add_stats(held, counts)
    item = items[-1]
    if item[0] == EVENT:
        items[-1] = (*item, tally, counts)
    elif item[0] == UNSERIALIZABLE:
        out = item[2]
        items[-1] = (UNSERIALIZABLE, item[1],
                     CountedEmitted(out.event, out.source, out.line, tally, counts), *item[3:])


class _UnreadableRow(Exception):
    """A staged row neither JSON parser reads (see ``damaged_staged``)."""


def _load_row(raw: bytes) -> Any:
    try:
        return load_staged(raw)
    except (ValueError, TypeError, RecursionError) as exc:
        # load_staged reads a too-deep row as its rejection: a RecursionError left is damage
        raise _UnreadableRow(str(exc) or type(exc).__name__) from None


def transform_range(path: str, start: int, end: int,
                    state: tuple[IdentityGraph, EventTransformer] | None = None,
                    tally: Tally | None = None) -> list[Item]:
    """``transform_lines`` of one range of a staged window, read here (in the worker); a
    row that cannot be read stops the run naming the staged file."""
    try:
        return transform_lines(read_staged_range(path, start, end), state, tally)
    except _UnreadableRow as exc:
        raise damaged_staged(path, f"a line from byte {start} on", exc) from None


def transform_chunk(path: str, start: int, end: int,
                    state: tuple[IdentityGraph, EventTransformer] | None = None) -> Chunk:
    """``transform_range`` with what the transformer counted, taken off it (what it held
    before too: a worker's go back with each chunk, or the parent never sees them), and
    each event its own, for the Settler to take a duplicate's back off."""
    tally = Tally()
    items = transform_range(path, start, end, state, tally)
    stats = take_stats((state or _worker_state())[1])
    return items, stats, tally if stats else None


def _shallow(items: list[Item]) -> list[Item]:
    """``items`` with each rejected record that pickle cannot copy (nested about a
    thousand levels) replaced by a note: the dead letter still names its file and line."""
    out: list[Item] = []
    for item in items:
        outcome = item[2] if item[0] == OTHER else None
        if isinstance(outcome, Rejected) and isinstance(outcome.rejection.record, dict | list):
            try:
                ForkingPickler.dumps(outcome.rejection.record)
            except RecursionError:
                rej = outcome.rejection
                note = (f"(the record is nested too deeply to copy here: see {rej.source} "
                        f"line {rej.line})")
                item = (OTHER, item[1], Rejected(replace(rej, record=note)))
        out.append(item)
    return out


class Settler:
    """The stateful half of the chain for items, exactly as ``transform_stream`` does it
    after ``transform_record``: a repeated insert_id is a duplicate, otherwise the event
    gets its ``session_id`` (appended last, as the dict would have it). Counts go to
    ``summary``. Items must come in record order."""

    def __init__(self, dedup: Deduper, sessions: Sessionizer, summary: TransformSummary) -> None:
        self.summary = summary
        self._is_duplicate = dedup.is_duplicate
        self._seen = dedup.seen
        self._session_id = sessions.session_id

    def event(self, item: Item) -> bytes | None:
        """An EVENT item's final bytes, or None for a duplicate (its counts taken back)."""
        # one unpacking (indexing each field cost ~0.13 us more per event)
        _, source, _, data, device, user, t, digest, needs_session, raw_ms = \
            item if len(item) == 10 else item[:10]
        summary = self.summary
        summary.read(source)
        if self._seen(digest, raw_ms):  # the time its insert_id was hashed from
            summary.duplicates += 1
            if len(item) > 10 and item[10] is not None:  # its counts: not sent, not counted
                item[10].take_back(item[11])
            return None
        summary.events_out += 1
        if needs_session:
            return b"%s,\"session_id\":%d}" % (data[:-1], self._session_id(device, user, t))
        data_: bytes = data
        return data_

    def emitted(self, out: Emitted, raw_ms: int | None = None) -> dict[str, Any] | None:
        """The same for an UNSERIALIZABLE item's event (as a dict); ``raw_ms``: its source
        time, which its insert_id was hashed from (the Deduper's key, as for EVENT items)."""
        self.summary.read(out.source)
        event = out.event
        if self._is_duplicate(event["insert_id"], event["time"] if raw_ms is None else raw_ms):
            self.summary.duplicates += 1
            if isinstance(out, CountedEmitted) and out.tally is not None and out.counts:
                out.tally.take_back(out.counts)
            return None
        self.summary.events_out += 1
        if "session_id" not in event:
            event["session_id"] = self._session_id(event.get("device_id"), event.get("user_id"),
                                                   event["time"])
        return event


def _worker_state() -> tuple[IdentityGraph, EventTransformer]:
    if _STATE is None:
        raise RuntimeError("transform worker started without its graph and transformer")
    return _STATE


def _serve(requests: Connection, results: Connection, parent: int,
           parents_ends: Sequence[Connection]) -> None:
    """A worker's loop: a ``(path, start, end)`` request in, ``(True, chunk)`` (``Chunk``;
    or ``(False, exception)``) out, until None or the end of the request pipe."""
    die_with_parent(parent)
    # The parent decides when this worker stops (it closes the pipe; kill -9 of the parent:
    # die_with_parent). Ctrl-C reaches the whole process group, and the fork inherited
    # asyncio's handlers: a second press raised KeyboardInterrupt here (a traceback), and
    # the inherited wakeup fd is the parent's, so a signal here woke the parent as its own.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for conn in parents_ends:  # the parent's ends, inherited by the fork: not ours to hold
        conn.close()
    take_stats(_worker_state()[1])  # counted before the fork: the parent's to report
    while True:
        try:
            task = requests.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            items, stats, tally = transform_chunk(*task)
            try:
                reply = ForkingPickler.dumps((True, (items, stats, tally)))
            except RecursionError:  # a rejected record nested too deeply for pickle
                reply = ForkingPickler.dumps((True, (_shallow(items), stats, tally)))
        except Exception as exc:  # the parent raises it where it waits for this chunk
            try:
                reply = ForkingPickler.dumps((False, exc))
            except Exception:
                reply = ForkingPickler.dumps((False, RuntimeError(repr(exc))))
        try:
            results.send_bytes(reply)
        except OSError:  # the parent stopped reading: it is closing or gone
            return


class _Worker:
    """One forked transform worker and its two pipes. Replies come back in request order;
    ``pending`` holds the futures still waiting for theirs."""

    def __init__(self, parent: int) -> None:
        context = multiprocessing.get_context("fork")
        task_reader, self.requests = context.Pipe(duplex=False)
        self.results, reply_writer = context.Pipe(duplex=False)
        widen_pipe(self.results)
        self.process = context.Process(
            target=_serve, args=(task_reader, reply_writer, parent, (self.requests, self.results)),
            daemon=True, name="mp2amp-transform")
        self.process.start()
        task_reader.close()  # the child's ends: once closed here, the child's exit is an EOF
        reply_writer.close()
        self.pending: deque[asyncio.Future[Chunk]] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dead: TerminalError | None = None

    def submit(self, path: str, start: int, end: int) -> asyncio.Future[Chunk]:
        loop = asyncio.get_running_loop()
        if self.loop is None:  # replies are read by this loop, as they arrive
            self.loop = loop
            loop.add_reader(self.results.fileno(), self._on_reply)
        if self.dead is not None:
            raise self.dead
        future: asyncio.Future[Chunk] = loop.create_future()
        try:
            self.requests.send((path, start, end))
        except OSError as exc:
            self._died(exc)
            assert self.dead is not None
            raise self.dead from None
        self.pending.append(future)
        return future

    def _on_reply(self) -> None:
        try:
            # The worker writes a reply in one go into a pipe that holds it (widen_pipe):
            # this read does not wait for it to be produced.
            ok, value = ForkingPickler.loads(self.results.recv_bytes())
        except (EOFError, OSError) as exc:
            self._died(exc)
            return
        future = self.pending.popleft()
        if future.done():  # cancelled: its window was left early
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _died(self, exc: BaseException) -> None:
        if self.dead is None:
            self.process.join(timeout=2)  # its exit status says why (None: still running)
            self.dead = _worker_died(exc, self.process.exitcode)
        if self.loop is not None:
            self.loop.remove_reader(self.results.fileno())
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(self.dead)

    def stop(self) -> None:
        if self.loop is not None and not self.results.closed:
            self.loop.remove_reader(self.results.fileno())
        with contextlib.suppress(OSError):
            self.requests.send(None)
        self.requests.close()
        self.results.close()  # a reply being written fails: the worker ends
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        for future in self.pending:
            future.cancel()
        self.pending.clear()


class ChunkTransformer:
    """Transforms staged windows chunk by chunk, in worker processes when there are spare
    cores (see the module docstring); a context manager that stops the workers.

    The workers are plain forked processes with a request pipe and a reply pipe each, read
    by the event loop: a ProcessPoolExecutor's two helper threads (results, call queue)
    took ~1.5 us of this process's CPU per event and competed with it for the GIL. In three
    A/B pairs of 1M-event migrations this process went 14.3-14.8 -> 13.9-14.0 us per event."""

    def __init__(self, graph: IdentityGraph, transformer: EventTransformer, *,
                 workers: int | None = None, chunk_lines: int | None = None,
                 ahead: int = AHEAD) -> None:
        self.state = (graph, transformer)
        self.chunk_lines = chunk_lines or CHUNK_LINES
        self.workers = default_workers() if workers is None else max(0, workers)
        self.ahead = max(1, ahead, 2 * self.workers)  # every worker busy, one chunk queued
        self._workers: list[_Worker] = []
        self._next = 0
        self._frozen = False
        self._totals: Stats = {}  # the counts of the chunks used, less duplicates'
                                  # (this process's transformer keeps none of them)
        if self.workers:
            global _STATE
            _STATE = self.state  # what the forked workers start with
            # What the workers inherit stays shared: collect the garbage first, then keep
            # the cyclic GC off the inherited objects (its bookkeeping writes would copy
            # their pages into every worker), and hand freed heap back before the fork.
            # They are forked now, at a known point, not later when this process also
            # holds the uploader's sockets and the session and dedup files.
            gc.collect()
            gc.freeze()
            self._frozen = True
            release_free_memory()
            try:
                for _ in range(self.workers):
                    self._workers.append(_Worker(os.getpid()))
            except BaseException:
                self.close()
                raise

    @property
    def parallel(self) -> bool:
        return bool(self._workers)

    async def window(self, path: Path) -> AsyncIterator[list[Item]]:
        """The items of one staged window, a chunk at a time, in order."""
        # Chunks of ~chunk_lines lines of ~1 KB. A worker reads its chunk from the file
        # itself: this process hands over two offsets, not the lines (pickling them and
        # pushing them through the pipe cost this process's core ~3 ms a chunk).
        chunks = staged_ranges(path, self.chunk_lines * 1024)
        if not self._workers:
            for start, end in chunks:
                yield self._used(transform_chunk(str(path), start, end, self.state))
            return
        pending: deque[asyncio.Future[Chunk]] = deque()
        try:
            for start, end in chunks:
                pending.append(self._submit(str(path), start, end))
                if len(pending) >= self.ahead:
                    yield self._used(await pending.popleft())
            while pending:
                yield self._used(await pending.popleft())
        finally:
            for future in pending:
                future.cancel()

    def _used(self, chunk: Chunk) -> list[Item]:
        """A chunk as it is used: its counts are added up here (only chunks used: the
        chunks after a window left early are never made in this process), where the
        Settler takes a duplicate's own back off (its items' Tally)."""
        items, stats, tally = chunk
        if stats:
            add_stats(self._totals, stats)
        if tally is not None:
            tally.total = self._totals
        return items

    def stats(self) -> Stats:
        """What the transform changed (``Transformer.stats()``), wherever it ran: this
        process's transformer (counted before) plus the chunks used, less the counts of
        the duplicates the Settler found so far."""
        local = getattr(self.state[1], "stats", None)
        total: Stats = {k: dict(v) for k, v in local().items()} if local is not None else {}
        add_stats(total, self._totals)
        return total

    def _submit(self, path: str, start: int, end: int) -> asyncio.Future[Chunk]:
        worker = self._workers[self._next % len(self._workers)]  # in turn: replies in order
        self._next += 1
        return worker.submit(path, start, end)

    def close(self) -> None:
        global _STATE
        workers, self._workers = self._workers, []
        for w in workers:
            w.stop()
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
        _STATE = None

    def __enter__(self) -> ChunkTransformer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def widen_pipe(conn: Connection) -> int | None:
    """Give a worker's reply pipe room for a whole chunk's items (~0.5 MB pickled).

    With Linux's default 64 KB a worker blocked on every chunk until this process drained
    the pipe. Measured on a 1M-event migration: 38.6-39.3 s before, 36.8 s with 1 MB (with
    16 chunks in flight: the worker busy 80-84% of the load phase and this process waiting
    12 s for results; with 1 MB, 85-87% and 7 s). Returns the capacity now, or None where
    it cannot be set (not Linux)."""
    setter = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setter is None:
        return None
    try:
        return fcntl.fcntl(conn.fileno(), setter, RESULT_PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size: the default size stays
        return None


def _worker_died(exc: BaseException, exitcode: int | None = None) -> TerminalError:
    if exitcode == -signal.SIGKILL:
        why = "killed by SIGKILL: if nobody sent it, the system ran out of memory (see dmesg)"
    elif exitcode is not None and exitcode < 0:
        try:
            why = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            why = f"killed by signal {-exitcode}"
    elif exitcode is not None:
        why = f"exit code {exitcode}"
    else:
        why = str(exc) or type(exc).__name__
    return TerminalError(f"the transform worker process ended unexpectedly ({why}); nothing "
                         "is lost: run `mp2amp migrate --resume` to continue")


def default_workers() -> int:
    """One core stays with this process (dedup, sessions, requests); the others transform,
    up to four (past that this process is the bottleneck). None on one core.

    ``[run] transform_workers`` overrides it. More workers than that can pay: sampled
    every ms through the load phase of a 1M-event migration on two cores, the one worker
    was the only process that could run 24% of the time, and two workers took the run
    from 30.2k to 32.2k events/s; but each worker holds its own memos (~70 MB more in all:
    248 MB at 1M events, 272-282 at 5M), too close to the 300 MB the default must keep."""
    return max(0, min(MAX_WORKERS, usable_cores() - 1))
