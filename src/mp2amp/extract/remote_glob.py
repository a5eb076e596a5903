"""Which objects a remote glob (``s3://b/ev/*``) names: what ``glob.glob`` would give.

fsspec's glob takes names a local glob leaves out: hidden ones (``.DS_Store``, Spark's
``.crc`` files), and the zero-byte "folder" objects the AWS and GCS consoles' "Create
folder" leaves (``ev/``), which ``**`` lists as files: as windows they were looked up as
folders and stopped the run as missing. A folder's listing (``fs.find``) holds them too:
``without_folder_objects`` drops them from both.
"""

from __future__ import annotations

import glob
from bisect import bisect_left
from typing import Any

from mp2amp.extract.globparts import names_at, pattern_parts_at


def remote_glob(fs: Any, pattern: str) -> dict[str, dict[str, Any]]:
    """The glob's matches (name -> info), without hidden names (unless the pattern's part
    at their place starts with '.', as ``glob.glob`` has it) and without folder
    placeholders."""
    folders_only = pattern.endswith("/")  # 'ev/*/': the folders (gcsfs matched nothing)
    try:
        found: dict[str, dict[str, Any]] = fs.glob(pattern.rstrip("/"), detail=True)
    except FileNotFoundError:  # gcsfs, for a bucket that does not exist
        return {}
    if folders_only:
        found = {name: info for name, info in found.items() if info.get("type") == "directory"}
    found = without_folder_objects(found)
    parts = fs._strip_protocol(pattern).split("/")
    first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return {name: info for name, info in found.items()
            if not _hidden_unnamed(name.split("/")[first:], parts[first:])}


def _hidden_unnamed(parts: list[str], pattern: list[str]) -> bool:
    """A hidden name in a match that the pattern part at its place does not name."""
    return any(part.startswith(".") and not names_at(part, by, ".")
               for part, by in zip(parts, pattern_parts_at(parts, pattern), strict=True))


def without_folder_objects(listing: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A listing (glob or find) without the consoles' zero-byte folder objects: named with
    a trailing '/', or (as some stores list them) the parent of another entry. Read as
    files they became windows looked up as folders, which stopped the run as missing."""
    parents = {name.rstrip("/").rpartition("/")[0] for name in listing}
    return {name: info for name, info in listing.items()
            if not (info.get("type") != "directory" and not info.get("size")
                    and (name.endswith("/") or name.rstrip("/") in parents))}


class Listings:
    """The folders a path expands to, listed (``fs.find``, folder objects left out) once
    each: a folder below one listed already is cut from that listing, not listed again
    (a ``**`` glob matches every folder of a tree, and each was listed whole: a LIST per
    folder and day of a Data Pipelines export)."""

    def __init__(self, fs: Any) -> None:
        self._fs = fs
        self._listed: dict[str, tuple[list[str], dict[str, dict[str, Any]]]] = {}

    def below(self, root: str) -> dict[str, dict[str, Any]]:
        """The objects below ``root`` (a key without a trailing '/'), named relative to it."""
        parts = root.split("/")
        for n in range(len(parts), 0, -1):
            listed = self._listed.get("/".join(parts[:n]))
            if listed is not None:
                break
        else:
            found = without_folder_objects(self._fs.find(root, detail=True))
            listed = self._listed[root] = (sorted(found), found)
        keys, found = listed
        # keys below root sort together: from root + "/" to before root + "0" ("/" + 1)
        start, end = bisect_left(keys, root + "/"), bisect_left(keys, root + "0")
        return {key[len(root) + 1:]: found[key] for key in keys[start:end]}
