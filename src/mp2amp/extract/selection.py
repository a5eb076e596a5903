"""Which files of a folder or a glob's matches are inputs: a folder's event (or table)
files by the Data Pipelines rules, a glob's matches by the same rules (``files``'s
expansion of the paths it is given, local and remote)."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable

from mp2amp.errors import InputError
from mp2amp.extract.localtree import events_folder_test, layout_paths
from mp2amp.extract.pipelines import (
    glob_left_out,
    select_event_files,
    select_table_files,
    unfinished_slices,
)

log = logging.getLogger("mp2amp.extract")


class EmptyFolder(InputError):
    """A folder without input files: refused when named, passed over when a glob matched
    it (an hour of a Data Pipelines tree without events holds its marker alone)."""


def only_empty(path: str, every_file: bool, empty: list[str]) -> InputError:
    shown = ", ".join(empty[:5]) + (" and more" if len(empty) > 5 else "")
    return InputError(f"{path} matches only folders without {'data' if every_file else 'event'}"
                      f" files ({shown}); check the pattern and run again")


def selected(root: str, rels: list[str], every_file: bool, what: str,
             shown_as: Callable[[str], str] = str, local: str | None = None,
             slices: Slices | None = None) -> list[str]:
    """The files of a directory listing to read (relative to ``root``, its full path or
    key), or ``InputError`` (``EmptyFolder`` when it holds no data at all: markers, hidden
    or ``_`` files only); legacy pipeline slices that look unfinished are named (as
    ``shown_as`` gives a path: a bucket's with its s3:// or gs://), at once or, with
    ``slices``, once all the folders of a path are listed. ``local``: the folder as named,
    when local (its layout is judged where its links lead)."""
    if every_file:
        files = select_table_files(rels)
        if not files:
            raise EmptyFolder(f"{what} contains no files (only markers or hidden files); "
                              "check the path")
        return files
    files = select_event_files(rels, root,
                               None if local is None else events_folder_test(local))
    if not files:  # data not named as events (``part-00000`` outside a pipeline tree):
        # refused even when a glob matched the folder, never passed over unsaid; profiles,
        # identity mappings and name maps are no events to refuse the folder for
        data = any(glob_left_out(r, False) is None for r in select_table_files(rels))
        kind = InputError if data else EmptyFolder
        raise kind(f"{what} contains no event files (.json, .jsonl, .ndjson or .gz "
                   "files, or a Data Pipelines mp_master_event tree); check the path")
    check = slices or Slices(shown_as, str if local is None else layout_paths())
    check.add(root, files, rels)
    if slices is None:
        check.warn()
    return files


class Slices:
    """The legacy slices of the folders one input path expands to, judged together: a
    glob matching each hour folder alone saw no other hour's ``complete`` marker."""

    def __init__(self, shown_as: Callable[[str], str], layout: Callable[[str], str]) -> None:
        self._shown_as, self._layout = shown_as, layout
        self._files: dict[str, None] = {}
        self._listing: dict[str, None] = {}

    def add(self, root: str, files: list[str], rels: list[str]) -> None:
        self._files.update(dict.fromkeys(f"{root}/{f}" for f in files))
        self._listing.update(dict.fromkeys(f"{root}/{r}" for r in rels))

    def add_matched(self, files: list[str], found: list[str]) -> None:
        """Files a glob matched themselves (``day/*/*``), with all it matched: the hours'
        ``complete`` markers are among them, left out of the inputs but not of the check."""
        self._files.update(dict.fromkeys(files))
        self._listing.update(dict.fromkeys(found))

    def warn(self) -> None:
        unfinished = unfinished_slices(list(self._files), list(self._listing), self._layout)
        if not unfinished:
            return
        shown = ", ".join(map(self._shown_as, unfinished[:10])) + (
            f" and {len(unfinished) - 10} more" if len(unfinished) > 10 else "")
        log.warning(
            "legacy pipeline slice(s) without their 'complete' marker, while other slices "
            "have one: %s. Mixpanel writes the marker when a slice is finished, so these may "
            "still be being written: they are read as they are now, and what is written "
            "after is not. To migrate such a slice whole, stop, wait for its marker and run "
            "again, or leave it out of the inputs and migrate it once the marker is there", shown)


def glob_inputs(pattern: str, found: list[str], every_file: bool, shown: str | None = None,
                shown_as: Callable[[str], str] = str,
                is_folder: Callable[[str], bool] = os.path.isdir) -> list[str]:
    """The glob's matches that are inputs by a folder's rules (``glob_left_out``); when
    there are none, ``InputError`` naming what was left out and why (``ls`` shows them:
    "no file matches" sent people looking for a typo)."""
    parts = pattern.replace(os.sep, "/").split("/")
    literal = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    kept, left_out, whys = [], [], []
    for match in found:
        why = glob_left_out("/".join(match.replace(os.sep, "/").split("/")[literal:]),
                            every_file, parts[literal:], is_folder(match))
        if why is None:
            kept.append(match)
        else:
            left_out.append(f"{shown_as(match)} ({why})")
            whys.append(why)
    if not kept:
        more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        # only a '_' file is worth naming: a marker holds nothing, profiles are no events
        todo = ("Name a file to read it anyway, or change the pattern" if
                any("'_'" in why for why in whys) else "Change the pattern")
        raise InputError(f"{shown or pattern} matches only what is left out of the inputs by "
                         f"rule: {'; '.join(left_out[:5])}{more}. {todo}, and run again")
    return kept
