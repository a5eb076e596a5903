"""Which files in a work folder are mp2amp's own: a window's staged copy and what its
staging and merges leave in ``staged/``, and the work folder's own entries.

Why by the run's windows and never by mp2amp's naming alone: with ``workdir = "."`` the
user's own files sit beside (or in) ours, and names such as ``dump.json.part``,
``.stage-backup/`` or ``events-2024010100.jsonl`` (ten digits are hex too) match that
naming; a resume removed them as leftovers. Why only named entries of a work folder are
kept out of the inputs: with ``workdir = "."`` and ``files = ["exports"]`` (or the inputs'
own folder as the work folder) every input is under the work folder, and all were left
out: the run planned no window and ended "balanced" with nothing sent.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from mp2amp.ledger import WindowRow
from mp2amp.pipeline.staging import DIGEST

# the names mp2amp gives files in staged/: a window's (``staged_path``), a merged one (and
# its placeholders), the rounds of a big merge, each while written (.part)
STAGED_NAME = re.compile(
    r".+-[0-9a-f]{10}(\.merged(-away)?)*\.jsonl(\.round[0-9]+)*(\.part)?")
# the same, group 1 being the window's stem (``staged_path``'s)
_OWN_FILE = re.compile(r"(.+-[0-9a-f]{10})(?:\.merged(?:-away)?)*\.jsonl"
                       r"(?:\.round[0-9]+)*(?:\.part)?")
# the sort runs' folder a window's staging makes (tempfile.mkdtemp(prefix=".stage-")), and
# the runs in it (staging._write_run)
SORT_RUNS = re.compile(r"\.stage-[a-z0-9_]{8}")
_SORT_RUN = re.compile(r"run-[0-9]{5,}")
# a work folder's own entries: folders (all they hold) and files
WORK_FOLDERS = frozenset({"staged", "scratch", "export"})
WORK_FILES = frozenset({"dead-letters.jsonl", "dead-letters.jsonl.part", "migrate.lock",
                        ".mp2amp-staged", "ledger.sqlite", "ledger.sqlite-wal",
                        "ledger.sqlite-shm", "ledger.sqlite-journal"})


def staged_path(workdir: Path, window_id: str) -> Path:
    """A readable, collision-free file name for a window's staged records."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", window_id)[-80:]
    digest = hashlib.sha1(window_id.encode()).hexdigest()[:10]
    return workdir / "staged" / f"{slug}-{digest}.jsonl"


def window_stems(window_ids: Iterable[str]) -> set[str]:
    return {staged_path(Path(), w).stem for w in window_ids}


def own_file(name: str, stems: set[str]) -> bool:
    """Whether a file named ``name`` in staged/ is one the windows of ``stems`` could
    have left (a copy, a merge's files, a big merge's rounds, a copy being written)."""
    own = _OWN_FILE.fullmatch(name)
    return own is not None and own.group(1) in stems


def sort_runs_folder(path: Path) -> bool:
    """A folder staging made for its sorted runs: mkdtemp's exact name, only runs in it."""
    if not (SORT_RUNS.fullmatch(path.name) and path.is_dir() and not path.is_symlink()):
        return False
    try:
        return all(_SORT_RUN.fullmatch(p.name) for p in path.iterdir())
    except OSError:
        return False


def remove_leftovers(staged: Path, rows: list[WindowRow]) -> None:
    """A run killed while staging leaves its sorted runs and a ``.part`` file behind (as
    big as the window); its window is still pending and is staged again from scratch. One
    killed while merging leaves the rounds of a big merge, or the files a merge replaced
    (the ledger already pointed at the merged one). Those files of the run's windows that
    no window refers to are removed; any other file is left as it is. So is the copy of
    a window staged before and pending again under its own name, or its merged file's
    name: the user restored it, as a stop on its gone source says (a window whose copy is
    gone has no staged path)."""
    if not staged.is_dir():
        return
    used = {Path(w.staged_path).name for w in rows if w.staged_path}
    again = [staged_path(Path(), w.window_id) for w in rows
             if w.state == "pending" and (w.records or w.counts or DIGEST in w.spec)]
    # a merged file restored under its name (as a stop on a gone part file says): the
    # resume checks it and points its group back at it (``restage._restored_merges``)
    used |= {p.name for p in again} | {p.stem + ".merged.jsonl" for p in again}
    stems = window_stems(w.window_id for w in rows)
    for path in staged.iterdir():
        if sort_runs_folder(path):
            shutil.rmtree(path, ignore_errors=True)
        elif (path.name not in used and own_file(path.name, stems) and path.is_file()
              and not path.is_symlink()):
            path.unlink(missing_ok=True)


def work_entry(relative: Path) -> bool:
    """Whether ``relative`` (a path inside a work folder) is the work folder's own."""
    parts = relative.parts
    if not parts:
        return False
    return parts[0] in WORK_FOLDERS if len(parts) > 1 else parts[0] in WORK_FILES
