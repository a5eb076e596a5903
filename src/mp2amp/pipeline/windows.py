"""Windows: the units of work of a migration, and their extraction into staged files.

A window is one day of the Raw Export API (``export:YYYY-MM-DD``, exactly the source name
its records carry) or one input file (its URL). The window id doubles as the source of its
records, so a dead letter's ``source`` names its window. A local file's id is its path when
the run started: a project folder moved whole since (config file, inputs and all) has the
file at the same place relative to the config file's folder (``locator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import date
from pathlib import Path
from typing import Any

from mp2amp.config import Config
from mp2amp.errors import ConfigError, InputError, Mp2AmpError, TerminalError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export import (
    Days,
    fetch_windows,
    iter_window_records,
    meta_path,
    window_path,
    window_source,
    windows_of,
)
from mp2amp.extract.files import (
    Filesystems,
    SourceFile,
    expand_paths,
    iter_file,
    remote_objects,
)
from mp2amp.ledger import Ledger, WindowRow
from mp2amp.models import SourceRecord
from mp2amp.pipeline.fingerprint import FOLDER_META, config_folder
from mp2amp.pipeline.progress import Counters, Reporter
from mp2amp.pipeline.restage import awaiting_check
from mp2amp.pipeline.stage_worker import MovedFile as MovedFile
from mp2amp.pipeline.stage_worker import die_with_parent as die_with_parent
from mp2amp.pipeline.stage_worker import stage_in_worker, worker_args
from mp2amp.pipeline.staged_names import STAGED_NAME as STAGED_NAME
from mp2amp.pipeline.staged_names import remove_leftovers, work_entry
from mp2amp.pipeline.staged_names import staged_path as staged_path
from mp2amp.pipeline.staging import DIGEST, LINES, TIES, LocalZone, Staged, stage

WindowSpec = tuple[str, str, dict[str, Any]]
# Input files are staged by worker processes (parsing and sorting is CPU work) when there
# are at least two and this much data; less is not worth a process start (~0.3 s).
POOL_MIN_BYTES = 4 * 1024 * 1024
POOL_WORKERS = 2


def plan_windows(config: Config, storage_options: dict[str, Any] | None) -> list[WindowSpec]:
    """The run's windows in delivery order (days ascending, or files as listed/sorted)."""
    src = config.source
    if src.files:
        seen: dict[Path, bool] = {}  # thousands of files share a few folders
        listed = expand_paths(list(src.files), storage_options=storage_options)
        kept = [f for f in listed
                if f.fs is not None or _wanted_local(f.url, config.run.workdir, seen)]
        if listed and not kept:
            raise InputError(
                f"every file the inputs list ({', '.join(map(str, src.files))}: "
                f"{len(listed)} file(s), such as {listed[0].url}) is a work folder's own "
                "(its staged/, scratch/ or export/ folder, its ledger or dead letters), "
                "which are never read as events; nothing was read or sent: set [source] "
                "files to the exported events, or [run] workdir to another folder")
        return [(f.url, "file", {"path": f.url}) for f in kept]
    if src.from_date is None or src.to_date is None:
        raise ConfigError(["source: give from_date and to_date (Export API) or files"],
                          source=str(config.path) if config.path else None)
    return [(window_source(w), "export", {"day": w.first.isoformat()} if w.single
             else {"day": w.first.isoformat(), "last": w.last.isoformat()})
            for w in windows_of(src.from_date, src.to_date, src.export_window_days)]


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def inputs_changed(ledger: Ledger, locate: Callable[[str], str] = str) -> list[str]:
    """Local input files whose size differs from when they were staged: the run migrates
    the staged copy (its identity graph and batches are that copy's), so records appended
    since would be left out unnamed. (A ledger of an earlier mp2amp has the size when the
    run was planned.)"""
    return [w.window_id for w in ledger.windows()
            if w.kind == "file" and w.state != "pending" and w.spec.get("size") is not None
            and "://" not in w.window_id
            and _size(locate(str(w.spec["path"]))) not in (None, w.spec["size"])]


def remote_inputs_changed(ledger: Ledger, storage_options: dict[str, Any] | None) -> list[str]:
    """Remote objects whose size or version (generation, ETag) differs from when they were
    staged, as ``inputs_changed`` for local files; one that cannot be looked up now is
    the staging's to report, if it is staged again."""
    rows = [w for w in ledger.windows() if w.kind == "file" and "://" in w.window_id
            and w.state != "pending" and w.spec.get("size") is not None]
    if not rows:
        return []
    try:
        now = remote_objects([w.window_id for w in rows], Filesystems(storage_options))
    except Mp2AmpError:  # the backend's package is missing: the staging says so
        return []
    return [w.window_id for w in rows if _rewritten(w.spec, now[w.window_id])]


