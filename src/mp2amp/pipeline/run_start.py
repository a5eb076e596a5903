"""How ``mp2amp migrate`` starts: the ledger opened (a damaged run is never started from
zero), the run planned (a new one) or checked against its config (a resume), and a run
that did nothing yet planned again from its config.

Why a damaged ledger is refused: one cut to nothing (a copy that stopped short, one made
without its ``-wal`` file) looked like a new work folder, and the run sent the whole
migration again, past Amplitude's 7-day deduplication; without --resume it also removed
the old run's staged copies.

Why a ledger with windows but no fingerprint, when nothing was staged or sent, is a new
run: every mp2amp before the two were recorded in one step recorded the windows, then the
fingerprint, in two commits; a kill between them left exactly that.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from mp2amp.config import Config
from mp2amp.extract.export import QUERY_LOG, Days
from mp2amp.ledger import Ledger, WindowRow
from mp2amp.ledger.sqlite_io import damaged
from mp2amp.load.settings import UploadSettings
from mp2amp.pipeline.fingerprint import FINGERPRINT_META, check_resume, record_fingerprint
from mp2amp.pipeline.import_folder import WROTE_KEY, output_dir_may_change
from mp2amp.pipeline.preflight import planned_windows
from mp2amp.pipeline.staged_names import remove_leftovers
from mp2amp.pipeline.windows import STAGED_NAME
from mp2amp.pipeline.worklock import LOCK_NAME

# an Export API download in export/export/ (the day or days it holds, then what it is)
_DOWNLOAD = re.compile(r"(\d{4}-\d{2}-\d{2}(?:\.\.\d{4}-\d{2}-\d{2})?)"
                       r"\.(?:jsonl|jsonl\.part|meta\.json|meta\.tmp)")


def holds_run_files(workdir: Path) -> bool:
    """Whether ``workdir`` holds what only a run that got past its start leaves: staged
    copies (by mp2amp's names: a workdir of "." may have a folder of the user's own called
    staged or export), Export API downloads or its query journal, dead letters; and only
    in a folder a migrate has run in (its lock file stays): the user's own files named like
    ours (hourly dumps such as events-2024010100.jsonl) never make a fresh folder a run's."""
    if not (workdir / LOCK_NAME).exists():
        return False
    try:
        # whole staged copies: a half-written one (.part) was never read, let alone sent
        if any(STAGED_NAME.fullmatch(p.name) and not p.name.endswith(".part")
               for p in (workdir / "staged").iterdir()):
            return True
    except OSError:  # not there (or not a folder): nothing of a run in it
        pass
    try:
        if any((workdir / "export" / "export").iterdir()):
            return True
    except OSError:
        pass
    for name, size in (("export/" + QUERY_LOG, 0), ("dead-letters.jsonl", 1)):
        try:
            if (workdir / name).stat().st_size >= size:
                return True
        except OSError:
            pass
    return False


def open_ledger(path: Path, resume: bool) -> tuple[Ledger, str | None]:
    """The run's ledger and its recorded fingerprint (None: a new run). A ledger that
    existed with no tables or no fingerprint is refused as damaged when the run staged or
    sent anything, or the work folder holds its files, rather than start from zero there
    (with or without --resume)."""
    used = path.exists() and holds_run_files(path.parent)
    # without the run's files an empty ledger is a run killed as it was created: a new run
    ledger = Ledger(path, create=not used)
    try:
        known = ledger.get_meta(FINGERPRINT_META)
        if known is None and run_started(ledger):
            raise damaged(path, "it lists windows the run staged or sent, but not the run's "
                          "settings: a copy made without its ledger.sqlite-wal file, say")
        if known is None and used:
            raise damaged(path, "it records no run, while the work folder holds an earlier "
                          "run's staged copies or downloads: a copy made without its "
                          "ledger.sqlite-wal file, say")
    except BaseException:
        ledger.close()
        raise
    # no fingerprint, nothing staged or sent: the run was killed before it recorded its
    # settings (an older mp2amp: after its windows), and it starts as a new run
    return ledger, known


def run_started(ledger: Ledger) -> bool:
    """Whether the run staged, merged, wrote or sent anything yet: until then its settings
    may still be corrected (a wrong project_id Mixpanel refused at once, say)."""
    if ledger.has_batches() or ledger.merged_into() or ledger.get_meta(WROTE_KEY) is not None:
        return True
    return any(w.state != "pending" or w.staged_path is not None or w.records
               for w in ledger.windows())


def replanner(ledger: Ledger, config: Config,
              storage_options: dict[str, Any] | None) -> Callable[[], None] | None:
    """What plans a run that did nothing yet again from ``config`` (its windows, say the
    dates were corrected), for ``check_resume``; None once the run has started."""
    if run_started(ledger):
        return None

    def replan() -> None:
        dropped = ledger.windows()
        ledger.replace_windows(planned_windows(config, storage_options))
        # a copy the old plan staged as it was killed (before the ledger recorded it): its
        # window may be gone from the new plan, and files of no window are left alone
        remove_leftovers(config.run.workdir / "staged", dropped)

    return replan


def plan_or_check(ledger: Ledger, config: Config, upload: UploadSettings, known: str | None,
                  storage_options: dict[str, Any] | None,
                  planned: list[tuple[str, str, dict[str, Any]]] | None) -> None:
    """A new run's windows and fingerprint (``known`` None), or a resume's config checked
    against the run's (and the run planned again while it did nothing yet); either way
    the windows and the fingerprint are written in one transaction."""
    if known is None:
        planned = planned_windows(config, storage_options) if planned is None else planned
        with ledger.atomic():  # a ledger with windows always has its fingerprint
            # replaced, not added: an older mp2amp's windows, killed before its fingerprint
            ledger.replace_windows(planned)
            record_fingerprint(ledger, config, upload)
        return
    replan = replanner(ledger, config, storage_options)
    with ledger.atomic():  # a kill before the new fingerprint keeps the old windows too
        check_resume(ledger, config, upload, known, lambda changed: changed == [
            "output_dir"] and output_dir_may_change(known, config.amplitude.output_dir,
                                                    ledger.get_meta("sink_attempt")),
                     replan)
    # after the commit, at every resume: a kill after a replan committed (before its
    # clean-up) leaves the old plan's downloads, which no later resume would replan away
    drop_unplanned_downloads(config.run.workdir / "export" / "export", ledger.windows())


def drop_unplanned_downloads(downloads: Path, rows: list[WindowRow]) -> None:
    """Remove the Export API downloads (whole days, uncompressed) of days no window of the
    run plans any more (a replan dropped them): nothing would ever read or remove them."""
    planned = {str(_days(row)) for row in rows if row.kind == "export"}
    try:
        found = list(downloads.iterdir())
    except OSError:  # no downloads folder: nothing was fetched
        return
    for path in found:
        match = _DOWNLOAD.fullmatch(path.name)
        if match is not None and match[1] not in planned and path.is_file():
            path.unlink(missing_ok=True)


def _days(row: WindowRow) -> Days:
    first = date.fromisoformat(row.spec["day"])
    return Days(first, date.fromisoformat(row.spec.get("last", row.spec["day"])))
