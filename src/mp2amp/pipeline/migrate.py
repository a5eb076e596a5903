"""``mp2amp migrate``: export -> identity -> transform -> load, journaled and resumable.

Stages, each recorded in the ledger (``workdir/ledger.sqlite``):

1. extract   every window (an Export API day, or an input file) is staged to a local file
             sorted by event time; ``extracted`` once the file is complete.
2. identity  one pass over all staged windows builds the identity graph (rebuilt on every
             run from the staged files: cheap, and never stale).
3. load      windows in order: transform (pure) -> sessions/dedup -> uploader. Batches are
             ``sent`` before their request and ``done`` after Amplitude's 200; a window is
             ``loaded`` when all its batches are done. Windows already loaded are replayed
             through the transform only, so that sessions and dedup state are as before.
4. check     per window: read = sent + rejected + skipped + duplicate (+ identity records
             and parked events, shown apart). A window that does not add up fails the run.

Resume (``--resume``) after a crash at any instant: staged windows are not fetched again,
done batches are not sent again, batches that were in flight are sent again with the same
insert_ids (deterministic batch ids; Amplitude deduplicates), parked events are retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from mp2amp.config import Config
from mp2amp.errors import ConfigError, TerminalError
from mp2amp.identity import IdentityGraph
from mp2amp.ledger import Ledger
from mp2amp.load.s3sink import S3ImportSink, shown_path
from mp2amp.load.settings import UploadSettings
from mp2amp.load.uploader import Uploader
from mp2amp.pipeline import dead_letters, stagedfolder, stopping
from mp2amp.pipeline.accounting import totals, window_counts
from mp2amp.pipeline.api_key_binding import (
    bind_api_key,
    rebind_api_key,
    unbinding_a_refused_key,
)
from mp2amp.pipeline.attempts import finished, record_attempt, record_start, stopped_by
from mp2amp.pipeline.budgets import stage_budgets
from mp2amp.pipeline.changed_copy import check_copy_text, writes_again
from mp2amp.pipeline.dead_letters import RejectRow, write_dead_letters
from mp2amp.pipeline.diskspace import stop_on_storage_errors
from mp2amp.pipeline.export_settings import mixpanel_settings as _mixpanel_settings
from mp2amp.pipeline.extraction import Extraction
from mp2amp.pipeline.fingerprint import finish_graph, run_insert_id_scheme
from mp2amp.pipeline.import_folder import (
    WROTE_KEY,
    begin_sink_attempt,
    close_sink,
    is_output_file,
)
from mp2amp.pipeline.memory import fewer_collections, release_free_memory
from mp2amp.pipeline.observer import PARKED_KEY, LedgerObserver
from mp2amp.pipeline.overlaps import load_order, merge_overlapping
from mp2amp.pipeline.parked import replay_parked
from mp2amp.pipeline.preflight import check_output_folder_async, planned_windows
from mp2amp.pipeline.progress import Counters, NullReporter, Reporter, Ticker, ticking
from mp2amp.pipeline.restage import (
    check_restaged,
    remerge_restaged,
    restage_missing,
    stop_on_changed_copy,
    stop_on_damaged_files,
)
from mp2amp.pipeline.result import EXIT_OK, EXIT_PARKED, EXIT_UNBALANCED, MigrateResult
from mp2amp.pipeline.run_start import holds_run_files, open_ledger, plan_or_check
from mp2amp.pipeline.scratch import scratch_folder
from mp2amp.pipeline.settling import deliverable, replayed_values
from mp2amp.pipeline.staged_identity import read_staged_identity_timed
from mp2amp.pipeline.status import former_default_hint
from mp2amp.pipeline.timecheck import check_before_load
from mp2amp.pipeline.transform_worker import (
    ChunkTransformer,
    Settler,
)
from mp2amp.pipeline.windows import (
    extract_pending,
    inputs_changed,
    inputs_not_in_run,
    locator,
    remote_inputs_changed,
)
from mp2amp.pipeline.workfolder import check_no_dead_letters, make_work_folder
from mp2amp.pipeline.worklock import WorkLock
from mp2amp.transform.dedup import Deduper
from mp2amp.transform.events import Transformer
from mp2amp.transform.offline import user_id_predicate
from mp2amp.transform.sessions import Sessionizer
from mp2amp.transform.stream import TransformSummary

log = logging.getLogger("mp2amp.migrate")
__all__ = ["EXIT_OK", "EXIT_PARKED", "EXIT_UNBALANCED", "MigrateResult", "ledger_path",
           "migrate", "migrate_async", "upload_settings"]

# Events between returning freed heap to the OS (see memory.py). Every 4,096 rather than
# 25,600: main's median PSS through a 1M load phase 82 -> 78 MB, its peak 93 -> 85 MB, for
# ~0.4 us of CPU per event (a trim walks the heap).
_TRIM_EVERY = 4096


def ledger_path(config: Config) -> Path:
    return config.run.workdir / "ledger.sqlite"


_MISSING_API_KEY = ("amplitude: set AMPLITUDE_API_KEY in the environment (the project's API "
                    "key; it is never read from the config file)")
_MISSING_SOURCE = "source: give from_date and to_date (Export API) or files"


def upload_settings(config: Config, overrides: Mapping[str, Any] | None = None, *,
                    allow_missing_key: bool = False) -> UploadSettings:
    amp = config.amplitude
    if amp.api_key is None and allow_missing_key:  # S3-import files need no key
        return UploadSettings(api_key="unused", concurrency=config.run.concurrency)
    if amp.api_key is None:
        raise ConfigError([_MISSING_API_KEY], source=str(config.path) if config.path else None)
    kwargs: dict[str, Any] = {
        "api_key": amp.api_key.reveal(), "endpoint": amp.endpoint, "region": amp.region,
        "api_host": amp.api_host, "concurrency": config.run.concurrency,
        "max_bytes": amp.batch_max_bytes, "min_id_length": amp.min_id_length,
        "project_throttle_wait": amp.project_throttle_wait, "gzip": amp.gzip,
    }
    kwargs.update(overrides or {})
    return UploadSettings(**kwargs)


def migrate(
    config: Config,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    storage_options: dict[str, Any] | None = None,
    mixpanel_overrides: Mapping[str, Any] | None = None,
    upload_overrides: Mapping[str, Any] | None = None,
    new_api_key: bool = False,
) -> MigrateResult:
    """Run (or resume) the migration described by ``config``; see the module docstring.
    Ctrl-C and SIGTERM stop it at its next ``await`` (``KeyboardInterrupt``, SIGTERM's
    being ``stopping.Terminated``); ``resume=True`` then goes on from there.
    ``new_api_key``: the run goes on under the key set now (the same project's, regenerated)."""
    with stop_on_storage_errors(config.run.workdir):
        return stopping.run(migrate_async(
            config, resume=resume, reporter=reporter, storage_options=storage_options,
            mixpanel_overrides=mixpanel_overrides, upload_overrides=upload_overrides,
            new_api_key=new_api_key))


async def migrate_async(
    config: Config,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    storage_options: dict[str, Any] | None = None,
    mixpanel_overrides: Mapping[str, Any] | None = None,
    upload_overrides: Mapping[str, Any] | None = None,
    new_api_key: bool = False,
) -> MigrateResult:
    reporter = reporter or NullReporter()
    counters = Counters()
    try:  # the display is closed on every way out, a run refused by its checks included
        return await _migrate(config, resume, reporter, counters, storage_options,
                              mixpanel_overrides, upload_overrides, new_api_key)
    finally:
        reporter.close(counters)


async def _migrate(
    config: Config,
    resume: bool,
    reporter: Reporter,
    counters: Counters,
    storage_options: dict[str, Any] | None,
    mixpanel_overrides: Mapping[str, Any] | None,
    upload_overrides: Mapping[str, Any] | None,
    new_api_key: bool = False,
) -> MigrateResult:
    if storage_options is None and config.source.storage_options:
        storage_options = dict(config.source.storage_options)
    elif storage_options is not None:  # what the fingerprint lists a remote table with
        config = dataclasses.replace(config, source=dataclasses.replace(
            config.source, storage_options=dict(storage_options)))
    settings = config.transform_settings()  # every config problem before any work
    sink_mode = config.amplitude.output_dir is not None
    workdir = config.run.workdir
    path = ledger_path(config)
    existed = path.exists()
    _check_run_inputs(config, resume, sink_mode, fresh=not existed
                      and not holds_run_files(workdir))
    upload = upload_settings(config, upload_overrides, allow_missing_key=sink_mode)
    if not existed and holds_run_files(workdir):  # deleted, or a copy that left it out
        raise TerminalError(
            f"{path} is missing, while the work folder {workdir} holds an earlier run's "
            "staged copies, downloads or dead letters: put back the whole ledger (with its "
            "ledger.sqlite-wal file) and run with --resume, or start the migration in a new "
            "work folder (events Amplitude already has are dropped only within 7 days)")
    if resume and not existed:
        raise TerminalError(f"nothing to resume: {path} does not exist"
                            f"{former_default_hint(workdir)}; run `mp2amp migrate` without "
                            "--resume to start")
    # a new run's windows before its work folder: a config without sources, or a glob
    # that matches nothing, leaves no empty "in progress" migration behind
    planned = None if existed else planned_windows(config, storage_options)
    if planned is not None:  # a folder of the user's own called staged: before any work folder
        stagedfolder.check_new_run(workdir / "staged", (spec[0] for spec in planned))
        check_no_dead_letters(workdir)  # the user's own file, which the run would replace
    make_work_folder(workdir, None if config.amplitude.output_dir is None
                     else str(config.amplitude.output_dir))
    lock = WorkLock(workdir)
    started = time.time()
    try:
        ledger, known = open_ledger(path, resume)  # never a damaged ledger from zero
    except BaseException:
        lock.release()
        raise
    if known is not None and not resume:
        # refused before any work, and not recorded: `status` keeps how the run ended
        ledger.close()
        lock.release()
        raise TerminalError(
            f"the work folder {workdir} already holds a migration; continue it with "
            "`mp2amp migrate --resume`, or set [run] workdir to a new folder")
    try:
        record_start(ledger, started)
        plan_or_check(ledger, config, upload, known, storage_options, planned)
        settings = dataclasses.replace(settings, insert_id_scheme=run_insert_id_scheme(ledger))
        stagedfolder.claim(workdir / "staged", ledger.windows())  # before anything is staged
        if new_api_key and known is not None and not sink_mode:  # regenerated, same project
            offered = rebind_api_key(ledger, upload.api_key)
        else:  # another key is another Amplitude project: refused once a batch went under one
            offered = None if sink_mode else bind_api_key(ledger, upload.api_key)
        restaged = restage_missing(ledger, workdir)  # staged files someone deleted: staged again
        not_in_run = [path for path in inputs_not_in_run(config, ledger, storage_options)
                      if not is_output_file(path, config.amplitude.output_dir)] if known else []
        changed_inputs = (inputs_changed(ledger, locator(config, ledger))
                          + remote_inputs_changed(ledger, storage_options)) if known else []
        mixpanel = _mixpanel_settings(config, mixpanel_overrides)
        await check_output_folder_async(config, ledger, storage_options)  # before any window is staged
        # the display moves with time, not only with records: uploads, retries and
        # backoff waits after the last record is transformed take most of a slow load
        async with ticking(reporter, counters) as ticker:
            # Extraction runs on while the identity pass reads the windows already staged,
            # in window order: the identity pass waits for the next window only when it
            # is ahead.
            staged = {w.window_id: asyncio.Event() for w in ledger.windows()
                      if w.state == "pending"}
            extraction = asyncio.ensure_future(extract_pending(
                config, ledger, mixpanel, storage_options=storage_options, counters=counters,
                reporter=reporter, on_staged=lambda window_id: staged[window_id].set()))
            try:
                result = await _identity_and_load(config, settings, upload, ledger, counters,
                                                  reporter,
                                                  Extraction(extraction, staged, restaged),
                                                  storage_options, ticker, offered)
            finally:
                if not extraction.done():
                    extraction.cancel()
                await asyncio.gather(extraction, return_exceptions=True)
        result.resumed = resume
        result.not_in_run, result.changed_inputs = not_in_run, changed_inputs
        record_attempt(ledger, started, finished(result.exit_code))
        return result
    except BaseException as exc:
        record_attempt(ledger, started, stopped_by(exc, workdir))
        dead_letters.write_dead_letters_after_stop(ledger, workdir)  # rejected so far
        raise
    finally:
        ledger.close()
        lock.release()


def _check_run_inputs(config: Config, resume: bool, sink_mode: bool, fresh: bool) -> None:
    """The credentials and the source a run needs, every missing one in one report (they
    came one run at a time). ``fresh``: a new run reaches the source check (planned_windows)
    only without a ledger or an earlier run's files, which are refused first."""
    problems: list[str] = []
    if not resume:
        try:
            _check_export_credentials(config)
        except ConfigError as exc:
            problems += exc.problems
    if config.amplitude.api_key is None and not sink_mode:
        problems.append(_MISSING_API_KEY)
    src = config.source
    if fresh and not resume and not src.files and (src.from_date is None or src.to_date is None):
        problems.append(_MISSING_SOURCE)
    if problems:
        raise ConfigError(problems, source=str(config.path) if config.path else None)


def _check_export_credentials(config: Config) -> None:
    """A new Export API run needs Mixpanel credentials: checked before the work folder is
    used (the extraction finds out only after the run is recorded there, and a second try
    was then refused as 'already holds a migration')."""
    src, mp = config.source, config.mixpanel
    if src.files or src.from_date is None:
        return
    problems = []
    if mp.service_account is None and mp.secret is None:
        problems.append("mixpanel: the Export API (source.from_date/to_date) needs "
                        "credentials: set MIXPANEL_SERVICE_ACCOUNT (user:secret) or "
                        "MIXPANEL_SECRET in the environment")
    elif mp.service_account is not None and mp.project_id is None:
        problems.append("mixpanel.project_id: required with a service account "
                        "(MIXPANEL_SERVICE_ACCOUNT); set it to the project's id")
    # Mixpanel answers 400 "to_date cannot be later than today" only when that day is
    # asked, after earlier days used up the hour's queries; and a resume cannot change it.
    # Today as the export reads dates: UTC, or a legacy project's (current) timezone.
    zone = (mp.timezone_changes[-1].timezone if mp.timezone_changes else mp.timezone) \
        if mp.legacy_time else "UTC"
    today = datetime.now(ZoneInfo(zone)).date()
    if src.to_date is not None and src.to_date > today:
        problems.append(f"source.to_date: {src.to_date} is later than today ({today} in "
                        f"{zone}, as the Export API reads dates), which Mixpanel refuses; "
                        "set it to today or earlier")
    if problems:
        raise ConfigError(problems, source=str(config.path) if config.path else None)


async def _identity_and_load(config: Config, settings: Any, upload: UploadSettings,
                             ledger: Ledger, counters: Counters, reporter: Reporter,
                             extraction: Extraction,
                             storage_options: dict[str, Any] | None,
                             ticker: Ticker, key_digest: str | None) -> MigrateResult:
    workdir = config.run.workdir
    windows = ledger.windows()
    budgets = stage_budgets(config.run.memory_budget)
    with scratch_folder(workdir, ledger) as scratch, \
            IdentityGraph(config.mixpanel.id_merge, Path(scratch),
                          memory_budget_ids=budgets.identity_ids,
                          retroactive=config.transform.retroactive,
                          user_id_predicate=user_id_predicate(config.transform.user_id_pattern),
                          table=config.source.identity_table,
                          table_options=storage_options) as graph:
        overlapped = bool(extraction.staged)  # else everything was staged by an earlier run
        # the S3-import sink writes every window again unless all were written: a loaded
        # window's copy is sent again then, and checked as any other (``check_copy_text``)
        written_again = writes_again(ledger, config.amplitude.output_dir, windows)
        if not overlapped:
            counters.begin("identity", sum(w.records for w in windows))
        for w in windows:
            await extraction.ready(w.window_id)
            sums: list[int] = []
            read = _observe_window(graph, _staged_file(ledger, w), sums)
            stop_on_changed_copy(ledger, w.window_id, read, written_again)  # before any is sent
            check_copy_text(ledger, w.window_id, read, sums[0], w.window_id in extraction.staged,
                            written_again)
            if not overlapped:
                counters.done += read
            reporter.update(counters)
            await asyncio.sleep(0)
        await extraction.finished()
        remerge_restaged(ledger)  # merged files that were gone, made again as they were
        check_restaged(ledger, extraction.restaged)
        if config.source.damaged_files == "stop":
            stop_on_damaged_files(ledger)  # this run's, and those a killed run staged
        windows = ledger.windows()  # with every staged path and record count
        times = check_before_load(config, ledger)  # stops before anything more is sent
        # The graph needs no second pass: it decides by event time (ties: the window
        # order, which the merge keeps), so file order and merged order give one graph.
        merged = merge_overlapping(ledger, windows)
        if merged:
            windows = ledger.windows()
        windows = load_order(windows)  # oldest first, whatever the files are called
        records = sum(w.records for w in windows)  # the next phases count records
        identity = finish_graph(graph, ledger, config).as_dict()  # reads the table
        if merged:
            identity["overlapping_windows_merged"] = merged
        ledger.mark_identity([w.window_id for w in windows], identity)

        transformer = Transformer(settings)
        transformer.exclude_merged_users(graph.resolve, graph.shared_device)  # an excluded alias's whole user
        if config.amplitude.output_dir is not None:
            counters.begin("write", records)
            load, values = await _write_import_files(config, windows, ledger, graph,
                                                     transformer, scratch, storage_options,
                                                     counters, reporter)
            rows = window_counts(ledger)
            return MigrateResult(
                workdir=str(workdir), resumed=False, windows=rows, totals=totals(rows),
                identity=identity, load=load, values=values, time_check=times,
                dead_letter_file=str(write_dead_letters(ledger, workdir)))
        key_to_window = {f"w{w.seq}": w.window_id for w in windows}
        key_to_window[PARKED_KEY] = PARKED_KEY
        observer = LedgerObserver(ledger, counters, key_to_window,
                                  on_window_loaded=lambda wid: ledger.mark_loaded(
                                      wid, _counts_of(ledger, wid)),
                                  merged_into=ledger.merged_into())
        settled = DoneBatches(ledger)
        # the windows earlier runs loaded show as done, not as this run's pace (the ETA)
        counters.begin("load", records,
                       done=observer.resume_from(windows, ledger.parked_counts()))
        # the worker is forked first, before this process opens more files and sockets
        with fewer_collections(), \
                ChunkTransformer(graph, transformer, workers=config.run.transform_workers) as chunks, \
                Sessionizer(config.transform.session_gap_minutes * 60_000,
                            memory_budget=budgets.session_devices, spill_dir=scratch) as sessions, \
                Deduper(memory_budget=budgets.dedup_digests, spill_dir=scratch) as dedup:
            up = Uploader(upload, observer=observer, settled_batches=settled)
            with unbinding_a_refused_key(ledger, key_digest, up):  # a wrong key: correctable
                async with up:
                    ticker.sample = lambda: observer.refresh(up.report)
                    await replay_parked(ledger, up)
                    for w in windows:
                        await _load_window(w, f"w{w.seq}", ledger, chunks, sessions, dedup, up,
                                           observer, counters, reporter)
                    report = await up.close()
                    observer.refresh(report)
        values = chunks.stats()  # the worker's counts too: its Transformer is not this one
    rows = window_counts(ledger)
    return MigrateResult(
        workdir=str(workdir), resumed=False, windows=rows, totals=totals(rows),
        identity=identity, load=report.to_dict(), values=values, time_check=times,
        dead_letter_file=str(write_dead_letters(ledger, workdir)))


class DoneBatches:
    """The batches an earlier run finished, for the uploader to skip: looked up by id in
    the ledger (a set of them held a long run's ~500,000 ids). A batch this run finishes
    is never asked about again (its id's sequence number moved on)."""

    def __init__(self, ledger: Ledger) -> None:
        self._done = ledger.is_done_batch

    def __contains__(self, batch_id: object) -> bool:
        return isinstance(batch_id, str) and self._done(batch_id)


def _observe_window(graph: IdentityGraph, staged: Path, sums: list[int] | None = None) -> int:
    """The identity pass over one staged window; returns its lines (``sums``: the CRC-32
    of its bytes is appended)."""
    observe = graph.observe
    read = 0
    for record, seconds in read_staged_identity_timed(staged, sums):
        if record is not None:
            observe(record, seconds)  # by UTC time, as staging sorted it
        read += 1
    return read


def _staged_file(ledger: Ledger, w: Any) -> Path:
    """Where ``w`` is staged (a window staged during this run has its path only now)."""
    if w.staged_path is None:
        w = ledger.window(w.window_id)
    return Path(str(w.staged_path))


def _counts_of(ledger: Ledger, window_id: str) -> dict[str, Any]:
    w = ledger.window(window_id)
    return {} if w is None else w.counts


async def _load_window(w: Any, key: str, ledger: Ledger, chunks: ChunkTransformer,
                       sessions: Sessionizer, dedup: Deduper, up: Uploader,
                       observer: LedgerObserver, counters: Counters,
                       reporter: Reporter) -> None:
    """One window: the pure transform's items (from the worker), then, in record order,
    the stateful half (dedup, sessions; as ``transform_stream`` does it) and the upload.
    A window already loaded is replayed for its dedup and session state only."""
    replay = w.state == "loaded"
    direct = False  # see Ledger.has_transform_rejects
    if not replay:
        ledger.forget_window_outcomes(w.window_id)
        direct = not ledger.has_transform_rejects(w.window_id)
    summary = TransformSummary()
    settle = Settler(dedup, sessions, summary)
    rejects: list[RejectRow] = []
    submit = up.submit_encoded
    since_trim = 0
    submitted = 0  # of the chunk's records: the others are done without Amplitude
    try:  # a stop in a chunk (an await below) lists what it rejected so far
        async for items in chunks.window(Path(str(w.staged_path))):
            for data, event, item in deliverable(items, settle, rejects, w.window_id):
                if replay:
                    continue
                submitted += 1
                if data is not None:
                    device, user = item[4], item[5]
                    await submit(data, device if device and device.__class__ is str else None,
                                 user if user and user.__class__ is str else None,
                                 (item[1], item[2]), key)
                else:  # unserializable: the uploader dead-letters it, with the reason
                    await up.submit(event, (item[2].source, item[2].line), batch_key=key)
            if rejects:  # to the ledger as they come: a day of big rejected records is not held
                if not replay:
                    ledger.stage_window_rejects(rejects, direct=direct)
                rejects.clear()
            since_trim += len(items)
            if since_trim >= _TRIM_EVERY:
                since_trim = 0
                release_free_memory()
            if not replay:  # a replayed window's records count in ``observer.earlier``
                observer.unsent_records += len(items) - submitted
            submitted = 0
            observer.refresh(up.report)
            reporter.update(counters)
            await asyncio.sleep(0)
    except BaseException:
        ledger.keep_rejects_at_stop(rejects, direct=direct)
        raise
    if replay:
        return
    ledger.commit_window_rejects(w.window_id, direct=direct)  # the old ones, in one step
    batches = await up.flush(key)
    counts = summary.as_dict()
    counts["batches"] = batches
    ledger.set_window_counts(w.window_id, counts)
    observer.flushed(w.window_id, batches)


async def _write_import_files(config: Config, windows: list[Any], ledger: Ledger,
                        graph: IdentityGraph, transformer: Transformer, scratch: str,
                        storage_options: dict[str, Any] | None, counters: Counters,
                        reporter: Reporter) -> tuple[dict[str, Any], dict[str, Any]]:
    """The S3-import sink instead of the API: all windows into time-ordered gz files.
    Returns the load report and the transform's (``values``).

    Files appear only as they are complete, but a crashed attempt may have left some: file
    names hold the run's id and the attempt, and a resumed run deletes its own earlier
    attempts' files (never another run's) before it writes everything again, so the target
    holds each event exactly once."""
    target = str(config.amplitude.output_dir)
    if windows and all(w.state == "loaded" for w in windows):
        nothing = {"output_dir": target, "events": 0, "complete": True,
                   "note": "every window was already written by an earlier attempt"}
        return nothing, await replayed_values(config, windows, graph, transformer, scratch,
                                               counters, reporter)
    attempt = begin_sink_attempt(ledger, target, storage_options)
    sink = S3ImportSink(target, run_id=attempt.run_id, storage_options=storage_options,
                        staging_dir=scratch, converter_owner=attempt.converter_owner)
    budgets = stage_budgets(config.run.memory_budget)
    per_window: dict[str, dict[str, Any]] = {}
    counters.phase = "write"
    with fewer_collections(), \
            ChunkTransformer(graph, transformer, workers=config.run.transform_workers) as chunks, \
            Sessionizer(config.transform.session_gap_minutes * 60_000,
                        memory_budget=budgets.session_devices, spill_dir=scratch) as sessions, \
            Deduper(memory_budget=budgets.dedup_digests, spill_dir=scratch) as dedup:
        for w in windows:
            ledger.forget_window_outcomes(w.window_id)
            direct = not ledger.has_transform_rejects(w.window_id)
            summary = TransformSummary()
            settle = Settler(dedup, sessions, summary)
            rejects: list[RejectRow] = []
            try:  # an error in a chunk: its rejects found so far are listed too
                async for items in chunks.window(Path(str(w.staged_path))):
                    for data, event, item in deliverable(items, settle, rejects, w.window_id):
                        if data is not None:
                            sink.check_ids(item[5], item[4])
                            sink.write_encoded(data, item[6])
                            counters.sent += 1
                        elif not sink.write(event, (item[2].source, item[2].line)):
                            # no file can hold it: dead-lettered, as the API path does, not written
                            summary.events_out -= 1
                            rejects.append((item[2].source, item[2].line, w.window_id, "amplitude",
                                            "unserializable", "event is not JSON-serializable",
                                            None, orjson.dumps(repr(event)).decode()))
                    ledger.stage_window_rejects(rejects, direct=direct)  # as _load_window does
                    rejects.clear()
                    counters.done += len(items)
                    reporter.update(counters)
            except BaseException:
                ledger.keep_rejects_at_stop(rejects, direct=direct)
                raise
            ledger.commit_window_rejects(w.window_id, direct=direct)
            counts = summary.as_dict()
            counts["written"] = summary.events_out
            per_window[w.window_id] = counts
    values = chunks.stats()  # the workers' counts too
    # Only now can files be cut (windows may overlap in time): one merge of everything
    # written, in a thread so that the display follows it (a big export takes minutes).
    counters.sent = 0  # from here: events in the import files (their rate, not 0/s)
    counters.begin("files", sink.report.events)

    def merged(n: int) -> None:
        counters.done = counters.sent = n

    ledger.set_meta(WROTE_KEY, str(attempt.number))  # files from here on: the folder is fixed
    report = await close_sink(sink, merged)
    for window_id, counts in per_window.items():  # only now are the events in files
        ledger.mark_loaded(window_id, counts)
    counters.sent = report.events
    shown = functools.partial(shown_path, sink.fs)  # s3://bucket/key, not bucket/key
    return {"output_dir": target, "events": report.events, "attempt": attempt.number,
            "files": [{"path": shown(f.path), "events": f.events, "bytes": f.bytes}
                      for f in report.files],
            "files_removed_from_earlier_attempts": attempt.removed,
            "warnings": report.warnings,
            "converter_config": shown(report.converter_config)}, values
