"""The work folder's ``staged/`` is mp2amp's: a marker file beside it (in the work folder,
so listings of ``staged/`` hold only staged copies), written when a run takes the folder,
says so, and only such a folder is cleaned of leftovers.

Why: a run removes the files of its own naming that no window refers to (the rounds of a
big merge a kill left, the files a merge replaced). With ``workdir = "."`` a folder of the
user's own called ``staged`` may hold files named like ours (hourly dumps such as
``events-2024010100.jsonl``: ten digits are hex too); without the marker they would be
deleted. A run never starts in such a folder: it names the files and stops.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mp2amp.errors import TerminalError
from mp2amp.ledger import WindowRow

MARKER = ".mp2amp-staged"


def marker(staged: Path) -> Path:
    return staged.parent / MARKER
# what a killed run leaves before its first window is staged: a window's half-written
# copy and its sort runs' folder (an mp2amp from before the marker left them unmarked)
_TRANSIENT_SUFFIX = ".part"
_TRANSIENT_PREFIX = ".stage-"


def foreign_files(staged: Path) -> list[str]:
    """The names in ``staged`` that show it is not mp2amp's: any entry, when the folder
    carries no marker, except a killed run's half-written copies. Empty when the folder
    is missing, marked or holds only those."""
    try:
        if marker(staged).is_file():
            return []
        names = sorted(p.name for p in staged.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return [] if not staged.exists() else [staged.name]
    return [n for n in names
            if not (n.endswith(_TRANSIENT_SUFFIX) or n.startswith(_TRANSIENT_PREFIX))]


def refuse_foreign(staged: Path, listed: list[str]) -> None:
    shown = ", ".join(listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
    raise TerminalError(
        f"{staged} holds files mp2amp did not write ({shown}); mp2amp stages its copies "
        "there and removes files named like its own: move those files elsewhere, or set "
        "[run] workdir to another folder, and run again (nothing was read or sent)")


def check_new_run(staged: Path) -> None:
    """Before a new run makes its work folder: stop if ``staged`` is the user's own."""
    listed = foreign_files(staged)
    if listed:
        refuse_foreign(staged, listed)


def claim(staged: Path, rows: Iterable[WindowRow]) -> None:
    """Make ``staged`` (if missing) and mark it mp2amp's. An unmarked folder that a window
    of this run's ledger was staged into is an earlier mp2amp's (from before the marker):
    it is marked as it is; any other unmarked folder with files in it is refused."""
    if marker(staged).is_file():
        return
    listed = foreign_files(staged)
    if listed and not any(w.staged_path for w in rows):
        refuse_foreign(staged, listed)
    staged.mkdir(parents=True, exist_ok=True)
    marker(staged).touch()
