"""The work folder of ``mp2amp migrate``: made (or refused) before anything is written in it.

Why a name that is not UTF-8 is refused: the ledger (SQLite) stores UTF-8 text only, so the
paths it records under such a folder (the staged copies) are stored escaped, and a later
step opens a file that does not exist. Refused up front, nothing is left half done.
"""

from __future__ import annotations

import os
from pathlib import Path

from mp2amp.errors import TerminalError


def shown(path: Path) -> str:
    """``path`` as a message can show it, its bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_utf8_name(workdir: Path) -> None:
    """Refuse a work folder whose path (as the ledger would record it: absolute) is not
    UTF-8."""
    try:
        str(workdir.absolute()).encode("utf-8")
    except UnicodeEncodeError:
        raise TerminalError(
            f"the work folder {shown(workdir.absolute())} has a name that is not UTF-8, which "
            "the ledger cannot record; nothing was written: rename it (or a parent folder) to "
            "a UTF-8 name, or set [run] workdir to a folder whose path is UTF-8, then run the "
            "same command again") from None


def check_utf8_output(output_dir: str | None) -> None:
    """Refuse an S3-import output folder whose name is not UTF-8: the ledger records it."""
    if output_dir is None:
        return
    try:
        output_dir.encode("utf-8")
    except UnicodeEncodeError:
        raise TerminalError(
            f"[amplitude] output_dir {shown(Path(output_dir))} has a name that is not UTF-8, "
            "which the ledger cannot record; nothing was written: rename it to a UTF-8 name "
            "or set [amplitude] output_dir to a folder whose path is UTF-8, then run the same "
            "command again") from None


def make_work_folder(workdir: Path, output_dir: str | None = None) -> None:
    """Create ``workdir`` (with its parents) after checking its name (and the S3-import
    output folder's, which the ledger records too)."""
    check_utf8_name(workdir)
    check_utf8_output(output_dir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "it is a file, not a folder" if workdir.is_file() else exc.strerror or str(exc)
        raise TerminalError(f"cannot create the work folder {workdir}: {why}; "
                            "set [run] workdir to a writable folder") from None


def check_no_dead_letters(workdir: Path) -> None:
    """Before a new run (no ledger): refuse a ``dead-letters.jsonl`` already in the work
    folder. The run renders its dead letters to that file, replacing it: with the work
    folder a $HOME-like folder it was the user's own file, overwritten without a word (an
    earlier run's, its ledger gone, is named by ``run_start.holds_run_files``)."""
    dead = workdir / "dead-letters.jsonl"
    if dead.exists() or dead.is_symlink():
        raise TerminalError(
            f"{dead} exists, and a new run writes its dead letters to that file, replacing "
            "it; nothing was read or sent: move that file elsewhere (or delete it if it is "
            "an old run's), or set [run] workdir to another folder, and run again")
