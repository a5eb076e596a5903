"""How the last `mp2amp migrate` on a work folder ended, kept in its ledger for `status`.

Why: a migration runs for hours under cron, systemd or a container, and the message of a
run that stopped (a full disk, a damaged input, SIGTERM, a dead worker) went to a log the
next person may not have; ``mp2amp status`` read only counts ("in progress"). Each run
now records when it started and ended and how (exit code and message), best effort: a
ledger that cannot be written (the disk that stopped the run, say) keeps the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import orjson

from mp2amp.errors import Mp2AmpError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.diskspace import storage_error
from mp2amp.pipeline.stopping import Terminated, stop_exit_code

LAST_ATTEMPT = "last_attempt"  # the ledger meta key
# what `status --json` documents, every key always there: older versions stored fewer
KEYS = ("started", "ended", "outcome", "exit_code", "message")


def finished(exit_code: int) -> dict[str, Any]:
    return {"outcome": "finished", "exit_code": exit_code, "message": None}


def stopped_by(exc: BaseException, workdir: Path) -> dict[str, Any]:
    """The outcome of a run that ``exc`` ended, as the CLI would report it."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        code = Terminated.exit_code if isinstance(exc, Terminated) else stop_exit_code()
        how = "SIGTERM" if code == Terminated.exit_code else "Ctrl-C"
        return {"outcome": "stopped", "exit_code": code,
                "message": f"stopped by {how}; resume with --resume"}
    storage = storage_error(exc, workdir)  # the CLI turns these into this very message
    if storage is not None:
        return {"outcome": "stopped", "exit_code": storage.exit_code, "message": str(storage)}
    if isinstance(exc, Mp2AmpError):
        return {"outcome": "stopped", "exit_code": exc.exit_code or 1, "message": str(exc)}
    return {"outcome": "crashed", "exit_code": 1, "message": f"{type(exc).__name__}: {exc}"}


def record_start(ledger: Ledger, started: float) -> None:
    """A run that has begun: if it is killed (kill -9, the OOM killer, a power loss) this
    stays its record, so ``status`` names it rather than the run before it."""
    doc = {"started": started, "ended": None, "outcome": "running", "exit_code": None,
           "message": None}
    with contextlib.suppress(Exception):
        ledger.set_meta(LAST_ATTEMPT, orjson.dumps(doc).decode())


def record_attempt(ledger: Ledger, started: float, outcome: dict[str, Any]) -> None:
    doc = {"started": started, "ended": time.time(), **outcome}
    # best effort: the run's own error is the one to raise
    with contextlib.suppress(Exception):
        ledger.set_meta(LAST_ATTEMPT, orjson.dumps(doc).decode())


def last_attempt(ledger: Ledger) -> dict[str, Any] | None:
    value = ledger.get_meta(LAST_ATTEMPT)
    if value is None:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    return {key: doc.get(key) for key in KEYS}