def _rewritten(spec: dict[str, Any], now: SourceFile | Exception) -> bool:
    if not isinstance(now, SourceFile):
        return False
    was = spec.get("version")
    return now.size != spec["size"] or (None not in (was, now.version) and was != now.version)


def locator(config: Config, ledger: Ledger, *, back: bool = False) -> Callable[[str], str]:
    """Where a window's local file is now: the run names it by its path when it started,
    and a project folder moved whole since has it at the same place relative to the
    config file's folder. Only a file gone from its path is looked for there (a config
    file moved alone, its inputs named by their absolute paths, reads them where they
    are). ``back``: the window id of a path of now."""
    was, now = ledger.get_meta(FOLDER_META), config_folder(config)
    if was is None or now is None or Path(was) == now:
        return str
    start, end = (now, Path(was)) if back else (Path(was), now)
    known = {w.window_id for w in ledger.windows()} if back else set()

    def locate(path: str) -> str:
        if "://" in path or not Path(path).is_relative_to(start):
            return path
        there = str(end / Path(path).relative_to(start))
        if back:  # a window's own path (the inputs did not move) is its id
            return path if path in known else there
        return there if not os.path.exists(path) and os.path.exists(there) else path
    return locate


def _as_window(found: SourceFile, window_id: str) -> SourceFile:
    return found if found.url == window_id else MovedFile(window_id, None, location=found.url)


def _spec_when_staged(row: WindowRow, source: SourceFile) -> dict[str, Any] | None:
    """A file's size as it is staged (taken before it is read: records appended meanwhile
    may or may not be in the copy, and it is named as changed), a remote object's with
    its version (the size is all that is read of it), so that a resume can name one that
    changed after it was staged; None: the spec stays."""
    if source.fs is not None:
        if source.size is None:
            return None
        return {**row.spec, "size": source.size, "version": source.version}
    return {**row.spec, "size": _size(source.location if isinstance(source, MovedFile)
                                      else source.url)}


def _wanted_local(path: str, workdir: Path, seen: dict[Path, bool]) -> bool:
    """A local file listed from the inputs that is part of the run: it is there (checked
    before the ledger records the run's windows: a window that could never be staged
    left the work folder stuck, every resume asking to restore it), and not in a work
    folder (``_in_a_work_folder``)."""
    if not os.path.exists(path):
        raise InputError(f"{path} is {_missing(path)}; fix the link or leave it out of "
                         "the inputs, and run the same `mp2amp migrate` command again")
    return not _in_a_work_folder(Path(path), workdir, seen)


def _missing(path: str) -> str:
    """What a listed path that does not exist is."""
    if not os.path.islink(path):
        return "gone (it was listed a moment ago)"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
    return f"a symbolic link to {os.readlink(path)}, which does not exist"


def _in_a_work_folder(path: Path, workdir: Path, seen: dict[Path, bool]) -> bool:
    """Whether ``path`` is a work folder's own (``staged_names.work_entry``): this run's
    (files = ["."]) or an earlier run's (a folder with a ledger and a lock file beside
    it); their staged windows and dead letters are not events. Other files in a work
    folder are inputs like any (workdir = "." with files = ["exports"])."""
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError):  # a link loop on the way (Python 3.11 raises RuntimeError)
        raise InputError(f"{path} is a symbolic link loop, or a path through one; fix the "
                         "link or leave it out of the inputs, and run the same `mp2amp "
                         "migrate` command again") from None
    here = workdir.resolve()
    if resolved.is_relative_to(here) and work_entry(resolved.relative_to(here)):
        return True
    for parent in resolved.parents:
        found = seen.get(parent)
        if found is None:
            found = seen[parent] = ((parent / "ledger.sqlite").is_file()
                                    and (parent / "migrate.lock").is_file())
        if found and work_entry(resolved.relative_to(parent)):
            return True
    return False


