"""Dead letters: transform rejections as the ledger keeps them, and ``dead-letters.jsonl``
rendered from the ledger (transform and Amplitude refusals, each record once)."""

from __future__ import annotations

import json
import logging
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson

from mp2amp.errors import Rejection
from mp2amp.ledger import Ledger
from mp2amp.transform.values import json_safe

log = logging.getLogger("mp2amp.migrate")

# (source, line, window, stage, reason, message, field, payload JSON) as the ledger stores it
RejectRow = tuple[str, int, str, str, str, str, str | None, str | None]


def reject_row(rej: Rejection, window_id: str) -> RejectRow:
    """A transform rejection as the ledger stores it (keyed by source and line)."""
    return (rej.source or window_id, rej.line or 0, window_id, "transform", rej.reason,
            rej.message, rej.field, payload_json(rej.record))


def payload_json(record: Any) -> str | None:
    """The record as the dead letter shows it: its JSON, or, for what JSON cannot carry
    (NaN, an integer past 64 bits: orjson would write null or refuse), a string of the
    standard library's rendering, so the file stays JSON and shows the value as it was."""
    if record is None:
        return None
    if json_safe(record):
        try:
            return orjson.dumps(record).decode()
        except TypeError:
            pass
    try:
        text = json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=repr)
    except (RecursionError, ValueError):
        text = "(the record cannot be shown: nested too deeply)"
    return orjson.dumps(text).decode()


def write_dead_letters(ledger: Ledger, workdir: Path) -> Path:
    """Render every rejected record (transform and Amplitude) to ``dead-letters.jsonl``.

    Rendered from the ledger, atomically, so the file holds each record exactly once
    however many times the run was resumed."""
    dest = workdir / "dead-letters.jsonl"
    tmp = dest.with_name(dest.name + ".part")
    try:
        with open(tmp, "wb") as f:
            for source, line, window, stage, reason, message, fld, payload in \
                    ledger.iter_rejects():
                row: dict[str, Any] = {"source": source, "line": line, "window": window,
                                       "stage": stage, "reason": reason, "message": message,
                                       "field": fld}
                row["record" if stage == "transform" else "event"] = (
                    orjson.Fragment(payload) if payload else None)
                f.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(dest)
    except BaseException:
        with suppress(OSError):  # the last complete file stays, with no half one beside
            tmp.unlink(missing_ok=True)
        raise
    return dest


def write_dead_letters_after_stop(ledger: Ledger, workdir: Path) -> None:
    """``write_dead_letters`` for a run that stopped (an error, Ctrl-C, SIGTERM): what it
    rejected so far is in the file too. Best effort: the run's own error is the one to
    report (a full disk may be why it stopped)."""
    try:
        write_dead_letters(ledger, workdir)
    except Exception as exc:  # never hides the error that stopped the run
        log.warning("dead-letters.jsonl was not rendered (%s); `mp2amp migrate --resume` "
                    "renders it from the ledger", exc)
