"""The files of a local input folder, linked subfolders included, each real folder once.

The folder's own tree is listed first, without following links, so that a file keeps the
name it has there; linked folders are then followed only to folders not listed yet
(``in/latest -> 2024-01-05`` adds nothing: its files keep their ``2024-01-05/`` names,
whatever order the filesystem lists names in). A link to a file listed under its own name
adds nothing either (``in/current.jsonl -> days/2024-01-05.jsonl``): window ids must not
follow where a link points today. Hidden and ``_`` folders (Spark's ``_temporary/``), and
for events another table's folder, are never entered: their files are left out anyway,
and a link to ``/`` would list them all. A dangling link or a link loop stops the run
naming it (hidden, ``_`` and, for events, another table's names aside): behind it may be
a day or a year of events.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Callable

from mp2amp.errors import InputError
from mp2amp.extract.pipelines import EVENTS_DIR, NOT_EVENT_DIRS

_LEFT_OUT = (".", "_")  # hidden names and unfinished writes: never listed


def list_tree(root: str, every_file: bool = False) -> list[str]:
    """Every file below ``root`` that a folder's rules may read, relative to it ('/'
    separated); ``InputError`` for a folder that cannot be listed, a dangling link or a
    link loop (hidden and ``_`` names aside)."""
    walker = _Walker(root, every_file)
    real_root = os.path.realpath(root)
    walker.walk("", root, real_root)
    while walker.links:  # after the real tree, so that its names are the ones kept
        rel, path = walker.links.popleft()
        real = os.path.realpath(path)
        if every_file or not _in_other_table(real, real_root):
            walker.walk(rel, path, real)
    return walker.listed()


def _in_other_table(real: str, real_root: str) -> bool:
    """Whether a linked folder really lies in another table's folder (``mp_people_data``
    or below it), judged below the folder it shares with the input folder: where the
    input folder itself lies is the user's choice."""
    shared = os.path.commonpath([real, real_root])
    below = os.path.relpath(real, shared).replace(os.sep, "/").split("/")
    return not NOT_EVENT_DIRS.isdisjoint(below)


class _Walker:
    def __init__(self, root: str, every_file: bool) -> None:
        self.root, self.every_file = root, every_file
        self.files: list[str] = []
        self.real_files: dict[str, str] = {}  # a listed file's real path -> its name
        self.file_links: list[tuple[str, str]] = []  # links to files, judged last
        self.links: deque[tuple[str, str]] = deque()  # linked folders, followed last
        self.visited: set[tuple[int, int]] = set()

    def walk(self, rel: str, path: str, real: str) -> None:
        """Lists ``path`` (``rel`` below the root, ``real`` where it really is) and its
        real subfolders, depth first in name order; links are queued."""
        stack = [(rel, path, real)]
        while stack:
            rel, path, real = stack.pop()
            key = self._identity(path)
            if key in self.visited:  # reached before, under the name kept
                continue
            self.visited.add(key)
            folders: list[tuple[str, str, str]] = []
            for entry in self._listing(path):
                child = f"{rel}/{entry.name}" if rel else entry.name
                other_table = not self.every_file and entry.name in NOT_EVENT_DIRS
                if _is_folder(entry):
                    if other_table:
                        continue
                    if entry.is_symlink():
                        self.links.append((child, entry.path))
                    else:
                        folders.append((child, entry.path, os.path.join(real, entry.name)))
                elif not entry.is_symlink():
                    self.files.append(child)
                    self.real_files[os.path.join(real, entry.name)] = child
                elif os.path.exists(entry.path):
                    self.file_links.append((child, entry.path))
                elif not other_table:  # one never read for events may dangle
                    raise broken_link(entry.path, self.root)
            stack.extend(reversed(folders))

    def listed(self) -> list[str]:
        """The files listed, with each link to a file not listed under its own name: one
        to a listed file adds nothing (its window keeps the file's name)."""
        return self.files + [rel for rel, path in self.file_links
                             if os.path.realpath(path) not in self.real_files]

    def _listing(self, path: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                entries = [e for e in it if not e.name.startswith(_LEFT_OUT)]
        except OSError as exc:  # left out, a folder's events were lost without a word
            raise self._unlistable(path, exc) from exc
        return sorted(entries, key=lambda e: e.name)

    def _identity(self, path: str) -> tuple[int, int]:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise self._unlistable(path, exc) from exc
        return st.st_dev, st.st_ino

    def _unlistable(self, path: str, exc: OSError) -> InputError:
        return InputError(f"cannot list {path}, inside the input folder {self.root}: "
                          f"{exc.strerror or exc}; fix its permissions and run again")


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # through a link too
    except OSError:
        return False


def broken_link(path: str, root: str | None = None) -> InputError:
    """What stops the run at a dangling link (an unmounted share, a moved target) or a
    link loop: ``root`` is the input folder it was found in, if any."""
    why = ("a symbolic link loop" if is_loop(path)
           else f"a symbolic link to {os.readlink(path)}, which does not exist")
    if root is None:
        return InputError(f"{path} is {why}; fix the link or leave it out of the inputs, "
                          "and run again")
    return InputError(f"{path}, inside the input folder {root}, is {why} (an archive not "
                      "mounted?); fix the link or remove it from the folder, and run again")


def is_loop(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def layout_path(path: str) -> str:
    """``path`` as its folder really is ('/' separated): a pipeline's layout (a project id,
    ``mp_master_event``) is where a link leads, not the link's name."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(folder), name).replace(os.sep, "/")


def layout_paths() -> Callable[[str], str]:
    """``layout_path`` for the files of one listing: each folder resolved once (a legacy
    tree holds thousands of files in a few hundred folders)."""
    known: dict[str, str] = {}

    def layout(path: str) -> str:
        folder, name = os.path.split(os.path.abspath(path))
        if folder not in known:
            known[folder] = os.path.realpath(folder)
        return os.path.join(known[folder], name).replace(os.sep, "/")
    return layout


def events_folder_test(root: str) -> Callable[[str], bool]:
    """Whether a folder below ``root`` (relative, '/' separated) really lies inside an
    ``mp_master_event`` tree, reached through a link or not; asked once per folder."""
    known: dict[str, bool] = {}

    def inside(folder: str) -> bool:
        if folder not in known:
            real = os.path.realpath(os.path.join(root, folder))
            known[folder] = EVENTS_DIR in real.replace(os.sep, "/").split("/")
        return known[folder]
    return inside
