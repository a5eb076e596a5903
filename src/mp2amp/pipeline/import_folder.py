"""The S3-import sink's output folder between attempts and runs (``migrate`` with
``[amplitude] output_dir``): import files are named per attempt (``mp2amp-a<N>-*``), so a
resume removes the earlier attempts' files, and a folder holding another migration's
files is refused at a run's first attempt."""

from __future__ import annotations

import re
from typing import Any

import orjson

from mp2amp.errors import TerminalError

# The sink's names (load/s3sink.py: ``<run_id>-NNNNN.json.gz``, run_id ``mp2amp-a<N>``) and
# the hidden ``.part`` a kill between copy and rename leaves in a local folder. Matched on
# a listing, not globbed: a folder named ``exports[prod]`` is a character class to a glob.
_IMPORT_FILE = re.compile(r"(\.?)mp2amp-a(\d+)-\d+\.json\.gz(\.part)?")


def _listing(fs: Any, base: str) -> list[str]:
    """The folder's entries (full paths as ``fs`` names them); none when it does not exist."""
    try:
        entries = fs.ls(base, detail=False, refresh=True)
    except TypeError:  # a filesystem whose ls takes no refresh
        entries = fs.ls(base, detail=False)
    except FileNotFoundError:
        return []
    return [str(e) for e in entries]


def _import_files(fs: Any, base: str) -> list[tuple[str, int, bool]]:
    """(path, attempt, is a leftover .part) of each import file in the folder."""
    out: list[tuple[str, int, bool]] = []
    for path in _listing(fs, base):
        m = _IMPORT_FILE.fullmatch(path.rstrip("/").rsplit("/", 1)[-1])
        if m is not None and bool(m.group(1)) == bool(m.group(3)):
            out.append((path, int(m.group(2)), bool(m.group(3))))
    return out


def refuse_another_runs_files(target: str, storage_options: dict[str, Any] | None) -> None:
    """A run's first attempt into a folder that holds another migration's import files
    stops: file names are per attempt, not per run, so it would overwrite that run's
    converter config (whose pattern names that run's files) and its resumes would delete
    that run's files (``remove_earlier_attempts``)."""
    import fsspec

    from mp2amp.load.s3sink import CONVERTER_NAME

    fs, root = fsspec.core.url_to_fs(target, **(storage_options or {}))
    base = root.rstrip("/")
    found = [path for path, _, part in _import_files(fs, base) if not part]
    found += [path for path in _listing(fs, base)
              if path.rstrip("/").rsplit("/", 1)[-1] == CONVERTER_NAME]
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
    for path, made_by, _ in sorted(_import_files(fs, root.rstrip("/"))):
        if made_by < attempt:  # with the .part a kill between copy and rename left
            fs.rm_file(path)  # rm would expand the path as a glob
            removed.append(path)
    return removed


def output_dir_may_change(known: str | None, output_dir: str | None,
                          sink_attempt: str | None) -> bool:
    """Whether a resumed S3-import run may name another ``output_dir`` than its fingerprint
    (``known``) recorded: only while no attempt has written a file (``sink_attempt`` unset:
    the first was refused its folder, which held another run's files), and never to switch
    between the API and files."""
    try:
        was = orjson.loads(known or "{}").get("output_dir")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return was is not None and output_dir is not None and sink_attempt is None
