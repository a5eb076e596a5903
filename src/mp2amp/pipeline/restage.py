"""Windows whose staged file is gone are staged again from their source, then checked;
windows staged from a damaged file are unstaged until it is restored.

Why: every run reads every staged window (the identity graph is rebuilt on each run, and
loaded windows are replayed for their dedup and session state), so a resume after someone
freed space by deleting the work folder's ``staged/`` files stopped at the first missing
one with a traceback. Staging is deterministic (the same source gives the same sorted
file, hence the same batches), so such a window is staged again from its source; when its
batches were already cut, its record count must come out as the ledger has it, or the
source changed and its batches cannot be matched again: that stops the run, and the new
copy is dropped so that a later resume stages it again instead of loading it.

The counts to check are kept in the ledger (meta ``restage_expected``) until the check
has passed: a run stopped by it, killed while staging again, or stopped before the check
(SIGTERM, a full disk) leaves the window pending or staged but unchecked, and the next
resume must check it all the same (it used to stage it again unchecked, or load the
changed copy already staged, and cut other batches under the names of the done ones).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.staging import damage_of


def restage_missing(ledger: Ledger, workdir: Path) -> dict[str, int]:
    """Mark the windows whose staged file is gone as pending; returns, per such window,
    the records the ledger had for it. A work folder moved (or copied) elsewhere, to a
    bigger disk, keeps its staged files under their names: the ledger is pointed at them
    there."""
    merged = ledger.merged_into()
    in_merge = set(merged) | set(merged.values())
    before = _expected(ledger)  # from an earlier resume that did not get to its check
    cut = {b.window_id for b in ledger.batches()}
    moved: list[tuple[str, str, int]] = []
    gone: list[str] = []
    for w in ledger.windows():
        if w.state == "pending":
            # unstaged with its batches cut (a stop on damage, say): its records count
            # is still the one they were cut from
            if w.window_id in cut and w.window_id not in before:
                before[w.window_id] = w.records
            continue
        if w.staged_path is None:
            continue
        # the work folder's own copy first: one copied elsewhere (the old folder still
        # there, to be deleted once the copy runs) must not read the old folder's files
        was = Path(w.staged_path)
        here = workdir / "staged" / was.name
        if here.resolve() != was.resolve() and here.is_file():
            moved.append((w.window_id, str(here), w.records))
            continue
        if was.exists():
            continue
        if w.window_id in in_merge:
            raise TerminalError(
                f"the staged file {w.staged_path} of {w.window_id} is gone, and it holds "
                "records merged from input files that overlap in time, which cannot be "
                "staged again as they were: restore the file and run --resume again, or "
                "start a new run in a new work folder")
        before.setdefault(w.window_id, w.records)
        gone.append(w.window_id)
    if before:
        _set_expected(ledger, before)  # first: a kill after it still checks them
    for window_id in gone:
        ledger.mark_pending(window_id)
    if moved:
        ledger.restage(moved)
    return before


def _expected(ledger: Ledger) -> dict[str, int]:
    value = ledger.get_meta(_EXPECTED)
    return {} if value is None else {str(k): int(v) for k, v in orjson.loads(value).items()}


def _set_expected(ledger: Ledger, expected: dict[str, int]) -> None:
    ledger.set_meta(_EXPECTED, orjson.dumps(expected, option=orjson.OPT_SORT_KEYS).decode())


_EXPECTED = "restage_expected"  # window -> the records its batches were cut from


def check_restaged(ledger: Ledger, before: dict[str, int]) -> None:
    """After staging: a window staged again must give the records its batches were cut
    from (only windows with batches: the others have nothing to match)."""
    if not before:
        return
    cut = {b.window_id for b in ledger.batches()}
    for w in ledger.windows():
        old = before.get(w.window_id)
        if old is None or w.state == "pending" or w.window_id not in cut \
                or w.records == old:
            continue
        if w.staged_path is not None:
            Path(w.staged_path).unlink(missing_ok=True)
        ledger.mark_pending(w.window_id)  # still expected: the next resume checks it again
        raise TerminalError(
            f"{w.window_id} was staged again (its staged file was gone) and now gives "
            f"{w.records} records, not the {old} its batches were cut from: the source "
            "changed since. Put the source back as it was and run --resume again, or start "
            "a new run in a new work folder")
    # every window checked (or without batches to match): nothing left to check
    left = {w.window_id: before[w.window_id] for w in ledger.windows()
            if w.window_id in before and w.state == "pending"}
    if left != _expected(ledger):
        _set_expected(ledger, left)


def stop_on_damaged_files(ledger: Ledger, staged_now: set[str]) -> None:
    """Before the load: the windows staged in this run from a file cut short (a .gz
    without its end) are unstaged and the run stops (``[source] damaged_files = "stop"``):
    nothing of them is sent, so a file restored (downloaded again) is staged whole on
    ``--resume``. Without this, the records up to the damage went out, the rest was one
    rejection, the run exited 0, and no resume could add the rest (its batches were cut).

    A window whose batches were already cut (a run with ``damaged_files = "keep"``,
    staged again on resume under "stop") is kept: some of it was sent, and restoring the
    file could never match those batches again."""
    found: list[str] = []
    cut = {b.window_id for b in ledger.batches()}
    for w in ledger.windows():
        if w.window_id not in staged_now or w.staged_path is None or w.window_id in cut:
            continue
        damage = damage_of(Path(w.staged_path))
        if damage is None:
            continue
        found.append(damage.split("; ")[0])
        Path(w.staged_path).unlink(missing_ok=True)
        ledger.mark_pending(w.window_id)
    if found:
        raise InputError(
            f"{len(found)} input file(s) are cut short, and nothing of them was sent: "
            + "; ".join(found) + ". Restore them (download again) and run the same `mp2amp "
            "migrate` command with --resume; or, to migrate what they hold up to the damage "
            "(the rest counted as one rejection), set [source] damaged_files = \"keep\" "
            "and resume")
