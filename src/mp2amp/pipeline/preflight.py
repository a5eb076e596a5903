"""Checks of ``mp2amp migrate`` before any input is read: what a run finds out otherwise
only once it needs it, after hours of Export API queries or staging."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from mp2amp.config import Config
from mp2amp.errors import ConfigError, InputError
from mp2amp.ledger import Ledger
from mp2amp.load.s3target import bucket_problems, probe_output
from mp2amp.pipeline.import_folder import (
    is_output_file,
    next_attempt,
    refuse_another_runs_files,
)
from mp2amp.pipeline.windows import WindowSpec, plan_windows

# the probe's answer is awaited this long: botocore's or gcsfs's retries on a storage that
# does not answer would otherwise hold the run (and a stop) for many minutes
PROBE_TIMEOUT = 300.0


def check_output_folder(config: Config, ledger: Ledger,
                        storage_options: dict[str, Any] | None) -> None:
    """An S3-import run's output folder, once the run is recorded (a refused one resumes
    into the folder the config names then) and before any window is staged: a bucket
    Amplitude cannot read, one that does not exist or cannot be written (credentials,
    permissions), or another migration's files there, are said now rather than when the
    files are cut. A run whose windows are all written has nothing more to write."""
    checks = _output_checks(config, ledger, storage_options)
    if checks is not None:
        checks()


async def check_output_folder_async(config: Config, ledger: Ledger,
                                    storage_options: dict[str, Any] | None,
                                    timeout: float = PROBE_TIMEOUT) -> None:
    """``check_output_folder`` with its storage calls in a thread of their own: a stop is
    honoured at once, and a storage that does not answer within ``timeout`` seconds is
    said, naming the folder. (The ledger is read here, on the caller's thread.)"""
    checks = _output_checks(config, ledger, storage_options)
    if checks is None:
        return
    try:
        await asyncio.wait_for(_in_daemon_thread(checks), timeout)
    except TimeoutError:
        raise InputError(
            f"the output folder {config.amplitude.output_dir} ([amplitude] output_dir) did "
            f"not answer within {timeout:.0f} seconds while mp2amp checked that it can be "
            "listed and written; check the connection, endpoint and credentials of that "
            "storage, then run the same `mp2amp migrate` command with --resume") from None


def _output_checks(config: Config, ledger: Ledger,
                   storage_options: dict[str, Any] | None) -> Callable[[], None] | None:
    """The name checks, done; the storage checks to do (None: nothing to check)."""
    target = config.amplitude.output_dir
    windows = ledger.windows()
    if target is None or (windows and all(w.state == "loaded" for w in windows)):
        return None
    problems = bucket_problems(str(target))
    if problems:
        raise ConfigError([f"{p}, then run the same `mp2amp migrate` command with --resume"
                           for p in problems],
                          source="amplitude.output_dir")
    _, run, number = next_attempt(ledger)

    def storage_checks() -> None:
        probe_output(str(target), storage_options)
        refuse_another_runs_files(str(target), storage_options, run=run, attempt=number)
    return storage_checks


async def _in_daemon_thread(work: Callable[[], None]) -> None:
    """``work()`` in a daemon thread: unlike ``asyncio.to_thread``'s pool, one that hangs
    holds neither a stop nor the interpreter's exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():  # given up on (timeout, stop)
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except BaseException as exc:  # handed to the waiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="mp2amp-output-check", daemon=True).start()
    await done


def planned_windows(config: Config, storage_options: dict[str, Any] | None) -> list[WindowSpec]:
    """A new run's windows: never the import files an S3-import run writes into a folder
    of its inputs (``files = ["."]`` with ``output_dir`` in the project, or an earlier
    run's import folder there)."""
    found = plan_windows(config, storage_options)
    planned = [spec for spec in found if not is_output_file(spec[0], config.amplitude.output_dir)]
    if found and not planned:
        raise InputError(f"the sources match only the import files mp2amp writes for "
                         f"Amplitude's S3 import (e.g. {found[0][0]}), which are Amplitude's "
                         "events, not Mixpanel's; set [source] files to the Mixpanel exports "
                         "and run again")
    return planned
