"""The S3-import sink's output folder between attempts and runs (``migrate`` with
``[amplitude] output_dir``). Import files are named per run and per attempt
(``mp2amp-a<N>-<run>-NNNNN.json.gz``, ``<run>`` a random id kept in the ledger), so a
resume removes only its own run's earlier attempts' files; a folder holding another
migration's import files or converter config is refused at every attempt, before
anything is removed or written. Runs started by an earlier mp2amp have no run id in the
ledger and keep their names (``mp2amp-a<N>-NNNNN.json.gz``) until they end."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.load.s3target import output_trouble
from mp2amp.remote_fs import url_to_fs

if TYPE_CHECKING:
    from mp2amp.load.s3sink import S3ImportSink, SinkReport

# The sink's names (load/s3sink.py: ``<run_id>-NNNNN.json.gz``, run_id ``mp2amp-a<N>-<run>``,
# or ``mp2amp-a<N>`` for a run an earlier mp2amp started) and the hidden ``.part`` a kill
# between copy and rename leaves in a local folder. Matched on a listing, not globbed: a
# folder named ``exports[prod]`` is a character class to a glob.
_IMPORT_FILE = re.compile(r"(\.?)mp2amp-a(\d+)(?:-([0-9a-f]{12}))?-\d+\.json\.gz(\.part)?")
RUN_KEY = "sink_run"            # ledger meta: the run id in this run's file names
ATTEMPTS_KEY = "sink_attempts"  # ledger meta: attempts that got past the folder check
# ledger meta "sink_attempt": the attempt whose files may be in the folder (set before they
# are written: from then on the folder is fixed, see output_dir_may_change)
WROTE_KEY = "sink_attempt"


@dataclass(frozen=True, slots=True)
class SinkAttempt:
    number: int
    run: str            # "" for a run started by an earlier mp2amp (names without a run id)
    removed: list[str]  # files of this run's earlier attempts, deleted

    @property
    def run_id(self) -> str:
        """The sink's ``run_id``: its files' names up to ``-NNNNN.json.gz``."""
        return f"mp2amp-a{self.number}-{self.run}" if self.run else f"mp2amp-a{self.number}"

    @property
    def converter_owner(self) -> str:
        """Text in the filterPattern of a converter config this run wrote (the sink
        overwrites no other)."""
        return self.run or re.escape(self.run_id) + "-"


def begin_sink_attempt(ledger: Ledger, target: str,
                       storage_options: dict[str, Any] | None) -> SinkAttempt:
    """The next attempt of this run's sink: the folder checked for another migration's
    files, then this run's earlier attempts' files removed."""
    legacy, run, number = next_attempt(ledger)
    refuse_another_runs_files(target, storage_options, run=run, attempt=number)
    if not legacy:
        ledger.set_meta(RUN_KEY, run)
    ledger.set_meta(ATTEMPTS_KEY, str(number))
    removed = remove_earlier_attempts(target, number, storage_options, run=run,
                                      with_scheme=True)
    return SinkAttempt(number, run, removed)


def next_attempt(ledger: Ledger) -> tuple[bool, str, int]:
    """(started by an earlier mp2amp, run id, number) of the run's next sink attempt; a run
    that has none yet gets a new id (recorded by ``begin_sink_attempt``)."""
    legacy = ledger.get_meta(RUN_KEY) is None and ledger.get_meta(WROTE_KEY) is not None
    run = "" if legacy else ledger.get_meta(RUN_KEY) or secrets.token_hex(6)
    number = max(int(ledger.get_meta(ATTEMPTS_KEY) or "0"),
                 int(ledger.get_meta(WROTE_KEY) or "0")) + 1
    return legacy, run, number


def _listing(fs: Any, base: str) -> list[str]:
    """The folder's entries (full paths as ``fs`` names them); none when it does not exist."""
    try:
        entries = fs.ls(base, detail=False, refresh=True)
    except TypeError:  # a filesystem whose ls takes no refresh
        entries = fs.ls(base, detail=False)
    except FileNotFoundError:
        return []
    return [str(e) for e in entries]


