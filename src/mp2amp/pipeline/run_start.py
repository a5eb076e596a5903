"""How ``mp2amp migrate`` starts: the ledger opened (a resume never
starts a damaged run from zero), and a run that did nothing yet planned again from its
config.

Why a resume refuses a damaged ledger: one cut to nothing (a copy that stopped short, one
made without its ``-wal`` file) looked like a new work folder, and the resume sent the
whole migration again, past Amplitude's 7-day deduplication.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mp2amp.config import Config
from mp2amp.ledger import Ledger
from mp2amp.ledger.sqlite_io import damaged
from mp2amp.pipeline.fingerprint import FINGERPRINT_META
from mp2amp.pipeline.import_folder import WROTE_KEY
from mp2amp.pipeline.preflight import planned_windows


def open_ledger(path: Path, resume: bool) -> tuple[Ledger, str | None]:
    """The run's ledger and its recorded fingerprint (None: a new run). A resume refuses a
    ledger with no tables, or one that lists windows but no fingerprint (both are recorded
    in one step), rather than start from zero there."""
    ledger = Ledger(path, create=not resume)
    try:
        known = ledger.get_meta(FINGERPRINT_META)
        if resume and known is None and (ledger.windows() or ledger.batches()):
            raise damaged(path, "it lists the run's windows but not its settings: a copy "
                          "made without its ledger.sqlite-wal file, say")
    except BaseException:
        ledger.close()
        raise
    # no fingerprint and no windows: the run was killed before it recorded anything (it
    # staged and sent nothing), and a resume starts it
    return ledger, known


def run_started(ledger: Ledger) -> bool:
    """Whether the run staged, merged, wrote or sent anything yet: until then its settings
    may still be corrected (a wrong project_id Mixpanel refused at once, say)."""
    if ledger.batches() or ledger.merged_into() or ledger.get_meta(WROTE_KEY) is not None:
        return True
    return any(w.state != "pending" or w.staged_path is not None or w.records
               for w in ledger.windows())


def replanner(ledger: Ledger, config: Config,
              storage_options: dict[str, Any] | None) -> Callable[[], None] | None:
    """What plans a run that did nothing yet again from ``config`` (its windows, say the
    dates were corrected), for ``check_resume``; None once the run has started."""
    if run_started(ledger):
        return None
    return lambda: ledger.replace_windows(planned_windows(config, storage_options))
