"""The files of a local input folder, linked subfolders included, each real folder once.

The folder's own tree is listed first, without following links, so that a file keeps the
name it has there; linked folders are then followed only to folders not listed yet
(``in/latest -> 2024-01-05`` adds nothing: its files keep their ``2024-01-05/`` names,
whatever order the filesystem lists names in). Hidden and ``_`` folders (Spark's
``_temporary/``), and for events another table's folder, are never entered: their files
are left out anyway, and a link to ``/`` would list them all. A dangling link or a link
loop stops the run naming it: behind it may be a day or a year of events.
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
    walker.walk("", root)
    while walker.links:  # after the real tree, so that its names are the ones kept
        rel, path = walker.links.popleft()
        if every_file or os.path.basename(os.path.realpath(path)) not in NOT_EVENT_DIRS:
            walker.walk(rel, path)
    return walker.files


class _Walker:
    def __init__(self, root: str, every_file: bool) -> None:
        self.root, self.every_file = root, every_file
        self.files: list[str] = []
        self.links: deque[tuple[str, str]] = deque()  # linked folders, followed last
        self.visited: set[tuple[int, int]] = set()

    def walk(self, rel: str, path: str) -> None:
        """Lists ``path`` (``rel`` below the root) and its real subfolders, depth first in
        name order; linked subfolders are queued."""
        stack = [(rel, path)]
        while stack:
            rel, path = stack.pop()
            key = self._identity(path)
            if key in self.visited:  # reached before, under the name kept
                continue
            self.visited.add(key)
            folders: list[tuple[str, str]] = []
            for entry in self._listing(path):
                child = f"{rel}/{entry.name}" if rel else entry.name
                if _is_folder(entry):
                    if self.every_file or entry.name not in NOT_EVENT_DIRS:
                        queue = self.links if entry.is_symlink() else folders
                        queue.append((child, entry.path))
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    raise broken_link(entry.path, self.root)
                else:
                    self.files.append(child)
            stack.extend(reversed(folders))

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
