"""The S3-import sink's output folder between attempts and runs (``migrate`` with
``[amplitude] output_dir``): import files are named per attempt (``mp2amp-a<N>-*``), so a
resume removes the earlier attempts' files, and a folder holding another migration's
files is refused at a run's first attempt."""

from __future__ import annotations

from typing import Any

from mp2amp.errors import TerminalError


def refuse_another_runs_files(target: str, storage_options: dict[str, Any] | None) -> None:
    """A run's first attempt into a folder that holds another migration's import files
    stops: file names are per attempt, not per run, so it would overwrite that run's
    converter config (whose pattern names that run's files) and its resumes would delete
    that run's files (``remove_earlier_attempts``)."""
    import fsspec

    from mp2amp.load.s3sink import CONVERTER_NAME

    fs, root = fsspec.core.url_to_fs(target, **(storage_options or {}))
    base = root.rstrip("/")
    try:
        found = [*fs.glob(f"{base}/mp2amp-a*-*.json.gz"), *fs.glob(f"{base}/{CONVERTER_NAME}")]
    except FileNotFoundError:  # no folder yet
        return
    if found:
        raise TerminalError(
            f"the output folder {target} already holds the import files of another migration "
            f"({len(found)}, e.g. {found[0]}); give each migration its own folder or prefix "
            "(Amplitude's S3 import reads a prefix), or move those files away, then run the "
            "same `mp2amp migrate` command with --resume")


def remove_earlier_attempts(target: str, attempt: int,
                             storage_options: dict[str, Any] | None) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(target, **(storage_options or {}))
    removed: list[str] = []
    for earlier in range(1, attempt):
        # with the hidden .part a kill between copy and rename left (local folders)
        for path in [*fs.glob(f"{root.rstrip('/')}/mp2amp-a{earlier}-*.json.gz"),
                     *fs.glob(f"{root.rstrip('/')}/.mp2amp-a{earlier}-*.json.gz.part")]:
            fs.rm(path)
            removed.append(str(path))
    return removed