async def extract_pending(
    config: Config,
    ledger: Ledger,
    mixpanel: MixpanelSettings | None,
    *,
    storage_options: dict[str, Any] | None,
    counters: Counters,
    reporter: Reporter,
    on_staged: Callable[[str], None] | None = None,
) -> None:
    """Stage every window not yet extracted; each is marked in the ledger once staged and
    then announced to ``on_staged`` (so the identity pass can start on it meanwhile)."""
    workdir = config.run.workdir
    export_dir = workdir / "export"
    rows = ledger.windows()
    _discard_staged_downloads(export_dir, rows)
    remove_leftovers(workdir / "staged", rows)  # before this run stages anything
    pending = [w for w in rows if w.state == "pending"]
    if not pending:
        return
    total = len(ledger.windows())
    counters.begin("extract", total, done=total - len(pending))
    reporter.update(counters)
    files = [w for w in pending if w.kind == "file"]
    days = [w for w in pending if w.kind == "export"]
    local = local_zone(config)
    locate = locator(config, ledger)
    remote = _remote_sources(files, Filesystems(storage_options))
    merged = set(ledger.merged_into())
    _check_gone_sources(files, locate, remote, merged)
    if files:
        # each pending window reads what its own path names now: two windows planned as
        # two files stay two even if a link has since made them one (no KeyError)
        found = {f.url: f for f in expand_paths(
            [locate(w.window_id) for w in files if w.window_id not in remote],
            storage_options=storage_options, dedupe=False)}
        sources = {w.window_id: remote.get(w.window_id)
                   or _as_window(found[locate(w.window_id)], w.window_id) for w in files}
        pool = _staging_pool([sources[w.window_id] for w in files])
        try:
            await _stage_files(ledger, workdir, files, sources, pool, counters, reporter,
                               on_staged, local)
        except BaseException:
            if pool is not None:  # stopped (Ctrl-C, SIGTERM, an error): do not wait
                _stop_pool(pool)
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    if days:
        if mixpanel is None:
            raise ConfigError(["mixpanel: the Export API needs credentials: set "
                               "MIXPANEL_SERVICE_ACCOUNT (user:secret) or MIXPANEL_SECRET"])
        staged_before = merged | awaiting_check(ledger)
        wanted = {Days(date.fromisoformat(w.spec["day"]),
                       date.fromisoformat(w.spec.get("last", w.spec["day"]))): w for w in days}
        windows = fetch_windows(mixpanel, sorted(wanted), export_dir,
                                concurrency=max(1, min(config.run.concurrency, 4)))
        try:
            async for wf in windows:
                row = wanted[wf.days]
                dest = staged_path(workdir, row.window_id)
                # ties by content: a day fetched again may come in another order
                by_content = _ties_by_content(row, staged_before)
                keep_lines = _keeps_arrival_lines(row, staged_before)
                n = await staged_in_thread(iter_window_records(wf), dest, local,
                                           by_content=by_content, keep_lines=keep_lines)
                spec = {**row.spec, TIES: "content"} if by_content else row.spec
                spec = spec if keep_lines or not by_content else {**spec, LINES: "staged"}
                ledger.mark_extracted(row.window_id, str(dest), n, _with_digest(spec, n))
                wf.discard()  # staged: the raw download is no longer needed
                counters.done += 1
                reporter.update(counters)
                if on_staged is not None:
                    on_staged(row.window_id)
        finally:  # leaving early cancels the windows still in flight
            aclose = getattr(windows, "aclose", None)
            if aclose is not None:
                await aclose()


def _ties_by_content(row: WindowRow, known: set[str]) -> bool:
    """Whether an Export API day is staged with same-time events in content order: yes,
    unless an mp2amp before that staged it (``_staged_before``, and no mark): its batches
    were cut from their arrival order, which a day fetched again in the same order gives
    again (the order any change would break, with no digest to tell)."""
    return row.spec.get(TIES) == "content" or not _staged_before(row, known)


def _staged_before(row: WindowRow, known: set[str]) -> bool:
    """A window staged by an earlier run: it has records, or it is in ``known``: merged
    into another window's file (a merged-away window counts none itself), or staged
    again and not yet checked (``restage.awaiting_check``: a copy the check refused left
    its own count, 0 for a day Mixpanel answered empty, and must not make the day new)."""
    return bool(row.records) or row.window_id in known


def _keeps_arrival_lines(row: WindowRow, known: set[str]) -> bool:
    """Whether an Export API day keeps the lines its records arrived at: only one an
    earlier mp2amp staged so (``_staged_before``, and no mark): its dead letters, parked
    events and merged order are keyed by those lines, which a day fetched again in the
    same order gives again. Others are numbered by their place as staged (``renumber``)."""
    return row.spec.get(LINES) != "staged" and _staged_before(row, known)


