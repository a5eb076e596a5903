"""The load pass's transform in a worker process: the same outcomes and bytes as the
in-process chain (``transform_stream``), the same requests as a run without the worker,
and a clear stop when the worker dies."""

from __future__ import annotations

import asyncio
import os
import signal
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import FAST, TIMEZONE, Project, amplitude, assert_exactly_once, make_config

import mp2amp.pipeline.transform_worker as worker
from mp2amp.config import load_config
from mp2amp.errors import TerminalError
from mp2amp.extract.files import expand_paths, iter_file
from mp2amp.identity import IdentityGraph
from mp2amp.load.uploader import Uploader
from mp2amp.models import Duplicate, Emitted
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.progress import Counters
from mp2amp.pipeline.staging import read_staged, read_staged_range, stage
from mp2amp.transform.dedup import Deduper
from mp2amp.transform.events import Transformer
from mp2amp.transform.sessions import Sessionizer
from mp2amp.transform.stream import TransformSummary, transform_stream


@pytest.fixture(scope="module")
def staged(project: Project, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("staged")
    paths = []
    for i, f in enumerate(expand_paths([str(project.events)])):
        paths.append(out / f"w{i}.jsonl")
        stage(iter_file(f), paths[-1])
    return paths


def _graph_and_transformer(staged: list[Path], tmp: Path) -> tuple[IdentityGraph, Transformer]:
    graph = IdentityGraph("simplified", tmp)
    for src in chain.from_iterable(read_staged(p) for p in staged):
        if src.record is not None:
            graph.observe(src.record)
    graph.finish()
    cfg = load_config(None, {"mixpanel.timezone": TIMEZONE}, env={})
    return graph, Transformer(cfg.transform_settings())


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_items_settle_into_exactly_what_transform_stream_gives(
        staged: list[Path], tmp_path: Path, workers: int) -> None:
    graph, transformer = _graph_and_transformer(staged, tmp_path / "g")
    expected: list[Any] = []
    with Sessionizer() as sessions, Deduper() as dedup:
        for out in transform_stream(chain.from_iterable(read_staged(p) for p in staged), graph,
                                    transformer, sessions, dedup):
            if isinstance(out, Emitted):
                expected.append(("event", out.source, out.line, orjson.dumps(out.event)))
            elif isinstance(out, Duplicate):
                expected.append(("duplicate", out.source, out.line))
            else:
                expected.append(out)
    got: list[Any] = []
    summary = TransformSummary()

    async def run() -> None:
        # small chunks: sessions and duplicates cross chunk boundaries
        with worker.ChunkTransformer(graph, transformer, workers=workers, chunk_lines=7,
                                     ahead=3) as chunks, Sessionizer() as sessions, \
                Deduper() as dedup:
            assert chunks.parallel is (workers > 0)
            settle = worker.Settler(dedup, sessions, summary)
            for path in staged:
                async for items in chunks.window(path):
                    for item in items:
                        if item[0] == worker.EVENT:
                            data = settle.event(item)
                            got.append(("duplicate", item[1], item[2]) if data is None
                                       else ("event", item[1], item[2], data))
                        else:
                            assert item[0] == worker.OTHER
                            summary.read(item[1])
                            summary.add(item[2])
                            got.append(item[2])

    asyncio.run(run())
    assert any(g[0] == "event" for g in got if isinstance(g, tuple))
    assert got == expected
    summary.check()
    assert summary.records_read == len(expected)


def test_a_run_with_the_worker_sends_the_same_requests_as_one_without(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[bytes, Any, str]] = []
    real = Uploader.submit_encoded

    async def recording(self: Uploader, data: bytes, device: str | None, user: str | None,
                        origin: Any, batch_key: str = "run") -> None:
        sent.append((data, origin, batch_key))
        await real(self, data, device, user, origin, batch_key)

    monkeypatch.setattr(Uploader, "submit_encoded", recording)
    used: list[int] = []
    real_enter = worker.ChunkTransformer.__enter__

    def entering(self: worker.ChunkTransformer) -> worker.ChunkTransformer:
        used.append(self.workers)
        return real_enter(self)

    monkeypatch.setattr(worker.ChunkTransformer, "__enter__", entering)
    runs = []
    # (cores, [run] transform_workers): 2 workers, none, and 2 by the config on 2 cores
    for n, (cores, configured) in enumerate([(3, None), (1, None), (2, 2)]):
        monkeypatch.setattr(worker, "usable_cores", lambda c=cores: c)
        sent.clear()
        seen = Progress()
        extra = {} if configured is None else {"run.transform_workers": configured}
        with amplitude(tmp_path / f"amp-{n}") as url:
            result = migrate(make_config(project.events, tmp_path / f"work-{n}", url, **extra),
                             upload_overrides=FAST, reporter=seen)
            assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
            assert_exactly_once(url, project.expected)
        runs.append((list(sent), result.totals))
        # progress: windows while extracting, then records, ending at all of them
        read = result.totals["read"]
        assert {total for phase, _, total in seen.updates if phase == "load"} == {read}
        assert seen.updates[-1] == ("load", read, read)
        assert all(total == len(result.windows) for phase, _, total in seen.updates
                   if phase == "extract")
    assert used == [2, 0, 2]
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0][0]) == len(project.expected)


