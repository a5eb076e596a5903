"""Checks of ``mp2amp migrate`` before any input is read: what a run finds out otherwise
only once it needs it, after hours of Export API queries or staging."""

from __future__ import annotations

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


def check_output_folder(config: Config, ledger: Ledger,
                        storage_options: dict[str, Any] | None) -> None:
    """An S3-import run's output folder, once the run is recorded (a refused one resumes
    into the folder the config names then) and before any window is staged: a bucket
    Amplitude cannot read, one that does not exist or cannot be written (credentials,
    permissions), or another migration's files there, are said now rather than when the
    files are cut. A run whose windows are all written has nothing more to write."""
    target = config.amplitude.output_dir
    windows = ledger.windows()
    if target is None or (windows and all(w.state == "loaded" for w in windows)):
        return
    problems = bucket_problems(str(target))
    if problems:
        raise ConfigError([f"{p}, then run the same `mp2amp migrate` command with --resume"
                           for p in problems],
                          source="amplitude.output_dir")
    probe_output(str(target), storage_options)
    _, run, number = next_attempt(ledger)
    refuse_another_runs_files(str(target), storage_options, run=run, attempt=number)


def planned_windows(config: Config, storage_options: dict[str, Any] | None) -> list[WindowSpec]:
    """A new run's windows: never the import files an S3-import run writes into a folder
    of its inputs (``files = ["."]`` with ``output_dir`` in the project)."""
    found = plan_windows(config, storage_options)
    planned = [spec for spec in found if not is_output_file(spec[0], config.amplitude.output_dir)]
    if found and not planned:
        raise InputError(f"the sources match only the import files mp2amp writes into "
                         f"{config.amplitude.output_dir} ([amplitude] output_dir), which are "
                         "Amplitude's events, not Mixpanel's; set [source] files to the "
                         "Mixpanel exports and run again")
    return planned
