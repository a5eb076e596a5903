"""Windows: the units of work of a migration, and their extraction into staged files.

A window is one day of the Raw Export API (``export:YYYY-MM-DD``, exactly the source name
its records carry) or one input file (its URL). The window id doubles as the source of its
records, so a dead letter's ``source`` names its window.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

from mp2amp.config import Config
from mp2amp.errors import ConfigError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export import days_between, fetch_windows, iter_window_records, window_source
from mp2amp.extract.files import SourceFile, expand_paths, iter_file
from mp2amp.ledger import Ledger, WindowRow
from mp2amp.pipeline.progress import Counters, Reporter
from mp2amp.pipeline.staging import stage

WindowSpec = tuple[str, str, dict[str, Any]]


def plan_windows(config: Config, storage_options: dict[str, Any] | None) -> list[WindowSpec]:
    """The run's windows in delivery order (days ascending, or files as listed/sorted)."""
    src = config.source
    if src.files:
        return [(f.url, "file", {"path": f.url}) for f in expand_paths(
            list(src.files), storage_options=storage_options)]
    if src.from_date is None or src.to_date is None:
        raise ConfigError(["source: give from_date and to_date (Export API) or files"],
                          source=str(config.path) if config.path else None)
    return [(window_source(d), "export", {"day": d.isoformat()})
            for d in days_between(src.from_date, src.to_date)]


def staged_path(workdir: Path, window_id: str) -> Path:
    """A readable, collision-free file name for a window's staged records."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", window_id)[-80:]
    digest = hashlib.sha1(window_id.encode()).hexdigest()[:10]
    return workdir / "staged" / f"{slug}-{digest}.jsonl"


async def extract_pending(
    config: Config,
    ledger: Ledger,
    mixpanel: MixpanelSettings | None,
    *,
    storage_options: dict[str, Any] | None,
    counters: Counters,
    reporter: Reporter,
) -> None:
    """Stage every window not yet extracted; each is marked in the ledger once staged."""
    workdir = config.run.workdir
    pending = [w for w in ledger.windows() if w.state == "pending"]
    if not pending:
        return
    _remove_leftovers(workdir / "staged")
    counters.phase = "extract"
    counters.total = len(ledger.windows())
    counters.done = counters.total - len(pending)
    reporter.update(counters)
    files = [w for w in pending if w.kind == "file"]
    days = [w for w in pending if w.kind == "export"]
    if files:
        sources = {f.url: f for f in expand_paths([w.window_id for w in files],
                                                   storage_options=storage_options)}
        for w in files:
            await _stage_file(ledger, workdir, w, sources[w.window_id])
            counters.done += 1
            reporter.update(counters)
    if days:
        if mixpanel is None:
            raise ConfigError(["mixpanel: the Export API needs credentials: set "
                               "MIXPANEL_SERVICE_ACCOUNT (user:secret) or MIXPANEL_SECRET"])
        wanted = {date.fromisoformat(w.spec["day"]): w for w in days}
        export_dir = workdir / "export"
        windows = fetch_windows(mixpanel, sorted(wanted), export_dir,
                                concurrency=max(1, min(config.run.concurrency, 4)))
        try:
            async for wf in windows:
                row = wanted[wf.day]
                dest = staged_path(workdir, row.window_id)
                n = await asyncio.to_thread(stage, iter_window_records(wf), dest)
                ledger.mark_extracted(row.window_id, str(dest), n)
                wf.discard()  # staged: the raw download is no longer needed
                counters.done += 1
                reporter.update(counters)
        finally:  # leaving early cancels the windows still in flight
            aclose = getattr(windows, "aclose", None)
            if aclose is not None:
                await aclose()


def _remove_leftovers(staged: Path) -> None:
    """A run killed while staging leaves its sorted runs and a ``.part`` file behind (as
    big as the window); its window is still pending and is staged again from scratch."""
    if not staged.is_dir():
        return
    for path in staged.iterdir():
        if path.name.startswith(".stage-") and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.endswith(".part"):
            path.unlink(missing_ok=True)


async def _stage_file(ledger: Ledger, workdir: Path, row: WindowRow, file: SourceFile) -> None:
    dest = staged_path(workdir, row.window_id)
    n = await asyncio.to_thread(stage, iter_file(file), dest)
    ledger.mark_extracted(row.window_id, str(dest), n)