def _discard_staged_downloads(export_dir: Path, rows: list[WindowRow]) -> None:
    """Remove the raw download of every Export API window staged already: a crash between
    a window's staging and its download's removal left it (a whole day, uncompressed),
    and a resume never fetches that window again to remove it."""
    for row in rows:
        if row.kind == "export" and row.state != "pending":
            first = date.fromisoformat(row.spec["day"])
            last = date.fromisoformat(row.spec.get("last", row.spec["day"]))
            path = window_path(export_dir, Days(first, last))
            for p in (path, meta_path(path)):
                p.unlink(missing_ok=True)


def _remote_sources(files: list[WindowRow], filesystems: Filesystems) -> dict[str, SourceFile]:
    """The remote objects of the windows to stage, looked up by name (one filesystem for
    all, no listing; a window's id is its object's URL); gone ones left out."""
    urls = [w.window_id for w in files if "://" in w.window_id]
    found: dict[str, SourceFile] = {}
    for url, got in remote_objects(urls, filesystems).items():
        if isinstance(got, SourceFile):
            found[url] = got
        elif not isinstance(got, FileNotFoundError):
            raise InputError(f"cannot read {url}: {type(got).__name__}: {got}; check the "
                             "credentials and storage options and run the same `mp2amp "
                             "migrate` command with --resume")
    return found


def _check_gone_sources(files: list[WindowRow], locate: Callable[[str], str],
                        remote: dict[str, SourceFile], merged: set[str]) -> None:
    """The run's files and objects to stage that are gone, with what can be done: a window
    staged before and pending again lost its staged copy (``restage.restage_missing``)
    too; one never staged is still part of the run (its windows were fixed when it
    started), so checking the path and running again would never help. Staged before:
    it has records, or counts (it reached the load), or the size taken as it was staged,
    or it was merged into another (it holds no records then, and a new run would send its
    events again)."""
    gone = [w for w in files if w.window_id not in remote and (
        "://" in w.window_id or not os.path.exists(locate(w.window_id)))]
    lost = [locate(w.window_id) for w in gone
            if w.records or w.counts or "size" in w.spec or w.window_id in merged]
    if lost:
        raise InputError(
            f"{lost[0]} does not exist, and its staged copy in the work folder is gone too"
            + (f" (and {len(lost) - 1} more such file(s))" if len(lost) > 1 else "")
            + ": restore the file (or the work folder's staged/ copy) and run the same "
            "`mp2amp migrate` command with --resume")
    if gone:
        raise InputError(
            f"{locate(gone[0].window_id)} does not exist"
            + (f" (and {len(gone) - 1} more such file(s))" if len(gone) > 1 else "")
            + ", but it has been part of this run since it started and was not staged yet: "
            "restore it and run the same `mp2amp migrate` command with --resume, or start a "
            "new run in a new work folder ([run] workdir) to migrate the files there are now")


async def _stage_files(ledger: Ledger, workdir: Path, rows: list[WindowRow],
                       sources: dict[str, SourceFile], pool: ProcessPoolExecutor | None,
                       counters: Counters, reporter: Reporter,
                       on_staged: Callable[[str], None] | None,
                       local: LocalZone | None = None) -> None:
    """Stage the files, several at a time in ``pool`` if there is one; each is marked in the
    ledger (from this process only) in window order, as soon as it and those before it
    are staged, so that the identity pass can follow right behind."""
    def staged(row: WindowRow, dest: Path, n: int, spec: dict[str, Any] | None) -> None:
        ledger.mark_extracted(row.window_id, str(dest), n, _with_digest(spec or row.spec, n))
        counters.done += 1
        reporter.update(counters)
        if on_staged is not None:
            on_staged(row.window_id)

    if pool is None:  # one at a time in a thread: it shares this process's CPU anyway
        for row in rows:
            dest = staged_path(workdir, row.window_id)
            spec = _spec_when_staged(row, sources[row.window_id])
            staged(row, dest, await staged_in_thread(iter_file(sources[row.window_id]), dest,
                                                     local), spec)
        return
    loop = asyncio.get_running_loop()
    # the sizes before any worker reads (they all start now)
    jobs = [(row, staged_path(workdir, row.window_id),
             _spec_when_staged(row, sources[row.window_id])) for row in rows]
    with _sigint_blocked():  # the pool starts its processes here, as tasks are submitted
        futures = [loop.run_in_executor(pool, stage_in_worker, *worker_args(
            sources[row.window_id], str(dest), local)) for row, dest, _ in jobs]
    try:
        for (row, dest, spec), future in zip(jobs, futures, strict=True):
            try:
                n = await future
            except BrokenProcessPool:
                raise TerminalError(
                    "a staging process ended unexpectedly (killed: if nobody did it, the "
                    "system ran out of memory, see dmesg); nothing is lost: run the same "
                    "`mp2amp migrate` command with --resume to go on") from None
            staged(row, dest, n, spec)
    finally:
        for future in futures:
            future.cancel()


