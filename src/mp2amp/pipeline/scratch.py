"""The run's scratch folder (sorted runs of the import files, identity, session and dedup
spills): ``scratch/run-XXXXXXXX`` in the work folder, removed as the run ends.

Why its name is kept in the ledger: a killed run's scratch would stay for good (nothing
reads it again), so the next run removes it; it used to remove every ``scratch/run-*``,
and with the work folder a $HOME-like folder that took the user's own
``scratch/run-2023-benchmarks``. Only the folder the ledger names, of the exact name
``tempfile`` gives, is removed; anything else in scratch/ is left as it is.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mp2amp.ledger import Ledger

SCRATCH_META = "scratch_folder"  # the name of the scratch folder the run last made
_NAME = re.compile(r"run-[a-z0-9_]{8}")  # tempfile.TemporaryDirectory(prefix="run-")


@contextmanager
def scratch_folder(workdir: Path, ledger: Ledger) -> Iterator[str]:
    """A new scratch folder for this run, after removing the one a killed run of this
    ledger left; recorded before anything is written in it."""
    root = workdir / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    left = ledger.get_meta(SCRATCH_META)
    if left and _NAME.fullmatch(left):
        shutil.rmtree(root / left, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=root) as scratch:
        ledger.set_meta(SCRATCH_META, Path(scratch).name)
        yield scratch
