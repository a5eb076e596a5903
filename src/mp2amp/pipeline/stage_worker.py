"""What a spawned staging process runs: one window's file staged (``stage_in_worker``).

Apart from ``windows`` so that a staging process imports only what staging needs (the
extract readers and ``staging``): through ``windows`` it imported the whole pipeline, the
uploader and aiohttp among it, ~0.3 s of CPU per process at every run's start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mp2amp.extract.files import SourceFile, iter_file
from mp2amp.pipeline.staging import LocalZone, stage

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class MovedFile(SourceFile):
    """A window's file read from where it is now, its records named by its window id."""

    location: str = ""

    def open(self) -> BinaryIO:
        return open(self.location, "rb")


def worker_args(source: SourceFile, dest: str, local: LocalZone | None) -> tuple[Any, ...]:
    args = (source.url, source.fs, dest, local)
    if isinstance(source, MovedFile):
        return (*args, source.location)
    return args if source.fs is None else (*args, None, source.size)


# a staging process's filesystems, by their fsspec token: each window's arrives pickled,
# and a new one builds its client again (~0.2 s an object)
WORKER_FILESYSTEMS: dict[str, Any] = {}


def stage_in_worker(url: str, fs: Any, dest: str, local: LocalZone | None = None,
                    location: str | None = None, size: int | None = None) -> int:
    token = getattr(fs, "_fs_token", None)
    if isinstance(token, str):
        fs = WORKER_FILESYSTEMS.setdefault(token, fs)
    source = (SourceFile(url, fs, size) if location is None
              else MovedFile(url, fs, location=location))
    return stage(iter_file(source), Path(dest), local=local)


def die_with_parent(parent: int) -> None:
    """A worker process's initializer: it must not outlive a killed migration (kill -9),
    or a resumed run would race it (a staged file half written, events sent twice).
    Linux only; elsewhere the worker ends at its next task."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True) if name else None
        prctl = getattr(libc, "prctl", None)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if os.getppid() != parent:  # the parent died while this worker was starting
        os._exit(1)