class Progress:
    """A reporter that keeps (phase, done, total) of every update."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, int, int]] = []

    def update(self, counters: Counters) -> None:
        self.updates.append((counters.phase, counters.done, counters.total))

    def close(self, counters: Counters) -> None:
        self.update(counters)


def test_a_dead_worker_stops_the_run_with_what_to_do(staged: list[Path], tmp_path: Path) -> None:
    graph, transformer = _graph_and_transformer(staged, tmp_path / "g")

    async def run() -> None:
        with worker.ChunkTransformer(graph, transformer, workers=1, chunk_lines=5,
                                     ahead=1) as chunks:
            windows = chunks.window(staged[0])
            await anext(windows)  # the worker is up
            assert chunks._workers
            for w in chunks._workers:
                assert w.process.pid is not None
                os.kill(w.process.pid, signal.SIGKILL)
            async for _ in windows:
                pass

    with pytest.raises(TerminalError) as stopped:
        asyncio.run(run())
    # the exit status says why (it used to print "()": an EOFError has no text)
    assert str(stopped.value) == (
        "the transform worker process ended unexpectedly (killed by SIGKILL: if nobody sent "
        "it, the system ran out of memory (see dmesg)); nothing is lost: run `mp2amp migrate "
        "--resume` to continue")


@pytest.mark.parametrize(("exitcode", "why"), [
    (-signal.SIGTERM, "killed by SIGTERM"), (3, "exit code 3"), (None, "EOFError")])
def test_a_dead_workers_message_names_its_exit(exitcode: int | None, why: str) -> None:
    assert f"ended unexpectedly ({why}); nothing is lost" in str(
        worker._worker_died(EOFError(), exitcode))


def test_every_kind_of_record_gives_the_same_outcome_and_counts_as_transform_stream(
        tmp_path: Path) -> None:
    # The worker serves plain events inline and hands the rest to transform_record: each
    # record must reach the transformer once (its value counts would double otherwise).
    from datetime import date

    from mp2amp.transform import TransformSettings
    from mp2amp.transform.privacy import PrivacyRules

    def ev(name: str, t: float, **props: Any) -> bytes:
        return orjson.dumps({"event": name, "properties": {"time": t, **props}})

    lines = [
        ev("Viewed", 1.7e9, distinct_id="u-0001", **{"$insert_id": "aaaaaaaaaaaaaaaa"}),
        ev("Viewed", 1.7e9 + 1, distinct_id="u-0001", long="x" * 2000),  # cut and counted
        ev("Viewed", 1.7e9 + 2, distinct_id="undefined"),  # missing_id
        ev("$identify", 1.7e9 + 3, distinct_id="u-0001"),  # identity record
        ev("Old", 1.0e9, distinct_id="u-0002"),  # before the retention date: skipped
        ev("Viewed", 1.7e9, distinct_id="u-0001", **{"$insert_id": "aaaaaaaaaaaaaaaa"}),  # dup
        b'{"event": "Broken", "properties": {',  # unreadable
        b'{"$distinct_id": "u-0001", "$set": {"a": 1}}',  # a profile, not an event
        ev("", 1.7e9 + 4, distinct_id="u-0001"),  # no name
        ev("Viewed", 1.7e9 + 5, distinct_id="u-0003", nested={"a": [[1]]}),
        ev("E" * 1100, 1.7e9 + 6, distinct_id="u" * 1100),  # name cut (counted), then rejected
    ]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    staged = tmp_path / "w0.jsonl"
    (file,) = expand_paths([str(source)])
    stage(iter_file(file), staged)
    graph = IdentityGraph("simplified", tmp_path / "g")
    for src in read_staged(staged):
        if src.record is not None:
            graph.observe(src.record)
    graph.finish()
    settings = TransformSettings(privacy=PrivacyRules(drop_before=date(2010, 1, 1)))
    inline, reference = Transformer(settings), Transformer(settings)
    expected: list[Any] = []
    with Sessionizer() as sessions, Deduper() as dedup:
        for out in transform_stream(read_staged(staged), graph, reference, sessions, dedup):
            expected.append(("event", orjson.dumps(out.event)) if isinstance(out, Emitted)
                            else ("duplicate",) if isinstance(out, Duplicate) else out)
    got: list[Any] = []
    summary = TransformSummary()
    with Sessionizer() as sessions, Deduper() as dedup:
        settle = worker.Settler(dedup, sessions, summary)
        for item in worker.transform_lines(read_staged_range(staged, 0, staged.stat().st_size),
                                           (graph, inline)):
            if item[0] == worker.EVENT:
                data = settle.event(item)
                got.append(("duplicate",) if data is None else ("event", data))
            else:
                summary.read(item[1])
                summary.add(item[2])
                got.append(item[2])
    assert got == expected
    kinds = {type(g).__name__ if not isinstance(g, tuple) else g[0] for g in got}
    assert kinds == {"event", "duplicate", "Rejected", "Skipped", "IdentityRecord"}
    assert inline.stats() == reference.stats() and inline.stats()["truncated"]
    summary.check()
    assert summary.records_read == len(lines)


def test_the_result_pipe_holds_a_whole_chunk(staged: list[Path], tmp_path: Path) -> None:
    """A worker writes a chunk's items (~0.5 MB pickled) without waiting for this process
    to drain a 64 KB pipe (that wait kept it idle ~15% of a migration's load phase)."""
    import fcntl

    graph, transformer = _graph_and_transformer(staged, tmp_path / "g")
    with worker.ChunkTransformer(graph, transformer, workers=1) as chunks:
        assert chunks._workers
        for w in chunks._workers:
            assert fcntl.fcntl(w.results.fileno(), fcntl.F_GETPIPE_SZ) >= worker.RESULT_PIPE_BYTES
        with open("/proc/sys/fs/pipe-max-size") as f:  # a size the kernel allows anyone
            assert int(f.read()) >= worker.RESULT_PIPE_BYTES


def test_an_error_in_the_worker_is_raised_where_its_chunk_is_awaited(
        staged: list[Path], tmp_path: Path) -> None:
    graph, transformer = _graph_and_transformer(staged, tmp_path / "g")
    gone = tmp_path / "gone.jsonl"
    gone.write_bytes(staged[0].read_bytes())

    async def run() -> None:
        with worker.ChunkTransformer(graph, transformer, workers=1, chunk_lines=5,
                                     ahead=2) as chunks:
            windows = chunks.window(gone)
            await anext(windows)
            gone.unlink()  # the worker opens the file per chunk: the next ones fail there
            with pytest.raises(FileNotFoundError, match=r"gone\.jsonl"):
                async for _ in windows:
                    pass
            # the worker is still serving: the next window comes back whole
            n = sum([len(items) async for items in chunks.window(staged[1])])
            assert n == len(read_staged_range(staged[1], 0, staged[1].stat().st_size))

    asyncio.run(run())


def test_a_window_left_early_does_not_shift_the_next_windows_chunks(
        staged: list[Path], tmp_path: Path) -> None:
    """Chunks still in flight when a window is left are discarded, in order: the next
    window gets its own items, not theirs."""
    graph, transformer = _graph_and_transformer(staged, tmp_path / "g")

    async def items_of(chunks: worker.ChunkTransformer, path: Path) -> list[Any]:
        return [item async for items in chunks.window(path) for item in items]

    async def run() -> None:
        with worker.ChunkTransformer(graph, transformer, workers=2, chunk_lines=5,
                                     ahead=6) as chunks:
            expected = await items_of(chunks, staged[1])
            windows = chunks.window(staged[0])
            await anext(windows)  # five more chunks are in flight
            await windows.aclose()
            assert await items_of(chunks, staged[1]) == expected

    asyncio.run(run())


def _signal_set(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_the_worker_leaves_ctrl_c_and_sigterm_to_the_migration(
        staged: list[Path], tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: the forked worker, with asyncio's handlers
    inherited, printed a KeyboardInterrupt traceback on a second press. It ignores both
    signals; the migration ends it (closing its pipe, or kill -9 of the parent)."""
    graph, transformer = _graph_and_transformer(staged, tmp_path / "g")
    with worker.ChunkTransformer(graph, transformer, workers=1, chunk_lines=5) as chunks:

        async def first() -> None:  # one chunk back: the worker is past its setup
            async for _ in chunks.window(staged[0]):
                break

        asyncio.run(first())
        ignored = _signal_set(chunks._workers[0].process.pid, "SigIgn")
        assert ignored & (1 << (signal.SIGINT - 1)) and ignored & (1 << (signal.SIGTERM - 1))


def test_staging_workers_start_with_ctrl_c_blocked() -> None:
    """The spawned staging workers: SIGINT blocked from their start (their imports
    printed a traceback on Ctrl-C); the migration stops them with SIGTERM."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from mp2amp.pipeline.windows import _sigint_blocked

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        with _sigint_blocked():
            future = pool.submit(signal.pthread_sigmask, signal.SIG_BLOCK, [])
        blocked = future.result(timeout=60)
        assert signal.SIGINT in blocked and signal.SIGTERM not in blocked
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