def _with_digest(spec: dict[str, Any], staged: int) -> dict[str, Any]:
    """The window's spec with the digest of its records as staged, for
    ``restage.check_restaged`` (a ``stage`` replaced by a test may give a plain count)."""
    digest = staged.digest if isinstance(staged, Staged) else None
    return spec if digest is None else {**spec, DIGEST: digest}


async def staged_in_thread(records: Iterable[SourceRecord], dest: Path,
                           local: LocalZone | None, *, by_content: bool = False,
                           keep_lines: bool = False) -> int:
    """``stage`` in a thread. Cancelled (Ctrl-C, SIGTERM, an error elsewhere), it tells
    the thread to stop and waits for it: the run lets go of its work folder (the lock)
    only after, so no staged file appears in a folder another migrate may have taken."""
    stop = threading.Event()
    job = asyncio.ensure_future(asyncio.to_thread(stage, records, dest, local=local, stop=stop,
                                                  by_content=by_content,
                                                  keep_lines=keep_lines))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(BaseException):  # StagingStopped, or the window was done
            await job
        raise


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """End the staging processes now rather than let shutdown() wait for the windows they
    are sorting (minutes for a big day, past a `docker stop`'s grace): a window cut short
    leaves only its run folder and .part file, which the next run removes and stages
    again. Python 3.11's executor has no public way to do this (3.14's terminate_workers)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            process.terminate()


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread for the block, and so in the processes it starts
    (a blocked signal stays blocked across fork and exec). Ctrl-C reaches the whole process
    group: a spawned staging worker printed a KeyboardInterrupt traceback of its own while
    this process stopped the run (it ends its workers, with SIGTERM). A Ctrl-C during the
    block is delivered here when it ends."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _staging_pool(files: list[SourceFile]) -> ProcessPoolExecutor | None:
    """Worker processes for staging, when there is enough data and more than one core."""
    workers = min(POOL_WORKERS, len(files), usable_cores())
    if workers < 2 or _total_bytes(files) < POOL_MIN_BYTES:
        return None
    # spawn, not fork: this process has threads (asyncio's executor) and fork copies locks
    return ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent,
                               initargs=(os.getpid(),),
                               mp_context=multiprocessing.get_context("spawn"))


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _total_bytes(files: list[SourceFile]) -> int:
    total = 0
    for f in files:
        try:
            total += (f.size if f.size is not None else int(f.fs.size(f.url))
                      if f.fs is not None else os.path.getsize(f.url))
        except (OSError, TypeError, ValueError):
            continue  # unknown size: the reader reports an unreadable file itself
        if total >= POOL_MIN_BYTES:
            break
    return total


def local_zone(config: Config) -> LocalZone | None:
    """A legacy project's zones (its times are local wall clock), for staging's sort."""
    m = config.mixpanel
    if not m.legacy_time:
        return None
    return m.timezone, tuple((c.since.isoformat(), c.timezone) for c in m.timezone_changes)


def inputs_not_in_run(config: Config, ledger: Ledger,
                       storage_options: dict[str, Any] | None) -> list[str]:
    """Files the sources' paths and globs match now that the run's windows do not hold
    (added to the folder since the run started): a run keeps the windows it started with
    (its identity graph and batches are theirs), so these are named, not taken in."""
    if not config.source.files:
        return []  # Export API days are fixed by from/to, which the fingerprint holds
    try:
        planned = plan_windows(config, storage_options)
    except (Mp2AmpError, OSError):  # an input gone since is the staging's to report
        return []
    known = {w.window_id for w in ledger.windows()}
    as_window = locator(config, ledger, back=True)  # a project folder moved whole
    return [window_id for window_id, _, _ in planned if as_window(window_id) not in known]
