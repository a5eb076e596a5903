"""Where the S3-import sink writes (``[amplitude] output_dir``): what its name allows, a
probe that it can be written before any input is read (a run finds out otherwise only at
its end, hours into an Export API run), and its failures as messages, not tracebacks."""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fsspec.registry import known_implementations

from mp2amp.errors import InputError, Mp2AmpError, TerminalError
from mp2amp.remote_fs import url_to_fs

# object stores: a bucket is never created (a typo would get files Amplitude never reads)
BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})
# a full disk (or quota) is not a credentials or permissions problem: said as what it is
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
RESUME = "then run the same `mp2amp migrate` command with --resume"


class SinkStopped(Exception):
    """``close()`` was told to stop (the run is stopping): no further file is written."""


def bucket_problems(target: str) -> list[str]:
    """What in ``target``'s name Amplitude's import cannot take (from the name alone):
    ``ConfigError`` problems of ``amplitude.output_dir``."""
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", target)
    if scheme and scheme.group(1).lower() not in known_implementations:  # s4://
        return [f"{target}: {scheme.group(1)}:// is not a storage protocol; set "
                "[amplitude] output_dir to a folder or s3://BUCKET/PREFIX"]
    named = re.match(r"(s3a?|gs|gcs)://([^/]*)", target)
    if named and not named.group(2):  # else said as a missing bucket '' to create
        return [f"{target} names no bucket; set [amplitude] output_dir to "
                f"{named.group(1)}://BUCKET/PREFIX"]
    bucket = re.match(r"s3a?://([^/]*)", target)
    if bucket and "." in bucket.group(1):
        return [f"bucket {bucket.group(1)!r}: Amplitude's S3 import cannot read a bucket "
                "whose name contains a dot; set [amplitude] output_dir to a bucket without "
                "one"]
    return []


@contextmanager
def output_trouble(target: str) -> Iterator[None]:
    """Any failure to list, read, write or delete in the output folder (no credentials,
    access denied, no connection; botocore's errors are no OSError) as an ``InputError``
    naming the folder and what to do, not a traceback; a full disk as a full disk."""
    try:
        yield
    except (Mp2AmpError, SinkStopped):
        raise
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise output_disk_full(target, exc) from exc
        raise cannot_use(target, exc) from exc
    except Exception as exc:
        raise cannot_use(target, exc) from exc


def output_disk_full(target: str, exc: OSError) -> TerminalError:
    """A full disk under a local output folder: the file being written (a copy names its
    source first, ``filename2`` is the written one) and what to free, as the work folder's
    full disk is said (pipeline/diskspace.py)."""
    where = exc.filename2 if exc.filename2 is not None else exc.filename
    said = f": {exc.strerror}" if exc.strerror else ""
    return TerminalError(
        f"the disk is full (writing {where if where is not None else target}{said}); "
        f"nothing done so far is lost: free some space there, {RESUME}")


def cannot_use(target: str, exc: Exception) -> InputError:
    """Any other failure in the output folder: most often credentials or permissions."""
    return InputError(
        f"cannot use the output folder {target} ([amplitude] output_dir): "
        f"{type(exc).__name__}: {exc}; check the credentials (for s3://, "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE; for gs://, "
        "GOOGLE_APPLICATION_CREDENTIALS) or storage options, and that they may list, write "
        "and delete files there (for a local folder, its permissions), then run the same "
        "`mp2amp migrate` command with --resume to go on")


def probe_output(target: str, storage_options: dict[str, Any] | None) -> None:
    """Once before any input is read: the bucket exists (a local folder is made) and a
    hidden probe file can be written and deleted there, as the run will do hours later."""
    with output_trouble(target):
        fs, root = url_to_fs(target, storage_options)
        root = root.rstrip("/")
        bucket = bucket_of(fs, root)
        if bucket is None:
            make_local_folder(fs, root, target)
        probe = f"{root}/.mp2amp-probe-{secrets.token_hex(6)}"  # no filterPattern takes it
        try:
            fs.pipe_file(probe, b"")
        except FileNotFoundError:
            if bucket is None:
                raise
            raise no_bucket(bucket, target) from None
        fs.rm_file(probe)


def protocols(fs: Any) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def bucket_of(fs: Any, root: str) -> str | None:
    """The bucket of an object store's ``root``; None for a folder."""
    return root.partition("/")[0] if BUCKET_PROTOCOLS & set(protocols(fs)) else None


def make_local_folder(fs: Any, root: str, target: str) -> None:
    """The local output folder, made. Refused after the run is recorded, so the way on is
    ``--resume`` (another output_dir is accepted then: no file was written yet)."""
    try:
        fs.makedirs(root, exist_ok=True)
    except OSError as exc:
        blocking = _file_in_the_way(root)
        if blocking is not None:
            raise InputError(f"cannot create the S3-import target {target}: {blocking} is a "
                             "file, not a folder; move that file away or set [amplitude] "
                             f"output_dir to another folder, {RESUME}") from exc
        raise InputError(f"cannot create the S3-import target {target}: {exc}; set "
                         "[amplitude] output_dir to a folder that can be created (or allow "
                         f"creating this one), {RESUME}") from exc


def _file_in_the_way(root: str) -> str | None:
    """``root`` or the first of its parents that is a file (makedirs then cannot go on)."""
    path = os.path.abspath(root)
    while True:
        if os.path.isfile(path):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def no_bucket(bucket: str, target: str) -> InputError:
    return InputError(
        f"the bucket {bucket!r} of the S3-import target {target} does not exist (or these "
        "credentials cannot see it); mp2amp does not create buckets: create it (readable by "
        "Amplitude's import) or correct [amplitude] output_dir, then run the same `mp2amp "
        "migrate` command with --resume")