def _import_files(fs: Any, base: str) -> list[tuple[str, int, str, bool]]:
    """(path, attempt, run id or "", is a leftover .part) of each import file in the folder."""
    out: list[tuple[str, int, str, bool]] = []
    for path in _listing(fs, base):
        m = _IMPORT_FILE.fullmatch(path.rstrip("/").rsplit("/", 1)[-1])
        if m is not None and bool(m.group(1)) == bool(m.group(4)):
            out.append((path, int(m.group(2)), m.group(3) or "", bool(m.group(4))))
    return out


def _ours(made_by: int, run: str, attempt: int, own_run: str | None) -> bool:
    """Whether a file of attempt ``made_by`` named with ``run`` is an earlier attempt's of
    the run ``own_run`` now at ``attempt`` (None: a run's first attempt, nothing is)."""
    return own_run is not None and run == own_run and made_by < attempt


def _converter_owner(fs: Any, path: str) -> str | None:
    """The filterPattern of a converter config; None when it is unreadable (half written
    by a killed run: no finished migration's, so it may be replaced)."""
    try:
        pattern = orjson.loads(fs.cat_file(path))["keyValidatorConfig"]["filterPattern"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return str(pattern)


def _counted(found: list[str]) -> str:
    """``2 import files and 1 converter config``: what of the folder is another run's."""
    from mp2amp.load.s3sink import CONVERTER_NAME

    converters = sum(1 for path in found
                     if path.rstrip("/").rsplit("/", 1)[-1] == CONVERTER_NAME)
    files = len(found) - converters
    parts = [f"{files} import file{'s' if files != 1 else ''}"] if files else []
    if converters:
        parts.append(f"{converters} converter config{'s' if converters != 1 else ''}")
    return " and ".join(parts)


def refuse_another_runs_files(target: str, storage_options: dict[str, Any] | None, *,
                              run: str | None = None, attempt: int = 1) -> None:
    """Stop when the folder holds another migration's import files or converter config:
    this run would overwrite that converter (whose pattern names that run's files), and
    Amplitude's import of one prefix would take both runs' files. ``run``: this run's id
    ("" for a run an earlier mp2amp started), None for a folder no run has written yet."""
    with output_trouble(target):
        found = _others_files(target, storage_options, run, attempt)
    if not found:
        return
    if attempt == 1:
        raise TerminalError(
            f"the output folder {target} already holds the import files of another migration "
            f"({_counted(found)}, e.g. {found[0]}); give each migration its own folder or prefix "
            "(Amplitude's S3 import reads a prefix), or move those files away, then run the "
            "same `mp2amp migrate` command with --resume")
    raise TerminalError(
        f"the output folder {target} now holds import files or a converter config this run "
        f"did not write ({_counted(found)}, e.g. {found[0]}): another migration wrote into it "
        "since this run's last attempt; nothing was removed. Give each migration its own "
        "folder or prefix: move the other migration's files and its converter config to one "
        "(or, if this run has written no file yet, set [amplitude] output_dir to another "
        "folder), then run the same `mp2amp migrate` command with --resume"
        + ("" if run else "; this run was started by an earlier mp2amp, whose names do not "
           "tell runs apart: if those files are its own, remove them"))


def _others_files(target: str, storage_options: dict[str, Any] | None, run: str | None,
                  attempt: int) -> list[str]:
    """The import files and converter config in the folder that this run did not write."""
    from mp2amp.load.s3sink import CONVERTER_NAME

    fs, root = url_to_fs(target, storage_options)
    base = root.rstrip("/")
    own = None if attempt == 1 else run
    found = [path for path, made_by, made_in, part in _import_files(fs, base)
             if not part and not _ours(made_by, made_in, attempt, own)]
    for path in _listing(fs, base):
        if path.rstrip("/").rsplit("/", 1)[-1] == CONVERTER_NAME:
            pattern = _converter_owner(fs, path)
            # a run named before run ids cannot tell its converter from another's
            if attempt == 1 or (pattern is not None and (not run or run not in pattern)):
                found.append(path)
    return found


def remove_earlier_attempts(target: str, attempt: int,
                            storage_options: dict[str, Any] | None, *, run: str = "",
                            with_scheme: bool = False) -> list[str]:
    """Delete the import files (and leftover ``.part``) of run ``run``'s attempts before
    ``attempt`` ("": names without a run id, from an earlier mp2amp); no other file. The
    paths deleted, as the filesystem names them or, ``with_scheme``, as URLs."""
    from mp2amp.load.s3sink import shown_path

    removed: list[str] = []
    with output_trouble(target):
        fs, root = url_to_fs(target, storage_options)
        for path, made_by, made_in, _ in sorted(_import_files(fs, root.rstrip("/"))):
            if _ours(made_by, made_in, attempt, run):  # with the .part a kill left
                fs.rm_file(path)  # rm would expand the path as a glob
                removed.append(shown_path(fs, path) if with_scheme else path)
    return removed


def output_dir_may_change(known: str | None, output_dir: str | None,
                          sink_attempt: str | None) -> bool:
    """Whether a resumed S3-import run may name another ``output_dir`` than its fingerprint
    (``known``) recorded: only while no attempt has written a file (``sink_attempt`` unset:
    every attempt was refused its folder or stopped before the files were cut), and never
    to switch between the API and files."""
    try:
        was = orjson.loads(known or "{}").get("output_dir")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return was is not None and output_dir is not None and sink_attempt is None


def is_output_file(url: str, output_dir: str | None) -> bool:
    """Whether an input the sources' paths match is a file the S3-import sink writes into
    ``output_dir`` (an import file of any run, a ``.part`` a kill left, the converter
    config), or into a local folder an earlier run wrote its import to: ``files = ["."]``
    with an output folder in the project must not take in Amplitude's files as Mixpanel
    events. Other files there stay inputs."""
    from mp2amp.load.s3sink import CONVERTER_NAME

    folder, _, name = url.rstrip("/").rpartition("/")
    if not (_IMPORT_FILE.fullmatch(name) or name == CONVERTER_NAME):
        return False
    if output_dir is not None and _location(folder) == _location(output_dir):
        return True
    return _earlier_import_folder(folder, name)


def _earlier_import_folder(folder: str, name: str) -> bool:
    """Whether ``name`` (an import file's or the converter config's) is in a local folder
    holding an import: an import file next to the converter config. An earlier run's output
    in the project holds Amplitude's events, not Mixpanel's. A remote folder is not looked
    into (no storage options here): there only the run's own output folder is known."""
    from mp2amp.load.s3sink import CONVERTER_NAME

    scheme, sep, _ = folder.partition("://")
    if sep and scheme.lower() not in {"file", "local"}:
        return False
    local = _location(folder)
    if name != CONVERTER_NAME:  # an import file (the input itself): is the converter there?
        return os.path.isfile(os.path.join(local, CONVERTER_NAME))
    try:
        return any(_IMPORT_FILE.fullmatch(n) for n in os.listdir(local))
    except OSError:
        return False


def _location(path_or_url: str) -> str:
    """One name per folder, whichever way it is given: a local one (a plain path, or a
    ``file://`` URL the sink accepts as well) as its real path; a URL with ``s3a://`` as
    ``s3://`` and ``gcs://`` as ``gs://``."""
    from fsspec.implementations.local import LocalFileSystem

    scheme, sep, rest = path_or_url.partition("://")
    if not sep or scheme.lower() in {"file", "local"}:
        local = LocalFileSystem._strip_protocol(path_or_url) if sep else path_or_url
        return os.path.realpath(local)
    scheme = {"s3a": "s3", "gcs": "gs"}.get(scheme.lower(), scheme.lower())
    return f"{scheme}://{rest.rstrip('/')}"


async def close_sink(sink: S3ImportSink, progress: Callable[[int], None]) -> SinkReport:
    """``sink.close`` in a thread (the display follows it). A run stopped meanwhile tells
    the thread to stop between two files and waits for it, so the work folder's lock is
    let go (and the scratch removed) only when nothing writes any more."""
    stop = threading.Event()
    sink.should_stop = stop.is_set
    closing = asyncio.ensure_future(asyncio.to_thread(sink.close, progress))
    try:
        return await asyncio.shield(closing)
    except BaseException:
        stop.set()
        await asyncio.wait([closing])
        closing.exception()  # retrieved (asyncio logs none): the stop is what is reported
        raise


def resume_note(output_dir: str | None) -> str:
    """What ``--resume`` does after a stop, for the interrupted message."""
    if output_dir is None:
        return "batches that were in flight are sent again with the same insert_ids"
    return ("staged windows are not read again; the import files are all written again, "
            f"after the files this attempt left in {output_dir} are deleted, so the folder "
            "holds each event once")
