"""The work folder's ``staged/`` is mp2amp's: a marker file beside it (in the work folder,
so listings of ``staged/`` hold only staged copies), written when a run takes the folder,
says so, and only such a folder is cleaned of leftovers.

Why: a run removes the files of its own naming that no window refers to (the rounds of a
big merge a kill left, the files a merge replaced). With ``workdir = "."`` a folder of the
user's own called ``staged`` may hold files named like ours (hourly dumps such as
``events-2024010100.jsonl``: ten digits are hex too); without the marker they would be
deleted. A run never starts in such a folder: it names the files and stops.

Which files are a run's own is judged by name against the run's windows (a window's copy,
the files its merges and a kill leave), never by mp2amp's naming alone: the user's
``dump.json.part`` or ``events-2024010100.jsonl`` matches that naming too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mp2amp.errors import TerminalError
from mp2amp.ledger import WindowRow
from mp2amp.pipeline.staged_names import own_file, sort_runs_folder, window_stems

MARKER = ".mp2amp-staged"


def marker(staged: Path) -> Path:
    return staged.parent / MARKER


def foreign_files(staged: Path, window_ids: Iterable[str]) -> list[str]:
    """The names in ``staged`` that no window of ``window_ids`` could have left: empty
    when the folder is missing or holds only those windows' files."""
    stems = window_stems(window_ids)
    if not staged.exists():  # nor its work folder, maybe: making that one says what is wrong
        return []
    if not staged.is_dir():
        return [staged.name]
    entries = sorted(staged.iterdir())
    listed = []
    for path in entries:
        if own_file(path.name, stems) and path.is_file():
            continue
        if sort_runs_folder(path):  # the same test as the leftovers' removal
            continue
        listed.append(path.name)
    return listed


def refuse_foreign(staged: Path, listed: list[str]) -> None:
    shown = ", ".join(listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
    raise TerminalError(
        f"{staged} holds files mp2amp did not write ({shown}); mp2amp stages its copies "
        "there and removes files named like its own: move those files elsewhere, or set "
        "[run] workdir to another folder, and run again (nothing was read or sent)")


def check_new_run(staged: Path, window_ids: Iterable[str]) -> None:
    """Before a new run (no ledger) makes its work folder: stop if ``staged`` holds files
    its windows could not have left. A marker without its ledger proves nothing (the
    user may have emptied a finished run's folder and reused the name), so it is not
    read here."""
    listed = foreign_files(staged, window_ids)
    if listed:
        refuse_foreign(staged, listed)


def claim(staged: Path, rows: Iterable[WindowRow]) -> None:
    """Make ``staged`` (if missing) and mark it mp2amp's. An unmarked folder is taken when
    it holds only files of the ledger's windows (a killed run's, of an mp2amp from before
    the marker, even a copy renamed into place before its window was recorded), or when a
    window was recorded as staged into it (that mp2amp used the folder); any other
    unmarked folder with files in it is refused."""
    if marker(staged).is_file():
        return
    rows = list(rows)
    listed = foreign_files(staged, (w.window_id for w in rows))
    if listed and not any(w.staged_path for w in rows):
        refuse_foreign(staged, listed)
    staged.mkdir(parents=True, exist_ok=True)
    marker(staged).touch()
